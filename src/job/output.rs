//! Where a job's results and rejects go: the sink (plus an in-memory copy), the dead-letter
//! file for bad and late records, and the progress bar.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;

use super::durable::CheckpointWriter;
use super::kafka::OffsetCommitter;
use super::JobSummary;
use crate::connectors::{BadRecord, Sink};
use crate::error::{Result, VeloError};
use crate::exec::input::now_millis;
use crate::metrics::declared::DeclaredMetric;
use crate::metrics::{CheckpointInfo, JobMetrics, RECENT_DEAD_LETTERS};
use crate::partition::Delivery;

/// Counts bad records, writes them to the dead-letter file and keeps the first 100 to report.
pub(super) fn record_bad(
    summary: &mut JobSummary,
    dead_letter: &Mutex<DeadLetterFile>,
    source: &str,
    bad_records: Vec<BadRecord>,
) -> Result<()> {
    for bad in bad_records {
        summary.errors += 1;
        lock(dead_letter).write(&serde_json::json!({
            "source": source, "location": bad.location, "reason": bad.reason, "record": bad.raw,
        }))?;
        if summary.bad_records.len() < 100 {
            summary.bad_records.push(bad);
        }
    }
    Ok(())
}

pub(super) fn lock(file: &Mutex<DeadLetterFile>) -> std::sync::MutexGuard<'_, DeadLetterFile> {
    file.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The dead-letter file: bad records and late records, one JSON object per line. The latest
/// few also go to the job's metrics, file or not.
pub(super) struct DeadLetterFile {
    out: Option<std::io::BufWriter<std::fs::File>>,
    metrics: Arc<JobMetrics>,
}

impl DeadLetterFile {
    pub(super) fn new(metrics: Arc<JobMetrics>) -> DeadLetterFile {
        DeadLetterFile { out: None, metrics }
    }

    pub(super) fn open(&mut self, path: &std::path::Path) -> Result<()> {
        if self.out.is_none() {
            let file = std::fs::File::create(path)
                .map_err(|e| VeloError::io(format!("creating {}", path.display()), e))?;
            self.out = Some(std::io::BufWriter::new(file));
        }
        Ok(())
    }

    pub(super) fn write(&mut self, entry: &serde_json::Value) -> Result<()> {
        self.metrics.note_dead_letter(entry);
        if let Some(w) = self.out.as_mut() {
            writeln!(w, "{entry}").map_err(|e| VeloError::io("writing the dead-letter file", e))?;
        }
        Ok(())
    }

    /// Writes late records (a batch carrying a `_late_reason` column).
    pub(super) fn write_late(&mut self, job: &str, mut batch: RecordBatch) -> Result<()> {
        if self.out.is_none() {
            tracing::warn!(
                job,
                rows = batch.num_rows(),
                "late records dropped: no dead-letter path configured"
            );
            // Only the metrics' few latest are kept.
            let keep = batch.num_rows().min(RECENT_DEAD_LETTERS);
            batch = batch.slice(batch.num_rows() - keep, keep);
        }
        let mut buf = Vec::new();
        {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
            writer.write(&batch)?;
            writer.finish()?;
        }
        for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let mut record: serde_json::Value =
                serde_json::from_slice(line).map_err(|e| VeloError::Execution(e.to_string()))?;
            let reason = record
                .as_object_mut()
                .and_then(|o| o.remove("_late_reason"))
                .unwrap_or(serde_json::Value::Null);
            self.write(&serde_json::json!({ "job": job, "reason": reason, "record": record }))?;
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        match self.out.as_mut() {
            Some(w) => w
                .flush()
                .map_err(|e| VeloError::io("writing the dead-letter file", e)),
            None => Ok(()),
        }
    }
}

/// A job's output: its sink, and a copy kept for later statements or the caller.
pub(super) struct JobOutput {
    pub sink: Option<Box<dyn Sink>>,
    pub retained: Option<Vec<RecordBatch>>,
    pub records_out: u64,
}

impl JobOutput {
    pub(super) fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.records_out += batch.num_rows() as u64;
        if let Some(s) = self.sink.as_mut() {
            s.write_batch(&batch)?;
        }
        if let Some(r) = self.retained.as_mut() {
            r.push(batch);
        }
        Ok(())
    }

    /// Writes rows a worker encoded with the sink's encoder.
    pub(super) fn write_encoded(&mut self, batch: RecordBatch, bytes: &[u8]) -> Result<()> {
        self.records_out += batch.num_rows() as u64;
        if let Some(s) = self.sink.as_mut() {
            s.write_encoded(&batch, bytes)?;
        }
        if let Some(r) = self.retained.as_mut() {
            r.push(batch);
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        match self.sink.as_mut() {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

/// Where each delivery of a job's pipeline goes: result rows to the output, late records to
/// the dead-letter file, barriers to the source's offset committer, state snapshots to the
/// checkpoint writer.
pub(super) struct Deliveries<'a> {
    pub job: String,
    /// The metrics the job's SQL declares, fed its result rows.
    pub declared: Vec<DeclaredMetric>,
    pub output: JobOutput,
    pub dead_letter: &'a Mutex<DeadLetterFile>,
    /// At-least-once offset commits of each Kafka input without durable state.
    pub committers: Vec<OffsetCommitter>,
    /// Checkpoints of a Kafka job with durable state.
    pub checkpoints: Option<CheckpointWriter>,
    /// The job's live metrics: records out and the last checkpoint are published here.
    pub metrics: Arc<JobMetrics>,
    /// Checkpoints completed when the last one was published.
    pub checkpoints_published: u64,
}

impl Deliveries<'_> {
    /// Hands one delivery on.
    pub(super) fn deliver(&mut self, delivery: Delivery) -> Result<()> {
        if let Some(w) = self.checkpoints.as_mut() {
            // Publish and commit what has become durable as soon as it has.
            w.poll(self.output.sink.as_mut())?;
            if w.stats.completed > self.checkpoints_published {
                self.checkpoints_published = w.stats.completed;
                self.metrics.record_checkpoint(CheckpointInfo {
                    id: w.stats.last_epoch.unwrap_or_default(),
                    at_ms: now_millis(),
                    seconds: w.stats.last_duration.as_secs_f64(),
                    bytes: w.stats.last_bytes,
                });
            }
        }
        let delivered = self.deliver_one(delivery);
        self.metrics
            .records_out
            .store(self.output.records_out, Ordering::Relaxed);
        delivered
    }

    fn deliver_one(&mut self, delivery: Delivery) -> Result<()> {
        match delivery {
            Delivery::Rows(batch) => {
                for metric in &mut self.declared {
                    metric.observe(&batch)?;
                }
                self.output.write(batch)
            }
            Delivery::Encoded { batch, bytes } => {
                for metric in &mut self.declared {
                    metric.observe(&batch)?;
                }
                self.output.write_encoded(batch, &bytes)
            }
            Delivery::Late(batch) => lock(self.dead_letter).write_late(&self.job, batch),
            Delivery::Flush => self.output.flush(),
            Delivery::Checkpoint {
                id,
                held_since,
                max_event_time,
            } => {
                // Each committer acts on its own input's barriers.
                for c in &mut self.committers {
                    c.on_checkpoint(id, held_since, max_event_time, self.output.sink.as_mut())?;
                }
                Ok(())
            }
            Delivery::Snapshot { epoch, partitions } => match self.checkpoints.as_mut() {
                Some(w) => w.on_snapshot(epoch, partitions, self.output.sink.as_mut()),
                None => Ok(()),
            },
        }
    }
}

pub(super) fn progress_bar(enabled: bool, total_bytes: u64) -> Option<indicatif::ProgressBar> {
    if !enabled || total_bytes < (8 << 20) {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total_bytes);
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
    )
    .ok()?;
    bar.set_style(style);
    Some(bar)
}
