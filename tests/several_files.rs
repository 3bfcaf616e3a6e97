//! A source of several files: the files are read at once, their batches taken in turn, and
//! each file is one of the watermark's input partitions. Files that overlap in event time lose
//! no records, the output is the same at any width, and files split by the key feed the
//! workers directly.

use std::collections::BTreeMap;
use std::io::Write;

use velostream::job::{plan_script, JobOptions, JobSummary};

/// Writes `files` JSON-lines files of trades into a new directory. Every file covers the same
/// hour of event time (one trade per second, per file), in order; `symbol_of(file, i)` names
/// trade `i`'s symbol in `file`.
fn write_files(
    dir: &std::path::Path,
    files: usize,
    symbol_of: impl Fn(usize, usize) -> String,
) -> String {
    let data = dir.join("trades");
    std::fs::create_dir(&data).expect("dir");
    for f in 0..files {
        let path = data.join(format!("part-{f}.jsonl"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
        for i in 0..3600 {
            // From a minute boundary.
            let ts = 1_700_000_040_000i64 + i as i64 * 1000;
            let symbol = symbol_of(f, i);
            writeln!(
                out,
                r#"{{"symbol":"{symbol}","quantity":{},"ts":{ts}}}"#,
                i % 10
            )
            .expect("write");
        }
        out.flush().expect("flush");
    }
    data.display().to_string()
}

/// Runs `sql` over the directory with `partitions` workers and the source's extra WITH keys;
/// the summary and the output rows as sorted JSON text.
fn run(sql: &str, path: &str, partitions: usize, with: &str) -> (JobSummary, Vec<String>) {
    let options = JobOptions {
        source_paths: BTreeMap::from([("trades".to_string(), path.to_string())]),
        partitions,
        collect_output: true,
        ..Default::default()
    };
    let script = format!(
        "CREATE STREAM trades (symbol VARCHAR, quantity BIGINT, ts BIGINT) \
         WITH ('trades.batch.size' = '500', 'trades.event.time.field' = 'ts'{with});\n{sql}"
    );
    let planned = plan_script(&script, &options).expect("plans");
    let summary = planned.run(&options).expect("runs").pop().expect("a job");
    let mut rows = Vec::new();
    for batch in summary.output.iter().flatten() {
        let mut buf = Vec::new();
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
        writer.write(batch).expect("json");
        writer.finish().expect("json");
        rows.extend(
            buf.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| String::from_utf8_lossy(l).into_owned()),
        );
    }
    rows.sort();
    (summary, rows)
}

const PER_MINUTE: &str = "SELECT symbol, _window_start, COUNT(*) AS n FROM trades \
                          GROUP BY symbol WINDOW TUMBLING(ts, 1m) EMIT FINAL";

#[test]
fn files_that_overlap_in_event_time_lose_no_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Three files over the same hour, one symbol each.
    let path = write_files(dir.path(), 3, |f, _| format!("s{f}"));
    let (summary, rows) = run(PER_MINUTE, &path, 1, "");
    assert_eq!(summary.records_in, 3 * 3600);
    assert_eq!(
        summary.late_records, 0,
        "no file is late for another's windows"
    );
    assert_eq!(rows.len(), 3 * 60, "every symbol has every minute");
    assert!(rows.iter().all(|r| r.contains(r#""n":60"#)), "{rows:?}");
}

#[test]
fn several_files_give_the_same_answer_at_any_width() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Six files, each trade with any of 11 symbols, all read at once.
    let path = write_files(dir.path(), 6, |f, i| format!("s{}", (f * 7 + i * 3) % 11));
    let run = |n| run(PER_MINUTE, &path, n, ", 'trades.readers' = '6'");
    let (base_summary, base) = run(1);
    assert_eq!(base_summary.late_records, 0);
    assert_eq!(base.len(), 11 * 60);
    for n in [2, 4] {
        let (summary, rows) = run(n);
        assert_eq!(rows, base, "rows differ at {n} partitions");
        assert!(!summary.direct, "no key.field: hashed");
    }
}

#[test]
fn a_file_beyond_the_readers_starts_when_one_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Two readers, three files over the same hour: the third starts when the first ends,
    // behind the watermark by then, so its records are late (and counted).
    let path = write_files(dir.path(), 3, |f, _| format!("s{f}"));
    let (summary, rows) = run(PER_MINUTE, &path, 2, ", 'trades.readers' = '2'");
    assert!(summary.late_records > 3000, "{}", summary.late_records);
    assert!(
        rows.iter()
            .all(|r| !r.contains(r#""symbol":"s2""#) || !r.contains(r#""n":60"#))
            || rows.len() < 180
    );
}

#[test]
fn files_split_by_the_key_feed_workers_directly() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Four files; symbol s{k} lives only in file k mod 4.
    let path = write_files(dir.path(), 4, |f, i| format!("s{}", f + 4 * (i % 3)));
    let keyed = ", 'trades.key.field' = 'symbol'";
    let (_, base) = run(PER_MINUTE, &path, 1, "");
    for n in [2, 3, 4] {
        let (summary, rows) = run(PER_MINUTE, &path, n, keyed);
        assert!(summary.direct, "fed directly at {n}");
        assert_eq!(summary.partitions, n);
        assert_eq!(rows, base, "rows differ at {n} partitions");
    }
}

#[test]
fn a_file_key_field_must_name_a_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_files(dir.path(), 1, |_, _| "s".into());
    let options = JobOptions {
        source_paths: BTreeMap::from([("trades".to_string(), path)]),
        ..Default::default()
    };
    let Err(err) = plan_script(
        "CREATE STREAM trades (symbol VARCHAR, ts BIGINT) WITH ('trades.key.field' = 'sym');
         SELECT symbol, COUNT(*) FROM trades GROUP BY symbol",
        &options,
    ) else {
        panic!("planning should fail");
    };
    assert!(
        err.to_string()
            .contains("'trades.key.field' names 'sym', which is not a column"),
        "{err}"
    );
}
