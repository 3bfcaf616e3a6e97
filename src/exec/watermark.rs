//! Watermarks: per input partition, the highest event time seen minus the allowed
//! out-of-orderness; a query's watermark is the minimum over its partitions, ignoring
//! partitions idle for longer than the idle timeout. Advanced once per batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int32Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

use super::snapshot::{column, state_batch, OperatorState};
use super::window::event_times;
use crate::error::Result;
use crate::metrics::PartitionTime;
use crate::sql::window::WatermarkPlan;

/// A query's event-time clock: evaluates each batch's event times and tracks the watermark.
/// The processor owns one when it runs alone; a partitioned job's router owns the only one
/// and broadcasts its watermark, so every worker closes windows on the same event time.
#[derive(Debug)]
pub struct EventClock {
    tracker: WatermarkTracker,
    plan: WatermarkPlan,
}

impl EventClock {
    /// A clock following `plan`.
    pub fn new(plan: &WatermarkPlan) -> Self {
        EventClock {
            tracker: WatermarkTracker::new(plan.max_out_of_orderness_ms, plan.idle_timeout_ms),
            plan: plan.clone(),
        }
    }

    /// Observes a batch (in the query's input schema); returns the watermark after it and the
    /// batch's latest event time.
    pub fn observe(&mut self, batch: &RecordBatch) -> Result<(Option<i64>, Option<i64>)> {
        let times = event_times(&self.plan.time_expr, batch)?;
        let partitions = self.plan.partition_column.and_then(|i| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<Int32Array>()
                .cloned()
        });
        let latest = self.tracker.observe(&times, partitions.as_ref());
        Ok((self.tracker.watermark(), latest))
    }

    /// The watermark now (idle partitions may have stopped holding it back).
    pub fn watermark(&self) -> Option<i64> {
        self.tracker.watermark()
    }

    /// Declares the input partitions (see `WatermarkTracker::set_partitions`).
    pub fn set_partitions(&mut self, partitions: &[i32]) {
        self.tracker.set_partitions(partitions);
    }

    /// Each input partition that has sent an event time: its newest and its own watermark.
    pub fn partition_times(&self) -> Vec<(i32, PartitionTime)> {
        let disorder = self.tracker.max_out_of_orderness_ms;
        let mut times: Vec<(i32, PartitionTime)> = self
            .tracker
            .partitions
            .iter()
            .filter(|(_, (newest, _))| *newest > i64::MIN)
            .map(|(p, (newest, _))| {
                let time = PartitionTime {
                    newest_ms: *newest,
                    watermark_ms: newest.saturating_sub(disorder),
                };
                (*p, time)
            })
            .collect();
        times.sort_by_key(|(p, _)| *p);
        times
    }

    /// The highest event time of every input partition, for a checkpoint.
    pub fn snapshot(&self) -> Result<OperatorState> {
        let mut seen: Vec<(i32, i64)> = self
            .tracker
            .partitions
            .iter()
            .map(|(p, (max, _))| (*p, *max))
            .collect();
        seen.sort_unstable();
        let schema = Arc::new(Schema::new(vec![
            Field::new("partition", DataType::Int32, false),
            Field::new("max_event_time", DataType::Int64, false),
        ]));
        let n = seen.len();
        let rows = state_batch(
            schema,
            vec![
                Arc::new(Int32Array::from_iter_values(seen.iter().map(|(p, _)| *p))),
                Arc::new(Int64Array::from_iter_values(seen.iter().map(|(_, t)| *t))),
            ],
            n,
        )?;
        Ok(OperatorState {
            rows,
            scalars: BTreeMap::new(),
        })
    }

    /// Takes back the partitions' event times of a checkpoint (each counts as active now).
    pub fn restore(&mut self, state: &OperatorState) -> Result<()> {
        if state.rows.num_columns() == 0 {
            return Ok(());
        }
        let partitions: Int32Array = column(&state.rows, "partition", "the event clock")?;
        let times: Int64Array = column(&state.rows, "max_event_time", "the event clock")?;
        let now = Instant::now();
        for (p, t) in partitions.values().iter().zip(times.values()) {
            self.tracker.update(*p, *t, now);
        }
        Ok(())
    }
}

/// Tracks event time per input partition.
#[derive(Debug)]
pub struct WatermarkTracker {
    max_out_of_orderness_ms: i64,
    idle_timeout: Option<Duration>,
    /// Per partition: highest event time seen and when it last sent data.
    partitions: HashMap<i32, (i64, Instant)>,
}

impl WatermarkTracker {
    /// A tracker with the given bound on disorder and optional idle timeout.
    pub fn new(max_out_of_orderness_ms: i64, idle_timeout_ms: Option<i64>) -> Self {
        WatermarkTracker {
            max_out_of_orderness_ms,
            idle_timeout: idle_timeout_ms.map(|ms| Duration::from_millis(ms.max(0) as u64)),
            partitions: HashMap::new(),
        }
    }

    /// Records a batch's event times (NULLs ignored); `partitions` gives each row's partition.
    /// Returns the batch's latest event time.
    pub fn observe(&mut self, times: &Int64Array, partitions: Option<&Int32Array>) -> Option<i64> {
        let now = Instant::now();
        let single = match partitions {
            None => Some(0),
            // Most batches come from one partition: one vectorized max then.
            Some(parts) if parts.null_count() == 0 => {
                match (arrow::compute::min(parts), arrow::compute::max(parts)) {
                    (Some(lo), Some(hi)) if lo == hi => Some(lo),
                    _ => None,
                }
            }
            Some(_) => None,
        };
        if let Some(p) = single {
            let max = arrow::compute::max(times);
            if let Some(max) = max {
                self.update(p, max, now);
            }
            return max;
        }
        let parts = partitions?;
        let mut batch_max: Vec<(i32, i64)> = Vec::new();
        for i in 0..times.len() {
            if times.is_null(i) {
                continue;
            }
            let p = if parts.is_null(i) { 0 } else { parts.value(i) };
            let t = times.value(i);
            match batch_max.iter_mut().find(|(q, _)| *q == p) {
                Some((_, m)) => *m = (*m).max(t),
                None => batch_max.push((p, t)),
            }
        }
        let latest = batch_max.iter().map(|(_, t)| *t).max();
        for (p, t) in batch_max {
            self.update(p, t, now);
        }
        latest
    }

    /// Declares the input partitions: a partition that has sent nothing yet holds the
    /// watermark back (until the idle timeout), and one no longer read stops counting.
    pub fn set_partitions(&mut self, partitions: &[i32]) {
        let now = Instant::now();
        self.partitions.retain(|p, _| partitions.contains(p));
        for p in partitions {
            self.partitions.entry(*p).or_insert((i64::MIN, now));
        }
    }

    fn update(&mut self, partition: i32, time: i64, now: Instant) {
        let entry = self.partitions.entry(partition).or_insert((i64::MIN, now));
        entry.0 = entry.0.max(time);
        entry.1 = now;
    }

    /// The current watermark, or None before any event time was seen.
    pub fn watermark(&self) -> Option<i64> {
        let now = Instant::now();
        let active = self
            .partitions
            .values()
            .filter(|(_, seen)| {
                self.idle_timeout
                    .is_none_or(|t| now.duration_since(*seen) < t)
            })
            .map(|(max, _)| *max)
            .min();
        // When every partition is idle, the most advanced one sets the pace.
        let max = active.or_else(|| self.partitions.values().map(|(m, _)| *m).max())?;
        Some(max.saturating_sub(self.max_out_of_orderness_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_partitions_minus_disorder() {
        let mut w = WatermarkTracker::new(5, None);
        assert_eq!(w.watermark(), None);
        let latest = w.observe(
            &Int64Array::from(vec![100, 50, 300]),
            Some(&Int32Array::from(vec![0, 1, 0])),
        );
        assert_eq!(latest, Some(300));
        assert_eq!(w.watermark(), Some(45));
        let latest = w.observe(
            &Int64Array::from(vec![10]),
            Some(&Int32Array::from(vec![1])),
        );
        assert_eq!(latest, Some(10), "the batch's own latest time");
        assert_eq!(w.watermark(), Some(45), "a watermark never goes back");
    }

    #[test]
    fn a_declared_partition_holds_the_watermark_until_it_sends() {
        let mut w = WatermarkTracker::new(0, None);
        w.set_partitions(&[0, 1]);
        w.observe(
            &Int64Array::from(vec![100, 200]),
            Some(&Int32Array::from(vec![0, 0])),
        );
        assert_eq!(
            w.watermark(),
            Some(i64::MIN),
            "partition 1 has sent nothing"
        );
        w.observe(
            &Int64Array::from(vec![50]),
            Some(&Int32Array::from(vec![1])),
        );
        assert_eq!(w.watermark(), Some(50));
        w.set_partitions(&[0]);
        assert_eq!(
            w.watermark(),
            Some(200),
            "a revoked partition stops counting"
        );
    }

    #[test]
    fn idle_partitions_stop_holding_it_back() {
        let mut w = WatermarkTracker::new(0, Some(0));
        let latest = w.observe(
            &Int64Array::from(vec![100, 500]),
            Some(&Int32Array::from(vec![0, 1])),
        );
        assert_eq!(latest, Some(500));
        // With a zero idle timeout every partition is idle at once: the maximum leads.
        assert_eq!(w.watermark(), Some(500));
    }
}
