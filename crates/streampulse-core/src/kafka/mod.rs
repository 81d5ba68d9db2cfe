//! Kafka, the other way stages meet besides Parquet partitions (docs/architecture.md): the topic
//! definitions of `shared/topics/topics.txt`, the client settings every stage uses, topic
//! creation, and [`Publisher`], which sends a run's records and waits until the broker has every
//! one of them, so that a run never reports success with messages still in a buffer.
//!
//! Failures map to the documented exit codes (`error::kafka_exit_code`): a broker that cannot be
//! reached is 69 (unavailable), anything else the broker refuses mid-run is 75 (worth a retry).

mod args;
mod client;
mod json;
mod publish;
mod topics;

pub use args::{Destination, PublishArgs};
pub use client::{client_config, ensure_topics, kafka_error};
pub use publish::{Publisher, RowMessages, publish_dataset, publish_parquet_dir};
pub use topics::{TopicSpec, topic_spec, topics};
