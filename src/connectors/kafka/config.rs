//! Kafka settings from WITH keys. velostream reads its own keys (`topic.name`, `format`,
//! `event.time.field`, `dlq.topic`, `key.field`, ...); every other `'<name>.<key>'` is a
//! librdkafka property and goes to the client as written (`bootstrap.servers`, `group.id`,
//! `auto.offset.reset`, `acks`, `linger.ms`, ...).

use rdkafka::ClientConfig;

use crate::error::{Result, VeloError};
use crate::sql::Properties;

/// Key prefixes velostream interprets itself (never passed to librdkafka).
const OWN_KEYS: &[&str] = &[
    "type",
    "topic.name",
    "topic",
    "format",
    "event.time.",
    "dlq.",
    "batch.size",
    "key.field",
    "on_error",
    "watermark.",
    "late.data.",
    "config_file",
    "avro.",
    "path",
    "commit.interval",
    "partitions",
    "delivery",
    "transactional.id",
];

/// Where a connector finds the brokers when its WITH keys do not say.
#[derive(Debug, Clone, Default)]
pub struct KafkaDefaults {
    /// `--brokers`: the default `bootstrap.servers`.
    pub brokers: Option<String>,
}

/// The topic `name` reads or writes: `'<name>.topic.name'`, else the name itself.
pub fn topic_of(name: &str, props: &Properties) -> String {
    props
        .scoped(name, "topic.name")
        .or_else(|| props.scoped(name, "topic"))
        .unwrap_or_else(|| name.to_string())
}

/// The librdkafka configuration of connector `name`: its pass-through keys over `base`.
pub fn client_config(
    name: &str,
    props: &Properties,
    defaults: &KafkaDefaults,
    base: &[(&str, &str)],
) -> Result<ClientConfig> {
    let mut config = ClientConfig::new();
    for (k, v) in base {
        config.set(*k, *v);
    }
    let prefix = format!("{name}.");
    for (key, _) in props.iter() {
        let Some(key) = key.strip_prefix(&prefix) else {
            continue;
        };
        if OWN_KEYS.iter().any(|own| {
            key == own.trim_end_matches('.') || (own.ends_with('.') && key.starts_with(own))
        }) {
            continue;
        }
        // `scoped` applies the VELOSTREAM_<NAME>_<KEY> environment override.
        if let Some(value) = props.scoped(name, key) {
            config.set(key, value);
        }
    }
    if config.get("bootstrap.servers").is_none() {
        match &defaults.brokers {
            Some(b) => {
                config.set("bootstrap.servers", b);
            }
            None => {
                return Err(VeloError::Config(format!(
                    "Kafka connector '{name}' needs '{name}.bootstrap.servers' (or --brokers)"
                )))
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_keys_stay_librdkafka_keys_pass_through() {
        let mut props = Properties::default();
        props.insert("t.type", "kafka_source");
        props.insert("t.topic.name", "trades");
        props.insert("t.group.id", "g1");
        props.insert("t.auto.offset.reset", "earliest");
        props.insert("t.event.time.field", "ts");
        props.insert("t.dlq.topic", "bad");
        props.insert("t.partitions", "4");
        props.insert("other.group.id", "not-mine");
        let defaults = KafkaDefaults {
            brokers: Some("b:9092".into()),
        };
        let c = client_config("t", &props, &defaults, &[("enable.auto.commit", "false")])
            .expect("config");
        assert_eq!(c.get("group.id"), Some("g1"));
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(c.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("topic.name"), None);
        assert_eq!(c.get("event.time.field"), None);
        assert_eq!(c.get("dlq.topic"), None);
        assert_eq!(
            c.get("partitions"),
            None,
            "a mock-topic key, unknown to librdkafka"
        );
        assert_eq!(topic_of("t", &props), "trades");
        let err = client_config("t", &props, &KafkaDefaults::default(), &[]);
        assert!(err.is_err_and(|e| e.to_string().contains("t.bootstrap.servers")));
    }
}
