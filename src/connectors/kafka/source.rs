//! `KafkaSource`: a consumer-group member reading one topic in JSON or Avro batches. Offsets are never
//! committed automatically: the job commits them once the outputs derived from the records
//! are acknowledged by the sink (at-least-once end to end).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use base64::Engine;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::config::{
    client_config, topic_of, KafkaDefaults, BOOTSTRAP_SERVERS, PARTITIONS, TOPIC, TOPIC_NAME,
};
use super::start_positions::{Admit, StartPositions};
use crate::connectors::avro::{AvroDecoder, AvroFormat, FRAMING, SCHEMA_FILE};
use crate::connectors::decode::{decode_in_runs, decode_json};
use crate::connectors::{check_key_fields, BadRecord};
use crate::error::{Result, VeloError};
use crate::exec::event_time::{to_epoch_millis, EventTimeFormat};
use crate::exec::input::now_millis;
use crate::partition::PartitionRun;
use crate::sql::key_spec::{
    type_key, Connector, KeyDefault, KeyKind, KeySpec, Keys, Role, CONFIG_FILE,
};
use crate::sql::planner::SYSTEM_COLUMNS;
use crate::sql::window::{
    EVENT_TIME_FORMAT, WATERMARK_IDLE_TIMEOUT, WATERMARK_MAX_OUT_OF_ORDERNESS,
};
use crate::sql::Properties;

/// Records per batch when `'<src>.batch.size'` is not set.
pub const DEFAULT_BATCH_SIZE: usize = 8192;

/// Settings of a Kafka source.
#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    pub name: String,
    pub topic: String,
    /// The consumer's librdkafka settings (group, brokers, offsets reset, ...).
    pub client: ClientConfig,
    /// The payload columns: declared, or those of the Avro schema.
    pub schema: SchemaRef,
    /// The Avro schema and framing of the payloads; None: JSON.
    pub avro: Option<AvroFormat>,
    pub event_time_field: Option<String>,
    pub event_time_format: Option<EventTimeFormat>,
    /// Where payloads that do not decode are sent, when set.
    pub dlq_topic: Option<String>,
    pub batch_size: usize,
    /// Threads that decode a polled batch at once (`'<src>.decode.threads'`).
    pub decode_threads: usize,
    /// How often done offsets are committed (`'<src>.commit.interval'`, default 1s).
    pub commit_interval: Duration,
    /// The columns the message key is made of (`'<src>.key.field'`): the producer's
    /// partitioner keeps equal values in one partition, so the topic is partitioned by them.
    pub key_fields: Vec<String>,
}

/// `'<src>.format'`.
pub const FORMAT: KeySpec = KeySpec {
    name: "format",
    kind: KeyKind::Choice(&["json", "avro"]),
    default: KeyDefault::Value("json"),
    doc: "`json`: one JSON object per message; `avro`: one Avro datum per message \
          (see [kafka.md](kafka.md)).",
};
/// `'<src>.batch.size'`.
pub const BATCH_SIZE: KeySpec = KeySpec {
    name: "batch.size",
    kind: KeyKind::Integer { min: 1 },
    default: KeyDefault::Value("8192"),
    doc: "Messages per batch at most; watermarks advance once per batch.",
};
/// `'<src>.decode.threads'`.
pub const DECODE_THREADS: KeySpec = KeySpec {
    name: "decode.threads",
    kind: KeyKind::Integer { min: 1 },
    default: KeyDefault::Note("one per core"),
    doc: "Threads that decode a polled batch at once, each a run of its messages (of at least \
          1024); the runs are joined back in poll order, so the output is the same for any count.",
};
/// `'<src>.key.field'`.
pub const KEY_FIELD: KeySpec = KeySpec {
    name: "key.field",
    kind: KeyKind::List,
    default: KeyDefault::None,
    doc: "Columns the message key is made of (as a sink's `key.field` writes it): equal values \
          sit in one partition, so a query keyed by them is fed partition by partition to its \
          workers, without re-hashing \
          ([partitions.md](partitions.md#sources-already-partitioned-by-the-key)).",
};
/// `'<src>.event.time.field'`.
pub const EVENT_TIME_FIELD: KeySpec = KeySpec {
    name: "event.time.field",
    kind: KeyKind::Text,
    default: KeyDefault::Note("the message timestamp"),
    doc: "The column holding each record's event time (`_event_time`).",
};
/// `'<src>.dlq.topic'`.
pub const DLQ_TOPIC: KeySpec = KeySpec {
    name: "dlq.topic",
    kind: KeyKind::Text,
    default: KeyDefault::None,
    doc: "Where messages that do not decode go, as \
          `{source, topic, partition, offset, reason, payload}`.",
};
/// `'<src>.commit.interval'`.
pub const COMMIT_INTERVAL: KeySpec = KeySpec {
    name: "commit.interval",
    kind: KeyKind::Duration { positive: false },
    default: KeyDefault::Value("1s"),
    doc: "How often done offsets are committed (`0s`: after every batch); an idle source still \
          commits within this interval.",
};
/// `'<src>.group.id'`, a librdkafka property velostream extends.
pub const GROUP_ID: KeySpec = KeySpec {
    name: "group.id",
    kind: KeyKind::Client,
    default: KeyDefault::Value("velostream"),
    doc: "Consumer group prefix: each job consumes as group `<group.id>-<job>`, so two jobs over \
          one topic each see every record, while instances of the same app split the partitions.",
};
/// `'<src>.auto.offset.reset'`, a librdkafka property velostream sets.
pub const AUTO_OFFSET_RESET: KeySpec = KeySpec {
    name: "auto.offset.reset",
    kind: KeyKind::Client,
    default: KeyDefault::Value("earliest"),
    doc: "Where a group with no committed offset starts.",
};
/// `'<src>.fetch.queue.backoff.ms'`, a librdkafka property velostream sets.
pub const FETCH_QUEUE_BACKOFF_MS: KeySpec = KeySpec {
    name: "fetch.queue.backoff.ms",
    kind: KeyKind::Client,
    default: KeyDefault::Value("10"),
    doc: "librdkafka's pause before refetching when its local queue is full: its own default \
          (1s) stalls a consumer that drains a batch at a time.",
};

/// `'<src>.type' = 'kafka_source'`: a consumer-group member reading one topic.
pub const KAFKA_SOURCE: Connector = Connector {
    kind: "kafka_source",
    label: "kafka_source",
    role: Role::Source,
    doc: "A topic read by a consumer group, JSON or Avro; see [kafka.md](kafka.md).",
    keys: &[
        type_key(KeyDefault::Required),
        TOPIC_NAME,
        TOPIC,
        BOOTSTRAP_SERVERS,
        GROUP_ID,
        AUTO_OFFSET_RESET,
        FORMAT,
        SCHEMA_FILE,
        FRAMING,
        EVENT_TIME_FIELD,
        EVENT_TIME_FORMAT,
        WATERMARK_MAX_OUT_OF_ORDERNESS,
        WATERMARK_IDLE_TIMEOUT,
        BATCH_SIZE,
        DECODE_THREADS,
        KEY_FIELD,
        COMMIT_INTERVAL,
        FETCH_QUEUE_BACKOFF_MS,
        DLQ_TOPIC,
        PARTITIONS,
        CONFIG_FILE,
    ],
    librdkafka: true,
};

impl KafkaSourceConfig {
    /// Reads `'<name>.*'` keys. JSON payload columns must be declared (`CREATE STREAM name
    /// (cols) WITH (...)`), since a topic may be empty when the job starts; Avro ones default
    /// to the schema file's fields.
    pub fn from_properties(
        name: &str,
        props: &Properties,
        schema: Option<SchemaRef>,
        defaults: &KafkaDefaults,
    ) -> Result<Self> {
        let keys = Keys::of(props, name, &KAFKA_SOURCE);
        let avro = match keys.choice(&FORMAT)? {
            Some("avro") => Some(AvroFormat::from_properties(&keys, true)?),
            _ => None,
        };
        let schema = match (schema, &avro) {
            (Some(schema), _) => schema,
            (None, Some(avro)) => avro
                .arrow_schema()
                .map_err(|e| VeloError::Config(format!("'{name}.avro.schema.file': {e}")))?,
            (None, None) => {
                return Err(VeloError::Config(format!(
                    "Kafka source '{name}' needs its columns declared: \
                     CREATE STREAM {name} (col TYPE, ...) WITH ('{name}.type' = 'kafka_source', ...)"
                )))
            }
        };
        let client = client_config(
            name,
            props,
            &KAFKA_SOURCE,
            defaults,
            &[
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
            ],
        )?;
        let key_fields = keys.list(&KEY_FIELD);
        check_key_fields(name, &key_fields, &schema)?;
        let commit_ms = keys.duration_ms(&COMMIT_INTERVAL)?.unwrap_or(1_000);
        Ok(KafkaSourceConfig {
            key_fields,
            name: name.to_string(),
            topic: topic_of(name, props),
            client,
            schema,
            avro,
            event_time_field: keys.text(&EVENT_TIME_FIELD),
            event_time_format: EventTimeFormat::parse(keys.text(&EVENT_TIME_FORMAT).as_deref()),
            dlq_topic: keys.text(&DLQ_TOPIC),
            batch_size: keys.count(&BATCH_SIZE)?.unwrap_or(DEFAULT_BATCH_SIZE),
            decode_threads: keys
                .count(&DECODE_THREADS)?
                .unwrap_or_else(crate::partition::cores),
            commit_interval: Duration::from_millis(commit_ms.max(0) as u64),
        })
    }
}

/// A polled batch: the decoded records, the ones that failed, and the next offset to read per
/// partition once this batch is done.
pub struct KafkaBatch {
    pub batch: RecordBatch,
    /// The batch's rows in runs from one partition each, in order.
    pub runs: Vec<PartitionRun>,
    pub bad_records: Vec<BadRecord>,
    pub next_offsets: BTreeMap<i32, i64>,
    /// Tombstones (messages without a value) read while reading a table: each key deleted,
    /// after how many of the batch's rows. Empty for a stream.
    pub tombstones: Vec<(usize, Option<String>)>,
}

/// How long a seek to a checkpoint's offset waits for the consumer to take it.
const SEEK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a rewind waits for the group's committed offsets.
const REWIND_TIMEOUT: Duration = Duration::from_secs(10);

/// A change of the partitions assigned to this consumer.
pub struct AssignmentChange {
    /// Every partition assigned now.
    pub assigned: Vec<i32>,
    /// The partitions assigned before and not any more.
    pub revoked: Vec<i32>,
}

/// The fewest messages a decode thread takes from a batch: fewer cost more to hand over than
/// they take to decode.
const MIN_DECODE_RUN: usize = 1024;

/// Decodes one run of a batch's payloads.
enum PayloadDecoder {
    Json,
    /// Avro, with a decoder of its own (it holds partial rows while decoding).
    Avro(Box<AvroDecoder>),
}

/// One message's metadata, kept while its payload waits in the decode buffer.
struct Meta {
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<String>,
    /// The headers as a JSON object (only when the query reads `_headers`).
    headers: Option<String>,
}

/// Reads a topic as a member of the source's consumer group.
pub struct KafkaSource {
    pub(super) config: KafkaSourceConfig,
    consumer: Arc<BaseConsumer>,
    dlq: Option<ThreadedProducer<DefaultProducerContext>>,
    /// Payload columns the query reads (plus the event-time field).
    projection: SchemaRef,
    /// One per decode thread, each decoding its run of a batch into `projection`.
    decoders: Vec<PayloadDecoder>,
    /// System columns the query reads, appended after the payload columns.
    system_columns: Vec<String>,
    buffer: Vec<u8>,
    ends: Vec<usize>,
    metas: Vec<Meta>,
    /// The partitions last reported assigned.
    assigned: Vec<i32>,
    /// The query reads `_headers`.
    wants_headers: bool,
    /// A checkpoint's positions: each record before its partition's is dropped (a seek
    /// fails until the partition is assigned and fetching, and may not hold).
    start_at: StartPositions,
    /// Reading a table: the tombstones of the batch being read, with the message count before
    /// each (None: a stream, whose tombstones carry no record).
    pub(super) tombstones: Option<Vec<(usize, Option<String>)>>,
}

impl KafkaSource {
    /// Connects and subscribes; nothing is read yet.
    pub fn open(config: KafkaSourceConfig) -> Result<Self> {
        let source = Self::connect(config)?;
        source
            .consumer
            .subscribe(&[source.config.topic.as_str()])
            .map_err(|e| kafka_error(&format!("subscribing to '{}'", source.config.topic), e))?;
        Ok(source)
    }

    /// Connects without joining the consumer group (a table assigns itself every partition).
    pub(super) fn connect(config: KafkaSourceConfig) -> Result<Self> {
        let consumer: BaseConsumer = config
            .client
            .create()
            .map_err(|e| kafka_error(&format!("creating the consumer of '{}'", config.name), e))?;
        let dlq = match &config.dlq_topic {
            Some(_) => {
                let mut producer_config = ClientConfig::new();
                if let Some(b) = config.client.get("bootstrap.servers") {
                    producer_config.set("bootstrap.servers", b);
                }
                Some(producer_config.create().map_err(|e| {
                    kafka_error(
                        &format!("creating the dead-letter producer of '{}'", config.name),
                        e,
                    )
                })?)
            }
            None => None,
        };
        let projection = Arc::clone(&config.schema);
        // More decoders than a batch has runs would never decode anything.
        let threads = config
            .decode_threads
            .min(config.batch_size / MIN_DECODE_RUN)
            .max(1);
        let decoders = (0..threads)
            .map(|_| match &config.avro {
                Some(format) => Ok(PayloadDecoder::Avro(Box::new(AvroDecoder::new(
                    format,
                    Arc::clone(&projection),
                    config.batch_size,
                )?))),
                None => Ok(PayloadDecoder::Json),
            })
            .collect::<Result<_>>()?;
        Ok(KafkaSource {
            config,
            consumer: Arc::new(consumer),
            dlq,
            projection,
            decoders,
            system_columns: SYSTEM_COLUMNS.iter().map(|(n, _)| n.to_string()).collect(),
            buffer: Vec::new(),
            ends: Vec::new(),
            metas: Vec::new(),
            assigned: Vec::new(),
            wants_headers: true,
            start_at: StartPositions::default(),
            tombstones: None,
        })
    }

    /// The partitions assigned to this consumer, and those it lost, when they changed since
    /// the last call.
    pub fn assignment_if_changed(&mut self) -> Result<Option<AssignmentChange>> {
        let list = self.consumer.assignment().map_err(|e| {
            kafka_error(
                &format!("reading the assignment of '{}'", self.config.name),
                e,
            )
        })?;
        let mut partitions: Vec<i32> = list
            .elements_for_topic(&self.config.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        partitions.sort_unstable();
        if partitions == self.assigned {
            return Ok(None);
        }
        let revoked = self
            .assigned
            .iter()
            .filter(|p| !partitions.contains(p))
            .copied()
            .collect();
        self.assigned = partitions.clone();
        Ok(Some(AssignmentChange {
            assigned: partitions,
            revoked,
        }))
    }

    /// Moves every assigned partition back to its committed offset (or, with none committed,
    /// to where `auto.offset.reset` says), so records already read are read again; the next
    /// [`Self::assignment_if_changed`] reports the whole assignment.
    pub fn rewind_to_committed(&mut self) -> Result<()> {
        let context = format!("rewinding '{}' to its committed offsets", self.config.name);
        let committed = self
            .consumer
            .committed(REWIND_TIMEOUT)
            .map_err(|e| kafka_error(&context, e))?;
        let latest = matches!(
            self.config.client.get("auto.offset.reset"),
            Some("latest" | "largest" | "end")
        );
        for element in committed.elements_for_topic(&self.config.topic) {
            let offset = match element.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ if latest => Offset::End,
                _ => Offset::Beginning,
            };
            self.consumer
                .seek(
                    &self.config.topic,
                    element.partition(),
                    offset,
                    REWIND_TIMEOUT,
                )
                .map_err(|e| kafka_error(&context, e))?;
        }
        self.assigned.clear();
        Ok(())
    }

    /// Reads each partition that `positions` names from that next offset (a checkpoint's)
    /// instead of the group's committed one, once it is assigned; until then, and whenever
    /// the consumer hands out a record from before it, its records are dropped.
    pub fn start_at(&mut self, positions: BTreeMap<i32, i64>) {
        self.start_at = StartPositions::new(positions);
    }

    /// Seeks the assigned partitions still waiting for their start position; a partition
    /// not fetching yet refuses, and is tried again on the next poll.
    fn apply_start_positions(&mut self) -> Result<()> {
        let list = self.consumer.assignment().map_err(|e| {
            kafka_error(
                &format!("reading the assignment of '{}'", self.config.name),
                e,
            )
        })?;
        let assigned: Vec<i32> = list
            .elements_for_topic(&self.config.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let (consumer, topic) = (&self.consumer, &self.config.topic);
        for (partition, offset) in self.start_at.seeks() {
            if !assigned.contains(&partition) {
                continue;
            }
            // A timeout makes the seek synchronous: once it returns, no record fetched
            // before it is handed out (a zero timeout would seek in the background).
            if consumer
                .seek(topic, partition, Offset::Offset(offset), SEEK_TIMEOUT)
                .is_ok()
            {
                tracing::info!(%topic, partition, offset, "reading from the checkpoint's offset");
                self.start_at.sought(partition);
            }
        }
        Ok(())
    }

    /// Each assigned partition's consumer lag: the records between the position this consumer
    /// reads from and the partition's end as librdkafka last heard it from a fetch (no request
    /// to the broker). A partition appears once a record has been read from it.
    pub fn consumer_lag(&self) -> Result<Vec<(i32, i64)>> {
        let positions = self.consumer.position().map_err(|e| {
            kafka_error(
                &format!("reading the positions of '{}'", self.config.name),
                e,
            )
        })?;
        let topic = std::ffi::CString::new(self.config.topic.as_str()).map_err(|_| {
            VeloError::Config(format!("the topic of '{}' holds a NUL", self.config.name))
        })?;
        let mut lags = Vec::new();
        for element in positions.elements_for_topic(&self.config.topic) {
            let Offset::Offset(position) = element.offset() else {
                continue;
            };
            let (mut low, mut high) = (-1i64, -1i64);
            // SAFETY: the handle lives as long as `self.consumer`, the topic is a C string
            // for the call's length, and librdkafka only writes the two offsets.
            let err = unsafe {
                rdkafka::bindings::rd_kafka_get_watermark_offsets(
                    self.consumer.client().native_ptr(),
                    topic.as_ptr(),
                    element.partition(),
                    &mut low,
                    &mut high,
                )
            };
            if err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                && high >= 0
            {
                lags.push((element.partition(), high.saturating_sub(position).max(0)));
            }
        }
        Ok(lags)
    }

    /// The topic it reads.
    pub fn topic(&self) -> &str {
        &self.config.topic
    }

    /// The consumer, for committing offsets from the output side.
    pub fn consumer(&self) -> Arc<BaseConsumer> {
        Arc::clone(&self.consumer)
    }

    /// Decodes only the payload columns and system columns `wanted` names.
    pub fn set_projection(&mut self, wanted: &Schema) {
        let mut fields: Vec<Field> = self
            .config
            .schema
            .fields()
            .iter()
            .filter(|f| {
                wanted.index_of(f.name()).is_ok()
                    || self.config.event_time_field.as_deref() == Some(f.name().as_str())
            })
            .map(|f| f.as_ref().clone())
            .collect();
        if fields.is_empty() {
            // Keep one column so the decoder still counts records.
            if let Some(f) = self.config.schema.fields().first() {
                fields.push(f.as_ref().clone());
            }
        }
        self.projection = Arc::new(Schema::new(fields));
        for decoder in &mut self.decoders {
            if let PayloadDecoder::Avro(avro) = decoder {
                avro.set_target(Arc::clone(&self.projection));
            }
        }
        self.system_columns = SYSTEM_COLUMNS
            .iter()
            .map(|(n, _)| n.to_string())
            .filter(|n| wanted.index_of(n).is_ok())
            .collect();
        self.wants_headers = self.system_columns.iter().any(|c| c == "_headers");
    }

    /// Waits up to `wait` for a first message, then takes what is ready, up to a batch.
    /// None: nothing arrived (the source is idle).
    pub fn next_batch(&mut self, wait: Duration) -> Result<Option<KafkaBatch>> {
        self.buffer.clear();
        self.ends.clear();
        self.metas.clear();
        let mut next_offsets = BTreeMap::new();
        if self.start_at.seeking() {
            self.apply_start_positions()?;
        }
        let deadline = Instant::now() + wait;
        while self.metas.len() < self.config.batch_size {
            let timeout = if self.metas.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            let message = match self.consumer.poll(timeout) {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::warn!(source = %self.config.name, error = %e, "Kafka consumer error");
                    if Instant::now() >= deadline {
                        break;
                    }
                    continue;
                }
                None => break,
            };
            match self.start_at.admit(message.partition(), message.offset()) {
                Admit::Take => {}
                Admit::Wait => continue,
                Admit::Behind => {
                    // Counted in the restored state already.
                    tracing::warn!(
                        topic = %self.config.topic,
                        partition = message.partition(),
                        offset = message.offset(),
                        "a record from before the checkpoint's offset after the seek: dropped, seeking again"
                    );
                    continue;
                }
            }
            next_offsets.insert(message.partition(), message.offset() + 1);
            if let (Some(tombstones), None) = (&mut self.tombstones, message.payload()) {
                let key = message
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned());
                tombstones.push((self.metas.len(), key));
            }
            let headers = self.wants_headers.then(|| headers_json(&message));
            let json = !self.is_avro();
            push_message(
                &mut self.buffer,
                &mut self.ends,
                &mut self.metas,
                &message,
                headers,
                json,
            );
        }
        if next_offsets.is_empty() {
            return Ok(None);
        }
        let (batch, kept, bad_records) = self.decode()?;
        let batch = self.add_system_columns(batch, &kept)?;
        // A tombstone's place among the rows that decoded.
        let tombstones = match &mut self.tombstones {
            Some(t) => t
                .drain(..)
                .map(|(at, key)| (kept.partition_point(|&k| k < at), key))
                .collect(),
            None => Vec::new(),
        };
        let mut runs: Vec<PartitionRun> = Vec::new();
        for &i in &kept {
            let partition = self.metas[i].partition;
            match runs.last_mut() {
                Some(run) if run.partition == partition => run.rows += 1,
                _ => runs.push(PartitionRun { partition, rows: 1 }),
            }
        }
        Ok(Some(KafkaBatch {
            batch,
            runs,
            bad_records,
            next_offsets,
            tombstones,
        }))
    }

    /// Commits `next_offsets` (partition → next offset to read) for the group. A commit the
    /// group refuses (the partition moved to another member in a rebalance) is logged, not an
    /// error: the new owner reads those records again, so nothing is lost.
    pub fn commit(
        consumer: &BaseConsumer,
        topic: &str,
        next_offsets: &BTreeMap<i32, i64>,
    ) -> Result<()> {
        if next_offsets.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in next_offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .map_err(|e| kafka_error("building the offsets to commit", e))?;
        }
        if let Err(e) = consumer.commit(&list, CommitMode::Sync) {
            tracing::warn!(%topic, error = %e, "offset commit refused; the records will be read again");
        }
        Ok(())
    }

    /// Decodes the buffered payloads, in runs on the decode threads at once; a run that fails
    /// is decoded one by one to find the bad ones.
    fn decode(&mut self) -> Result<(RecordBatch, Vec<usize>, Vec<BadRecord>)> {
        let projection = &self.projection;
        let not_one_record = match self.is_avro() {
            true => "not one Avro record",
            false => "not a JSON object",
        };
        let decoded = decode_in_runs(
            projection,
            &self.buffer,
            &self.ends,
            not_one_record,
            &mut self.decoders,
            MIN_DECODE_RUN,
            |decoder, data, ends| match decoder {
                PayloadDecoder::Avro(avro) => avro.decode(data, ends),
                PayloadDecoder::Json => decode_json(projection, data, ends.len()),
            },
        )?;
        let mut bad = Vec::with_capacity(decoded.failed.len());
        for (i, reason) in decoded.failed {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            let payload = &self.buffer[start..self.ends[i]];
            let meta = &self.metas[i];
            let location = format!(
                "topic {} partition {} offset {}",
                self.config.topic, meta.partition, meta.offset
            );
            tracing::warn!(source = %self.config.name, %location, %reason, "skipping bad message");
            self.send_to_dlq(meta, &reason, payload)?;
            bad.push(BadRecord {
                location,
                reason,
                raw: String::from_utf8_lossy(payload).trim_end().to_string(),
            });
        }
        Ok((decoded.batch, decoded.kept, bad))
    }

    fn send_to_dlq(&self, meta: &Meta, reason: &str, payload: &[u8]) -> Result<()> {
        let (Some(producer), Some(topic)) = (&self.dlq, &self.config.dlq_topic) else {
            return Ok(());
        };
        let mut envelope = serde_json::json!({
            "source": self.config.name,
            "topic": self.config.topic,
            "partition": meta.partition,
            "offset": meta.offset,
            "reason": reason,
        });
        // A binary (Avro) payload travels as base64, so not one byte of it is lost.
        let (field, text) = match self.is_avro() {
            true => (
                "payload_base64",
                base64::engine::general_purpose::STANDARD.encode(payload),
            ),
            false => (
                "payload",
                String::from_utf8_lossy(payload).trim_end().to_string(),
            ),
        };
        envelope[field] = text.into();
        let envelope = envelope.to_string();
        let mut record = BaseRecord::to(topic).payload(&envelope);
        if let Some(k) = &meta.key {
            record = record.key(k.as_str());
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    return Err(kafka_error(
                        &format!("sending to dead-letter topic '{topic}'"),
                        e,
                    ))
                }
            }
        }
        // A dead letter must not be lost: wait for it before the offset can be committed.
        producer
            .flush(Duration::from_secs(30))
            .map_err(|e| kafka_error(&format!("flushing dead-letter topic '{topic}'"), e))
    }

    fn is_avro(&self) -> bool {
        matches!(self.decoders.first(), Some(PayloadDecoder::Avro(_)))
    }

    fn add_system_columns(&self, batch: RecordBatch, kept: &[usize]) -> Result<RecordBatch> {
        if self.system_columns.is_empty() {
            return Ok(batch);
        }
        let now = now_millis();
        let metas: Vec<&Meta> = kept.iter().map(|&i| &self.metas[i]).collect();
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = batch.columns().to_vec();
        for name in &self.system_columns {
            let data_type = SYSTEM_COLUMNS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .unwrap_or(DataType::Utf8);
            let timestamps = || -> Int64Array {
                metas
                    .iter()
                    .map(|m| Some(m.timestamp.unwrap_or(now)))
                    .collect()
            };
            let column: ArrayRef = match name.as_str() {
                "_offset" => Arc::new(Int64Array::from_iter_values(metas.iter().map(|m| m.offset))),
                "_partition" => Arc::new(Int32Array::from_iter_values(
                    metas.iter().map(|m| m.partition),
                )),
                "_topic" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    self.config.topic.as_str(),
                    metas.len(),
                ))),
                "_key" => Arc::new(
                    metas
                        .iter()
                        .map(|m| m.key.as_deref())
                        .collect::<StringArray>(),
                ),
                "_headers" => Arc::new(
                    metas
                        .iter()
                        .map(|m| m.headers.as_deref())
                        .collect::<StringArray>(),
                ),
                "_timestamp" => Arc::new(timestamps()),
                "_event_time" => match &self.config.event_time_field {
                    Some(field) => {
                        let array = batch.column_by_name(field).ok_or_else(|| {
                            VeloError::Config(format!(
                                "event-time field '{field}' is not a column of source '{}'",
                                self.config.name
                            ))
                        })?;
                        let millis =
                            to_epoch_millis(array, self.config.event_time_format.as_ref())?;
                        let fallback = timestamps();
                        Arc::new(
                            millis
                                .iter()
                                .zip(fallback.values())
                                .map(|(v, t)| Some(v.unwrap_or(*t)))
                                .collect::<Int64Array>(),
                        )
                    }
                    None => Arc::new(timestamps()),
                },
                _ => arrow::array::new_null_array(&data_type, metas.len()),
            };
            fields.push(Field::new(name, column.data_type().clone(), true));
            columns.push(column);
        }
        Ok(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?)
    }
}

/// A message's headers as a JSON object of strings (a header without a value is "").
fn headers_json(message: &BorrowedMessage<'_>) -> String {
    let mut object = serde_json::Map::new();
    if let Some(headers) = message.headers() {
        for header in headers.iter() {
            let value = header
                .value
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            object.insert(header.key.to_string(), serde_json::Value::String(value));
        }
    }
    serde_json::Value::Object(object).to_string()
}

fn push_message(
    buffer: &mut Vec<u8>,
    ends: &mut Vec<usize>,
    metas: &mut Vec<Meta>,
    message: &BorrowedMessage<'_>,
    headers: Option<String>,
    json: bool,
) {
    // A tombstone carries no record; an empty payload decodes as a bad record.
    let Some(payload) = message.payload() else {
        return;
    };
    buffer.extend_from_slice(payload);
    if json {
        // Keeps a payload with no closing brace from running into the next one.
        buffer.push(b'\n');
    }
    ends.push(buffer.len());
    metas.push(Meta {
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        headers,
    });
}

/// Wraps a Kafka client error with what was being done.
pub fn kafka_error(context: &str, e: rdkafka::error::KafkaError) -> VeloError {
    VeloError::Execution(format!("Kafka: {context}: {e}"))
}
