//! Runs queries over inline rows for the function tests.

use std::collections::BTreeMap;
use std::io::Write;

use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::job::{plan_script, JobOptions};

/// Runs `sql` (after the optional declaration `decl`) over `rows` bound as source `t`;
/// returns the output column types and the rows rendered as strings.
pub(crate) fn try_run(decl: &str, rows: &[&str], sql: &str) -> crate::error::Result<Output> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("t.jsonl");
    let mut file = std::fs::File::create(&path).expect("temp file");
    for row in rows {
        writeln!(file, "{row}").expect("write row");
    }
    let mut source_paths = BTreeMap::new();
    source_paths.insert("t".to_string(), path.display().to_string());
    let options = JobOptions {
        source_paths,
        partitions: 1,
        collect_output: true,
        ..Default::default()
    };
    let script = if decl.is_empty() {
        sql.to_string()
    } else {
        format!("{decl};\n{sql}")
    };
    let planned = plan_script(&script, &options)?;
    let types = planned
        .queries()
        .last()
        .expect("a query")
        .output_schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let summaries = planned.run(&options)?;
    let format = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in summaries.last().expect("a job").output.iter().flatten() {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &format).expect("formatter"))
            .collect::<Vec<_>>();
        for row in 0..batch.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    Ok(Output { types, rows: out })
}

/// A query's output column types and rows rendered as strings (nulls as `NULL`).
pub(crate) struct Output {
    pub(crate) types: Vec<DataType>,
    pub(crate) rows: Vec<Vec<String>>,
}

/// [`try_run`], panicking on errors.
pub(crate) fn run(decl: &str, rows: &[&str], sql: &str) -> Output {
    try_run(decl, rows, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The rows of `sql` over `rows`, without a declaration.
pub(crate) fn rows_of(sql: &str, rows: &[&str]) -> Vec<Vec<String>> {
    run("", rows, sql).rows
}

/// The error `sql` fails with over `rows`; panics if it succeeds.
pub(crate) fn error_of(sql: &str, rows: &[&str]) -> String {
    match try_run("", rows, sql) {
        Ok(out) => panic!("{sql} should fail, gave {:?}", out.rows),
        Err(e) => e.to_string(),
    }
}

/// Expected rows as owned strings.
pub(crate) fn strs(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// One record, for queries that only need a row.
pub(crate) const ONE: &[&str] = &[r#"{"k": 1}"#];

/// A source `t` with event time `ts`, one record per batch and 60s of out-of-orderness.
pub(crate) const WINDOWED: &str = "CREATE STREAM t (s VARCHAR, v INT, ts BIGINT) \
    WITH ('t.batch.size' = '1', 't.watermark.max_out_of_orderness' = '60s')";

/// Records for [`WINDOWED`]; the last arrives late.
pub(crate) const TICKS: [&str; 7] = [
    r#"{"s": "A", "v": 1, "ts": 1000}"#,
    r#"{"s": "B", "v": 2, "ts": 2000}"#,
    r#"{"s": "A", "v": 3, "ts": 59999}"#,
    r#"{"s": "A", "v": 4, "ts": 60000}"#,
    r#"{"s": "B", "v": 5, "ts": 61000}"#,
    r#"{"s": "A", "v": 6, "ts": 185000}"#,
    r#"{"s": "A", "v": 2, "ts": 70000}"#,
];

/// Three records of one key whose third (ts 25000) bridges the sessions of the first two.
pub(crate) const BRIDGED: [&str; 3] = [
    r#"{"s": "x", "v": 1, "ts": 1000}"#,
    r#"{"s": "x", "v": 5, "ts": 50000}"#,
    r#"{"s": "x", "v": 3, "ts": 25000}"#,
];

/// The first column of `sql`'s output over `rows`.
pub(crate) fn first_column(sql: &str, rows: &[&str]) -> Vec<String> {
    rows_of(sql, rows)
        .into_iter()
        .map(|mut r| r.swap_remove(0))
        .collect()
}
