//! The sink contract and sink configuration from WITH keys.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use super::avro::AvroFormat;
use super::file_sink::{FileSink, StdoutSink};
use super::kafka::sink::{KAFKA_SINK, TRANSACTIONAL_ID};
use super::kafka::{self, client_config, topic_of, KafkaDefaults, KafkaSink};
use super::part_files::PartFileSink;
use crate::error::{Result, VeloError};
use crate::partition::RowEncoder;
use crate::sql::key_spec::{
    type_key, Connector, KeyDefault, KeyKind, KeySpec, Keys, Role, CONFIG_FILE,
};
use crate::sql::Properties;

/// Where a query's output rows go. Delete batches (see `exec::change`) are written as deletes.
pub trait Sink: Send {
    /// Writes one output batch.
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Makes everything written so far durable/visible.
    fn flush(&mut self) -> Result<()>;
    /// The sink's encoding of rows to bytes, for the workers to run in parallel; None for a
    /// sink that writes batches itself.
    fn encoder(&self) -> Option<Arc<dyn RowEncoder>> {
        None
    }
    /// Writes `batch` as `bytes`, which [`Sink::encoder`]'s encoder made of it.
    fn write_encoded(&mut self, batch: &RecordBatch, _bytes: &[u8]) -> Result<()> {
        self.write_batch(batch)
    }
    /// For a sink that acknowledges writes on its own (Kafka): how many rows were written and
    /// how many of the first ones are acknowledged, without waiting; an error if a write
    /// failed for good. None: only [`Sink::flush`] tells.
    fn progress(&mut self) -> Result<Option<SinkProgress>> {
        Ok(None)
    }
    /// Checkpoint `epoch`'s barrier passed (after a flush): an exactly-once sink closes the
    /// rows written so far as that epoch's and writes on into the next.
    fn seal_epoch(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }
    /// The checkpoint of `epoch` is durable: an exactly-once sink makes the rows it sealed
    /// for it visible now (others have nothing to do).
    fn commit_epoch(&mut self, _epoch: u64) -> Result<()> {
        Ok(())
    }
    /// The job starts from checkpoint `restored` (None: from none) and its next checkpoint is
    /// `next`: an exactly-once sink publishes what `restored` covers, discards what came
    /// after it, and writes on into `next`.
    fn begin_epochs(&mut self, _restored: Option<u64>, _next: u64) -> Result<()> {
        Ok(())
    }
    /// The job is about to restore: a sink that commits epochs on its own (a Kafka
    /// transaction) discards its uncommitted output and says through which epoch its output
    /// is committed; the job restores that epoch's checkpoint, not a later one.
    fn recover(&mut self) -> Result<CommittedOutput> {
        Ok(CommittedOutput::Untracked)
    }
}

/// Which checkpoint's output a sink has committed, as [`Sink::recover`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommittedOutput {
    /// The sink does not say: the latest checkpoint is restored.
    Untracked,
    /// The output of every epoch up to this one is committed (None: of none).
    Through(Option<u64>),
}

/// Rows written to a sink, and how many of the first of them are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkProgress {
    pub written: u64,
    /// Every row before this count is acknowledged.
    pub acknowledged: u64,
}

/// A sink's settings, from `'<name>.type'` and friends.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    /// JSON lines on standard output.
    Stdout,
    /// A file in `jsonl` or `csv` format.
    File {
        path: PathBuf,
        csv: bool,
        delimiter: u8,
        /// `'<name>.delivery' = 'exactly_once'`: `path` is a directory of part files, each
        /// published when its checkpoint completes.
        exactly_once: bool,
    },
    /// A Kafka topic, JSON or Avro values.
    Kafka {
        name: String,
        topic: String,
        /// librdkafka producer settings.
        client: BTreeMap<String, String>,
        /// Columns forming the message key (`key.field`, else the query's GROUP BY columns).
        key_fields: Vec<String>,
        /// The Avro schema and framing of the values; None: JSON.
        avro: Option<AvroFormat>,
        /// `'<name>.delivery' = 'exactly_once'`: the producer's `transactional.id`
        /// (`'<name>.transactional.id'`, by default `velostream-<name>`).
        transactional_id: Option<String>,
    },
}

/// `'<sink>.path'` of a file sink.
pub const PATH: KeySpec = KeySpec {
    name: "path",
    kind: KeyKind::Text,
    default: KeyDefault::Required,
    doc: "The output file (created, parent directories too); with `exactly_once`, a directory \
          of part files.",
};
/// `'<sink>.format'` of a file sink.
pub const FORMAT: KeySpec = KeySpec {
    name: "format",
    kind: KeyKind::Choice(&["jsonl", "csv", "json"]),
    default: KeyDefault::Note("`csv` when the path ends in `.csv`, else `jsonl`"),
    doc: "`jsonl` (`json` too): one JSON object per line; `csv`: a header line, then one line \
          per row.",
};
/// `'<sink>.delimiter'` of a file sink.
pub const DELIMITER: KeySpec = KeySpec {
    name: "delimiter",
    kind: KeyKind::Char,
    default: KeyDefault::Value(","),
    doc: "CSV: the field delimiter.",
};
/// `'<sink>.delivery'` of a file or Kafka sink.
pub const DELIVERY: KeySpec = KeySpec {
    name: "delivery",
    kind: KeyKind::Choice(&["at_least_once", "exactly_once"]),
    default: KeyDefault::Value("at_least_once"),
    doc: "`exactly_once`: the rows of each checkpoint are published once it is durable (a file \
          sink's part files, a Kafka sink's transactions); needs a Kafka source and \
          `velo-sql --state-dir` ([fault-tolerance.md](fault-tolerance.md)).",
};

/// `'<sink>.type' = 'file_sink'`.
pub const FILE_SINK: Connector = Connector {
    kind: "file_sink",
    label: "file_sink",
    role: Role::Sink,
    doc: "JSON lines or CSV written to a file.",
    keys: &[
        type_key(KeyDefault::Note("a sink with a `path`")),
        PATH,
        FORMAT,
        DELIMITER,
        DELIVERY,
        CONFIG_FILE,
    ],
    librdkafka: false,
};

/// `'<sink>.type' = 'stdout'`, the sink of a statement with no sink keys.
pub const STDOUT: Connector = Connector {
    kind: "stdout",
    label: "stdout",
    role: Role::Sink,
    doc: "JSON lines on standard output: the sink of a statement with no sink keys (or \
          `--output` for a plain SELECT in velo-sql-batch).",
    keys: &[
        type_key(KeyDefault::Note("a sink with neither `type` nor `path`")),
        CONFIG_FILE,
    ],
    librdkafka: false,
};

impl SinkConfig {
    /// Reads the sink of `name` from properties; stdout when nothing is configured.
    pub fn from_properties(name: &str, props: &Properties, kafka: &KafkaDefaults) -> Result<Self> {
        let kind = props.scoped(name, "type");
        match kind.as_deref() {
            None | Some("stdout") => {
                if kind.is_none() && props.scoped(name, "path").is_some() {
                    return Self::file(name, props);
                }
                Ok(SinkConfig::Stdout)
            }
            Some("file_sink") => Self::file(name, props),
            Some("kafka_sink") => {
                let keys = Keys::of(props, name, &KAFKA_SINK);
                let transactional_id = delivery(&keys)?.then(|| {
                    keys.text(&TRANSACTIONAL_ID)
                        .unwrap_or_else(|| format!("velostream-{name}"))
                });
                let avro = match keys.choice(&kafka::sink::FORMAT)? {
                    Some("avro") => Some(AvroFormat::from_properties(&keys, false)?),
                    _ => None,
                };
                let client = client_config(name, props, &KAFKA_SINK, kafka, &[])?;
                Ok(SinkConfig::Kafka {
                    name: name.to_string(),
                    topic: topic_of(name, props),
                    client: client
                        .config_map()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    key_fields: keys.list(&kafka::sink::KEY_FIELD),
                    avro,
                    transactional_id,
                })
            }
            Some(other) => Err(VeloError::Config(format!(
                "'{name}.type' = '{other}' is not a sink this build supports (stdout, file_sink, kafka_sink)"
            ))),
        }
    }

    fn file(name: &str, props: &Properties) -> Result<Self> {
        let keys = Keys::of(props, name, &FILE_SINK);
        let path = keys
            .text(&PATH)
            .ok_or_else(|| VeloError::Config(format!("file_sink '{name}' needs '{name}.path'")))?;
        let csv = match keys.choice(&FORMAT)? {
            Some(format) => format == "csv",
            None => path.ends_with(".csv"),
        };
        Ok(SinkConfig::File {
            path: PathBuf::from(path),
            csv,
            delimiter: keys.char(&DELIMITER)?.unwrap_or(b','),
            exactly_once: delivery(&keys)?,
        })
    }

    /// Whether the sink delivers exactly once, publishing its rows on checkpoints.
    pub fn exactly_once(&self) -> bool {
        match self {
            SinkConfig::Stdout => false,
            SinkConfig::File { exactly_once, .. } => *exactly_once,
            SinkConfig::Kafka {
                transactional_id, ..
            } => transactional_id.is_some(),
        }
    }
}

/// `'<name>.delivery'`: whether it asks for exactly_once (at_least_once is the default).
fn delivery(keys: &Keys<'_>) -> Result<bool> {
    Ok(keys.choice(&DELIVERY)? == Some("exactly_once"))
}

/// Opens the sink described by `config`.
pub fn open_sink(config: &SinkConfig) -> Result<Box<dyn Sink>> {
    Ok(match config {
        SinkConfig::Stdout => Box::new(StdoutSink::new()),
        SinkConfig::File {
            path,
            csv,
            delimiter,
            exactly_once: false,
        } => Box::new(FileSink::create(path, *csv, *delimiter)?),
        SinkConfig::File {
            path,
            csv,
            delimiter,
            exactly_once: true,
        } => Box::new(PartFileSink::create(path, *csv, *delimiter)?),
        SinkConfig::Kafka {
            name,
            topic,
            client,
            key_fields,
            avro,
            transactional_id,
        } => Box::new(KafkaSink::create(
            name,
            topic,
            client,
            key_fields,
            avro.as_ref(),
            transactional_id.as_deref(),
        )?),
    })
}
