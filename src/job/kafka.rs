//! At-least-once for Kafka sources: a source offset is committed only once every output
//! derived from the records before it has been acknowledged by the sink.
//!
//! The reading side follows every batch with a checkpoint barrier and records, per barrier,
//! the next offsets and the batch's latest event time. When the barrier comes out of the
//! workers, all output of the records before it has been delivered — except what open state
//! still holds (an EMIT FINAL window not yet closed). Barriers whose records are all older
//! than the state held (`held_since`) are done; their offsets are committed after a sink
//! flush, at most once per commit interval.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;

use crate::connectors::kafka::KafkaSource;
use crate::connectors::Sink;
use crate::error::Result;

/// What the reading side knew when it sent a barrier.
pub struct Barrier {
    pub id: u64,
    /// Per partition, the next offset to read once this barrier's records are done.
    pub next_offsets: BTreeMap<i32, i64>,
    /// The latest event time of the batch before the barrier (windowed queries).
    pub max_event_time: Option<i64>,
}

/// Commits a source's offsets as barriers complete.
pub struct OffsetCommitter {
    consumer: Arc<BaseConsumer>,
    topic: String,
    barriers: Receiver<Barrier>,
    pending: VecDeque<Barrier>,
    /// Offsets whose records are done, not yet committed.
    ready: BTreeMap<i32, i64>,
    interval: Duration,
    last_commit: Instant,
    /// Commits made (for tests and logs).
    pub commits: u64,
}

impl OffsetCommitter {
    /// A committer for `topic`, fed barriers by the reading side.
    pub fn new(
        consumer: Arc<BaseConsumer>,
        topic: &str,
        barriers: Receiver<Barrier>,
        interval: Duration,
    ) -> Self {
        OffsetCommitter {
            consumer,
            topic: topic.to_string(),
            barriers,
            pending: VecDeque::new(),
            ready: BTreeMap::new(),
            interval,
            last_commit: Instant::now(),
            commits: 0,
        }
    }

    /// Barrier `id` came out of every worker: mark what is done, commit when due.
    pub fn on_checkpoint(
        &mut self,
        id: u64,
        held_since: Option<i64>,
        sink: Option<&mut Box<dyn Sink>>,
    ) -> Result<()> {
        self.pending.extend(self.barriers.try_iter());
        while let Some(front) = self.pending.front() {
            let done = front.id <= id
                && match held_since {
                    None => true,
                    Some(held) => front.max_event_time.is_some_and(|t| t < held),
                };
            if !done {
                break;
            }
            if let Some(barrier) = self.pending.pop_front() {
                for (partition, offset) in barrier.next_offsets {
                    let next = self.ready.entry(partition).or_insert(offset);
                    *next = (*next).max(offset);
                }
            }
        }
        if self.last_commit.elapsed() >= self.interval {
            self.commit(sink)?;
        }
        Ok(())
    }

    /// Flushes the sink (waiting for its acknowledgements), then commits what is done.
    pub fn commit(&mut self, sink: Option<&mut Box<dyn Sink>>) -> Result<()> {
        self.last_commit = Instant::now();
        if self.ready.is_empty() {
            return Ok(());
        }
        if let Some(sink) = sink {
            sink.flush()?;
        }
        KafkaSource::commit(&self.consumer, &self.topic, &self.ready)?;
        tracing::debug!(topic = %self.topic, offsets = ?self.ready, "committed");
        self.ready.clear();
        self.commits += 1;
        Ok(())
    }
}
