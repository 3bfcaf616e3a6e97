//! Watermarks: per input partition, the highest event time seen minus the allowed
//! out-of-orderness; a query's watermark is the minimum over its partitions, ignoring
//! partitions idle for longer than the idle timeout. Advanced once per batch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::{Array, Int32Array, Int64Array};
use arrow::record_batch::RecordBatch;

use super::window::event_times;
use crate::error::Result;
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

    /// Observes a batch (in the query's input schema) and returns the watermark after it.
    pub fn observe(&mut self, batch: &RecordBatch) -> Result<Option<i64>> {
        let times = event_times(&self.plan.time_expr, batch)?;
        let partitions = self.plan.partition_column.and_then(|i| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<Int32Array>()
                .cloned()
        });
        self.tracker.observe(&times, partitions.as_ref());
        Ok(self.tracker.watermark())
    }

    /// The watermark now (idle partitions may have stopped holding it back).
    pub fn watermark(&self) -> Option<i64> {
        self.tracker.watermark()
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
    pub fn observe(&mut self, times: &Int64Array, partitions: Option<&Int32Array>) {
        let now = Instant::now();
        match partitions {
            None => {
                if let Some(max) = arrow::compute::max(times) {
                    self.update(0, max, now);
                }
            }
            Some(parts) => {
                let mut batch_max: HashMap<i32, i64> = HashMap::new();
                for i in 0..times.len() {
                    if times.is_null(i) {
                        continue;
                    }
                    let p = if parts.is_null(i) { 0 } else { parts.value(i) };
                    let t = times.value(i);
                    batch_max
                        .entry(p)
                        .and_modify(|m| *m = (*m).max(t))
                        .or_insert(t);
                }
                for (p, t) in batch_max {
                    self.update(p, t, now);
                }
            }
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
        w.observe(
            &Int64Array::from(vec![100, 50, 300]),
            Some(&Int32Array::from(vec![0, 1, 0])),
        );
        assert_eq!(w.watermark(), Some(45));
        w.observe(
            &Int64Array::from(vec![10]),
            Some(&Int32Array::from(vec![1])),
        );
        assert_eq!(w.watermark(), Some(45), "a watermark never goes back");
    }

    #[test]
    fn idle_partitions_stop_holding_it_back() {
        let mut w = WatermarkTracker::new(0, Some(0));
        w.observe(
            &Int64Array::from(vec![100, 500]),
            Some(&Int32Array::from(vec![0, 1])),
        );
        // With a zero idle timeout every partition is idle at once: the maximum leads.
        assert_eq!(w.watermark(), Some(500));
    }
}
