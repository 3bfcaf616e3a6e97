//! Kafka settings from WITH keys. velostream reads the keys its connectors declare
//! (`topic.name`, `format`, `event.time.field`, `dlq.topic`, `key.field`, ...); every other
//! `'<name>.<key>'` is a librdkafka property and goes to the client as written
//! (`bootstrap.servers`, `group.id`, `auto.offset.reset`, `acks`, `linger.ms`, ...), once
//! librdkafka has said it knows it.

use std::ffi::CStr;
use std::sync::OnceLock;

use rdkafka::bindings as rdsys;
use rdkafka::ClientConfig;

use crate::error::{Result, VeloError};
use crate::sql::key_spec::{Connector, KeyDefault, KeyKind, KeySpec, Keys};
use crate::sql::Properties;

/// `'<name>.topic.name'`.
pub const TOPIC_NAME: KeySpec = KeySpec {
    name: "topic.name",
    kind: KeyKind::Text,
    default: KeyDefault::Note("the name itself"),
    doc: "The topic.",
};
/// `'<name>.topic'`.
pub const TOPIC: KeySpec = KeySpec {
    name: "topic",
    kind: KeyKind::Text,
    default: KeyDefault::None,
    doc: "The same as `topic.name`.",
};
/// `'<name>.partitions'`, read by `velo-sql --mock-kafka`.
pub const PARTITIONS: KeySpec = KeySpec {
    name: "partitions",
    kind: KeyKind::Integer { min: 1 },
    default: KeyDefault::Value("4"),
    doc: "With `velo-sql --mock-kafka`: the partitions of the topic the mock cluster creates.",
};
/// `'<name>.bootstrap.servers'`.
pub const BOOTSTRAP_SERVERS: KeySpec = KeySpec {
    name: "bootstrap.servers",
    kind: KeyKind::Client,
    default: KeyDefault::Note("`--brokers`"),
    doc: "The brokers (`host:port,...`).",
};

/// The keys [`topic_of`] reads, which every Kafka connector declares.
const TOPIC_KEYS: &[KeySpec] = &[TOPIC_NAME, TOPIC];

/// Where a connector finds the brokers when its WITH keys do not say.
#[derive(Debug, Clone, Default)]
pub struct KafkaDefaults {
    /// `--brokers`: the default `bootstrap.servers`.
    pub brokers: Option<String>,
}

/// The topic `name` reads or writes: `'<name>.topic.name'`, else the name itself.
pub fn topic_of(name: &str, props: &Properties) -> String {
    let keys = Keys::group(props, name, TOPIC_KEYS, "Kafka connector");
    keys.text(&TOPIC_NAME)
        .or_else(|| keys.text(&TOPIC))
        .unwrap_or_else(|| name.to_string())
}

/// The librdkafka configuration of `connector` `name`: `base`, then the defaults it declares
/// for librdkafka properties, then every `'<name>.<key>'` it does not read itself.
pub fn client_config(
    name: &str,
    props: &Properties,
    connector: &Connector,
    defaults: &KafkaDefaults,
    base: &[(&str, &str)],
) -> Result<ClientConfig> {
    let mut config = ClientConfig::new();
    for (k, v) in base {
        config.set(*k, *v);
    }
    for spec in connector.keys {
        if let (KeyKind::Client, KeyDefault::Value(v)) = (spec.kind, spec.default) {
            config.set(spec.name, v);
        }
    }
    let prefix = format!("{name}.");
    for (key, _) in props.iter() {
        let Some(key) = key.strip_prefix(&prefix) else {
            continue;
        };
        if connector
            .key(key)
            .is_some_and(|k| k.kind != KeyKind::Client)
        {
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

/// Whether librdkafka takes `key` = `value` as a client property: Err(None) when it knows no
/// such property, Err(Some(reason)) when it refuses the value. No client is created.
pub fn check_client_property(key: &str, value: &str) -> std::result::Result<(), Option<String>> {
    let mut config = ClientConfig::new();
    config.set(key, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(rdkafka::error::KafkaError::ClientConfig(code, reason, _, _)) => match code {
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN => Err(None),
            _ => Err(Some(reason)),
        },
        Err(other) => Err(Some(other.to_string())),
    }
}

/// The names of librdkafka's client and topic properties (those with a default value), for
/// "did you mean" suggestions.
pub fn client_property_names() -> Vec<&'static str> {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            let mut names = Vec::new();
            // SAFETY: each conf is created here and destroyed after its dump is copied; the
            // dump is an array of `cnt` C strings (name, value, name, value, ...) owned by
            // librdkafka until `rd_kafka_conf_dump_free`.
            unsafe {
                let conf = rdsys::rd_kafka_conf_new();
                let topic_conf = rdsys::rd_kafka_topic_conf_new();
                for (dump, cnt) in [
                    {
                        let mut cnt = 0usize;
                        (rdsys::rd_kafka_conf_dump(conf, &mut cnt), cnt)
                    },
                    {
                        let mut cnt = 0usize;
                        (rdsys::rd_kafka_topic_conf_dump(topic_conf, &mut cnt), cnt)
                    },
                ] {
                    if dump.is_null() {
                        continue;
                    }
                    for i in (0..cnt).step_by(2) {
                        let name = *dump.add(i);
                        if !name.is_null() {
                            names.push(CStr::from_ptr(name).to_string_lossy().into_owned());
                        }
                    }
                    rdsys::rd_kafka_conf_dump_free(dump, cnt);
                }
                rdsys::rd_kafka_topic_conf_destroy(topic_conf);
                rdsys::rd_kafka_conf_destroy(conf);
            }
            names
        })
        .iter()
        .map(String::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::kafka::source::KAFKA_SOURCE;

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
        let c = client_config(
            "t",
            &props,
            &KAFKA_SOURCE,
            &defaults,
            &[("enable.auto.commit", "false")],
        )
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
        let err = client_config("t", &props, &KAFKA_SOURCE, &KafkaDefaults::default(), &[]);
        assert!(err.is_err_and(|e| e.to_string().contains("t.bootstrap.servers")));
    }

    #[test]
    fn librdkafka_says_which_properties_it_knows() {
        assert_eq!(check_client_property("session.timeout.ms", "6000"), Ok(()));
        assert_eq!(check_client_property("acks", "all"), Ok(()));
        assert_eq!(
            check_client_property("sesion.timeout.ms", "6000"),
            Err(None)
        );
        assert!(matches!(
            check_client_property("session.timeout.ms", "soon"),
            Err(Some(_))
        ));
        let names = client_property_names();
        for known in [
            "session.timeout.ms",
            "auto.offset.reset",
            "queue.buffering.max.ms",
        ] {
            assert!(names.contains(&known), "{known} in {names:?}");
        }
    }
}
