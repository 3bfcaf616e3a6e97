//! Same answer at any width: each query gives the same output rows (as a multiset, and per key
//! in the same order) with 1, 2, 4 and 8 partition workers, and keyed queries really spread.

use std::collections::BTreeMap;
use std::io::Write;

use std::sync::Arc;

use arrow::array::{Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use velostream::job::{plan_script, JobOptions, JobSummary};
use velostream::partition::{
    run_partitioned, Delivery, InputEvent, PartitionOptions, PartitionRun,
};
use velostream::sql::QueryPlanner;

const ROWS: usize = 20_000;
const SYMBOLS: usize = 37;

/// A trades file: 37 symbols, event time about 10 s per row with up to 40 s of disorder, a
/// few records far behind (late for every window query), and some NULL quantities.
fn write_trades(dir: &std::path::Path) -> String {
    let path = dir.join("trades.jsonl");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    let mut state: u64 = 7;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    for i in 0..ROWS {
        let symbol = format!("s{:02}", next() as usize % SYMBOLS);
        let jitter = (next() % 40_000) as i64;
        let mut ts = i as i64 * 10_000 + jitter;
        if i % 997 == 0 && i > 0 {
            ts -= 30_000_000;
        }
        let qty = next() % 1000;
        let price = (next() % 100_000) as f64 / 100.0;
        if i % 101 == 0 {
            writeln!(
                f,
                r#"{{"symbol":"{symbol}","price":{price},"quantity":null,"ts":{ts}}}"#
            )
        } else {
            writeln!(
                f,
                r#"{{"symbol":"{symbol}","price":{price},"quantity":{qty},"ts":{ts}}}"#
            )
        }
        .expect("write");
    }
    f.flush().expect("flush");
    path.display().to_string()
}

/// Runs `sql` over the trades file with `partitions` workers; returns the summary and the
/// output rows as JSON objects (deletes carry `"_deleted": true`).
fn run(sql: &str, path: &str, partitions: usize) -> (JobSummary, Vec<serde_json::Value>) {
    run_batched(sql, path, partitions, 1000)
}

fn run_batched(
    sql: &str,
    path: &str,
    partitions: usize,
    batch_size: usize,
) -> (JobSummary, Vec<serde_json::Value>) {
    let options = JobOptions {
        source_paths: BTreeMap::from([("trades".to_string(), path.to_string())]),
        partitions,
        queue_depth: 2,
        collect_output: true,
        ..Default::default()
    };
    let script = format!(
        "CREATE STREAM trades (symbol VARCHAR, price DOUBLE, quantity BIGINT, ts BIGINT) \
         WITH ('trades.batch.size' = '{batch_size}', 'trades.watermark.max_out_of_orderness' = '30s');\n{sql}"
    );
    let planned = plan_script(&script, &options).expect("plans");
    let mut summaries = planned.run(&options).expect("runs");
    let summary = summaries.pop().expect("one job");
    let mut rows = Vec::new();
    for batch in summary.output.iter().flatten() {
        rows.extend(json_rows(batch));
    }
    (summary, rows)
}

/// A batch's rows as JSON objects (a delete batch's carry `"_deleted": true`).
fn json_rows(batch: &RecordBatch) -> Vec<serde_json::Value> {
    let deleted = velostream::exec::change::is_delete(batch);
    let mut buf = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
    writer.write(batch).expect("json");
    writer.finish().expect("json");
    buf.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let mut row: serde_json::Value = serde_json::from_slice(line).expect("row");
            if deleted {
                row["_deleted"] = serde_json::Value::Bool(true);
            }
            row
        })
        .collect()
}

fn key_of(row: &serde_json::Value, key: &[&str]) -> String {
    key.iter()
        .map(|k| row.get(*k).map(|v| v.to_string()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("|")
}

/// Asserts the query gives the same multiset of rows, and per key the same sequence, at
/// widths 1, 2, 4 and 8; returns the single-partition row count.
fn assert_same_at_every_width(sql: &str, key: &[&str], expect_spread: bool) -> usize {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_trades(dir.path());
    let (base_summary, base) = run(sql, &path, 1);
    assert!(!base.is_empty(), "{sql}: no output at all");
    let per_key = |rows: &[serde_json::Value]| {
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in rows {
            by_key
                .entry(key_of(r, key))
                .or_default()
                .push(r.to_string());
        }
        by_key
    };
    let sorted = |rows: &[serde_json::Value]| {
        let mut all: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        all.sort();
        all
    };
    for n in [2, 4, 8] {
        let (summary, rows) = run(sql, &path, n);
        assert_eq!(
            sorted(&rows),
            sorted(&base),
            "{sql}: rows differ at {n} partitions"
        );
        assert_eq!(
            per_key(&rows),
            per_key(&base),
            "{sql}: per-key order differs at {n} partitions"
        );
        assert_eq!(
            summary.late_records, base_summary.late_records,
            "{sql}: late records at {n}"
        );
        assert_eq!(summary.records_in, ROWS as u64);
        let expected_width = if expect_spread { n } else { 1 };
        assert_eq!(
            summary.partitions, expected_width,
            "{sql}: workers used at {n}"
        );
    }
    base.len()
}

#[test]
fn filter_and_projection() {
    let n = assert_same_at_every_width(
        "SELECT symbol, price * 2 AS doubled, _offset FROM trades WHERE quantity > 500",
        &["_offset"],
        true,
    );
    assert!(n > 5_000 && n < 15_000, "{n}");
}

#[test]
fn group_by_emit_changes_with_having() {
    assert_same_at_every_width(
        "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS qty, AVG(price) AS avg_price \
         FROM trades GROUP BY symbol HAVING SUM(quantity) < 100000 EMIT CHANGES",
        &["symbol"],
        true,
    );
}

#[test]
fn group_by_key_expression() {
    let n = assert_same_at_every_width(
        "SELECT UPPER(symbol) AS s, COUNT(*) AS n, MAX(price) AS hi FROM trades \
         GROUP BY UPPER(symbol) EMIT FINAL",
        &["s"],
        true,
    );
    assert_eq!(n, SYMBOLS);
}

#[test]
fn tumbling_emit_final_with_late_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_trades(dir.path());
    let sql = "SELECT symbol, _window_start, COUNT(*) AS n, SUM(quantity) AS qty FROM trades \
               GROUP BY symbol WINDOW TUMBLING(ts, 5m) EMIT FINAL";
    let (summary, _) = run(sql, &path, 1);
    assert!(summary.late_records > 0, "the input has late records");
    assert_same_at_every_width(sql, &["symbol", "_window_start"], true);
}

#[test]
fn tumbling_emit_changes() {
    assert_same_at_every_width(
        "SELECT symbol, _window_start, COUNT(*) AS n FROM trades \
         GROUP BY symbol WINDOW TUMBLING(ts, 10m) EMIT CHANGES",
        &["symbol", "_window_start"],
        true,
    );
}

#[test]
fn sliding_emit_final() {
    assert_same_at_every_width(
        "SELECT symbol, _window_start, _window_end, COUNT(*) AS n, MIN(price) AS lo FROM trades \
         GROUP BY symbol WINDOW SLIDING(ts, 10m, 5m) EMIT FINAL",
        &["symbol", "_window_start"],
        true,
    );
}

#[test]
fn session_windows() {
    assert_same_at_every_width(
        "SELECT symbol, _window_start, _window_end, COUNT(*) AS n FROM trades \
         GROUP BY symbol WINDOW SESSION(ts, 4m)",
        &["symbol", "_window_start"],
        true,
    );
}

#[test]
fn analytic_functions_partitioned_by_key() {
    assert_same_at_every_width(
        "SELECT symbol, price, LAG(price) OVER (PARTITION BY symbol ORDER BY ts) AS prev, \
         ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY ts) AS rn FROM trades",
        &["symbol"],
        true,
    );
}

#[test]
fn queries_that_need_every_row_run_on_one_worker() {
    assert_same_at_every_width(
        "SELECT symbol, price FROM trades WHERE quantity > 990 ORDER BY price DESC LIMIT 5",
        &[],
        false,
    );
    assert_same_at_every_width(
        "SELECT COUNT(*) AS n, SUM(quantity) AS qty FROM trades",
        &[],
        false,
    );
}

/// Windows close on the watermark of the whole input, never on one worker's private maximum:
/// keys that go quiet while another key moves event time on still see their late records
/// dropped, on whichever worker they live.
#[test]
fn watermark_is_global_across_workers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trades.jsonl");
    let mut lines = Vec::new();
    for k in 0..16 {
        lines.push(format!(
            r#"{{"symbol":"k{k}","price":1.0,"quantity":1,"ts":1000}}"#
        ));
    }
    for minute in 1..=10 {
        lines.push(format!(
            r#"{{"symbol":"clock","price":1.0,"quantity":1,"ts":{}}}"#,
            minute * 60_000
        ));
    }
    for k in 0..16 {
        lines.push(format!(
            r#"{{"symbol":"k{k}","price":1.0,"quantity":1,"ts":2000}}"#
        ));
    }
    std::fs::write(&path, lines.join("\n") + "\n").expect("write");
    let path = path.display().to_string();
    let sql = "SELECT symbol, _window_start, COUNT(*) AS n FROM trades \
               GROUP BY symbol WINDOW TUMBLING(ts, 1m) EMIT FINAL";
    for n in [1, 4] {
        let (summary, rows) = run_batched(sql, &path, n, 1);
        assert_eq!(summary.late_records, 16, "at {n} partitions");
        let quiet: Vec<_> = rows.iter().filter(|r| r["symbol"] != "clock").collect();
        assert_eq!(quiet.len(), 16, "at {n} partitions");
        assert!(
            quiet.iter().all(|r| r["n"] == 1),
            "at {n} partitions: {quiet:?}"
        );
    }
}

/// Rows of `symbols` symbols, one second apart, each in the source partition of its symbol
/// (`symbol % 3`), as a topic keyed by symbol holds them: every event is one batch with a run
/// from each partition, the partitions read in turn.
fn keyed_events(rows: usize, symbols: usize) -> Vec<(RecordBatch, Vec<PartitionRun>)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, true),
        Field::new("quantity", DataType::Int64, true),
        Field::new("ts", DataType::Int64, true),
        Field::new("_partition", DataType::Int32, true),
    ]));
    let mut partitions: Vec<Vec<(String, i64, i64)>> = vec![Vec::new(); 3];
    for i in 0..rows {
        let s = (i * 7 + i / 13) % symbols;
        partitions[s % 3].push((format!("s{s:02}"), (i % 97) as i64, i as i64 * 1000));
    }
    let mut events = Vec::new();
    let chunk = 17;
    for start in (0..rows.div_ceil(3)).step_by(chunk) {
        let mut runs = Vec::new();
        let (mut symbol, mut quantity, mut ts, mut partition) = (vec![], vec![], vec![], vec![]);
        for (p, records) in partitions.iter().enumerate() {
            let part = &records[start.min(records.len())..(start + chunk).min(records.len())];
            if part.is_empty() {
                continue;
            }
            runs.push(PartitionRun {
                partition: p as i32,
                rows: part.len(),
            });
            for (s, q, t) in part {
                symbol.push(s.clone());
                quantity.push(*q);
                ts.push(*t);
                partition.push(p as i32);
            }
        }
        if runs.is_empty() {
            continue;
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(symbol)),
                Arc::new(Int64Array::from(quantity)),
                Arc::new(Int64Array::from(ts)),
                Arc::new(Int32Array::from(partition)),
            ],
        )
        .expect("batch");
        events.push((batch, runs));
    }
    events
}

/// Runs `sql` over the events with `partitions` workers, fed as a topic keyed by symbol
/// (`keyed`) or as plain batches; the output rows as JSON, and whether routing was direct.
fn run_keyed(
    sql: &str,
    events: &[(RecordBatch, Vec<PartitionRun>)],
    partitions: usize,
    keyed: bool,
) -> (Vec<serde_json::Value>, bool) {
    let mut planner = QueryPlanner::new();
    let schema = events[0].0.schema();
    planner.register_source("trades", schema).expect("source");
    let plan = planner.plan_sql(sql, "q").expect("plan");
    let mut options = PartitionOptions::new(partitions);
    if keyed {
        options.source_key = vec!["symbol".to_string()];
    }
    let mut input = std::iter::once(InputEvent::Partitions {
        input: 0,
        ids: vec![0, 1, 2],
    })
    .chain(events.iter().map(|(batch, runs)| match keyed {
        true => InputEvent::PartitionedBatch {
            input: 0,
            batch: batch.clone(),
            runs: runs.clone(),
        },
        false => InputEvent::Batch(batch.clone()),
    }));
    let mut rows = Vec::new();
    let stats = run_partitioned(
        &plan,
        &options,
        || Ok(input.next()),
        |delivery| {
            if let Delivery::Rows(batch) = delivery {
                rows.extend(json_rows(&batch));
            }
            Ok(())
        },
    )
    .expect("run");
    (rows, stats.direct)
}

#[test]
fn a_source_partitioned_by_the_key_feeds_workers_directly_with_the_same_answer() {
    let events = keyed_events(6000, 12);
    for (sql, key) in [
        (
            "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS qty FROM trades GROUP BY symbol EMIT CHANGES",
            &["symbol"][..],
        ),
        (
            "SELECT symbol, _window_start, COUNT(*) AS n, SUM(quantity) AS qty FROM trades \
             GROUP BY symbol WINDOW TUMBLING(ts, 1m) EMIT FINAL",
            &["symbol", "_window_start"][..],
        ),
    ] {
        let (base, direct) = run_keyed(sql, &events, 1, false);
        assert!(!direct);
        assert!(base.len() > 100, "{sql}: output");
        let per_key = |rows: &[serde_json::Value]| {
            let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in rows {
                by_key.entry(key_of(r, key)).or_default().push(r.to_string());
            }
            by_key
        };
        for n in [1, 2, 4] {
            let (rows, direct) = run_keyed(sql, &events, n, true);
            assert_eq!(direct, n > 1, "{sql}: direct at {n}");
            assert_eq!(rows.len(), base.len(), "{sql}: rows at {n}");
            assert_eq!(per_key(&rows), per_key(&base), "{sql}: per key at {n}");
        }
    }
    // A key that does not hold the source's key is hashed as usual.
    let (_, direct) = run_keyed(
        "SELECT quantity, COUNT(*) AS n FROM trades GROUP BY quantity EMIT CHANGES",
        &events,
        2,
        true,
    );
    assert!(!direct, "grouped by another column: hashed");
}
