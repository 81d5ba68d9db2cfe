//! The platform's topics, as `shared/topics/topics.txt` defines them.

/// `shared/topics/topics.txt`, compiled in so a container needs no files.
const TOPICS: &str = include_str!("../../../../shared/topics/topics.txt");

/// One topic of the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// The column that keys its messages (`-` for none).
    pub key: String,
}

/// The topics of `shared/topics/topics.txt`.
pub fn topics() -> Vec<TopicSpec> {
    TOPICS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some(TopicSpec {
                name: words.next()?.to_string(),
                partitions: words.next()?.parse().ok()?,
                key: words.next()?.to_string(),
            })
        })
        .collect()
}

/// The definition of `name`, or a default of 1 partition for a topic the file does not know
/// (tests use a fresh topic name each).
pub fn topic_spec(name: &str) -> TopicSpec {
    topics()
        .into_iter()
        .find(|t| t.name == name)
        .unwrap_or(TopicSpec {
            name: name.to_string(),
            partitions: 1,
            key: "-".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_file_defines_the_platform_topics() {
        let names: Vec<String> = topics().into_iter().map(|t| t.name).collect();
        for want in ["plays", "charts.daily", "recommendations", "songs.changed"] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        assert_eq!(topic_spec("plays").key, "user_id");
        assert!(topic_spec("plays").partitions > 1);
        assert_eq!(topic_spec("a-test-topic").partitions, 1);
    }
}
