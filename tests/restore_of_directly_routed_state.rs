//! A topic keyed by the group key feeds each source partition to one worker directly, so a
//! key's state sits in the worker of its source partition. A restore places each key in the
//! worker its hash names. A restored run that still routed directly split keys across two
//! workers: each counted from its own state, and the next restore added them up. The latest
//! row per key must equal the totals over every row, at the same width or another.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use velostream::exec::snapshot::RestoredStates;
use velostream::partition::{
    run_partitioned, Delivery, InputEvent, PartitionOptions, PartitionRun,
};
use velostream::sql::{PlannedQuery, QueryPlanner};

const SOURCE_PARTITIONS: usize = 3;
const SYMBOLS: usize = 24;

/// Batches of 60 rows, each symbol in source partition `symbol % 3`, with their runs.
fn keyed_batches(count: usize) -> Vec<(RecordBatch, Vec<PartitionRun>)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, true),
        Field::new("quantity", DataType::Int64, true),
    ]));
    (0..count)
        .map(|b| {
            let (mut symbol, mut quantity, mut runs) = (vec![], vec![], vec![]);
            for p in 0..SOURCE_PARTITIONS {
                for r in 0..20 {
                    let s = ((b * 20 + r) * SOURCE_PARTITIONS + p) % SYMBOLS;
                    symbol.push(format!("s{s:02}"));
                    quantity.push((b * 7 + r) as i64 % 11);
                }
                runs.push(PartitionRun {
                    partition: p as i32,
                    rows: 20,
                });
            }
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(symbol)),
                    Arc::new(Int64Array::from(quantity)),
                ],
            )
            .expect("batch");
            (batch, runs)
        })
        .collect()
}

fn plan(schema: arrow::datatypes::SchemaRef) -> PlannedQuery {
    let mut planner = QueryPlanner::new();
    planner.register_source("trades", schema).expect("source");
    planner
        .plan_sql(
            "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q FROM trades GROUP BY symbol EMIT CHANGES",
            "q",
        )
        .expect("plan")
}

/// One run at `width` from `restore` over `batches`, fed as a keyed topic; snapshots after the
/// last batch and stops as a crash would. The latest (n, q) per symbol, and the snapshot.
fn run(
    plan: &PlannedQuery,
    batches: &[(RecordBatch, Vec<PartitionRun>)],
    width: usize,
    restore: Option<RestoredStates>,
    latest: &mut BTreeMap<String, (i64, i64)>,
) -> RestoredStates {
    let mut options = PartitionOptions::new(width);
    options.source_key = vec!["symbol".to_string()];
    options.restore = restore.map(Arc::new);
    let ids = (0..SOURCE_PARTITIONS as i32).collect();
    let mut events = std::iter::once(InputEvent::Partitions { input: 0, ids })
        .chain(
            batches
                .iter()
                .map(|(batch, runs)| InputEvent::PartitionedBatch {
                    input: 0,
                    batch: batch.clone(),
                    runs: runs.clone(),
                }),
        )
        .chain([InputEvent::Snapshot(1), InputEvent::Stop]);
    let mut snapshot = RestoredStates::new();
    run_partitioned(
        plan,
        &options,
        || Ok(events.next()),
        |delivery| {
            match delivery {
                Delivery::Rows(batch) => {
                    let column = |name: &str| batch.column_by_name(name).expect(name).clone();
                    let symbols = column("symbol");
                    let symbols = symbols.as_any().downcast_ref::<StringArray>().expect("s");
                    let (n, q) = (column("n"), column("q"));
                    let n = n.as_any().downcast_ref::<Int64Array>().expect("n");
                    let q = q.as_any().downcast_ref::<Int64Array>().expect("q");
                    for i in 0..batch.num_rows() {
                        latest.insert(symbols.value(i).to_string(), (n.value(i), q.value(i)));
                    }
                }
                Delivery::Snapshot { partitions, .. } => {
                    for partition in partitions {
                        for (name, state) in partition {
                            snapshot.entry(name).or_default().push(state);
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        },
    )
    .expect("run");
    snapshot
}

#[test]
fn a_restored_run_over_a_keyed_topic_ends_with_every_key_counted_once() {
    let batches = keyed_batches(30);
    let plan = plan(batches[0].0.schema());
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (batch, _) in &batches {
        let symbols = batch.column(0).as_any().downcast_ref::<StringArray>();
        let quantities = batch.column(1).as_any().downcast_ref::<Int64Array>();
        let (Some(symbols), Some(quantities)) = (symbols, quantities) else {
            panic!("columns");
        };
        for i in 0..batch.num_rows() {
            let t = totals.entry(symbols.value(i).to_string()).or_default();
            t.0 += 1;
            t.1 += quantities.value(i);
        }
    }
    // Crash and restore after every 10 batches: at the same width, then at another.
    for widths in [[2, 2, 2], [2, 3, 4]] {
        let mut latest = BTreeMap::new();
        let mut state = None;
        for (k, width) in widths.into_iter().enumerate() {
            let part = &batches[k * 10..(k + 1) * 10];
            state = Some(run(&plan, part, width, state, &mut latest));
        }
        assert_eq!(latest, totals, "widths {widths:?}");
    }
}
