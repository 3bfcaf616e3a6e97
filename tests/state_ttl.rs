//! `'state.ttl'` on a GROUP BY: a key with no records while the watermark moves a TTL past its
//! latest event is dropped. Under EMIT CHANGES its key is deleted downstream, and a later
//! record starts it afresh; under EMIT FINAL its row is emitted when it goes. The same at 1
//! and 4 partitions; the summary counts what expired and what is held.

use std::collections::BTreeMap;
use std::io::Write;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use velostream::exec::change::is_delete;
use velostream::job::{plan_script, JobOptions, JobSummary};

/// (key, event time in s): `a` goes quiet from 0 s to 30 s, `b` never for more than 15 s.
const RECORDS: &[(&str, i64)] = &[
    ("a", 0),
    ("b", 5),
    ("b", 20),
    ("b", 21),
    ("a", 30),
    ("b", 31),
];

/// Runs `query` (with `with`, its WITH clause) over the records, one record per batch so
/// that the watermark moves after each; the summary and, per key, its rows in order as
/// (n, deleted).
fn run(
    query: &str,
    with: &str,
    partitions: usize,
) -> (JobSummary, BTreeMap<String, Vec<(i64, bool)>>) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.jsonl");
    let mut file = std::fs::File::create(&path).expect("create");
    for (k, s) in RECORDS {
        writeln!(file, r#"{{"k":"{k}","ts":{}}}"#, s * 1000).expect("write");
    }
    file.flush().expect("flush");
    let options = JobOptions {
        source_paths: BTreeMap::from([("events".to_string(), path.display().to_string())]),
        partitions,
        collect_output: true,
        ..Default::default()
    };
    let script = format!(
        "CREATE STREAM events (k VARCHAR, ts BIGINT) \
         WITH ('events.batch.size' = '1', 'events.event.time.field' = 'ts');\n\
         CREATE TABLE counts AS {query} WITH ({with});"
    );
    let planned = plan_script(&script, &options).expect("plans");
    let summary = planned.run(&options).expect("runs").pop().expect("a job");
    let mut rows: BTreeMap<String, Vec<(i64, bool)>> = BTreeMap::new();
    for batch in summary.output.iter().flatten() {
        let keys = batch.column(0).as_string::<i32>();
        let n = batch.column(1).as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            rows.entry(keys.value(row).to_string())
                .or_default()
                .push((n.value(row), is_delete(batch)));
        }
    }
    (summary, rows)
}

#[test]
fn an_idle_key_is_deleted_and_a_later_record_starts_it_afresh() {
    for partitions in [1, 4] {
        let (summary, rows) = run(
            "SELECT k, COUNT(*) AS n FROM events GROUP BY k EMIT CHANGES",
            "'state.ttl' = '10s'",
            partitions,
        );
        assert_eq!(
            rows["a"],
            vec![(1, false), (1, true), (1, false)],
            "at {partitions} partitions: a's count, its delete when the watermark reached \
             20 s, and a fresh count at 30 s"
        );
        assert_eq!(
            rows["b"],
            vec![(1, false), (2, false), (3, false), (4, false)],
            "b was never idle for 10 s"
        );
        assert_eq!(summary.expired_keys, 1);
        assert_eq!(summary.state_keys, 2, "a (again) and b");
    }
}

#[test]
fn without_a_ttl_every_key_is_kept() {
    let (summary, rows) = run(
        "SELECT k, COUNT(*) AS n FROM events GROUP BY k EMIT CHANGES",
        "'counts.type' = 'stdout'",
        1,
    );
    assert_eq!(rows["a"], vec![(1, false), (2, false)]);
    assert_eq!(summary.expired_keys, 0);
}

#[test]
fn under_emit_final_an_idle_key_emits_its_row_when_it_goes() {
    for partitions in [1, 4] {
        let (summary, rows) = run(
            "SELECT k, COUNT(*) AS n FROM events GROUP BY k EMIT FINAL",
            "'state.ttl' = '10s'",
            partitions,
        );
        // a's first run of records ends when it expires; the rest at end of input.
        assert_eq!(rows["a"], vec![(1, false), (1, false)], "{partitions}");
        assert_eq!(rows["b"], vec![(4, false)], "{partitions}");
        assert_eq!(summary.expired_keys, 1);
    }
}

#[test]
fn a_ttl_on_a_window_or_without_group_by_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, "").expect("file");
    let plan = |query: &str, with: &str| {
        let script = format!(
            "CREATE STREAM events (k VARCHAR, ts BIGINT) WITH ('events.event.time.field' = 'ts');\n\
             CREATE STREAM counts AS {query} WITH ({with});"
        );
        let options = JobOptions {
            source_paths: BTreeMap::from([("events".to_string(), path.display().to_string())]),
            ..Default::default()
        };
        plan_script(&script, &options)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let windowed = plan(
        "SELECT k, COUNT(*) AS n FROM events GROUP BY k \
         WINDOW TUMBLING(ts, INTERVAL '1' MINUTE) EMIT FINAL",
        "'state.ttl' = '1h'",
    );
    assert!(windowed.contains("without a window"), "{windowed}");
    let plain = plan("SELECT k FROM events", "'state.ttl' = '1h'");
    assert!(plain.contains("this query has neither"), "{plain}");
    let bad = plan(
        "SELECT k, COUNT(*) AS n FROM events GROUP BY k",
        "'state.ttl' = 'an hour'",
    );
    assert!(bad.contains("'state.ttl' = 'an hour'"), "{bad}");
}
