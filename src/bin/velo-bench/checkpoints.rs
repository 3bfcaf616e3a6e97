//! What durable state costs: a GROUP BY EMIT CHANGES over many keys, run without checkpoints
//! and with a checkpoint every interval (written through the real checkpoint store to a
//! temporary directory), the two runs taking turns; then the time to restore the last
//! checkpoint.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use velostream::checkpoint::writer::{CheckpointThread, Pending};
use velostream::checkpoint::{Checkpoints, StateStore};
use velostream::partition::{run_partitioned, Delivery, InputEvent, PartitionOptions};
use velostream::sql::{PlannedQuery, QueryPlanner};

use crate::generators::{self, Stream};
use crate::report::cpu_seconds;
use crate::BenchResult;

/// The query measured.
pub const QUERY: &str =
    "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS qty, AVG(price) AS avg_price \
                         FROM trades GROUP BY symbol EMIT CHANGES";

/// One run: its rate, and its checkpoints' durations and sizes.
struct Measured {
    seconds: f64,
    cpu_seconds: f64,
    /// Per checkpoint: barrier to written (workers' snapshot, encoding, store), and bytes.
    checkpoints: Vec<(Duration, u64)>,
}

fn plan() -> BenchResult<PlannedQuery> {
    let mut planner = QueryPlanner::new();
    planner.register_source(Stream::Trades.source_name(), Stream::Trades.schema())?;
    Ok(planner.plan_sql(QUERY, "checkpointed")?)
}

/// Runs the query over `batches`; with `interval`, a checkpoint is taken that often and
/// written on the checkpoint thread, as a job does.
fn measure(
    plan: &PlannedQuery,
    batches: &[RecordBatch],
    partitions: usize,
    interval: Option<Duration>,
    checkpoints: &Arc<Checkpoints>,
) -> BenchResult<Measured> {
    let options = PartitionOptions::new(partitions);
    let mut next = batches.iter();
    let mut epoch = checkpoints.next_epoch()?;
    let mut last = Instant::now();
    // When each checkpoint's barrier entered the pipeline.
    let barrier_times: Mutex<Vec<(u64, Instant)>> = Mutex::new(Vec::new());
    let mut thread = CheckpointThread::start(Arc::clone(checkpoints), plan.state_shape())?;
    let mut written = Vec::new();
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    run_partitioned(
        plan,
        &options,
        || {
            if let Some(interval) = interval {
                if last.elapsed() >= interval {
                    last = Instant::now();
                    if let Ok(mut b) = barrier_times.lock() {
                        b.push((epoch, Instant::now()));
                    }
                    epoch += 1;
                    return Ok(Some(InputEvent::Snapshot(epoch - 1)));
                }
            }
            Ok(next.next().map(|b| InputEvent::Batch(b.clone())))
        },
        |delivery| {
            if let Delivery::Snapshot { epoch, partitions } = delivery {
                let since = barrier_times
                    .lock()
                    .ok()
                    .and_then(|b| b.iter().find(|(e, _)| *e == epoch).map(|(_, t)| *t))
                    .unwrap_or_else(Instant::now);
                thread.submit(Pending {
                    epoch,
                    sources: Vec::new(),
                    output_committed: epoch.checked_sub(1),
                    partitions,
                    since,
                })?;
                written.extend(thread.completed()?);
            }
            Ok(())
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_seconds() - cpu_before;
    written.extend(thread.drain()?);
    Ok(Measured {
        seconds,
        cpu_seconds,
        checkpoints: written.iter().map(|w| (w.duration, w.bytes)).collect(),
    })
}

/// Measures and prints: rates with and without checkpoints (best of `repeat`, taking
/// turns), checkpoint duration and size, and restore time.
pub fn compare(
    rows: u64,
    keys: u64,
    seed: u64,
    batch_size: usize,
    partitions: usize,
    interval: Duration,
    repeat: usize,
) -> BenchResult<()> {
    let plan = plan()?;
    eprintln!("generating {rows} trades over {keys} keys ...");
    let batches = generators::batches(Stream::Trades, rows, keys, seed, batch_size)?;
    let dir = tempfile_dir()?;
    let location = dir.to_string_lossy().to_string();
    let checkpoints = Arc::new(Checkpoints::new(
        StateStore::open(&location)?,
        "checkpointed",
    ));
    let mut plain: Option<Measured> = None;
    let mut durable: Option<Measured> = None;
    for _ in 0..repeat.max(1) {
        let p = measure(&plan, &batches, partitions, None, &checkpoints)?;
        if plain.as_ref().is_none_or(|b| p.seconds < b.seconds) {
            plain = Some(p);
        }
        let d = measure(&plan, &batches, partitions, Some(interval), &checkpoints)?;
        if durable.as_ref().is_none_or(|b| d.seconds < b.seconds) {
            durable = Some(d);
        }
    }
    let (Some(plain), Some(durable)) = (plain, durable) else {
        return Err("no run".into());
    };
    let restore_started = Instant::now();
    let restored = checkpoints
        .load_latest()?
        .ok_or("no checkpoint was written")?;
    let loaded = restore_started.elapsed();
    let mut options = PartitionOptions::new(partitions);
    options.restore = Some(Arc::new(restored.operators));
    let mut none = std::iter::empty::<InputEvent>();
    run_partitioned(&plan, &options, || Ok(none.next()), |_| Ok(()))?;
    let restore = restore_started.elapsed();
    let rate = |m: &Measured| rows as f64 / m.seconds;
    println!("query: {QUERY}");
    println!(
        "{rows} records, {keys} keys, {partitions} partition(s), checkpoint every {interval:?}"
    );
    println!(
        "without checkpoints: {:.2}M records/s ({:.1} ns CPU/record)",
        rate(&plain) / 1e6,
        plain.cpu_seconds * 1e9 / rows as f64
    );
    println!(
        "with checkpoints:    {:.2}M records/s ({:.1} ns CPU/record), {:.1}% of the rate without",
        rate(&durable) / 1e6,
        durable.cpu_seconds * 1e9 / rows as f64,
        100.0 * rate(&durable) / rate(&plain)
    );
    let n = durable.checkpoints.len().max(1) as f64;
    let mean = durable
        .checkpoints
        .iter()
        .map(|(d, _)| d.as_secs_f64())
        .sum::<f64>()
        / n;
    let max = durable
        .checkpoints
        .iter()
        .map(|(d, _)| d.as_secs_f64())
        .fold(0.0, f64::max);
    let bytes = durable.checkpoints.last().map_or(0, |(_, b)| *b);
    println!(
        "checkpoints: {} taken, barrier to written {:.0} ms mean, {:.0} ms max, {:.1} MB each (last)",
        durable.checkpoints.len(),
        mean * 1e3,
        max * 1e3,
        bytes as f64 / 1e6
    );
    println!(
        "restore: {:.0} ms to read and check the checkpoint, {:.0} ms until the workers hold it",
        loaded.as_secs_f64() * 1e3,
        restore.as_secs_f64() * 1e3
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn tempfile_dir() -> BenchResult<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("velo-bench-checkpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
