//! The engine's three entry points on one GROUP BY ... EMIT CHANGES query: per-record sync,
//! batch sync, and the async per-record wrapper feeding a bounded channel.

use std::time::Instant;

use arrow::record_batch::RecordBatch;
use velostream::exec::record::{batch_to_records, StreamRecord};
use velostream::sql::QueryPlanner;
use velostream::StreamExecutionEngine;

use crate::generators::{self, Stream};
use crate::report::human_rate;
use crate::scenarios::Workload;
use crate::BenchResult;

/// The query all three entry points run.
pub const QUERY: &str =
    "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS qty FROM trades GROUP BY symbol EMIT CHANGES";

/// Capacity of the async path's output channel.
const CHANNEL_CAPACITY: usize = 1024;

/// One entry point's measurement.
pub struct EntryResult {
    pub name: &'static str,
    pub rows: u64,
    pub output_rows: u64,
    pub seconds: f64,
}

impl EntryResult {
    /// Input records per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.rows as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// The result as a JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "entry_point": self.name, "rows": self.rows, "output_rows": self.output_rows,
            "seconds": self.seconds, "records_per_s": self.rate(),
        })
    }
}

fn deployed() -> BenchResult<(StreamExecutionEngine, String)> {
    let mut planner = QueryPlanner::new();
    planner.register_source("trades", Stream::Trades.schema())?;
    let plan = planner.plan_sql(QUERY, "entry")?;
    let mut engine = StreamExecutionEngine::new();
    let id = engine.deploy(plan)?;
    Ok((engine, id))
}

fn batch_sync(batches: &[RecordBatch]) -> BenchResult<EntryResult> {
    let (mut engine, id) = deployed()?;
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let mut output_rows = 0;
    let started = Instant::now();
    for b in batches {
        for out in engine.execute_batch_sync(&id, b.clone())? {
            output_rows += out.num_rows() as u64;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(EntryResult {
        name: "batch sync (execute_batch_sync)",
        rows,
        output_rows,
        seconds,
    })
}

/// Records per turn when the two per-record paths take turns.
const TURN: usize = 5_000;

/// The per-record paths, sync and async, taking turns over the same records a few thousand
/// at a time: they differ by a channel send, a few percent of a record's cost, so each must
/// meet the same moments of machine noise.
fn per_record(records: &[StreamRecord]) -> BenchResult<[EntryResult; 2]> {
    let (mut sync_engine, sync_id) = deployed()?;
    let (mut async_engine, async_id) = deployed()?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let (tx, mut rx) = StreamExecutionEngine::output_channel(CHANNEL_CAPACITY);
    let consumer = runtime.spawn(async move {
        let mut n = 0u64;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let (mut sync_rows, mut sync_s, mut async_s) = (0u64, 0.0, 0.0);
    for turn in records.chunks(TURN) {
        let started = Instant::now();
        for r in turn {
            sync_rows += sync_engine.execute_with_record_sync(&sync_id, r)?.len() as u64;
        }
        sync_s += started.elapsed().as_secs_f64();
        let started = Instant::now();
        runtime.block_on(async {
            for r in turn {
                async_engine.execute_with_record(&async_id, r, &tx).await?;
            }
            Ok::<(), velostream::VeloError>(())
        })?;
        async_s += started.elapsed().as_secs_f64();
    }
    // The consumer drains what is still queued after the last turn.
    let started = Instant::now();
    drop(tx);
    let async_rows = runtime.block_on(consumer)?;
    async_s += started.elapsed().as_secs_f64();
    Ok([
        EntryResult {
            name: "per-record sync (execute_with_record_sync)",
            rows: records.len() as u64,
            output_rows: sync_rows,
            seconds: sync_s,
        },
        EntryResult {
            name: "async per-record (execute_with_record + channel)",
            rows: records.len() as u64,
            output_rows: async_rows,
            seconds: async_s,
        },
    ])
}

/// Measures the three entry points; the per-record paths get the first `record_rows` rows.
pub fn compare(workload: &Workload, record_rows: u64) -> BenchResult<Vec<EntryResult>> {
    let batches = generators::batches(
        Stream::Trades,
        workload.rows,
        workload.keys,
        workload.seed,
        workload.batch_size,
    )?;
    let template = StreamRecord::default();
    let mut records = Vec::with_capacity(record_rows as usize);
    for b in &batches {
        if records.len() as u64 >= record_rows {
            break;
        }
        records.extend(batch_to_records(b, &template)?);
    }
    records.truncate(record_rows as usize);
    let [sync, wrapped] = per_record(&records)?;
    Ok(vec![batch_sync(&batches)?, sync, wrapped])
}

/// The comparison as a Markdown table, with each rate's ratio to batch sync.
pub fn table(results: &[EntryResult]) -> String {
    let base = results.first().map(EntryResult::rate).unwrap_or(0.0);
    let mut out = String::from(
        "| entry point | rows | output rows | records/s | vs batch sync |\n|---|---|---|---|---|\n",
    );
    for r in results {
        let ratio = if base > 0.0 { r.rate() / base } else { 0.0 };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.name,
            r.rows,
            r.output_rows,
            human_rate(r.rate()),
            if ratio >= 0.1 {
                format!("{ratio:.2}×")
            } else {
                format!("1/{:.0}", 1.0 / ratio.max(f64::MIN_POSITIVE))
            }
        ));
    }
    out
}
