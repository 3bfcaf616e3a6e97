//! Reading a topic as a table: every partition from its start up to the end offsets it had
//! when the read began, as an upsert log keyed by the message key (`_key`), where a tombstone
//! (a message without a value) deletes its key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::StringArray;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

use super::source::{kafka_error, KafkaSource};
use crate::connectors::BadRecord;
use crate::error::{Result, VeloError};
use crate::exec::change::mark_delete;

/// A topic read to its end: the rows, and the deleted keys as delete batches of one `_key`
/// column, in log order.
pub struct TableLog {
    pub batches: Vec<RecordBatch>,
    pub bad_records: Vec<BadRecord>,
    /// Messages read, tombstones included.
    pub messages: u64,
}

impl KafkaSource {
    /// Connects to a table's topic, outside any consumer group: `read_to_end` reads it.
    pub fn open_table(config: super::KafkaSourceConfig) -> Result<Self> {
        Self::connect(config)
    }

    /// Reads the whole topic as of now, each partition from its first offset to the end
    /// offset it had when the read began; fails after `timeout`.
    pub fn read_to_end(&mut self, timeout: Duration) -> Result<TableLog> {
        let topic = self.config.topic.clone();
        let consumer = self.consumer();
        let what = |doing: &str| format!("{doing} of table topic '{topic}'");
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|e| kafka_error(&what("reading the partitions"), e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(VeloError::Config(format!(
                "table topic '{topic}' does not exist or has no partitions"
            )));
        }
        let mut ends = BTreeMap::new();
        let mut assignment = TopicPartitionList::new();
        for &p in &partitions {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, timeout)
                .map_err(|e| kafka_error(&what(&format!("reading the end of partition {p}")), e))?;
            if high > low {
                ends.insert(p, high);
            }
            assignment
                .add_partition_offset(&topic, p, Offset::Beginning)
                .map_err(|e| kafka_error(&what("assigning the partitions"), e))?;
        }
        consumer
            .assign(&assignment)
            .map_err(|e| kafka_error(&what("assigning the partitions"), e))?;
        self.tombstones = Some(Vec::new());
        let deadline = Instant::now() + timeout;
        let mut read: BTreeMap<i32, i64> = BTreeMap::new();
        let mut log = TableLog {
            batches: Vec::new(),
            bad_records: Vec::new(),
            messages: 0,
        };
        let behind = |read: &BTreeMap<i32, i64>| {
            ends.iter()
                .filter(|(p, end)| read.get(p).copied().unwrap_or(0) < **end)
                .map(|(p, end)| {
                    format!(
                        "partition {p} at {} of {end}",
                        read.get(p).copied().unwrap_or(0)
                    )
                })
                .collect::<Vec<_>>()
        };
        while !behind(&read).is_empty() {
            if Instant::now() >= deadline {
                return Err(VeloError::Execution(format!(
                    "reading table topic '{topic}' to its end took longer than {timeout:?}: {}",
                    behind(&read).join(", ")
                )));
            }
            let Some(batch) = self.next_batch(Duration::from_millis(100))? else {
                continue;
            };
            for (p, next) in &batch.next_offsets {
                let at = read.entry(*p).or_insert(0);
                log.messages += (*next - *at).max(0) as u64;
                *at = (*at).max(*next);
            }
            log.bad_records.extend(batch.bad_records);
            let mut from = 0;
            for (at, key) in batch.tombstones {
                if at > from {
                    log.batches.push(batch.batch.slice(from, at - from));
                }
                from = at;
                log.batches.push(deleted_key(key)?);
            }
            if batch.batch.num_rows() > from {
                log.batches
                    .push(batch.batch.slice(from, batch.batch.num_rows() - from));
            }
        }
        self.tombstones = None;
        Ok(log)
    }
}

/// A delete of one message key, as the upsert log reads it.
fn deleted_key(key: Option<String>) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![Field::new("_key", DataType::Utf8, true)]));
    let keys = StringArray::from(vec![key]);
    Ok(mark_delete(RecordBatch::try_new(
        schema,
        vec![Arc::new(keys)],
    )?))
}
