//! Backpressure: a sink slower than the source holds the source back through the bounded
//! queues, so the records in flight and the process's memory stay flat however much input
//! there is. (Its own test binary: it measures the process's peak memory.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use velostream::partition::{run_partitioned, Delivery, InputEvent, PartitionOptions};
use velostream::sql::QueryPlanner;

const BATCHES: u64 = 800;
const ROWS: usize = 8192;
/// Each row carries this much text, so every batch is about 1 MiB.
const PAYLOAD: usize = 120;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, true),
        Field::new("note", DataType::Utf8, true),
        Field::new("qty", DataType::Int64, true),
    ]))
}

/// A freshly allocated batch (no buffer shared with earlier ones).
fn batch(i: u64) -> RecordBatch {
    let note = "x".repeat(PAYLOAD);
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..ROWS).map(|r| format!("s{}", (r as u64 + i) % 50)),
            )),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                note.as_str(),
                ROWS,
            ))),
            Arc::new(Int64Array::from_iter_values(
                (0..ROWS as i64).map(|r| r % 7),
            )),
        ],
    )
    .expect("batch")
}

/// Peak resident memory of this process so far, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `sql` with a sink that sleeps on every batch; returns the most records ever in
/// flight (produced by the source, not yet handed to the sink).
fn most_in_flight(sql: &str, depth: usize) -> u64 {
    let mut planner = QueryPlanner::new();
    planner.register_source("trades", schema()).expect("source");
    let plan = planner.plan_sql(sql, "q").expect("plan");
    let delivered = AtomicU64::new(0);
    let mut produced = 0u64;
    let mut most = 0u64;
    let mut next = 0u64;
    run_partitioned(
        &plan,
        &PartitionOptions {
            queue_depth: depth,
            ..PartitionOptions::new(2)
        },
        || {
            if next == BATCHES {
                return Ok(None);
            }
            most = most.max(produced - delivered.load(Ordering::SeqCst));
            next += 1;
            produced += ROWS as u64;
            Ok(Some(InputEvent::Batch(batch(next))))
        },
        |d| {
            if let Delivery::Rows(b) = d {
                std::thread::sleep(Duration::from_millis(2));
                delivered.fetch_add(b.num_rows() as u64, Ordering::SeqCst);
            }
            Ok(())
        },
    )
    .expect("runs");
    most
}

#[test]
fn a_slow_sink_holds_the_source_back_and_memory_stays_flat() {
    let depth = 2;
    // The router holds one batch; behind the sink's current epoch a worker can hold `depth`
    // queued, one in hand and `depth` answered; the output thread one more.
    let bound = (2 * depth as u64 + 3) * ROWS as u64;
    let before = peak_rss_kib();
    let passthrough = most_in_flight("SELECT symbol, note, qty FROM trades", depth);
    assert!(
        passthrough <= bound,
        "{passthrough} records in flight, bound {bound}"
    );
    let keyed = most_in_flight(
        "SELECT symbol, note, COUNT(*) AS n FROM trades GROUP BY symbol, note EMIT CHANGES",
        depth,
    );
    assert!(keyed <= bound, "{keyed} records in flight, bound {bound}");
    // 800 batches of ~1 MiB went through; unbounded queues would have held most of them.
    let grown_mib = peak_rss_kib().saturating_sub(before) / 1024;
    eprintln!("grown {grown_mib} MiB, in flight {passthrough} and {keyed}");
    assert!(grown_mib < 128, "peak memory grew by {grown_mib} MiB");
}
