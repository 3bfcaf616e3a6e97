//! Joins of two streams on random inputs whose disorder stays within the watermark bound:
//! - at 1, 2 and 4 partitions, every join type's result equals DataFusion running the same
//!   SQL as a batch query, with time bounds (an interval join) and without them under a
//!   `'state.ttl'` longer than the input;
//! - joined with a GROUP BY's changelog, the rows the output leaves live (inserts less
//!   retractions) are the batch answer, and nothing is retracted that is not live;
//! - run step by step, a NULL-padded row comes out in the step whose watermark first rules out
//!   any partner, the rows held never exceed what the bound and the watermark allow, and
//!   nothing is held at the end.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use proptest::prelude::*;

mod common;
use common::{batch_oracle, live_rows, run_collected, sorted_rows};
use velostream::exec::processor::QueryProcessor;
use velostream::exec::shard::KeyShard;
use velostream::sql::QueryPlanner;

/// The watermarks' allowed disorder (ms).
const DISORDER: i64 = 300;
/// `r.ts BETWEEN l.ts + LOWER AND l.ts + UPPER`.
const LOWER: i64 = -200;
const UPPER: i64 = 500;

/// (id, key, time) rows of one side, in arrival order.
type Side = Vec<(i64, Option<i64>, i64)>;

/// Rows whose times go up by random gaps, each up to `DISORDER` earlier than the latest time
/// before it: never late.
fn side(first_id: i64) -> impl Strategy<Value = Side> {
    let key = prop_oneof![1 => Just(None), 8 => (0i64..4).prop_map(Some)];
    prop::collection::vec((key, 0i64..400, 0..=DISORDER), 0..30).prop_map(move |rows| {
        let mut base = 0;
        rows.into_iter()
            .enumerate()
            .map(|(i, (k, gap, jitter))| {
                base += gap;
                (first_id + i as i64, k, (base - jitter).max(0))
            })
            .collect()
    })
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("k", DataType::Int64, true),
        Field::new("ts", DataType::Int64, true),
    ]))
}

fn batch(rows: &[(i64, Option<i64>, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("batch")
}

fn query(join: &str) -> String {
    format!(
        "SELECT l.id AS lid, r.id AS rid, l.ts AS lts, r.ts AS rts FROM l {join} r \
         ON l.k = r.k AND r.ts BETWEEN l.ts + ({LOWER}) AND l.ts + {UPPER}"
    )
}

const JOINS: [&str; 4] = ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"];

/// The join without time bounds: both sides' rows are kept for `'state.ttl'`.
fn unbounded_query(join: &str) -> String {
    format!(
        "SELECT l.id AS lid, r.id AS rid, l.ts AS lts, r.ts AS rts FROM l {join} r ON l.k = r.k"
    )
}

fn oracle(left: &Side, right: &Side, sql: &str) -> Vec<String> {
    batch_oracle(vec![("l", batch(left)), ("r", batch(right))], sql)
}

fn write(dir: &Path, name: &str, rows: &Side) {
    let mut f = std::fs::File::create(dir.join(format!("{name}.jsonl"))).expect("file");
    for (id, k, ts) in rows {
        writeln!(f, "{}", serde_json::json!({"id": id, "k": k, "ts": ts})).expect("write");
    }
}

/// A folder with the sides as `l.jsonl` and `r.jsonl`.
fn files(left: &Side, right: &Side) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dir");
    write(dir.path(), "l", left);
    write(dir.path(), "r", right);
    dir
}

/// The FULL interval join planned over `l` and `r`, each with the watermark's disorder.
fn full_join_plan() -> velostream::sql::PlannedQuery {
    let mut planner = QueryPlanner::new();
    planner.register_source("l", schema()).expect("l");
    planner.register_source("r", schema()).expect("r");
    let sql = format!(
        "{} WITH ('l.watermark.max_out_of_orderness' = '{DISORDER}ms', \
         'r.watermark.max_out_of_orderness' = '{DISORDER}ms')",
        query("FULL JOIN")
    );
    planner.plan_sql(&sql, "q").expect("plan")
}

/// Checks that velostream's answer to `sql` over the files in `dir` is `expected` at 1, 2 and
/// 4 partitions: its rows, none late and nothing held at the end.
fn at_every_width(
    dir: &Path,
    sql: &str,
    batch_size: usize,
    expected: &[String],
) -> Result<(), TestCaseError> {
    answer_at_every_width(dir, sql, batch_size, expected, emitted)
}

/// Checks that `answer` of each run of `sql` over the files in `dir` is `expected` at 1, 2
/// and 4 partitions.
fn answer_at_every_width(
    dir: &Path,
    sql: &str,
    batch_size: usize,
    expected: &[String],
    answer: fn(&str, velostream::job::JobSummary) -> Vec<String>,
) -> Result<(), TestCaseError> {
    for partitions in [1, 2, 4] {
        let actual = answer(sql, run(dir, sql, partitions, batch_size));
        prop_assert_eq!(&actual, expected, "{} at {} partitions", sql, partitions);
    }
    Ok(())
}

/// Runs `sql` over the files in `dir`, read `batch_size` rows at a time.
fn run(dir: &Path, sql: &str, partitions: usize, batch_size: usize) -> velostream::job::JobSummary {
    let declare = |name: &str| {
        format!(
            "CREATE STREAM {name} (id BIGINT, k BIGINT, ts BIGINT) WITH ('{name}.path' = '{}', \
             '{name}.batch.size' = '{batch_size}', '{name}.event.time.field' = 'ts', \
             '{name}.watermark.max_out_of_orderness' = '{DISORDER}ms');\n",
            dir.join(format!("{name}.jsonl")).display()
        )
    };
    run_collected(
        &format!("{}{}{sql}", declare("l"), declare("r")),
        partitions,
    )
}

/// The rows a run emitted, once checked that none was late and nothing is held at the end.
fn emitted(sql: &str, last: velostream::job::JobSummary) -> Vec<String> {
    assert_eq!(last.late_records, 0, "no row is late: {sql}");
    assert_eq!(last.state_keys, 0, "nothing is held at the end: {sql}");
    sorted_rows(last.output.as_deref().unwrap_or_default())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// A join with a changelog retracts what a replaced or deleted row made: the rows its
    /// output leaves live are the batch join of the aggregate's final rows.
    #[test]
    fn joins_with_a_changelog_leave_the_batch_answer_live(
        left in side(0),
        right in side(1000),
        batch_size in prop::sample::select(vec![1usize, 4, 64]),
    ) {
        let dir = files(&left, &right);
        for sql in changelog_queries() {
            let expected = oracle(&left, &right, &sql);
            let kept = format!("{sql} WITH ('state.ttl' = '1d')");
            answer_at_every_width(dir.path(), &kept, batch_size, &expected, live)?;
        }
    }

    #[test]
    fn interval_joins_equal_the_batch_answer(
        left in side(0),
        right in side(1000),
        batch_size in prop::sample::select(vec![1usize, 4, 64]),
    ) {
        let dir = files(&left, &right);
        for join in JOINS {
            let bounded = query(join);
            let unbounded = unbounded_query(join);
            let kept = format!("{unbounded} WITH ('state.ttl' = '1d')");
            for (sql, batch_sql) in [(&bounded, &bounded), (&kept, &unbounded)] {
                let expected = oracle(&left, &right, batch_sql);
                at_every_width(dir.path(), sql, batch_size, &expected)?;
            }
        }
    }

    /// EXISTS and NOT EXISTS over the other stream, within the time bound: semi and anti
    /// joins, each left row once (when it first meets a partner, or once none can come).
    #[test]
    fn semi_and_anti_joins_equal_the_batch_answer(
        left in side(0),
        right in side(1000),
        batch_size in prop::sample::select(vec![1usize, 4, 64]),
    ) {
        let dir = files(&left, &right);
        for exists in ["EXISTS", "NOT EXISTS"] {
            let sql = format!(
                "SELECT l.id, l.ts FROM l WHERE {exists} (SELECT 1 FROM r WHERE r.k = l.k \
                 AND r.ts BETWEEN l.ts + ({LOWER}) AND l.ts + {UPPER})"
            );
            let expected = oracle(&left, &right, &sql);
            at_every_width(dir.path(), &sql, batch_size, &expected)?;
        }
    }

    /// A window after the join, on either side's time or on the later of the two: the join
    /// holds its output watermark back to the rows it still holds, so no joined row reaches
    /// the window late.
    #[test]
    fn windows_after_a_join_equal_the_batch_answer(
        left in side(0),
        right in side(1000),
        batch_size in prop::sample::select(vec![1usize, 4, 64]),
    ) {
        let dir = files(&left, &right);
        let on = format!("ON l.k = r.k AND r.ts BETWEEN l.ts + ({LOWER}) AND l.ts + {UPPER}");
        for (join, side) in [("JOIN", "l"), ("JOIN", "r"), ("LEFT JOIN", "l"), ("RIGHT JOIN", "r")] {
            let sql = format!(
                "SELECT {side}.k AS k, COUNT(*) AS n, COUNT(l.id) AS lefts, COUNT(r.id) AS rights, \
                 _window_end FROM l {join} r {on} GROUP BY {side}.k, TUMBLE({side}.ts, INTERVAL '1' SECOND)"
            );
            let batch_sql = format!(
                "SELECT {side}.k AS k, COUNT(*) AS n, COUNT(l.id) AS lefts, COUNT(r.id) AS rights, \
                 ({side}.ts / 1000) * 1000 + 1000 AS window_end FROM l {join} r {on} \
                 GROUP BY {side}.k, ({side}.ts / 1000) * 1000 + 1000"
            );
            let expected = oracle(&left, &right, &batch_sql);
            at_every_width(dir.path(), &sql, batch_size, &expected)?;
        }
        // `ts` unqualified, on both sides: the later of the two rows' times.
        for join in JOINS {
            let sql = format!(
                "SELECT COUNT(*) AS n, COUNT(l.id) AS lefts, COUNT(r.id) AS rights, _window_end \
                 FROM l {join} r {on} GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)"
            );
            let window_end = "(GREATEST(l.ts, r.ts) / 1000) * 1000 + 1000";
            let batch_sql = format!(
                "SELECT COUNT(*) AS n, COUNT(l.id) AS lefts, COUNT(r.id) AS rights, \
                 {window_end} AS window_end FROM l {join} r {on} GROUP BY {window_end}"
            );
            let expected = oracle(&left, &right, &batch_sql);
            at_every_width(dir.path(), &sql, batch_size, &expected)?;
        }
    }

    /// Nexmark q5 in full: the keys with the most rows in each HOP window, a window's rows
    /// joined with the maximum over that window's groups (an aggregate of the window's output,
    /// keyed by `_window_end`, whose groups close with the watermark).
    #[test]
    fn the_top_keys_of_each_window_equal_the_batch_answer(
        left in side(0),
        batch_size in prop::sample::select(vec![1usize, 4, 64]),
    ) {
        let dir = files(&left, &Vec::new());
        let counts = "SELECT k, COUNT(*) AS n, _window_start, _window_end FROM l \
                      GROUP BY k, HOP(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND)";
        let sql = format!(
            "SELECT a.k, a.n, a._window_end FROM ({counts}) a JOIN (SELECT MAX(n) AS maxn, \
             _window_end FROM ({counts}) c GROUP BY _window_end) m \
             ON a._window_end = m._window_end AND a.n >= m.maxn"
        );
        // Each row is in the windows ending at the next two whole seconds.
        let counts = "SELECT k, COUNT(*) AS n, we FROM (SELECT k, (ts / 1000) * 1000 + 1000 AS we \
                      FROM l UNION ALL SELECT k, (ts / 1000) * 1000 + 2000 AS we FROM l) h GROUP BY k, we";
        let batch_sql = format!(
            "SELECT a.k, a.n, a.we FROM ({counts}) a JOIN (SELECT MAX(n) AS maxn, we FROM \
             ({counts}) c GROUP BY we) m ON a.we = m.we AND a.n >= m.maxn"
        );
        let expected = oracle(&left, &Vec::new(), &batch_sql);
        at_every_width(dir.path(), &sql, batch_size, &expected)?;
    }

    /// A checkpoint in the middle, restored at 1 or 2 partitions (each keeping its share of
    /// the keys), goes on to the same rows as a run without one.
    #[test]
    fn a_restored_join_goes_on_as_if_never_stopped(
        left in side(0),
        right in side(1000),
        cut in 0usize..30,
        width in 1usize..=2,
    ) {
        let plan = full_join_plan();
        // Each side's rows in batches of 3, alternating, as (side, rows).
        let steps: Vec<(usize, Side)> = left
            .chunks(3)
            .map(|c| (0, c.to_vec()))
            .zip(right.chunks(3).map(|c| (1, c.to_vec())))
            .flat_map(|(a, b)| [a, b])
            .chain(left.chunks(3).skip(right.chunks(3).count()).map(|c| (0, c.to_vec())))
            .chain(right.chunks(3).skip(left.chunks(3).count()).map(|c| (1, c.to_vec())))
            .collect();
        let cut = cut.min(steps.len());
        let mut whole = QueryProcessor::new(plan.clone()).expect("processor");
        let mut expected = Vec::new();
        for (s, rows) in &steps {
            expected.extend(whole.process_batch_from(*s, batch(rows)).expect("step"));
        }
        expected.extend(whole.end_of_input().expect("end"));

        let mut first = QueryProcessor::new(plan.clone()).expect("processor");
        let mut actual = Vec::new();
        for (s, rows) in &steps[..cut] {
            actual.extend(first.process_batch_from(*s, batch(rows)).expect("step"));
        }
        let mut restored = std::collections::BTreeMap::<String, Vec<_>>::new();
        for (name, state) in first.snapshot().expect("snapshot") {
            let decoded = velostream::exec::snapshot::OperatorState::decode(&state.encode().expect("encode"))
                .expect("decode");
            restored.entry(name).or_default().push(decoded);
        }
        let shards: Vec<KeyShard> = (0..width).map(|index| KeyShard { index, count: width }).collect();
        let mut rest: Vec<QueryProcessor> = shards
            .iter()
            .map(|shard| {
                let mut p = QueryProcessor::new(plan.clone()).expect("processor");
                p.restore(&restored, shard).expect("restore");
                p
            })
            .collect();
        let held: usize = rest.iter().map(|p| p.state_size()).sum();
        prop_assert_eq!(held, first.state_size(), "every held row lands on one partition");
        for (s, rows) in &steps[cut..] {
            let b = batch(rows);
            let keys: Vec<arrow::array::ArrayRef> = vec![b.column(1).clone()];
            for (p, shard) in rest.iter_mut().zip(&shards) {
                // The router's split: a key's rows go to the shard that owns it, and every
                // partition hears the watermark (a NULL key's rows go to the first).
                let mut owned = shard.owned(&keys, b.num_rows()).expect("owned");
                if shard.index == 0 {
                    let k = b.column(1).as_primitive::<Int64Type>();
                    owned = (0..b.num_rows()).map(|i| Some(owned.value(i) || k.is_null(i))).collect();
                } else {
                    let k = b.column(1).as_primitive::<Int64Type>();
                    owned = (0..b.num_rows()).map(|i| Some(owned.value(i) && !k.is_null(i))).collect();
                }
                let mine = arrow::compute::filter_record_batch(&b, &owned).expect("filter");
                let latest = rows.iter().map(|r| r.2).max().unwrap_or(0);
                if mine.num_rows() > 0 {
                    actual.extend(p.process_batch_from(*s, mine).expect("step"));
                }
                actual.extend(p.advance_input_watermark(*s, latest - DISORDER).expect("watermark"));
            }
        }
        for p in &mut rest {
            actual.extend(p.end_of_input().expect("end"));
        }
        prop_assert_eq!(sorted_rows(&actual), sorted_rows(&expected));
    }

    #[test]
    fn padded_rows_come_out_when_the_watermark_rules_out_a_partner(
        left in side(0),
        right in side(1000),
    ) {
        let plan = full_join_plan();
        let mut processor = QueryProcessor::new(plan).expect("processor");
        // Each side's rows one at a time, alternating; the watermark after each step is the
        // side's latest time minus the disorder.
        let (mut at, mut latest) = ([0usize; 2], [None::<i64>; 2]);
        let sides = [&left, &right];
        let watermark = |latest: [Option<i64>; 2], s: usize| latest[s].map(|t| t - DISORDER);
        loop {
            let s = if at[0] <= at[1] && at[0] < left.len() || at[1] >= right.len() { 0 } else { 1 };
            if at[s] >= sides[s].len() {
                break;
            }
            let row = sides[s][at[s]];
            at[s] += 1;
            let before = latest;
            latest[s] = Some(latest[s].map_or(row.2, |t| t.max(row.2)));
            let out = processor.process_batch_from(s, batch(&[row])).expect("step");
            for b in &out {
                let lid = b.column(0).as_primitive::<Int64Type>();
                let rid = b.column(1).as_primitive::<Int64Type>();
                let lts = b.column(2).as_primitive::<Int64Type>();
                let rts = b.column(3).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    // A padded row of side p comes out in the step that moved the other
                    // side's watermark past its last possible partner, or on arrival.
                    let (p, time, id) = match (lid.is_null(i), rid.is_null(i)) {
                        (false, true) => (0, lts.value(i), lid.value(i)),
                        (true, false) => (1, rts.value(i), rid.value(i)),
                        _ => continue,
                    };
                    let last_partner = if p == 0 { time + UPPER } else { time - LOWER };
                    let arrived_now = s == p && id == row.0;
                    let passed = |l: [Option<i64>; 2]| watermark(l, 1 - p).is_some_and(|w| w > last_partner);
                    prop_assert!(
                        arrived_now || (passed(latest) && !passed(before)),
                        "side {}'s row {} came out at step {:?}, not when the watermark passed {}",
                        p, id, at, last_partner
                    );
                }
            }
            // Held rows: those a row to come may still meet.
            let bound = |p: usize| {
                let other = watermark(latest, 1 - p);
                sides[p][..at[p]]
                    .iter()
                    .filter(|r| r.1.is_some())
                    .filter(|r| {
                        let last_partner = if p == 0 { r.2 + UPPER } else { r.2 - LOWER };
                        other.is_none_or(|w| last_partner >= w)
                    })
                    .count()
            };
            prop_assert!(processor.state_size() <= bound(0) + bound(1));
        }
        processor.end_of_input().expect("end");
        prop_assert_eq!(processor.state_size(), 0, "nothing is held at the end");
    }
}

/// Joins with a GROUP BY's changelog: each join type with the aggregate on either side, both
/// sides aggregated, rows that stop passing HAVING (deletes), and a filter in ON.
fn changelog_queries() -> Vec<String> {
    let counts = "(SELECT k, COUNT(*) AS n FROM l GROUP BY k)";
    let mut queries: Vec<String> = JOINS
        .iter()
        .map(|join| format!("SELECT a.k, a.n, r.id FROM {counts} a {join} r ON a.k = r.k"))
        .collect();
    queries.push(format!(
        "SELECT r.id, a.n FROM r LEFT JOIN {counts} a ON r.k = a.k"
    ));
    queries.push(format!(
        "SELECT a.k, a.n, b.m FROM {counts} a FULL JOIN \
         (SELECT k, MAX(ts) AS m FROM r GROUP BY k) b ON a.k = b.k"
    ));
    queries.push(
        "SELECT a.k, a.n, r.id FROM (SELECT k, COUNT(*) AS n FROM l GROUP BY k \
         HAVING COUNT(*) < 3) a LEFT JOIN r ON a.k = r.k"
            .to_string(),
    );
    queries.push(format!(
        "SELECT a.k, a.n, r.id FROM {counts} a RIGHT JOIN r ON a.k = r.k AND r.ts > a.n * 300"
    ));
    queries
}

/// The rows a run's changelog leaves live.
fn live(_sql: &str, last: velostream::job::JobSummary) -> Vec<String> {
    live_rows(last.output.as_deref().unwrap_or_default())
}

/// Step by step, a LEFT join with a changelog: a row's padded output is retracted when it meets
/// a partner, an update retracts the old row's pairs before the new row's come out, and an
/// append-only row past the TTL is forgotten (the pairs it made stand). The same holds across
/// a checkpoint.
#[test]
fn a_join_with_a_changelog_retracts_what_an_update_replaces() {
    let mut planner = QueryPlanner::new();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("k", DataType::Int64, true),
        Field::new("_event_time", DataType::Int64, true),
    ]));
    planner
        .register_source("l", Arc::clone(&schema))
        .expect("l");
    planner
        .register_source("r", Arc::clone(&schema))
        .expect("r");
    let sql = "SELECT a.k, a.n, r.id FROM (SELECT k, COUNT(*) AS n FROM l GROUP BY k) a \
               LEFT JOIN r ON a.k = r.k WITH ('state.ttl' = '10s', \
               'l.watermark.max_out_of_orderness' = '0ms', \
               'r.watermark.max_out_of_orderness' = '0ms')";
    let plan = planner.plan_sql(sql, "q").expect("plan");
    let step = |processor: &mut QueryProcessor, side: usize, id: i64, k: i64, ts: i64| {
        let row = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![id])),
                Arc::new(Int64Array::from(vec![k])),
                Arc::new(Int64Array::from(vec![ts])),
            ],
        )
        .expect("row");
        let out = processor.process_batch_from(side, row).expect("step");
        let mut changes = Vec::new();
        for b in &out {
            let sign = if velostream::exec::change::is_delete(b) {
                "-"
            } else {
                "+"
            };
            changes.extend(
                sorted_rows(std::slice::from_ref(b))
                    .into_iter()
                    .map(|r| format!("{sign} {r}")),
            );
        }
        changes
    };
    for restored in [false, true] {
        let mut p = QueryProcessor::new(plan.clone()).expect("processor");
        assert_eq!(step(&mut p, 0, 1, 1, 0), ["+ 1 | 1 | NULL"]);
        assert_eq!(
            step(&mut p, 1, 100, 1, 0),
            ["- 1 | 1 | NULL", "+ 1 | 1 | 100"]
        );
        assert_eq!(
            step(&mut p, 0, 2, 1, 1000),
            ["- 1 | 1 | 100", "+ 1 | 2 | 100"]
        );
        if restored {
            let mut states = std::collections::BTreeMap::<String, Vec<_>>::new();
            for (name, state) in p.snapshot().expect("snapshot") {
                let decoded = velostream::exec::snapshot::OperatorState::decode(
                    &state.encode().expect("encode"),
                )
                .expect("decode");
                states.entry(name).or_default().push(decoded);
            }
            p = QueryProcessor::new(plan.clone()).expect("processor");
            p.restore(&states, &KeyShard::whole()).expect("restore");
        }
        assert_eq!(
            step(&mut p, 1, 101, 1, 1000),
            ["+ 1 | 2 | 101"],
            "restored: {restored}"
        );
        assert_eq!(
            step(&mut p, 0, 3, 1, 45_000),
            [
                "- 1 | 2 | 100",
                "- 1 | 2 | 101",
                "+ 1 | 3 | 100",
                "+ 1 | 3 | 101"
            ]
        );
        // The earlier watermark is 45 s: rows 100 and 101, at 0 s and 1 s, are past the TTL.
        assert_eq!(step(&mut p, 1, 102, 2, 50_000), Vec::<String>::new());
        assert_eq!(p.state_size(), 3, "key 1's count, twice, and row 102");
        assert_eq!(
            step(&mut p, 0, 4, 1, 50_000),
            ["+ 1 | 4 | NULL"],
            "rows 100 and 101 are forgotten: the pairs they made stand, and key 1 has none now"
        );
        // Key 1 is idle for the TTL: the aggregate drops it, and its delete retracts its row.
        assert_eq!(
            step(&mut p, 0, 5, 3, 70_000),
            ["+ 3 | 1 | NULL", "- 1 | 4 | NULL"]
        );
        assert_eq!(
            step(&mut p, 1, 103, 1, 0),
            Vec::<String>::new(),
            "older than the TTL"
        );
        assert_eq!(p.late_records(), 1);
    }
}

/// Without time bounds, `'state.ttl'` bounds the state: a row is kept until the earlier of
/// the two watermarks passes its time by the TTL, then it can meet nothing more.
#[test]
fn a_join_without_time_bounds_keeps_rows_for_the_ttl() {
    let mut planner = QueryPlanner::new();
    planner.register_source("l", schema()).expect("l");
    planner.register_source("r", schema()).expect("r");
    let sql = format!(
        "SELECT l.id AS lid, r.id AS rid FROM l JOIN r ON l.k = r.k WITH ('state.ttl' = '10s', \
         'l.watermark.max_out_of_orderness' = '{DISORDER}ms', \
         'r.watermark.max_out_of_orderness' = '{DISORDER}ms')"
    );
    let plan = planner.plan_sql(&sql, "q").expect("plan");
    let mut processor = QueryProcessor::new(plan).expect("processor");
    let step = |processor: &mut QueryProcessor, side: usize, id: i64, ts: i64| {
        // `_event_time` is the time here: the rows carry it as their own column.
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("k", DataType::Int64, true),
            Field::new("_event_time", DataType::Int64, true),
        ]));
        let row = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![id])),
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(Int64Array::from(vec![ts])),
            ],
        )
        .expect("row");
        let out = processor.process_batch_from(side, row).expect("step");
        let mut pairs = Vec::new();
        for b in &out {
            let l = b.column(0).as_primitive::<Int64Type>();
            let r = b.column(1).as_primitive::<Int64Type>();
            pairs.extend((0..b.num_rows()).map(|i| (l.value(i), r.value(i))));
        }
        pairs.sort();
        pairs
    };
    let p = &mut processor;
    assert_eq!(step(p, 0, 1, 0), Vec::<(i64, i64)>::new());
    assert_eq!(step(p, 1, 100, 0), vec![(1, 100)]);
    assert_eq!(step(p, 0, 2, 50_000), vec![(2, 100)]);
    // Both watermarks are now past 39.7 s: rows at 0 s are older than the 10 s TTL.
    assert_eq!(step(p, 1, 101, 50_000), vec![(1, 101), (2, 101)]);
    assert_eq!(step(p, 1, 102, 50_100), vec![(2, 102)], "row 1 expired");
    assert_eq!(p.state_size(), 3);
    assert_eq!(
        step(p, 0, 3, 0),
        Vec::<(i64, i64)>::new(),
        "a row already past the TTL is late"
    );
    assert_eq!(p.late_records(), 1);
}

/// A row older than its own side's watermark is late: its partners may be gone, so it is
/// counted and sent to the dead-letter sink rather than joined with part of them.
#[test]
fn a_row_behind_its_sides_watermark_is_late() {
    let mut planner = QueryPlanner::new();
    planner.register_source("l", schema()).expect("l");
    planner.register_source("r", schema()).expect("r");
    let sql = format!(
        "{} WITH ('l.watermark.max_out_of_orderness' = '{DISORDER}ms', \
         'r.watermark.max_out_of_orderness' = '{DISORDER}ms', 'late.data.strategy' = 'dead_letter')",
        query("LEFT JOIN")
    );
    let plan = planner.plan_sql(&sql, "q").expect("plan");
    let mut processor = QueryProcessor::new(plan).expect("processor");
    let out = |batches: Vec<RecordBatch>| batches.iter().map(|b| b.num_rows()).sum::<usize>();
    assert_eq!(
        out(processor
            .process_batch_from(1, batch(&[(100, Some(1), 1000)]))
            .expect("r")),
        0
    );
    assert_eq!(
        out(processor
            .process_batch_from(0, batch(&[(1, Some(1), 10_000)]))
            .expect("l")),
        0
    );
    // The left watermark is 9.7 s: a left row at 1 s is late, even though it would meet row 100.
    assert_eq!(
        out(processor
            .process_batch_from(0, batch(&[(2, Some(1), 1000)]))
            .expect("late")),
        0
    );
    assert_eq!(processor.late_records(), 1);
    let letters = processor.take_dead_letters();
    assert_eq!(
        out(letters.clone()),
        1,
        "the late row goes to the dead-letter sink"
    );
    let reason = letters[0].column_by_name("_late_reason").expect("a reason");
    assert_eq!(
        reason.as_string::<i32>().value(0),
        "the record is behind its side's watermark"
    );
    let rest = out(processor.end_of_input().expect("end"));
    assert_eq!(rest, 1, "only row 1 comes out, NULL-padded");
}

/// q5's rows of a window come out once the watermark passes it, not at the end of the input:
/// the aggregate over the window's output closes its groups with the watermark. The same holds
/// across a checkpoint taken while the window is open.
#[test]
fn the_top_keys_of_a_window_come_out_when_it_closes() {
    let mut planner = QueryPlanner::new();
    planner.register_source("l", schema()).expect("l");
    let counts = "SELECT k, COUNT(*) AS n, _window_start, _window_end FROM l \
                  GROUP BY k, TUMBLE(ts, INTERVAL '1' SECOND)";
    let sql = format!(
        "SELECT a.k, a.n, a._window_end FROM ({counts}) a JOIN (SELECT MAX(n) AS maxn, \
         _window_end FROM ({counts}) c GROUP BY _window_end) m \
         ON a._window_end = m._window_end AND a.n >= m.maxn \
         WITH ('l.watermark.max_out_of_orderness' = '{DISORDER}ms')"
    );
    let plan = planner.plan_sql(&sql, "q").expect("plan");
    // Both inputs read `l`: each row goes to both.
    let step = |processor: &mut QueryProcessor, rows: &[(i64, Option<i64>, i64)]| {
        let mut out = processor.process_batch_from(0, batch(rows)).expect("left");
        out.extend(processor.process_batch_from(1, batch(rows)).expect("right"));
        sorted_rows(&out)
    };
    for restored in [false, true] {
        let mut processor = QueryProcessor::new(plan.clone()).expect("processor");
        let first = [(1, Some(1), 100), (2, Some(1), 200), (3, Some(2), 300)];
        assert_eq!(
            step(&mut processor, &first),
            Vec::<String>::new(),
            "the window is open"
        );
        // The watermark reaches 1000: the window's counts come out, and their maximum waits
        // for a watermark past 1000 (a row at exactly 1000 could still come).
        let second = [(4, Some(2), 1300)];
        assert_eq!(
            step(&mut processor, &second),
            Vec::<String>::new(),
            "the watermark is 1000"
        );
        if restored {
            let mut states = std::collections::BTreeMap::<String, Vec<_>>::new();
            for (name, state) in processor.snapshot().expect("snapshot") {
                states.entry(name).or_default().push(state);
            }
            processor = QueryProcessor::new(plan.clone()).expect("processor");
            processor
                .restore(&states, &KeyShard::whole())
                .expect("restore");
        }
        assert_eq!(
            step(&mut processor, &[(5, Some(3), 1500)]),
            vec!["1 | 2 | 1000".to_string()],
            "the watermark passed 1000: key 1 had the most rows (restored: {restored})"
        );
    }
}
