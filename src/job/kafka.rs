//! At-least-once for Kafka sources: a source offset is committed only once every output
//! derived from the records before it has been acknowledged by the sink.
//!
//! The reading side follows every batch with a checkpoint barrier and records, per barrier,
//! the next offsets. When the barrier comes out of the workers, all output of the records
//! before it has been delivered — except what open state still holds (an EMIT FINAL window not
//! yet closed); the delivery carries the latest event time of those records (tracked by the
//! router) and the earliest event time held (`held_since`). Barriers whose records are all
//! older than the state held are done. Their offsets are committed at most once per commit
//! interval, once the sink has acknowledged every output written before they were done: a
//! Kafka sink reports that as it goes (the pipeline never waits for it); other sinks are
//! flushed first.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;

use crate::connectors::kafka::KafkaSource;
use crate::connectors::{Sink, SinkProgress};
use crate::error::Result;

/// What the reading side knew when it sent a barrier.
pub struct Barrier {
    pub id: u64,
    /// Per partition, the next offset to read once this barrier's records are done.
    pub next_offsets: BTreeMap<i32, i64>,
}

/// Which barriers are done, and the offsets they free for commit.
#[derive(Default)]
struct DoneOffsets {
    /// Barriers in order; once delivered, with the latest event time of their records.
    pending: VecDeque<(Barrier, Option<Option<i64>>)>,
    /// Offsets whose records are done, not yet committed.
    ready: BTreeMap<i32, i64>,
}

impl DoneOffsets {
    fn on_barrier(&mut self, barrier: Barrier) {
        self.pending.push_back((barrier, None));
    }

    /// Barrier `id` was delivered; records older than `held_since` are done.
    fn on_checkpoint(&mut self, id: u64, held_since: Option<i64>, max_event_time: Option<i64>) {
        if let Some((_, delivered)) = self.pending.iter_mut().find(|(b, _)| b.id == id) {
            *delivered = Some(max_event_time);
        }
        // Done: delivered, and older than every record still held in open state. A barrier
        // with no offsets (sent while the source is idle) covers no records.
        while let Some((barrier, Some(latest))) = self.pending.front() {
            let done = match held_since {
                None => true,
                Some(_) if barrier.next_offsets.is_empty() => true,
                Some(held) => latest.is_some_and(|t| t < held),
            };
            if !done {
                break;
            }
            if let Some((barrier, _)) = self.pending.pop_front() {
                merge(&mut self.ready, barrier.next_offsets);
            }
        }
    }
}

/// Commits a source's offsets as barriers complete.
pub struct OffsetCommitter {
    consumer: Arc<BaseConsumer>,
    topic: String,
    barriers: Receiver<Barrier>,
    done: DoneOffsets,
    /// Done offsets waiting for the sink to acknowledge the rows written before they were
    /// done (that many rows, then the offsets), oldest first.
    awaiting: VecDeque<(u64, BTreeMap<i32, i64>)>,
    interval: Duration,
    last_commit: Instant,
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
            done: DoneOffsets::default(),
            awaiting: VecDeque::new(),
            interval,
            last_commit: Instant::now(),
        }
    }

    /// Barrier `id` came out of every worker (`max_event_time`: the latest event time of the
    /// records since the previous barrier): mark what is done, commit when due.
    pub fn on_checkpoint(
        &mut self,
        id: u64,
        held_since: Option<i64>,
        max_event_time: Option<i64>,
        sink: Option<&mut Box<dyn Sink>>,
    ) -> Result<()> {
        self.take_barriers();
        self.done.on_checkpoint(id, held_since, max_event_time);
        if self.last_commit.elapsed() < self.interval {
            return Ok(());
        }
        let Some(sink) = sink else {
            return self.commit(None);
        };
        match sink.progress()? {
            Some(progress) => self.commit_acknowledged(progress),
            None => self.commit(Some(sink)),
        }
    }

    /// Commits the done offsets whose outputs `progress` says are acknowledged; the newly
    /// done ones wait for the rows written so far.
    fn commit_acknowledged(&mut self, progress: SinkProgress) -> Result<()> {
        if !self.done.ready.is_empty() {
            let ready = std::mem::take(&mut self.done.ready);
            self.awaiting.push_back((progress.written, ready));
        }
        let mut offsets = BTreeMap::new();
        while let Some((written, _)) = self.awaiting.front() {
            if *written > progress.acknowledged {
                break;
            }
            if let Some((_, ready)) = self.awaiting.pop_front() {
                merge(&mut offsets, ready);
            }
        }
        if offsets.is_empty() {
            return Ok(());
        }
        self.last_commit = Instant::now();
        self.commit_offsets(&offsets)
    }

    /// Before the reading side rewinds to the committed offsets: commits what is done, and
    /// forgets the barriers still pending, whose records will be read again behind new ones.
    pub fn restart(&mut self, sink: Option<&mut Box<dyn Sink>>) -> Result<()> {
        self.take_barriers();
        self.commit(sink)?;
        self.done.pending.clear();
        Ok(())
    }

    /// Flushes the sink (waiting for its acknowledgements), then commits everything done.
    pub fn commit(&mut self, sink: Option<&mut Box<dyn Sink>>) -> Result<()> {
        self.last_commit = Instant::now();
        let mut offsets = BTreeMap::new();
        for (_, ready) in self.awaiting.drain(..) {
            merge(&mut offsets, ready);
        }
        merge(&mut offsets, std::mem::take(&mut self.done.ready));
        if offsets.is_empty() {
            return Ok(());
        }
        if let Some(sink) = sink {
            sink.flush()?;
        }
        self.commit_offsets(&offsets)
    }

    /// The barriers the reading side has sent since the last call.
    fn take_barriers(&mut self) {
        for barrier in self.barriers.try_iter() {
            self.done.on_barrier(barrier);
        }
    }

    fn commit_offsets(&self, offsets: &BTreeMap<i32, i64>) -> Result<()> {
        KafkaSource::commit(&self.consumer, &self.topic, offsets)?;
        tracing::debug!(topic = %self.topic, ?offsets, "committed");
        Ok(())
    }
}

/// Adds `more` offsets to `offsets`, keeping the later offset of a partition in both.
fn merge(offsets: &mut BTreeMap<i32, i64>, more: BTreeMap<i32, i64>) {
    for (partition, offset) in more {
        let next = offsets.entry(partition).or_insert(offset);
        *next = (*next).max(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn barrier(id: u64, partition: i32, next: i64) -> Barrier {
        Barrier {
            id,
            next_offsets: BTreeMap::from([(partition, next)]),
        }
    }

    #[test]
    fn stateless_barriers_are_done_once_delivered() {
        let mut done = DoneOffsets::default();
        done.on_barrier(barrier(1, 0, 10));
        done.on_barrier(barrier(2, 1, 7));
        done.on_checkpoint(1, None, None);
        assert_eq!(
            done.ready,
            BTreeMap::from([(0, 10)]),
            "barrier 2 not delivered yet"
        );
        done.on_checkpoint(2, None, None);
        assert_eq!(done.ready, BTreeMap::from([(0, 10), (1, 7)]));
    }

    #[test]
    fn records_in_open_windows_hold_their_offsets_back() {
        let mut done = DoneOffsets::default();
        done.on_barrier(barrier(1, 0, 10));
        done.on_barrier(barrier(2, 0, 20));
        // Barrier 1's records reach event time 59s; a window from 0s is still open.
        done.on_checkpoint(1, Some(0), Some(59_000));
        assert!(done.ready.is_empty(), "its window has not been emitted");
        // The watermark closed [0s, 60s); the oldest open window now starts at 60s.
        done.on_checkpoint(2, Some(60_000), Some(119_000));
        assert_eq!(
            done.ready,
            BTreeMap::from([(0, 10)]),
            "only barrier 1 is done"
        );
        // Nothing held any more (e.g. every window emitted).
        done.on_checkpoint(2, None, Some(119_000));
        assert_eq!(done.ready, BTreeMap::from([(0, 20)]));
    }

    #[test]
    fn an_idle_barrier_commits_what_is_done_before_it_and_never_blocks() {
        let mut done = DoneOffsets::default();
        done.on_barrier(barrier(1, 0, 10));
        done.on_barrier(Barrier {
            id: 2,
            next_offsets: BTreeMap::new(),
        });
        done.on_barrier(barrier(3, 0, 20));
        done.on_checkpoint(1, Some(60_000), Some(59_000));
        // The idle barrier saw no records: done though a window is open.
        done.on_checkpoint(2, Some(60_000), None);
        assert_eq!(done.ready, BTreeMap::from([(0, 10)]));
        done.on_checkpoint(3, Some(60_000), Some(70_000));
        assert_eq!(done.ready, BTreeMap::from([(0, 10)]), "barrier 3 is held");
        assert_eq!(done.pending.len(), 1);
    }

    #[test]
    fn a_query_holding_everything_commits_nothing() {
        let mut done = DoneOffsets::default();
        done.on_barrier(barrier(1, 0, 10));
        // GROUP BY ... EMIT FINAL without a window holds every record until end of input.
        done.on_checkpoint(1, Some(i64::MIN), None);
        assert!(done.ready.is_empty());
    }
}
