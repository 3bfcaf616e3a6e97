//! Restore after a crash, at another width: a run snapshots its state part-way, goes on a
//! little (output a crash would repeat), and dies; a second run restores the snapshot at
//! another partition count and reads on from the snapshot's position. The final answer
//! (the latest row per key of an upsert stream, every window's row) must be that of one
//! uninterrupted run, and GROUP BY totals those of DataFusion over the same rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use velostream::exec::snapshot::{OperatorState, RestoredStates};
use velostream::partition::{run_partitioned, Delivery, InputEvent, PartitionOptions};
use velostream::sql::{PlannedQuery, QueryPlanner};

const BATCHES: usize = 60;
const BATCH_ROWS: usize = 500;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, true),
        Field::new("quantity", DataType::Int64, true),
        Field::new("price", DataType::Float64, true),
        Field::new("ts", DataType::Int64, true),
    ]))
}

/// 30 000 trades over 211 symbols, one per 100 ms with a few seconds of disorder, some NULL
/// quantities.
fn trades() -> Vec<RecordBatch> {
    let mut seed: u64 = 42;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    (0..BATCHES)
        .map(|b| {
            let (mut symbol, mut quantity, mut price, mut ts) = (vec![], vec![], vec![], vec![]);
            for r in 0..BATCH_ROWS {
                let i = (b * BATCH_ROWS + r) as i64;
                symbol.push(format!("S{}", next() % 211));
                quantity.push((next() % 10 != 0).then(|| (next() % 100) as i64));
                price.push(Some((next() % 10_000) as f64 / 8.0));
                ts.push(i * 100 - (next() % 3000) as i64);
            }
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(StringArray::from(symbol)),
                    Arc::new(Int64Array::from(quantity)),
                    Arc::new(Float64Array::from(price)),
                    Arc::new(Int64Array::from(ts)),
                ],
            )
            .expect("batch")
        })
        .collect()
}

fn plan(sql: &str) -> PlannedQuery {
    let mut planner = QueryPlanner::new();
    planner.register_source("trades", schema()).expect("source");
    planner.plan_sql(sql, "q").expect("plan")
}

/// What a run emitted, and the state of its snapshot if it took one.
struct Run {
    rows: Vec<serde_json::Value>,
    snapshot: Option<RestoredStates>,
}

/// Runs over `batches` at `width` from `restore`; snapshots after batch `snapshot_after` if
/// given; ends the input (`complete`) or stops as a crash would, dropping open state.
fn run(
    plan: &PlannedQuery,
    batches: &[RecordBatch],
    width: usize,
    restore: Option<RestoredStates>,
    snapshot_after: Option<usize>,
    complete: bool,
) -> Run {
    let mut options = PartitionOptions::new(width);
    options.restore = restore.map(Arc::new);
    let mut events: Vec<InputEvent> = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        events.push(InputEvent::Batch(b.clone()));
        if snapshot_after == Some(i) {
            events.push(InputEvent::Snapshot(1));
        }
    }
    if !complete {
        events.push(InputEvent::Stop);
    }
    let mut events = events.into_iter();
    let mut rows = Vec::new();
    let mut snapshot = None;
    run_partitioned(
        plan,
        &options,
        || Ok(events.next()),
        |delivery| {
            match delivery {
                Delivery::Rows(batch) => rows.extend(json_rows(&batch)),
                Delivery::Snapshot { partitions, .. } => {
                    let mut states = RestoredStates::new();
                    for partition in partitions {
                        for (name, state) in partition {
                            // Through the bytes a checkpoint stores.
                            let bytes = state.encode().expect("encode");
                            let state = OperatorState::decode(&bytes).expect("decode");
                            states.entry(name).or_default().push(state);
                        }
                    }
                    snapshot = Some(states);
                }
                _ => {}
            }
            Ok(())
        },
    )
    .expect("run");
    Run { rows, snapshot }
}

fn json_rows(batch: &RecordBatch) -> Vec<serde_json::Value> {
    let mut buf = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
    writer.write(batch).expect("json");
    writer.finish().expect("json");
    String::from_utf8(buf)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("row"))
        .collect()
}

fn key_of(row: &serde_json::Value, key: &[&str]) -> String {
    key.iter()
        .map(|k| row.get(*k).map_or("null".to_string(), |v| v.to_string()))
        .collect::<Vec<_>>()
        .join("|")
}

/// The latest row of every key, in output order.
fn latest(rows: &[serde_json::Value], key: &[&str]) -> BTreeMap<String, serde_json::Value> {
    rows.iter().map(|r| (key_of(r, key), r.clone())).collect()
}

/// Every distinct row per key: a repeated window must repeat its exact values.
fn distinct(rows: &[serde_json::Value], key: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rows {
        let text = r.to_string();
        let seen = by_key.entry(key_of(r, key)).or_default();
        if !seen.contains(&text) {
            seen.push(text);
        }
    }
    by_key
}

/// Crashes a run at `before` partitions after a snapshot at batch 24 (it goes on to batch
/// 35), restores at `after` partitions from batch 25, and returns the rows of both runs.
fn crash_and_restore(plan: &PlannedQuery, before: usize, after: usize) -> Vec<serde_json::Value> {
    let input = trades();
    let first = run(plan, &input[..36], before, None, Some(24), false);
    let state = first.snapshot.expect("the snapshot was delivered");
    let second = run(plan, &input[25..], after, Some(state), None, true);
    let mut rows = first.rows;
    rows.extend(second.rows);
    rows
}

#[test]
fn group_by_emit_changes_restores_at_another_width_with_exact_totals() {
    let plan = plan(
        "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q, AVG(price) AS p, MAX(price) AS hi \
         FROM trades GROUP BY symbol EMIT CHANGES",
    );
    let whole = run(&plan, &trades(), 1, None, None, true).rows;
    let oracle = oracle_totals();
    let expected = latest(&whole, &["symbol"]);
    assert_eq!(expected.len(), 211);
    for row in expected.values() {
        let k = row["symbol"].as_str().expect("symbol");
        assert_eq!(
            (row["n"].as_i64(), row["q"].as_i64()),
            oracle[k],
            "the uninterrupted run agrees with DataFusion on {k}"
        );
    }
    for (before, after) in [(4, 2), (1, 3), (2, 4)] {
        let rows = crash_and_restore(&plan, before, after);
        assert_eq!(
            latest(&rows, &["symbol"]),
            expected,
            "{before} → {after} partitions"
        );
    }
}

/// COUNT(*) and SUM(quantity) per symbol, by DataFusion over every row.
fn oracle_totals() -> BTreeMap<String, (Option<i64>, Option<i64>)> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(schema(), vec![trades()]).expect("table");
    ctx.register_table("trades", Arc::new(table))
        .expect("register");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let batches = runtime.block_on(async {
        ctx.sql("SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q FROM trades GROUP BY symbol")
            .await
            .expect("sql")
            .collect()
            .await
            .expect("collect")
    });
    batches
        .iter()
        .flat_map(json_rows)
        .map(|r| {
            (
                r["symbol"].as_str().expect("symbol").to_string(),
                (r["n"].as_i64(), r["q"].as_i64()),
            )
        })
        .collect()
}

#[test]
fn group_by_emit_final_restores_and_emits_exact_totals_at_the_end() {
    let plan = plan(
        "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q FROM trades GROUP BY symbol EMIT FINAL",
    );
    let oracle = oracle_totals();
    let rows = crash_and_restore(&plan, 4, 2);
    assert_eq!(rows.len(), 211, "every group once, at the end");
    for row in &rows {
        let k = row["symbol"].as_str().expect("symbol");
        assert_eq!((row["n"].as_i64(), row["q"].as_i64()), oracle[k], "{k}");
    }
}

#[test]
fn windows_restore_at_another_width_with_every_window_exact() {
    for (sql, key) in [
        (
            "SELECT symbol, _window_start, COUNT(*) AS n, SUM(quantity) AS q FROM trades \
             GROUP BY symbol WINDOW TUMBLING(ts, 10s) EMIT FINAL",
            &["symbol", "_window_start"][..],
        ),
        (
            "SELECT symbol, _window_start, COUNT(*) AS n, AVG(price) AS p FROM trades \
             GROUP BY symbol WINDOW SLIDING(ts, 30s, 10s) EMIT FINAL",
            &["symbol", "_window_start"][..],
        ),
        (
            "SELECT symbol, _window_start, COUNT(*) AS n, SUM(quantity) AS q FROM trades \
             GROUP BY symbol WINDOW TUMBLING(ts, 10s) EMIT CHANGES",
            &["symbol", "_window_start"][..],
        ),
        (
            "SELECT symbol, _window_start, _window_end, COUNT(*) AS n, SUM(quantity) AS q \
             FROM trades GROUP BY symbol WINDOW SESSION(ts, 20s) EMIT FINAL",
            &["symbol", "_window_start"][..],
        ),
    ] {
        let plan = plan(sql);
        let whole = run(&plan, &trades(), 1, None, None, true).rows;
        assert!(whole.len() > 500, "{sql}: {} rows", whole.len());
        let changes = sql.contains("CHANGES");
        for (before, after) in [(4, 2), (1, 3)] {
            let rows = crash_and_restore(&plan, before, after);
            if changes {
                assert_eq!(
                    latest(&rows, key),
                    latest(&whole, key),
                    "{sql}: {before} → {after}"
                );
            } else {
                // At-least-once: a window emitted after the snapshot is emitted again after
                // the restore, with the same values.
                let got = distinct(&rows, key);
                assert!(
                    got.values().all(|v| v.len() == 1),
                    "{sql}: a window changed"
                );
                assert_eq!(got, distinct(&whole, key), "{sql}: {before} → {after}");
            }
        }
    }
}

#[test]
fn late_counts_and_watermarks_survive_a_restore() {
    let plan = plan(
        "SELECT symbol, _window_start, COUNT(*) AS n FROM trades \
         GROUP BY symbol WINDOW TUMBLING(ts, 1s) EMIT FINAL",
    );
    let input = trades();
    // Batch 30 again after the restore, far behind the restored watermark: every row is late.
    let first = run(&plan, &input[..31], 2, None, Some(30), false);
    let state = first.snapshot.expect("snapshot");
    let late_before: i64 = state
        .values()
        .flatten()
        .filter_map(|s| s.scalar("late"))
        .sum();
    let mut options = PartitionOptions::new(3);
    options.restore = Some(Arc::new(state));
    let mut events = vec![InputEvent::Batch(input[5].clone())].into_iter();
    let stats = run_partitioned(&plan, &options, || Ok(events.next()), |_| Ok(())).expect("run");
    assert_eq!(
        stats.late_records as i64,
        late_before + BATCH_ROWS as i64,
        "the restored watermark makes an old batch late, on top of the restored count"
    );
}

#[test]
fn distinct_rows_and_limit_counters_carry_over() {
    for sql in [
        "SELECT DISTINCT symbol FROM trades",
        "SELECT symbol, quantity FROM trades LIMIT 700",
    ] {
        let plan = plan(sql);
        let input = trades();
        let whole = run(&plan, &input, 1, None, None, true).rows;
        // Snapshot after batch 0 and stop there: nothing is emitted twice.
        let first = run(&plan, &input[..1], 1, None, Some(0), false);
        let state = first.snapshot.expect("snapshot");
        let second = run(&plan, &input[1..], 1, Some(state), None, true);
        let mut rows = first.rows;
        rows.extend(second.rows);
        assert_eq!(rows, whole, "{sql}");
    }
}

#[test]
fn state_restored_and_checkpointed_again_at_each_width_stays_exact() {
    let plan = plan(
        "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q FROM trades GROUP BY symbol EMIT CHANGES",
    );
    let input = trades();
    let whole = run(&plan, &input, 1, None, None, true).rows;
    let mut state = run(&plan, &input[..10], 2, None, Some(9), false)
        .snapshot
        .expect("snapshot");
    // Runs that read nothing and checkpoint again, as restarts killed before their first
    // record do.
    for width in [4, 1, 3, 2] {
        let mut options = PartitionOptions::new(width);
        options.restore = Some(Arc::new(state));
        let mut events = vec![InputEvent::Snapshot(1), InputEvent::Stop].into_iter();
        let mut next = None;
        run_partitioned(
            &plan,
            &options,
            || Ok(events.next()),
            |d| {
                if let Delivery::Snapshot { partitions, .. } = d {
                    let mut states = RestoredStates::new();
                    for (name, state) in partitions.into_iter().flatten() {
                        let bytes = state.encode().expect("encode");
                        states
                            .entry(name)
                            .or_default()
                            .push(OperatorState::decode(&bytes).expect("decode"));
                    }
                    next = Some(states);
                }
                Ok(())
            },
        )
        .expect("run");
        state = next.expect("snapshot");
    }
    let rest = run(&plan, &input[10..], 4, Some(state), None, true).rows;
    assert_eq!(latest(&rest, &["symbol"]), latest(&whole, &["symbol"]));
}

/// Runs `input` up to batch 19 at `before` partitions, snapshots there and stops (a checkpoint
/// followed by a crash), then restores at `after` partitions and reads the rest: every row
/// both runs emitted.
fn checkpoint_then_restore(
    plan: &PlannedQuery,
    input: &[RecordBatch],
    before: usize,
    after: usize,
) -> Vec<serde_json::Value> {
    let first = run(plan, &input[..20], before, None, Some(19), false);
    let state = first.snapshot.expect("snapshot");
    let second = run(plan, &input[20..], after, Some(state), None, true);
    let mut rows = first.rows;
    rows.extend(second.rows);
    rows
}

/// Checkpointed and restored at each (before, after) width, every symbol gets the rows of one
/// uninterrupted run, in its order: none lost, none repeated.
fn assert_each_key_restores_whole(plan: &PlannedQuery, widths: &[(usize, usize)]) {
    let input = trades();
    let whole = run(plan, &input, 1, None, None, true).rows;
    for (before, after) in widths {
        let rows = checkpoint_then_restore(plan, &input, *before, *after);
        assert_eq!(
            rows.len(),
            whole.len(),
            "{before} → {after}: no row lost or repeated"
        );
        assert_eq!(
            per_key(&rows, &["symbol"]),
            per_key(&whole, &["symbol"]),
            "{before} → {after} partitions"
        );
    }
}

/// Rows per key, in output order (widths interleave keys differently, never a key's rows).
fn per_key(rows: &[serde_json::Value], key: &[&str]) -> BTreeMap<String, Vec<String>> {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in rows {
        by_key
            .entry(key_of(r, key))
            .or_default()
            .push(r.to_string());
    }
    by_key
}

#[test]
fn analytic_functions_restore_at_another_width_with_the_rows_of_one_run() {
    let plan = plan(
        "SELECT symbol, quantity, \
           ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY ts) AS n, \
           RANK() OVER (PARTITION BY symbol ORDER BY quantity) AS r, \
           LAG(quantity, 2) OVER (PARTITION BY symbol ORDER BY ts) AS before2, \
           SUM(quantity) OVER (PARTITION BY symbol ORDER BY ts) AS running, \
           AVG(price) OVER (PARTITION BY symbol ORDER BY ts ROWS BETWEEN 3 PRECEDING AND CURRENT ROW) AS recent \
         FROM trades",
    );
    assert_each_key_restores_whole(&plan, &[(3, 2), (1, 4)]);
}

#[test]
fn lead_restores_its_waiting_rows_at_another_width() {
    let plan = plan(
        "SELECT symbol, quantity, \
           LEAD(quantity) OVER (PARTITION BY symbol ORDER BY ts) AS next1, \
           LEAD(quantity, 3, -1) OVER (PARTITION BY symbol ORDER BY ts) AS next3, \
           ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY ts) AS n \
         FROM trades",
    );
    assert_each_key_restores_whole(&plan, &[(2, 3), (4, 1)]);
}

#[test]
fn over_clauses_partitioned_differently_restore_as_stages_of_their_own() {
    // Each partitioning is its own stage (and the query runs on one partition).
    let plan = plan(
        "SELECT symbol, quantity, LAG(quantity) OVER (PARTITION BY symbol ORDER BY ts) AS a, \
         ROW_NUMBER() OVER (PARTITION BY quantity ORDER BY ts) AS b FROM trades",
    );
    let input = trades();
    let whole = run(&plan, &input, 1, None, None, true).rows;
    let rows = checkpoint_then_restore(&plan, &input, 2, 3);
    assert_eq!(rows, whole);
}
