//! The engine's entry points: batch, per-record and async give the same rows, and queries are
//! keyed by their own id, not by their source.

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::scalar::ScalarValue;
use velostream::exec::record::{batch_to_records, StreamRecord};
use velostream::sql::QueryPlanner;
use velostream::StreamExecutionEngine;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, true),
        Field::new("qty", DataType::Int64, true),
    ]))
}

fn input() -> RecordBatch {
    let symbols = ["A", "B", "A", "C", "B", "A", "C", "A"];
    let qty = [5, 3, 7, 1, 9, 2, 4, 6];
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(symbols.to_vec())),
            Arc::new(Int64Array::from(qty.to_vec())),
        ],
    )
    .unwrap()
}

fn records() -> Vec<StreamRecord> {
    let template = StreamRecord::default();
    batch_to_records(&input(), &template).unwrap()
}

fn engine_with(sql: &str) -> (StreamExecutionEngine, String) {
    let mut planner = QueryPlanner::new();
    planner.register_source("trades", schema()).unwrap();
    let plan = planner.plan_sql(sql, "q").unwrap();
    let mut engine = StreamExecutionEngine::new();
    let id = engine.deploy(plan).unwrap();
    (engine, id)
}

/// Rows as (values, deleted) for comparison across entry points.
fn rows_of_batches(batches: &[RecordBatch]) -> Vec<(Vec<ScalarValue>, bool)> {
    let template = StreamRecord::default();
    batches
        .iter()
        .flat_map(|b| batch_to_records(b, &template).unwrap())
        .map(|r| (r.fields.into_iter().map(|(_, v)| v).collect(), r.deleted))
        .collect()
}

fn rows_of_records(records: Vec<StreamRecord>) -> Vec<(Vec<ScalarValue>, bool)> {
    records
        .into_iter()
        .map(|r| (r.fields.into_iter().map(|(_, v)| v).collect(), r.deleted))
        .collect()
}

const QUERIES: [&str; 5] = [
    "SELECT symbol, qty * 2 AS double_qty FROM trades WHERE qty > 2",
    "SELECT symbol, COUNT(*) AS n, SUM(qty) AS total FROM trades GROUP BY symbol EMIT CHANGES",
    "SELECT symbol, SUM(qty) AS total FROM trades GROUP BY symbol HAVING total < 10 EMIT CHANGES",
    "SELECT symbol, COUNT(*) AS n, MAX(qty) AS top FROM trades GROUP BY symbol EMIT FINAL",
    "SELECT DISTINCT symbol FROM trades LIMIT 2",
];

#[test]
fn batch_record_and_async_entry_points_agree() {
    for sql in QUERIES {
        let (mut batch_engine, id) = engine_with(sql);
        let mut batch_out = batch_engine.execute_batch_sync(&id, input()).unwrap();
        batch_out.extend(batch_engine.end_of_input(&id).unwrap());
        let from_batch = rows_of_batches(&batch_out);

        let (mut record_engine, id) = engine_with(sql);
        let mut per_record = Vec::new();
        for r in records() {
            per_record.extend(record_engine.execute_with_record_sync(&id, &r).unwrap());
        }
        let mut from_records = rows_of_records(per_record);
        from_records.extend(rows_of_batches(&record_engine.end_of_input(&id).unwrap()));

        let (mut async_engine, id) = engine_with(sql);
        let (tx, mut rx) = StreamExecutionEngine::output_channel(4);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut from_async = runtime.block_on(async {
            let consumer = tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(r) = rx.recv().await {
                    got.push(r);
                }
                got
            });
            for r in records() {
                async_engine
                    .execute_with_record(&id, &r, &tx)
                    .await
                    .unwrap();
            }
            drop(tx);
            rows_of_records(consumer.await.unwrap())
        });
        from_async.extend(rows_of_batches(&async_engine.end_of_input(&id).unwrap()));

        assert!(!from_batch.is_empty(), "{sql}: no output");
        assert_eq!(from_batch, from_records, "{sql}: batch vs per-record");
        assert_eq!(from_batch, from_async, "{sql}: batch vs async");
    }
}

#[test]
fn emit_changes_is_an_ordered_changelog_with_deletes() {
    let (mut engine, id) = engine_with(
        "SELECT symbol, SUM(qty) AS total FROM trades GROUP BY symbol HAVING total < 10 EMIT CHANGES",
    );
    let out = rows_of_batches(&engine.execute_batch_sync(&id, input()).unwrap());
    let s = |v: &str| ScalarValue::Utf8(Some(v.into()));
    let i = |v: i64| ScalarValue::Int64(Some(v));
    // A:5, B:3, A:12 (stops passing → delete), C:1, B:12 (delete), A:14 (still failing: nothing),
    // C:5, A:20 (nothing).
    let expected = vec![
        (vec![s("A"), i(5)], false),
        (vec![s("B"), i(3)], false),
        (vec![s("A"), i(12)], true),
        (vec![s("C"), i(1)], false),
        (vec![s("B"), i(12)], true),
        (vec![s("C"), i(5)], false),
    ];
    assert_eq!(out, expected);
}

#[test]
fn two_queries_over_one_source_keep_separate_state() {
    let mut planner = QueryPlanner::new();
    planner.register_source("trades", schema()).unwrap();
    let mut engine = StreamExecutionEngine::new();
    let a = engine
        .deploy(planner.plan_sql("CREATE STREAM a AS SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol EMIT FINAL", "x").unwrap())
        .unwrap();
    let b = engine
        .deploy(planner.plan_sql("CREATE STREAM b AS SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol EMIT FINAL", "y").unwrap())
        .unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("a", "b"));
    engine.execute_batch_sync("a", input()).unwrap();
    engine.execute_batch_sync("a", input()).unwrap();
    engine.execute_batch_sync("b", input()).unwrap();
    let count_of = |batches: Vec<RecordBatch>| -> i64 {
        rows_of_batches(&batches)
            .into_iter()
            .find(|(v, _)| v[0] == ScalarValue::Utf8(Some("A".into())))
            .map(|(v, _)| match v[1] {
                ScalarValue::Int64(Some(n)) => n,
                _ => -1,
            })
            .unwrap()
    };
    assert_eq!(count_of(engine.end_of_input("a").unwrap()), 8);
    assert_eq!(count_of(engine.end_of_input("b").unwrap()), 4);
    assert!(engine
        .deploy(
            planner
                .plan_sql("CREATE STREAM a AS SELECT symbol FROM trades", "z")
                .unwrap()
        )
        .is_err());
}
