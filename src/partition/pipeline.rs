//! A partitioned run of one query: the calling thread reads the input and routes it, N
//! `PartitionWorker` threads process their shares, and one output thread hands the results
//! to the sink. Every queue is bounded, so a slow sink holds back the workers and they hold
//! back the reader; memory stays flat whatever the input rate.
//!
//! Each input batch is an *epoch*: every worker receives its share (possibly empty) and the
//! watermark after the batch, and answers with what it emitted. The output thread takes the
//! answers epoch by epoch, worker by worker, so the output order is fixed for a given N, a
//! key's rows keep their order, and windows closed by one watermark all reach the sink before
//! anything of a later epoch.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;

use super::router::{PartitionRouter, PartitionRun, Piece, Routing};
use super::worker::{PartitionWorker, WorkerInput, WorkerOutput, WorkerTotals};
use crate::error::{Result, VeloError};
use crate::exec::input::InputAdapter;
use crate::exec::join::LookupTable;
use crate::exec::shard::KeyShard;
use crate::exec::snapshot::{clock_state, OperatorState, PartitionStates, RestoredStates};
use crate::exec::watermark::EventClock;
use crate::metrics::{JobMetrics, PUBLISH_EVERY};
use crate::sql::PlannedQuery;

/// Queue depth (batches) between stages when none is configured. A file block is cut into a
/// few batches, so a shallow queue holds about one block: a worker then waits whenever the
/// decoders fall a block behind, and they wait when it does, leaving a core idle. At 16, two
/// cores stay ~189% busy on filter + projection, against ~177% at 4 (docs/benchmarks.md);
/// the memory held grows by a few MB.
pub const DEFAULT_QUEUE_DEPTH: usize = 16;

/// How wide a partitioned run is.
#[derive(Debug, Clone)]
pub struct PartitionOptions {
    /// Worker threads (a query that cannot be split uses one).
    pub partitions: usize,
    /// Batches each queue holds before its writer waits.
    pub queue_depth: usize,
    /// The input columns the source is partitioned by (see `PartitionRouter::new`); empty
    /// when unknown.
    pub source_key: Vec<String>,
    /// A checkpoint's state to start from (None: start empty). Each worker takes the keys it
    /// owns at this width, whatever width wrote it.
    pub restore: Option<Arc<RestoredStates>>,
    /// The loaded rows of the tables the query joins (`PlannedQuery::tables`), shared by
    /// every worker.
    pub tables: Vec<Arc<LookupTable>>,
    /// The job's live metrics, which the workers, the router and the output thread update.
    pub metrics: Arc<JobMetrics>,
    /// The sink's encoding of rows to bytes, when it has one: the workers run it on their
    /// output, so the output thread only writes.
    pub encoder: Option<Arc<dyn RowEncoder>>,
}

/// Turns result rows into the bytes a sink writes; a sink that has one lets the workers
/// encode in parallel (see [`Delivery::Encoded`]).
pub trait RowEncoder: Send + Sync + std::fmt::Debug {
    /// Appends `batch`'s rows, encoded, to `out`.
    fn encode(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()>;
}

impl PartitionOptions {
    /// `partitions` workers with the default queue depth.
    pub fn new(partitions: usize) -> Self {
        PartitionOptions {
            partitions,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            source_key: Vec::new(),
            restore: None,
            tables: Vec::new(),
            metrics: Arc::default(),
            encoder: None,
        }
    }
}

/// The number of cores.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Cores of input decoding one worker keeps up with: a record costs the decoders (one per
/// core, see the file source's `decode.threads`) ~4× what a keyed stage's worker spends on
/// it, and ~2× what a stateless query's worker spends, which encodes the output too.
/// More workers than that only add the cost of splitting every batch (docs/benchmarks.md).
const DECODING_CORES_PER_WORKER: [usize; 2] = [4, 2];

/// The width a job runs at when none is set, from the cores and the query's shape: on 2
/// cores, one worker, beside a decoder per core.
pub fn default_partitions(plan: &PlannedQuery) -> usize {
    let [keyed, stateless] = DECODING_CORES_PER_WORKER;
    let per_worker = match Routing::for_plan(plan) {
        Routing::RoundRobin => stateless,
        _ => keyed,
    };
    (cores() / per_worker).max(1)
}

/// What the input side hands the router.
pub enum InputEvent {
    /// Records, in any schema the query's input adapter accepts.
    Batch(RecordBatch),
    /// Records of stream input `input` that come in runs from its source's partitions (`runs`
    /// covers the batch).
    PartitionedBatch {
        input: usize,
        batch: RecordBatch,
        runs: Vec<PartitionRun>,
    },
    /// A batch of stream input `input` (0 is the one `Batch` feeds; 1, 2, ...: a UNION ALL's
    /// other branches).
    InputBatch { input: usize, batch: RecordBatch },
    /// Stream input `input` ended while others go on: its event time is complete.
    InputEnded(usize),
    /// The source has nothing now: re-check the watermark and flush the sink.
    Idle,
    /// A barrier: once every output of the input before it has been delivered, the output
    /// side receives `Delivery::Checkpoint` with this id (sources commit offsets on it).
    Checkpoint(u64),
    /// The partitions stream input `input`'s source reads now (a Kafka assignment): each
    /// holds that input's watermark back until it has sent data, so none is overtaken before
    /// it started.
    Partitions { input: usize, ids: Vec<i32> },
    /// A state checkpoint after the input before it: every worker snapshots its state and
    /// the output side receives `Delivery::Snapshot` with this epoch, after every output of
    /// that input.
    Snapshot(u64),
    /// Stop without ending the input: open state is dropped, not emitted (an unbounded
    /// source shutting down; its uncommitted records are read again on restart).
    Stop,
}

/// A checkpoint barrier as it travels through the workers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckpointMark {
    pub id: u64,
    /// The latest event time routed since the previous barrier.
    pub max_event_time: Option<i64>,
}

/// A state checkpoint as it travels through the workers.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotMark {
    pub epoch: u64,
    /// The router's event clocks, by their state names (none: the query has no event time).
    pub clocks: Vec<(String, Arc<OperatorState>)>,
}

/// What the output thread hands the sink, in order.
pub enum Delivery {
    /// Result rows (a delete batch for a retraction).
    Rows(RecordBatch),
    /// Result rows and their bytes from [`PartitionOptions::encoder`], encoded by a worker.
    Encoded { batch: RecordBatch, bytes: Vec<u8> },
    /// Records that arrived after their window closed, with a `_late_reason` column.
    Late(RecordBatch),
    /// The input is idle: make what was delivered visible.
    Flush,
    /// Everything derived from the input before barrier `id` has been delivered. `held_since`:
    /// the earliest event time whose output the workers still hold (None: nothing held);
    /// `max_event_time`: the latest event time of the input between the previous barrier and
    /// this one (None for a query without event time). Those records are done when
    /// `held_since` is None or later than `max_event_time`.
    Checkpoint {
        id: u64,
        held_since: Option<i64>,
        max_event_time: Option<i64>,
    },
    /// Every worker's state after the input before snapshot `epoch`, all of whose output has
    /// been delivered: per partition worker, its operator states (the first also holds the
    /// event clock's, under `CLOCK_STATE`). Encoding and storing them is the receiver's.
    Snapshot {
        epoch: u64,
        partitions: Vec<PartitionStates>,
    },
}

/// What a partitioned run did.
#[derive(Debug, Clone, Default)]
pub struct PartitionStats {
    /// Workers used.
    pub partitions: usize,
    /// Why the query ran on one worker, when it could not be split.
    pub single_reason: Option<&'static str>,
    /// The source's partitions fed the workers directly (no key hashing).
    pub direct: bool,
    /// Input batches routed.
    pub epochs: u64,
    /// Records dropped as too late, over all workers.
    pub late_records: u64,
    /// Groups dropped by `'state.ttl'`, over all workers.
    pub expired_keys: u64,
    /// Groups held when the run ended, over all workers.
    pub state_keys: u64,
    /// Per-batch latency (routed → every worker's output delivered), median and 99th percentile.
    pub latency_p50: Duration,
    pub latency_p99: Duration,
}

/// Runs `plan` over the events `next_input` returns (on this thread) until it returns None,
/// handing the output to `deliver` (on the output thread).
pub fn run_partitioned<I, D>(
    plan: &PlannedQuery,
    options: &PartitionOptions,
    mut next_input: I,
    deliver: D,
) -> Result<PartitionStats>
where
    I: FnMut() -> Result<Option<InputEvent>>,
    D: FnMut(Delivery) -> Result<()> + Send,
{
    let mut routings = Routing::for_inputs(plan).into_iter();
    let routing = routings
        .next()
        .unwrap_or(Routing::Single("the query has no input"));
    let single_reason = match &routing {
        Routing::Single(reason) if options.partitions > 1 => Some(*reason),
        _ => None,
    };
    // A restore places each key in the worker its hash names, not where its source partition
    // went: a restored run routes by hash, or a key's rows would reach two workers.
    let source_key: &[String] = match options.restore {
        Some(_) => &[],
        None => &options.source_key,
    };
    let router = PartitionRouter::new(routing, options.partitions, source_key);
    let direct = router.is_direct();
    let n = router.partitions();
    let depth = options.queue_depth.max(1);
    let mut inputs = vec![RoutedInput {
        adapter: InputAdapter::new(plan.input_schema.clone(), plan.source.clone()),
        clock: plan.watermark.as_ref().map(EventClock::new),
        router,
    }];
    for (side, routing) in plan.side_inputs().iter().zip(routings) {
        inputs.push(RoutedInput {
            adapter: InputAdapter::new(side.input_schema.clone(), side.source.clone()),
            clock: side.watermark.as_ref().map(EventClock::new),
            router: PartitionRouter::new(routing, n, &[]),
        });
    }
    options.metrics.start_workers(n);
    let mut workers = (0..n)
        .map(|i| {
            PartitionWorker::new(
                plan.clone(),
                &options.tables,
                Arc::clone(&options.metrics),
                i,
            )
            .map(|w| w.encoding_with(options.encoder.clone()))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(states) = &options.restore {
        for (index, worker) in workers.iter_mut().enumerate() {
            worker.restore(states, &KeyShard { index, count: n })?;
        }
        for (k, input) in inputs.iter_mut().enumerate() {
            if let (Some(clock), Some(state)) = (
                input.clock.as_mut(),
                states.get(&clock_state(k)).and_then(|s| s.first()),
            ) {
                clock.restore(state)?;
            }
        }
    }

    std::thread::scope(|scope| {
        let mut to_workers = Vec::with_capacity(n);
        let mut from_workers = Vec::with_capacity(n);
        for (i, worker) in workers.into_iter().enumerate() {
            let (input_tx, input_rx) = sync_channel::<WorkerInput>(depth);
            let (output_tx, output_rx) = sync_channel(depth);
            std::thread::Builder::new()
                .name(format!("velo-partition-{i}"))
                .spawn_scoped(scope, move || worker.run(input_rx, output_tx))
                .map_err(|e| VeloError::io("starting a partition worker", e))?;
            to_workers.push(input_tx);
            from_workers.push(output_rx);
        }
        let output = std::thread::Builder::new()
            .name("velo-output".into())
            .spawn_scoped(scope, || {
                collect_outputs(from_workers, deliver, &options.metrics)
            })
            .map_err(|e| VeloError::io("starting the output thread", e))?;

        let routed = route_input(&mut next_input, &mut inputs, &to_workers, &options.metrics);
        if let Ok(Some(release)) = &routed {
            for tx in &to_workers {
                // A worker that hung up has already reported why on its output.
                let _ = tx.send(WorkerInput::End { release: *release });
            }
        }
        drop(to_workers);
        let collected = output
            .join()
            .map_err(|_| VeloError::Execution("the output thread panicked".into()))?;
        let routed = routed?;
        let mut stats = collected?;
        if routed.is_none() || !stats.complete {
            return Err(VeloError::Execution(
                "a partition worker stopped before the input ended".into(),
            ));
        }
        stats.stats.partitions = n;
        stats.stats.single_reason = single_reason;
        stats.stats.direct = direct;
        stats.stats.epochs = stats.epochs;
        Ok(stats.stats)
    })
}

/// One stream input as the router sees it: shaped, timed and split on its own.
struct RoutedInput {
    adapter: InputAdapter,
    clock: Option<EventClock>,
    router: PartitionRouter,
}

/// Reads, adapts, watermarks and routes input until it ends (Some(true)), stops
/// (Some(false)) or a worker hangs up (None: its output says why).
fn route_input<I>(
    next_input: &mut I,
    inputs: &mut [RoutedInput],
    to_workers: &[SyncSender<WorkerInput>],
    metrics: &JobMetrics,
) -> Result<Option<bool>>
where
    I: FnMut() -> Result<Option<InputEvent>>,
{
    // The latest event time of any input routed since the last checkpoint barrier.
    let mut segment_max: Option<i64> = None;
    let mut published = Instant::now();
    while let Some(event) = next_input()? {
        let started = Instant::now();
        if started.duration_since(published) >= PUBLISH_EVERY {
            publish_times(inputs, metrics);
            published = started;
        }
        let nothing = || vec![None; to_workers.len()];
        let mut snapshot = None;
        let mut input = 0;
        let (pieces, watermark, flush, checkpoint) = match event {
            InputEvent::Batch(batch) if batch.num_rows() > 0 => {
                let (batch, watermark) = observe(&mut inputs[0], &mut segment_max, batch)?;
                (inputs[0].router.split(batch)?, watermark, false, None)
            }
            InputEvent::PartitionedBatch {
                input: k,
                batch,
                runs,
            } if batch.num_rows() > 0 => {
                let routed = input_at(inputs, k)?;
                let (batch, watermark) = observe(routed, &mut segment_max, batch)?;
                input = k;
                (
                    routed.router.split_runs(batch, &runs)?,
                    watermark,
                    false,
                    None,
                )
            }
            InputEvent::InputBatch { input: k, batch } if batch.num_rows() > 0 => {
                let routed = input_at(inputs, k)?;
                let (batch, watermark) = observe(routed, &mut segment_max, batch)?;
                input = k;
                (routed.router.split(batch)?, watermark, false, None)
            }
            InputEvent::InputEnded(k) => {
                input_at(inputs, k)?;
                input = k;
                (nothing(), Some(i64::MAX), false, None)
            }
            InputEvent::Snapshot(epoch) => {
                let mut clocks = Vec::new();
                for (k, input) in inputs.iter().enumerate() {
                    if let Some(c) = &input.clock {
                        clocks.push((clock_state(k), Arc::new(c.snapshot()?)));
                    }
                }
                snapshot = Some(Box::new(SnapshotMark { epoch, clocks }));
                (nothing(), None, false, None)
            }
            InputEvent::Batch(_)
            | InputEvent::PartitionedBatch { .. }
            | InputEvent::InputBatch { .. } => continue,
            InputEvent::Idle => {
                // Every input's watermark may have moved (idle partitions stop holding it).
                for (k, side) in inputs.iter().enumerate().skip(1) {
                    let watermark = side.clock.as_ref().and_then(EventClock::watermark);
                    if watermark.is_some() {
                        let rows = nothing();
                        if !send(to_workers, k, rows, watermark, started)? {
                            return Ok(None);
                        }
                    }
                }
                (
                    nothing(),
                    inputs[0].clock.as_ref().and_then(EventClock::watermark),
                    true,
                    None,
                )
            }
            InputEvent::Checkpoint(id) => {
                let mark = CheckpointMark {
                    id,
                    max_event_time: segment_max.take(),
                };
                (nothing(), None, false, Some(mark))
            }
            InputEvent::Partitions { input: k, ids } => {
                if let Some(c) = &mut input_at(inputs, k)?.clock {
                    c.set_partitions(&ids);
                }
                continue;
            }
            InputEvent::Stop => {
                publish_times(inputs, metrics);
                return Ok(Some(false));
            }
        };
        for (tx, rows) in to_workers.iter().zip(pieces) {
            let message = WorkerInput::Epoch {
                input,
                rows,
                watermark,
                flush,
                checkpoint,
                snapshot: snapshot.clone(),
                started,
            };
            if tx.send(message).is_err() {
                return Ok(None);
            }
        }
    }
    publish_times(inputs, metrics);
    Ok(Some(true))
}

/// Publishes every input's partition times and the job's watermark.
fn publish_times(inputs: &[RoutedInput], metrics: &JobMetrics) {
    let mut watermark: Option<i64> = None;
    for (k, input) in inputs.iter().enumerate() {
        if let Some(clock) = &input.clock {
            metrics.publish_times(k, &clock.partition_times());
            watermark = match (watermark, clock.watermark()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    if let Some(w) = watermark {
        metrics
            .watermark_ms
            .store(w, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Stream input `k` of the query.
fn input_at(inputs: &mut [RoutedInput], k: usize) -> Result<&mut RoutedInput> {
    let count = inputs.len();
    inputs
        .get_mut(k)
        .ok_or_else(|| VeloError::Execution(format!("input {k} of a query with {count} inputs")))
}

/// Sends every worker an epoch of input `input` with no rows but its watermark; false when
/// a worker hung up.
fn send(
    to_workers: &[SyncSender<WorkerInput>],
    input: usize,
    rows: Vec<Option<Piece>>,
    watermark: Option<i64>,
    started: Instant,
) -> Result<bool> {
    for (tx, rows) in to_workers.iter().zip(rows) {
        let message = WorkerInput::Epoch {
            input,
            rows,
            watermark,
            flush: false,
            checkpoint: None,
            snapshot: None,
            started,
        };
        if tx.send(message).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Adapts a batch to its input's columns and advances that input's event clock over it: the
/// batch and the watermark after it.
fn observe(
    input: &mut RoutedInput,
    segment_max: &mut Option<i64>,
    batch: RecordBatch,
) -> Result<(RecordBatch, Option<i64>)> {
    let batch = input.adapter.adapt(batch)?;
    let watermark = match &mut input.clock {
        Some(c) => {
            let (watermark, batch_max) = c.observe(&batch)?;
            *segment_max = (*segment_max).max(batch_max);
            watermark
        }
        None => None,
    };
    Ok((batch, watermark))
}

struct Collected {
    stats: PartitionStats,
    epochs: u64,
    /// Every worker reached end of input.
    complete: bool,
}

/// The output thread: takes each epoch from every worker in turn and delivers it.
fn collect_outputs<D>(
    workers: Vec<Receiver<Result<WorkerOutput>>>,
    mut deliver: D,
    metrics: &JobMetrics,
) -> Result<Collected>
where
    D: FnMut(Delivery) -> Result<()>,
{
    let mut latencies: Vec<Duration> = Vec::new();
    let mut totals = WorkerTotals::default();
    let mut epochs = 0;
    loop {
        let mut finished = 0;
        let mut flush = false;
        let mut started = None;
        let mut checkpoint: Option<(CheckpointMark, Option<i64>)> = None;
        let mut snapshot: Option<(u64, Vec<PartitionStates>)> = None;
        for worker in &workers {
            let out = match worker.recv() {
                Ok(out) => out?,
                // The router stopped early; it reports why.
                Err(_) => {
                    return Ok(Collected {
                        stats: PartitionStats::default(),
                        epochs,
                        complete: false,
                    })
                }
            };
            if out.encoded.is_empty() {
                for batch in out.rows {
                    deliver(Delivery::Rows(batch))?;
                }
            } else {
                for (batch, bytes) in out.rows.into_iter().zip(out.encoded) {
                    deliver(Delivery::Encoded { batch, bytes })?;
                }
            }
            for batch in out.late {
                deliver(Delivery::Late(batch))?;
            }
            flush |= out.flush;
            started = started.or(out.started);
            if let Some((mark, held)) = out.checkpoint {
                let earliest = match (checkpoint.and_then(|(_, h)| h), held) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                checkpoint = Some((mark, earliest));
            }
            if let Some((mark, states)) = out.snapshot {
                let (_, partitions) = snapshot.get_or_insert_with(|| (mark.epoch, Vec::new()));
                let mut states = states;
                if partitions.is_empty() {
                    for (name, clock) in &mark.clocks {
                        states.push((name.clone(), clock.as_ref().clone()));
                    }
                }
                partitions.push(states);
            }
            if let Some(t) = out.finished {
                totals.late_records += t.late_records;
                totals.expired_keys += t.expired_keys;
                totals.state_keys += t.state_keys;
                finished += 1;
            }
        }
        if flush {
            deliver(Delivery::Flush)?;
        }
        if let Some((epoch, partitions)) = snapshot {
            deliver(Delivery::Snapshot { epoch, partitions })?;
        }
        if let Some((mark, held_since)) = checkpoint {
            deliver(Delivery::Checkpoint {
                id: mark.id,
                held_since,
                max_event_time: mark.max_event_time,
            })?;
        }
        if finished == workers.len() {
            break;
        }
        epochs += 1;
        if let Some(t) = started {
            let latency = t.elapsed();
            metrics.observe_latency(latency);
            latencies.push(latency);
        }
    }
    latencies.sort_unstable();
    let percentile = |p: usize| {
        latencies
            .get((latencies.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or_default()
    };
    Ok(Collected {
        stats: PartitionStats {
            late_records: totals.late_records,
            expired_keys: totals.expired_keys,
            state_keys: totals.state_keys,
            latency_p50: percentile(50),
            latency_p99: percentile(99),
            ..Default::default()
        },
        epochs,
        complete: true,
    })
}
