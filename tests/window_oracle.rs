//! Window results against independent oracles, on random in-order inputs:
//! TUMBLING and SLIDING equal a batch DataFusion query grouping by the window start computed
//! per record; SESSION equals a straightforward reference implementation.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use velostream::sql::QueryPlanner;
use velostream::StreamExecutionEngine;

/// (key, window start, window end, count, sum, min, max)
type Row = (String, i64, i64, i64, i64, i64, i64);

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
    ]))
}

fn batch(records: &[(String, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                records.iter().map(|r| r.0.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(records.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut rows = Vec::new();
    for b in batches {
        let k = b.column(0).as_string::<i32>();
        let col = |i: usize| b.column(i).as_primitive::<Int64Type>().clone();
        let (ws, we, n, sum, lo, hi) = (col(1), col(2), col(3), col(4), col(5), col(6));
        for r in 0..b.num_rows() {
            rows.push((
                k.value(r).to_string(),
                ws.value(r),
                we.value(r),
                n.value(r),
                sum.value(r),
                lo.value(r),
                hi.value(r),
            ));
        }
    }
    rows.sort();
    rows
}

/// Runs velostream over the records, split into batches of `batch_size`.
fn velostream(window: &str, records: &[(String, i64, i64)], batch_size: usize) -> Vec<Row> {
    let mut planner = QueryPlanner::new();
    planner.register_source("t", schema()).unwrap();
    let sql = format!(
        "SELECT k, _window_start, _window_end, COUNT(*) AS n, SUM(v) AS s, MIN(v) AS lo, MAX(v) AS hi \
         FROM t GROUP BY k WINDOW {window}"
    );
    let mut engine = StreamExecutionEngine::new();
    let id = engine.deploy(planner.plan_sql(&sql, "q").unwrap()).unwrap();
    let mut out = Vec::new();
    for chunk in records.chunks(batch_size.max(1)) {
        out.extend(engine.execute_batch_sync(&id, batch(chunk)).unwrap());
    }
    out.extend(engine.end_of_input(&id).unwrap());
    rows_of(&out)
}

/// DataFusion over the records expanded to one row per (record, window containing it).
fn datafusion_oracle(records: &[(String, i64, i64)], size: i64, advance: i64) -> Vec<Row> {
    let mut expanded = Vec::new();
    for (k, v, ts) in records {
        let mut ws = ts.div_euclid(advance) * advance;
        while ws + size > *ts {
            expanded.push((k.clone(), *v, ws));
            ws -= advance;
        }
    }
    let ctx = SessionContext::new();
    let table = MemTable::try_new(schema(), vec![vec![batch(&expanded)]]).unwrap();
    ctx.register_table("w", Arc::new(table)).unwrap();
    let sql = format!(
        "SELECT k, ts AS ws, ts + {size} AS we, COUNT(*), SUM(v), MIN(v), MAX(v) FROM w GROUP BY k, ts"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let batches = runtime.block_on(async { ctx.sql(&sql).await.unwrap().collect().await.unwrap() });
    rows_of(&batches)
}

/// Sessions computed directly: per key, sorted times, split where the gap is reached.
fn session_oracle(records: &[(String, i64, i64)], gap: i64) -> Vec<Row> {
    let mut by_key: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for (k, v, ts) in records {
        by_key.entry(k).or_default().push((*ts, *v));
    }
    let mut rows = Vec::new();
    for (k, mut events) in by_key {
        events.sort();
        let mut current: Option<(i64, i64, Vec<i64>)> = None;
        for (ts, v) in events {
            match &mut current {
                Some((_, last, values)) if ts - *last < gap => {
                    *last = ts;
                    values.push(v);
                }
                _ => {
                    if let Some((start, last, values)) = current.take() {
                        rows.push(session_row(k, start, last + gap, &values));
                    }
                    current = Some((ts, ts, vec![v]));
                }
            }
        }
        if let Some((start, last, values)) = current {
            rows.push(session_row(k, start, last + gap, &values));
        }
    }
    rows.sort();
    rows
}

fn session_row(k: &str, start: i64, end: i64, values: &[i64]) -> Row {
    (
        k.to_string(),
        start,
        end,
        values.len() as i64,
        values.iter().sum(),
        *values.iter().min().unwrap(),
        *values.iter().max().unwrap(),
    )
}

/// Random in-order records: (key, value, event time).
fn records() -> impl Strategy<Value = Vec<(String, i64, i64)>> {
    prop::collection::vec((0u8..4, -50i64..50, 0i64..15_000), 1..150).prop_map(|raw| {
        let mut ts = 1_700_000_000_000i64;
        raw.into_iter()
            .map(|(k, v, step)| {
                ts += step;
                (format!("k{k}"), v, ts)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn tumbling_matches_datafusion(records in records(), size_s in 1i64..90, batch_size in 1usize..40) {
        let size = size_s * 1000;
        let got = velostream(&format!("TUMBLING(ts, {size_s}s)"), &records, batch_size);
        prop_assert_eq!(got, datafusion_oracle(&records, size, size));
    }

    #[test]
    fn sliding_matches_datafusion(records in records(), advance_s in 1i64..30, factor in 1i64..5, extra in 0i64..3, batch_size in 1usize..40) {
        // Sizes that are and are not multiples of the advance (panes of gcd width).
        let size_s = advance_s * factor + extra;
        let got = velostream(&format!("SLIDING(ts, {size_s}s, {advance_s}s)"), &records, batch_size);
        prop_assert_eq!(got, datafusion_oracle(&records, size_s * 1000, advance_s * 1000));
    }

    #[test]
    fn session_matches_reference(records in records(), gap_s in 1i64..40, batch_size in 1usize..40) {
        let got = velostream(&format!("SESSION(ts, {gap_s}s)"), &records, batch_size);
        prop_assert_eq!(got, session_oracle(&records, gap_s * 1000));
    }
}
