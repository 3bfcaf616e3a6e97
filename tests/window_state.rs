//! Bounded window state: 10M records over 100k keys through 1-minute tumbling windows. Open
//! state stays within what the watermark allows and is zero after the final watermark.

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use velostream::sql::QueryPlanner;
use velostream::StreamExecutionEngine;

#[test]
fn tumbling_state_is_bounded_by_the_watermark() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
    ]));
    let mut planner = QueryPlanner::new();
    planner
        .register_source("events", Arc::clone(&schema))
        .unwrap();
    let sql = "CREATE STREAM per_key AS SELECT k, COUNT(*) AS n, SUM(v) AS total FROM events \
               GROUP BY k WINDOW TUMBLING(ts, 1m) \
               WITH ('events.watermark.max_out_of_orderness' = '5s')";
    let mut engine = StreamExecutionEngine::new();
    let id = engine.deploy(planner.plan_sql(sql, "q").unwrap()).unwrap();

    let total: i64 = 10_000_000;
    let keys: i64 = 100_000;
    let batch_size: i64 = 65_536;
    // 10M records over ~33 minutes of event time (200 records per 40 ms), slightly out of order.
    let names: Vec<String> = (0..keys).map(|k| format!("key{k}")).collect();
    let mut emitted_rows = 0usize;
    let mut peak_windows = 0usize;
    let mut start = 0i64;
    while start < total {
        let end = (start + batch_size).min(total);
        let ks: Vec<&str> = (start..end)
            .map(|i| names[((i * 7919) % keys) as usize].as_str())
            .collect();
        let vs: Vec<i64> = (start..end).map(|i| i % 10).collect();
        let ts: Vec<i64> = (start..end).map(|i| i / 5 - (i % 7) * 100).collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(ks)),
                Arc::new(Int64Array::from(vs)),
                Arc::new(Int64Array::from(ts)),
            ],
        )
        .unwrap();
        for b in engine.execute_batch_sync(&id, batch).unwrap() {
            emitted_rows += b.num_rows();
        }
        let processor = engine.processor(&id).unwrap();
        peak_windows = peak_windows.max(processor.open_windows());
        // Event time spans at most ~13s per batch plus 5s of disorder: never more than two
        // 1-minute windows can be open.
        assert!(
            processor.open_windows() <= 2,
            "open windows: {}",
            processor.open_windows()
        );
        assert!(processor.state_size() <= 2 * keys as usize);
        start = end;
    }
    for b in engine.end_of_input(&id).unwrap() {
        emitted_rows += b.num_rows();
    }
    let processor = engine.processor(&id).unwrap();
    assert_eq!(processor.open_windows(), 0);
    assert_eq!(processor.state_size(), 0);
    assert_eq!(processor.late_records(), 0);
    assert!(peak_windows >= 1);
    // Every key appears in every one of the ~34 minutes.
    let minutes = (total / 5 / 60_000 + 1) as usize;
    assert!(
        emitted_rows >= (minutes - 1) * keys as usize,
        "{emitted_rows} rows"
    );
}
