//! The client settings every stage shares, and topic creation.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::topics::{TopicSpec, topic_spec};
use crate::error::{Error, Result};

/// The settings every client of ours shares.
pub fn client_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        // librdkafka logs to stderr by default; its warnings reach us as errors anyway.
        .set("log_level", "3");
    c
}

/// Creates the topics that do not exist yet, with their partition counts from the topic
/// definitions. Replication 1 is the single-broker development setting; production topics are
/// created by the platform team with their own replication.
pub async fn ensure_topics(brokers: &str, names: &[&str], timeout: Duration) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers, "streampulse-admin")
        .create()
        .map_err(|e| kafka_error(e, "creating the admin client"))?;
    let specs: Vec<TopicSpec> = names.iter().map(|n| topic_spec(n)).collect();
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|t| NewTopic::new(&t.name, t.partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| kafka_error(e, "creating topics"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Kafka {
                    context: format!("creating topic {topic}"),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// Wraps a client error with what we were doing.
pub fn kafka_error(source: KafkaError, context: impl Into<String>) -> Error {
    Error::Kafka {
        context: context.into(),
        source,
    }
}
