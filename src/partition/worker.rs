//! `PartitionWorker`: a plain OS thread that owns its share of a query's state and runs it
//! synchronously, one epoch (input batch) at a time.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;

use super::pipeline::{CheckpointMark, RowEncoder, SnapshotMark};
use super::router::Piece;
use crate::error::Result;
use crate::exec::engine::StreamExecutionEngine;
use crate::exec::join::LookupTable;
use crate::exec::shard::KeyShard;
use crate::exec::snapshot::{PartitionStates, RestoredStates};
use crate::metrics::JobMetrics;
use crate::sql::PlannedQuery;

/// What the router sends a worker: every worker gets every epoch, with or without rows, so
/// the output side can put the workers' results back in epoch order.
// `End` comes once per run; boxing `Epoch` would allocate for every batch.
#[allow(clippy::large_enum_variant)]
pub(crate) enum WorkerInput {
    /// One input batch's share, then the watermark of its input after that batch.
    Epoch {
        /// The stream input the rows and watermark are of (0 for a query over one stream).
        input: usize,
        rows: Option<Piece>,
        watermark: Option<i64>,
        /// Make everything emitted so far visible (the source is idle).
        flush: bool,
        /// A checkpoint barrier: report what state still holds back.
        checkpoint: Option<CheckpointMark>,
        /// A state checkpoint: snapshot the state after this epoch's rows and watermark.
        snapshot: Option<Box<SnapshotMark>>,
        started: Instant,
    },
    /// No more input. `release`: the input is complete, so emit everything held; otherwise
    /// the job is stopping and open state is dropped (its records were not committed).
    End { release: bool },
}

/// What a worker emitted for one epoch.
pub(crate) struct WorkerOutput {
    pub rows: Vec<RecordBatch>,
    /// Each of `rows` encoded by the sink's encoder, when the run has one (else empty).
    pub encoded: Vec<Vec<u8>>,
    /// Records that arrived too late, for the dead-letter sink.
    pub late: Vec<RecordBatch>,
    pub flush: bool,
    /// A checkpoint barrier passed: the barrier and the worker's `held_since`.
    pub checkpoint: Option<(CheckpointMark, Option<i64>)>,
    /// A state checkpoint passed: the mark and this worker's state.
    pub snapshot: Option<(SnapshotMark, PartitionStates)>,
    pub started: Option<Instant>,
    /// Set on the worker's last output (after end of input): its counts.
    pub finished: Option<WorkerTotals>,
}

/// What a worker counted over its run.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WorkerTotals {
    pub late_records: u64,
    /// Groups dropped by `'state.ttl'`.
    pub expired_keys: u64,
    /// Groups held at the end.
    pub state_keys: u64,
}

/// One partition of a query: an engine holding that partition's processor.
pub struct PartitionWorker {
    engine: StreamExecutionEngine,
    query_id: String,
    /// The job's metrics, and this worker's slot in them.
    metrics: Arc<JobMetrics>,
    index: usize,
    /// When state bytes were last counted.
    bytes_counted: std::cell::Cell<Option<Instant>>,
    /// The sink's encoder, run on this worker's output.
    encoder: Option<Arc<dyn RowEncoder>>,
}

/// How often a worker recounts its state's bytes at most.
const STATE_BYTES_EVERY: Duration = Duration::from_secs(1);

impl PartitionWorker {
    /// A worker for one partition of `plan`, joining the loaded `tables`; its watermark comes
    /// from the router.
    pub fn new(
        plan: PlannedQuery,
        tables: &[Arc<LookupTable>],
        metrics: Arc<JobMetrics>,
        index: usize,
    ) -> Result<Self> {
        let mut engine = StreamExecutionEngine::new();
        let query_id = engine.deploy_with_external_watermarks(plan, tables)?;
        Ok(PartitionWorker {
            engine,
            query_id,
            metrics,
            index,
            bytes_counted: std::cell::Cell::new(None),
            encoder: None,
        })
    }

    /// This worker encodes its output rows with `encoder` (None: it hands on batches).
    pub fn encoding_with(mut self, encoder: Option<Arc<dyn RowEncoder>>) -> Self {
        self.encoder = encoder;
        self
    }

    /// Each output batch encoded, when this worker has an encoder.
    fn encode(&self, rows: &[RecordBatch]) -> Result<Vec<Vec<u8>>> {
        let Some(encoder) = &self.encoder else {
            return Ok(Vec::new());
        };
        rows.iter()
            .map(|batch| {
                let mut bytes = Vec::new();
                encoder.encode(batch, &mut bytes)?;
                Ok(bytes)
            })
            .collect()
    }

    /// Publishes this worker's state size and late count. State bytes walk some operators'
    /// keys, so they are recounted at most every `STATE_BYTES_EVERY`.
    fn publish(&self) -> Result<()> {
        if let Some(slot) = self.metrics.worker(self.index) {
            let processor = self.engine.processor(&self.query_id)?;
            slot.state_keys
                .store(processor.state_size() as u64, Ordering::Relaxed);
            if self
                .bytes_counted
                .get()
                .is_none_or(|at| at.elapsed() >= STATE_BYTES_EVERY)
            {
                slot.state_bytes
                    .store(processor.state_bytes() as u64, Ordering::Relaxed);
                self.bytes_counted.set(Some(Instant::now()));
            }
            slot.late.store(processor.late_records(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Loads the keys `shard` owns from a checkpoint's state, before any input.
    pub fn restore(&mut self, states: &RestoredStates, shard: &KeyShard) -> Result<()> {
        self.engine.restore(&self.query_id, states, shard)
    }

    /// Processes epochs until the input ends or either side hangs up. An error is sent on as
    /// this worker's last output.
    pub(crate) fn run(
        mut self,
        input: Receiver<WorkerInput>,
        output: SyncSender<Result<WorkerOutput>>,
    ) {
        while let Ok(message) = input.recv() {
            let result = self.handle(message);
            let last = !matches!(result, Ok(WorkerOutput { finished: None, .. }));
            if output.send(result).is_err() || last {
                return;
            }
        }
    }

    fn handle(&mut self, message: WorkerInput) -> Result<WorkerOutput> {
        let id = self.query_id.as_str();
        match message {
            WorkerInput::Epoch {
                input,
                rows,
                watermark,
                flush,
                checkpoint,
                snapshot,
                started,
            } => {
                let mut out = Vec::new();
                if let Some(piece) = rows {
                    for batch in piece.into_batches()? {
                        out.extend(self.engine.execute_batch_from(id, input, batch)?);
                    }
                }
                if let Some(wm) = watermark {
                    out.extend(self.engine.advance_input_watermark(id, input, wm)?);
                }
                let checkpoint = match checkpoint {
                    Some(c) => Some((c, self.engine.held_since(id)?)),
                    None => None,
                };
                let snapshot = match snapshot {
                    Some(mark) => Some((*mark, self.engine.snapshot(id)?)),
                    None => None,
                };
                self.publish()?;
                Ok(WorkerOutput {
                    encoded: self.encode(&out)?,
                    rows: out,
                    late: self.engine.take_dead_letters(id)?,
                    flush,
                    checkpoint,
                    snapshot,
                    started: Some(started),
                    finished: None,
                })
            }
            WorkerInput::End { release } => {
                let rows = if release {
                    self.engine.end_of_input(id)?
                } else {
                    Vec::new()
                };
                Ok(WorkerOutput {
                    encoded: self.encode(&rows)?,
                    rows,
                    late: self.engine.take_dead_letters(id)?,
                    flush: true,
                    checkpoint: None,
                    snapshot: None,
                    started: None,
                    finished: Some({
                        let processor = self.engine.processor(id)?;
                        WorkerTotals {
                            late_records: processor.late_records(),
                            expired_keys: processor.expired_keys(),
                            state_keys: processor.state_size() as u64,
                        }
                    }),
                })
            }
        }
    }
}
