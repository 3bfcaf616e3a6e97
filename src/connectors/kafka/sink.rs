//! `KafkaSink`: writes result rows to a topic as JSON or Avro, keyed by `key.field` or the query's
//! GROUP BY columns; an EMIT CHANGES delete becomes a tombstone. librdkafka retries failed
//! sends; a message that still fails fails the job at the next flush or progress check, never
//! silently. Every message is numbered, so the job can commit source offsets as soon as the
//! messages before them are acknowledged, without stopping to flush. With
//! `'<name>.delivery' = 'exactly_once'` the producer is transactional (see `transactions`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use arrow::array::Array;
use arrow::record_batch::RecordBatch;
use arrow::util::display::array_value_to_string;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use super::config::{BOOTSTRAP_SERVERS, PARTITIONS, TOPIC, TOPIC_NAME};
use super::source::kafka_error;
use super::transactions::Transactions;
use crate::connectors::avro::{AvroEncoder, AvroFormat, FRAMING, SCHEMA_FILE};
use crate::connectors::sink::{CommittedOutput, Sink, SinkProgress, DELIVERY};
use crate::error::{Result, VeloError};
use crate::exec::change::{is_delete, with_deleted_flag};
use crate::sql::key_spec::{type_key, Connector, KeyDefault, KeyKind, KeySpec, Role, CONFIG_FILE};

/// How long a flush waits for every message to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Which numbered messages are settled (acknowledged or given up on).
#[derive(Default)]
struct Settled {
    /// Every message numbered below this is settled.
    prefix: u64,
    /// Settled messages above `prefix` (acknowledgements of different partitions interleave).
    ahead: BTreeSet<u64>,
}

impl Settled {
    fn settle(&mut self, seq: u64) {
        if seq != self.prefix {
            self.ahead.insert(seq);
            return;
        }
        self.prefix += 1;
        while self.ahead.remove(&self.prefix) {
            self.prefix += 1;
        }
    }
}

/// Follows delivery reports: which messages are settled, and those librdkafka gave up on,
/// with the first reason. Reports arrive on the producer's polling thread.
#[derive(Default)]
struct DeliveryTracker {
    settled: Mutex<Settled>,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTracker {}

impl DeliveryTracker {
    fn settled(&self) -> std::sync::MutexGuard<'_, Settled> {
        self.settled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ProducerContext for DeliveryTracker {
    /// The message's number.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        self.settled().settle(seq as u64);
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::SeqCst);
            let mut first = self
                .first_error
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Writes rows to one topic.
pub struct KafkaSink {
    name: String,
    topic: String,
    producer: ThreadedProducer<DeliveryTracker>,
    key_fields: Vec<String>,
    payload: Vec<u8>,
    /// Encodes rows as Avro datums; None: JSON.
    avro: Option<AvroEncoder>,
    /// Messages sent so far; the next one's number.
    written: u64,
    /// Exactly-once delivery: one transaction per checkpoint epoch.
    transactions: Option<Transactions>,
}

/// `'<sink>.format'` of a Kafka sink.
pub const FORMAT: KeySpec = KeySpec {
    name: "format",
    kind: KeyKind::Choice(&["json", "avro"]),
    default: KeyDefault::Value("json"),
    doc: "`json`: one JSON object per row; `avro`: one bare Avro datum per row.",
};
/// `'<sink>.key.field'` of a Kafka sink.
pub const KEY_FIELD: KeySpec = KeySpec {
    name: "key.field",
    kind: KeyKind::List,
    default: KeyDefault::Note("the GROUP BY columns"),
    doc: "Columns forming the message key: one column's value as text, several as a JSON object.",
};
/// `'<sink>.transactional.id'` of an exactly-once Kafka sink.
pub const TRANSACTIONAL_ID: KeySpec = KeySpec {
    name: "transactional.id",
    kind: KeyKind::Text,
    default: KeyDefault::Note("`velostream-<name>`"),
    doc: "With `exactly_once`: the producer's transactional id; its marker group is \
          `<transactional.id>.marker`.",
};
/// `'<sink>.acks'`, a librdkafka property velostream sets.
pub const ACKS: KeySpec = KeySpec {
    name: "acks",
    kind: KeyKind::Client,
    default: KeyDefault::Value("all"),
    doc: "Which replicas acknowledge a message before it counts as written.",
};

/// `'<sink>.type' = 'kafka_sink'`.
pub const KAFKA_SINK: Connector = Connector {
    kind: "kafka_sink",
    label: "kafka_sink",
    role: Role::Sink,
    doc: "A topic written by a producer, JSON or Avro; see [kafka.md](kafka.md).",
    keys: &[
        type_key(KeyDefault::Required),
        TOPIC_NAME,
        TOPIC,
        BOOTSTRAP_SERVERS,
        KEY_FIELD,
        FORMAT,
        SCHEMA_FILE,
        FRAMING,
        ACKS,
        DELIVERY,
        TRANSACTIONAL_ID,
        PARTITIONS,
        CONFIG_FILE,
    ],
    librdkafka: true,
};

impl KafkaSink {
    /// Connects a producer with `client` settings (acks=all unless they say otherwise); rows
    /// are written as Avro when `avro` is set, else as JSON; in transactions of
    /// `transactional_id` when it is set.
    pub fn create(
        name: &str,
        topic: &str,
        client: &BTreeMap<String, String>,
        key_fields: &[String],
        avro: Option<&AvroFormat>,
        transactional_id: Option<&str>,
    ) -> Result<Self> {
        let mut config = ClientConfig::new();
        config.set("acks", "all");
        for (k, v) in client {
            config.set(k, v);
        }
        let transactions = match transactional_id {
            Some(id) => {
                config.set("transactional.id", id);
                Some(Transactions::new(
                    name,
                    topic,
                    &format!("{id}.marker"),
                    &config,
                )?)
            }
            None => None,
        };
        let producer = config
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| kafka_error(&format!("creating the producer of '{name}'"), e))?;
        Ok(KafkaSink {
            name: name.to_string(),
            topic: topic.to_string(),
            producer,
            key_fields: key_fields.to_vec(),
            payload: Vec::new(),
            avro: avro.map(AvroEncoder::new).transpose()?,
            written: 0,
            transactions,
        })
    }

    fn send(&mut self, key: Option<&str>, payload: Option<&[u8]>) -> Result<()> {
        let mut record: BaseRecord<'_, str, [u8], usize> =
            BaseRecord::with_opaque_to(&self.topic, self.written as usize);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.written += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The local queue is full: wait for acknowledgements (backpressure).
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(kafka_error(
                        &format!("sink '{}' sending to '{}'", self.name, self.topic),
                        e,
                    ))
                }
            }
        }
    }

    /// Each row's key: one key column's value as text, several as a JSON object.
    fn keys(&self, batch: &RecordBatch) -> Result<Option<Vec<String>>> {
        let columns: Vec<(&String, &std::sync::Arc<dyn Array>)> = self
            .key_fields
            .iter()
            .filter_map(|f| batch.column_by_name(f).map(|c| (f, c)))
            .collect();
        if columns.is_empty() {
            return Ok(None);
        }
        let mut keys = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            if let [(_, column)] = columns.as_slice() {
                keys.push(array_value_to_string(column, row)?);
                continue;
            }
            let mut object = serde_json::Map::new();
            for (name, column) in &columns {
                let value = if column.is_null(row) {
                    serde_json::Value::Null
                } else {
                    let text = array_value_to_string(column, row)?;
                    // Numbers stay numbers, as in the message value.
                    match column.data_type().is_numeric() {
                        true => {
                            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
                        }
                        false => serde_json::Value::String(text),
                    }
                };
                object.insert(name.to_string(), value);
            }
            keys.push(serde_json::Value::Object(object).to_string());
        }
        Ok(Some(keys))
    }
}

impl Sink for KafkaSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Some(t) = self.transactions.as_mut() {
            t.check_open()?;
            if t.holds() {
                t.hold(batch);
                return Ok(());
            }
        }
        self.send_batch(batch)
    }

    fn flush(&mut self) -> Result<()> {
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| {
            kafka_error(
                &format!("sink '{}' waiting for acknowledgements", self.name),
                e,
            )
        })?;
        self.check_failures()
    }

    fn progress(&mut self) -> Result<Option<SinkProgress>> {
        self.check_failures()?;
        Ok(Some(SinkProgress {
            written: self.written,
            acknowledged: self.producer.context().settled().prefix,
        }))
    }

    fn seal_epoch(&mut self, epoch: u64) -> Result<()> {
        match self.transactions.as_mut() {
            Some(t) => t.seal(epoch),
            None => Ok(()),
        }
    }

    fn commit_epoch(&mut self, epoch: u64) -> Result<()> {
        self.check_failures()?;
        let Some(t) = self.transactions.as_mut() else {
            return Ok(());
        };
        let held = t.commit(&self.producer, epoch)?;
        for batch in &held {
            self.send_batch(batch)?;
        }
        Ok(())
    }

    fn begin_epochs(&mut self, _restored: Option<u64>, _next: u64) -> Result<()> {
        match self.transactions.as_mut() {
            Some(t) => t.begin(&self.producer),
            None => Ok(()),
        }
    }

    fn recover(&mut self) -> Result<CommittedOutput> {
        match self.transactions.as_mut() {
            Some(t) => t.recover(&self.producer),
            None => Ok(CommittedOutput::Untracked),
        }
    }
}

impl KafkaSink {
    /// Sends one batch's rows, as tombstones for a delete batch; deletes of rows without a
    /// key (a join's pairs with an append-only row) carry `"_deleted": true` instead.
    fn send_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let keys = self.keys(batch)?;
        let key = |row: usize| keys.as_ref().map(|k| k[row].as_str());
        if is_delete(batch) && keys.is_some() {
            for row in 0..batch.num_rows() {
                self.send(key(row), None)?;
            }
            return Ok(());
        }
        let flagged;
        let batch = match is_delete(batch) {
            true if self.avro.is_some() => {
                return Err(VeloError::Config(format!(
                    "topic '{}': a delete of a row without a message key cannot be written as \
                     Avro; write JSON, or key the output",
                    self.topic
                )))
            }
            true => {
                flagged = with_deleted_flag(batch)?;
                &flagged
            }
            false => batch,
        };
        if let Some(encoder) = &mut self.avro {
            let rows = encoder.encode(batch)?;
            for (row, datum) in rows.iter().enumerate() {
                self.send(key(row), Some(&datum))?;
            }
            return Ok(());
        }
        let mut payload = std::mem::take(&mut self.payload);
        payload.clear();
        crate::connectors::json_lines::encode(batch, &mut payload)?;
        let mut start = 0;
        let mut row = 0;
        for (i, byte) in payload.iter().enumerate() {
            if *byte == b'\n' {
                self.send(key(row), Some(&payload[start..i]))?;
                start = i + 1;
                row += 1;
            }
        }
        self.payload = payload;
        Ok(())
    }

    /// Fails if librdkafka gave up on any message.
    fn check_failures(&self) -> Result<()> {
        let context = self.producer.context();
        let failed = context.failed.load(Ordering::SeqCst);
        if failed > 0 {
            let reason = context
                .first_error
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(VeloError::Execution(format!(
                "Kafka sink '{}': {failed} message(s) could not be delivered to '{}': {reason}",
                self.name, self.topic
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Settled;

    #[test]
    fn out_of_order_acknowledgements_settle_a_prefix() {
        let mut settled = Settled::default();
        settled.settle(1);
        settled.settle(3);
        assert_eq!(settled.prefix, 0, "message 0 is not acknowledged yet");
        settled.settle(0);
        assert_eq!(settled.prefix, 2);
        settled.settle(2);
        assert_eq!(settled.prefix, 4);
        assert!(settled.ahead.is_empty());
    }
}
