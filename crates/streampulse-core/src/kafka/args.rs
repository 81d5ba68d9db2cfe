//! The Kafka flags of a stage that publishes its outputs, and where they send a dataset.

use std::time::Duration;

use crate::error::{Error, Result};

/// Kafka flags of a stage that publishes its outputs (clap, with the `SP_*` environment fallback).
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// Kafka bootstrap servers (host:port,...). When set, the run also publishes its outputs to
    /// Kafka; Parquet outputs are written either way.
    #[arg(long, env = "SP_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Seconds a message may wait for the broker before the run fails (exit 69 or 75).
    #[arg(long, env = "SP_KAFKA_TIMEOUT_S", default_value_t = 30.0)]
    pub kafka_timeout_s: f64,
}

impl PublishArgs {
    /// Where `topic` is published, when publishing is on.
    pub fn destination(&self, topic: &str) -> Result<Option<Destination>> {
        Ok(self.validate()?.map(|(brokers, timeout)| Destination {
            brokers,
            topic: topic.to_string(),
            timeout,
        }))
    }

    /// The brokers and the delivery timeout, when publishing is on.
    pub fn validate(&self) -> Result<Option<(String, Duration)>> {
        let Some(brokers) = self
            .kafka_brokers
            .as_deref()
            .filter(|b| !b.trim().is_empty())
        else {
            return Ok(None);
        };
        let timeout = Duration::try_from_secs_f64(self.kafka_timeout_s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                Error::Config(format!(
                    "--kafka-timeout-s must be a positive number of seconds, got {}",
                    self.kafka_timeout_s
                ))
            })?;
        Ok(Some((brokers.trim().to_string(), timeout)))
    }
}

/// Where and how a run publishes one of its outputs to Kafka (`--kafka-brokers` given).
#[derive(Debug, Clone)]
pub struct Destination {
    pub brokers: String,
    pub topic: String,
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_is_off_without_brokers_and_needs_a_positive_timeout() {
        let args = |brokers: Option<&str>, t: f64| PublishArgs {
            kafka_brokers: brokers.map(String::from),
            kafka_timeout_s: t,
        };
        assert!(args(None, 30.0).validate().unwrap().is_none());
        assert!(args(Some(" "), 30.0).validate().unwrap().is_none());
        let (b, t) = args(Some("127.0.0.1:9092"), 2.5)
            .validate()
            .unwrap()
            .unwrap();
        assert_eq!(
            (b.as_str(), t),
            ("127.0.0.1:9092", Duration::from_millis(2500))
        );
        assert!(args(Some("127.0.0.1:9092"), 0.0).validate().is_err());
        assert!(args(Some("127.0.0.1:9092"), -1.0).validate().is_err());
    }
}
