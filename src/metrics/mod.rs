//! `JobMetrics`: a running job's live counters, shared by the threads that update them (the
//! reader, the partition workers, the output thread) and the server that reads them. Counters
//! are atomics; the per-partition views are published by their owner at most every
//! `PUBLISH_EVERY`, so the hot path takes no lock.

pub mod declared;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often a per-partition view (the watermarks) is republished at most.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// How many of the latest dead letters a job keeps for the API.
pub const RECENT_DEAD_LETTERS: usize = 20;

/// Batch latency buckets (seconds): routed until every worker's output is delivered.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// One partition worker's view of its state.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    pub state_keys: AtomicU64,
    /// An estimate of the bytes its state holds.
    pub state_bytes: AtomicU64,
    pub late: AtomicU64,
}

/// One partition worker's values, read at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerValues {
    pub state_keys: u64,
    pub state_bytes: u64,
    pub late: u64,
}

/// One input partition's event time, as the job's event clock last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionTime {
    /// The latest event time seen on the partition (epoch ms).
    pub newest_ms: i64,
    /// The partition's own watermark: its newest time less the allowed disorder.
    pub watermark_ms: i64,
}

/// The last checkpoint a job wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    pub id: u64,
    /// When it completed, epoch ms.
    pub at_ms: i64,
    pub seconds: f64,
    pub bytes: u64,
}

/// A job's live metrics.
#[derive(Debug)]
pub struct JobMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub errors: AtomicU64,
    /// Partition workers (set when the job starts its workers).
    pub partitions: AtomicU64,
    /// Per worker, once the workers start.
    workers: OnceLock<Vec<WorkerMetrics>>,
    /// Per (input, source partition).
    times: Mutex<BTreeMap<(usize, i32), PartitionTime>>,
    checkpoint: Mutex<Option<CheckpointInfo>>,
    /// Per (input, partition): its Kafka topic and consumer lag in records.
    kafka_lag: Mutex<BTreeMap<(usize, i32), (String, i64)>>,
    /// The collectors of the metrics its SQL declares (`-- @metric`), once it starts.
    declared: OnceLock<Vec<declared::MetricVec>>,
    /// The latest `RECENT_DEAD_LETTERS` dead letters, newest last.
    dead_letters: Mutex<VecDeque<serde_json::Value>>,
    /// Routed-batch latencies (lock-free: the prometheus crate's histograms are atomics).
    pub latency: prometheus::Histogram,
    /// Checkpoint durations.
    pub checkpoint_seconds: prometheus::Histogram,
    /// The job's watermark (epoch ms; `i64::MIN` before any event time).
    pub watermark_ms: AtomicI64,
    pub started: Instant,
}

impl Default for JobMetrics {
    fn default() -> Self {
        JobMetrics {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            partitions: AtomicU64::new(0),
            workers: OnceLock::new(),
            times: Mutex::new(BTreeMap::new()),
            checkpoint: Mutex::new(None),
            kafka_lag: Mutex::new(BTreeMap::new()),
            declared: OnceLock::new(),
            dead_letters: Mutex::new(VecDeque::new()),
            latency: histogram("velostream_job_batch_latency_seconds"),
            checkpoint_seconds: histogram("velostream_checkpoint_duration_seconds"),
            watermark_ms: AtomicI64::new(i64::MIN),
            started: Instant::now(),
        }
    }
}

/// A histogram over `LATENCY_BUCKETS`.
fn histogram(name: &str) -> prometheus::Histogram {
    let opts = prometheus::HistogramOpts::new(name, name).buckets(LATENCY_BUCKETS.to_vec());
    // The name and buckets are constants the crate accepts.
    prometheus::Histogram::with_opts(opts).expect("a valid histogram")
}

impl JobMetrics {
    /// The input side's counts so far: records read and bad records.
    pub fn set_input_counts(&self, records_in: u64, errors: u64) {
        self.records_in.store(records_in, Ordering::Relaxed);
        self.errors.store(errors, Ordering::Relaxed);
    }

    /// Declares the workers; the first call wins (a restarted run keeps the slots).
    pub fn start_workers(&self, count: usize) {
        let workers = (0..count).map(|_| WorkerMetrics::default()).collect();
        if self.workers.set(workers).is_ok() {
            self.partitions.store(count as u64, Ordering::Relaxed);
        }
    }

    /// Worker `index`'s slot, once the workers are declared.
    pub fn worker(&self, index: usize) -> Option<&WorkerMetrics> {
        self.workers.get().and_then(|w| w.get(index))
    }

    /// Each worker's values.
    pub fn worker_values(&self) -> Vec<WorkerValues> {
        self.workers
            .get()
            .map(|w| {
                w.iter()
                    .map(|m| WorkerValues {
                        state_keys: m.state_keys.load(Ordering::Relaxed),
                        state_bytes: m.state_bytes.load(Ordering::Relaxed),
                        late: m.late.load(Ordering::Relaxed),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// State keys over every worker.
    pub fn state_keys(&self) -> u64 {
        self.worker_values().iter().map(|w| w.state_keys).sum()
    }

    /// Late records over every worker.
    pub fn late(&self) -> u64 {
        self.worker_values().iter().map(|w| w.late).sum()
    }

    /// State bytes (estimated) over every worker.
    pub fn state_bytes(&self) -> u64 {
        self.worker_values().iter().map(|w| w.state_bytes).sum()
    }

    /// Replaces input `input`'s partition times.
    pub fn publish_times(&self, input: usize, times: &[(i32, PartitionTime)]) {
        let mut all = lock(&self.times);
        all.retain(|(k, _), _| *k != input);
        for (partition, time) in times {
            all.insert((input, *partition), *time);
        }
    }

    /// Replaces Kafka input `input`'s consumer lag per partition (records behind the end).
    pub fn publish_kafka_lag(&self, input: usize, topic: &str, lags: &[(i32, i64)]) {
        let mut all = lock(&self.kafka_lag);
        all.retain(|(k, _), _| *k != input);
        for (partition, lag) in lags {
            all.insert((input, *partition), (topic.to_string(), *lag));
        }
    }

    /// Every Kafka input partition's topic and consumer lag, by (input, partition).
    pub fn kafka_lag(&self) -> BTreeMap<(usize, i32), (String, i64)> {
        lock(&self.kafka_lag).clone()
    }

    /// Every input partition's time, by (input, partition).
    pub fn times(&self) -> BTreeMap<(usize, i32), PartitionTime> {
        lock(&self.times).clone()
    }

    /// Records one routed batch's latency.
    pub fn observe_latency(&self, latency: Duration) {
        self.latency.observe(latency.as_secs_f64());
    }

    /// Records a completed checkpoint.
    pub fn record_checkpoint(&self, info: CheckpointInfo) {
        self.checkpoint_seconds.observe(info.seconds.max(0.0));
        *lock(&self.checkpoint) = Some(info);
    }

    /// Declares the job's SQL-declared metrics and returns the collectors to count into: the
    /// first call's, so a restarted run keeps counting into the same series.
    pub fn declare(&self, collectors: Vec<declared::MetricVec>) -> &[declared::MetricVec] {
        self.declared.get_or_init(|| collectors)
    }

    /// The SQL-declared metrics' collectors.
    pub fn declared(&self) -> &[declared::MetricVec] {
        self.declared.get().map_or(&[], Vec::as_slice)
    }

    /// Keeps a dead letter (a bad or late record, as the dead-letter file has it) among the
    /// latest few. Bad and late records are rare, so the lock is off the hot path.
    pub fn note_dead_letter(&self, entry: &serde_json::Value) {
        let mut recent = lock(&self.dead_letters);
        if recent.len() == RECENT_DEAD_LETTERS {
            recent.pop_front();
        }
        recent.push_back(entry.clone());
    }

    /// The latest dead letters, oldest first.
    pub fn dead_letters(&self) -> Vec<serde_json::Value> {
        lock(&self.dead_letters).iter().cloned().collect()
    }

    /// The last checkpoint, if one completed.
    pub fn last_checkpoint(&self) -> Option<CheckpointInfo> {
        lock(&self.checkpoint).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_the_histogram() {
        let m = JobMetrics::default();
        m.observe_latency(Duration::from_micros(50));
        m.observe_latency(Duration::from_secs(10));
        assert_eq!(m.latency.get_sample_count(), 2);
        assert!((m.latency.get_sample_sum() - 10.00005).abs() < 1e-9);
    }

    #[test]
    fn workers_count_once_declared() {
        let m = JobMetrics::default();
        assert_eq!(m.state_keys(), 0);
        m.start_workers(2);
        m.start_workers(5);
        assert_eq!(m.partitions.load(Ordering::Relaxed), 2);
        if let (Some(first), Some(second)) = (m.worker(0), m.worker(1)) {
            second.state_keys.store(7, Ordering::Relaxed);
            first.late.store(2, Ordering::Relaxed);
        }
        assert_eq!((m.state_keys(), m.late()), (7, 2));
    }
}
