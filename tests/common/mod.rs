//! The sqllogictest database for velostream's `.slt` suite.
//!
//! Statements a test file can use:
//! - `CREATE STREAM name (cols) [WITH (...)]` declares a source (WITH may point at tests/data).
//! - `INSERT INTO name [(cols)] VALUES (...), ...` appends inline input rows to a source.
//! - `CREATE STREAM x AS SELECT ...` adds a job whose output later queries may read.
//! - any query runs over the bounded input to its end and returns the rows it emitted, in
//!   emission order; a delete of an upsert stream shows as its row followed by `(deleted)`.
//!   A query whose first line is `-- live rows` returns, sorted, the rows its changelog leaves
//!   live: every row less those its deletes took back.
//! - `SHOW ERRORS` lists the bad records of the last query as (location, reason).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;

use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::sql::sqlparser::ast::{self, Expr, SetExpr, Statement, UnaryOperator, Value};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use sqllogictest::{DBOutput, DefaultColumnType};
use velostream::exec::change::is_delete;
use velostream::job::{plan_script, JobOptions};
use velostream::VeloError;

/// A velostream "session" for one .slt file.
pub struct VeloDb {
    /// Declarations and CSAS statements so far, replayed before each query.
    prelude: Vec<String>,
    /// Inline rows per source, as JSON objects.
    rows: BTreeMap<String, Vec<serde_json::Map<String, serde_json::Value>>>,
    /// Declared column names per source, for INSERT without a column list.
    columns: BTreeMap<String, Vec<String>>,
    dir: tempfile::TempDir,
    last_errors: Vec<(String, String)>,
    partitions: usize,
}

impl VeloDb {
    /// A fresh session running queries with `partitions` partitions.
    pub fn new(partitions: usize) -> Self {
        VeloDb {
            prelude: Vec::new(),
            rows: BTreeMap::new(),
            columns: BTreeMap::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            last_errors: Vec::new(),
            partitions,
        }
    }

    fn insert(&mut self, sql: &str) -> Result<(), VeloError> {
        let stmts = Parser::parse_sql(&GenericDialect {}, sql)
            .map_err(|e| VeloError::Config(e.to_string()))?;
        let Some(Statement::Insert(insert)) = stmts.into_iter().next() else {
            return Err(VeloError::Config(
                "expected INSERT INTO name VALUES (...)".into(),
            ));
        };
        let name = insert.table.to_string().to_lowercase();
        let columns: Vec<String> = if insert.columns.is_empty() {
            self.columns.get(&name).cloned().ok_or_else(|| {
                VeloError::Config(format!("INSERT INTO {name}: declare its columns first"))
            })?
        } else {
            insert
                .columns
                .iter()
                .map(|c| c.to_string().to_lowercase())
                .collect()
        };
        let Some(source) = insert.source else {
            return Err(VeloError::Config("INSERT needs VALUES".into()));
        };
        let SetExpr::Values(values) = *source.body else {
            return Err(VeloError::Config("INSERT needs VALUES".into()));
        };
        let target = self.rows.entry(name).or_default();
        for row in values.rows {
            let mut obj = serde_json::Map::new();
            for (col, expr) in columns.iter().zip(row.content) {
                obj.insert(col.clone(), literal_json(&expr)?);
            }
            target.push(obj);
        }
        Ok(())
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<String>>, VeloError> {
        let mut source_paths = BTreeMap::new();
        for (name, rows) in &self.rows {
            let path = self.dir.path().join(format!("{name}.jsonl"));
            let mut f = std::fs::File::create(&path).map_err(|e| VeloError::io("temp file", e))?;
            for r in rows {
                writeln!(f, "{}", serde_json::Value::Object(r.clone()))
                    .map_err(|e| VeloError::io("temp file", e))?;
            }
            source_paths.insert(name.clone(), path.display().to_string());
        }
        let mut script = self.prelude.join(";\n");
        script.push_str(";\n");
        script.push_str(sql);
        let options = JobOptions {
            source_paths,
            partitions: self.partitions,
            collect_output: true,
            ..Default::default()
        };
        let planned = plan_script(&script, &options)?;
        let summaries = planned.run(&options)?;
        let Some(last) = summaries.last() else {
            return Ok(Vec::new());
        };
        self.last_errors = last
            .bad_records
            .iter()
            .map(|b| (b.location.clone(), b.reason.clone()))
            .collect();
        let mut rows = Vec::new();
        for batch in last.output.iter().flatten() {
            rows.extend(render(batch)?);
        }
        if sql.starts_with(LIVE) {
            return Ok(still_live(rows));
        }
        Ok(rows)
    }
}

/// A query that starts with this comment returns the rows its changelog leaves live, sorted.
const LIVE: &str = "-- live rows";

/// Rendered rows less the rows their deletes (`(deleted)`) take back, sorted.
fn still_live(rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let mut live: Vec<Vec<String>> = Vec::new();
    for mut row in rows {
        if row.last().map(String::as_str) == Some("(deleted)") {
            row.pop();
            if let Some(i) = live.iter().position(|r| *r == row) {
                live.swap_remove(i);
                continue;
            }
            row.push("(deleted, not live)".into());
        }
        live.push(row);
    }
    live.sort();
    live
}

/// Rows as text (`a | b`, NULL for nulls), sorted: a multiset to compare results by.
pub fn sorted_rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for r in 0..batch.num_rows() {
            let cells: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
            rows.push(cells.join(" | "));
        }
    }
    rows.sort();
    rows
}

/// The rows a changelog leaves live, as `sorted_rows`: each insert adds its row, each delete
/// takes one equal row back. Panics on a delete of a row that is not live.
pub fn live_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut live: BTreeMap<String, usize> = BTreeMap::new();
    for batch in batches {
        let rows = sorted_rows(std::slice::from_ref(batch));
        for row in rows {
            if is_delete(batch) {
                match live.get_mut(&row) {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => panic!("a delete of a row that is not live: {row}"),
                }
            } else {
                *live.entry(row).or_default() += 1;
            }
        }
    }
    live.into_iter()
        .flat_map(|(row, n)| std::iter::repeat_n(row, n))
        .collect()
}

/// Runs `script` at `partitions` partitions, keeping every job's output; the last job's summary.
pub fn run_collected(script: &str, partitions: usize) -> velostream::job::JobSummary {
    let options = JobOptions {
        partitions,
        collect_output: true,
        ..Default::default()
    };
    let summaries = plan_script(script, &options)
        .and_then(|planned| planned.run(&options))
        .unwrap_or_else(|e| panic!("velostream failed on {script}: {e}"));
    summaries.into_iter().last().expect("a summary")
}

/// The batch oracle: DataFusion running `sql` over `tables` (name, rows) in memory, its rows
/// as `sorted_rows`.
pub fn batch_oracle(tables: Vec<(&str, RecordBatch)>, sql: &str) -> Vec<String> {
    let ctx = datafusion::prelude::SessionContext::new();
    for (name, batch) in tables {
        let table = datafusion::datasource::MemTable::try_new(batch.schema(), vec![vec![batch]])
            .expect("table");
        ctx.register_table(name, std::sync::Arc::new(table))
            .expect("register");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let batches = runtime
        .block_on(async { ctx.sql(sql).await?.collect().await })
        .unwrap_or_else(|e| panic!("the oracle failed on {sql}: {e}"));
    sorted_rows(&batches)
}

/// Renders rows as strings: NULL for nulls, `(empty)` for empty strings.
pub fn render(batch: &RecordBatch) -> Result<Vec<Vec<String>>, VeloError> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()?;
    let deleted = is_delete(batch);
    Ok((0..batch.num_rows())
        .map(|row| {
            let mut cells: Vec<String> = formatters
                .iter()
                .map(|f| {
                    let s = f.value(row).to_string();
                    if s.is_empty() {
                        "(empty)".to_string()
                    } else {
                        s
                    }
                })
                .collect();
            if deleted {
                cells.push("(deleted)".into());
            }
            cells
        })
        .collect())
}

fn literal_json(expr: &Expr) -> Result<serde_json::Value, VeloError> {
    Ok(match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => {
                serde_json::from_str(n).map_err(|e| VeloError::Config(e.to_string()))?
            }
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                serde_json::Value::String(s.clone())
            }
            Value::Boolean(b) => serde_json::Value::Bool(*b),
            Value::Null => serde_json::Value::Null,
            other => return Err(VeloError::Config(format!("unsupported literal {other}"))),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match literal_json(expr)? {
            serde_json::Value::Number(n) => serde_json::from_str(&format!("-{n}"))
                .map_err(|e| VeloError::Config(e.to_string()))?,
            _ => return Err(VeloError::Config("minus applies to numbers".into())),
        },
        other => {
            return Err(VeloError::Config(format!(
                "INSERT VALUES takes literals, got {other}"
            )))
        }
    })
}

fn declared_columns(sql: &str) -> Option<(String, Vec<String>)> {
    let script = velostream::sql::parse_script(sql).ok()?;
    match &script.statements.first()?.kind {
        velostream::sql::StatementKind::CreateSource { name, columns, .. } => Some((
            name.clone(),
            columns.iter().map(|c| c.name.clone()).collect(),
        )),
        _ => None,
    }
}

impl sqllogictest::DB for VeloDb {
    type Error = VeloError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, VeloError> {
        let trimmed = sql.trim().trim_end_matches(';');
        let upper = trimmed.to_uppercase();
        if upper.starts_with("INSERT") {
            self.insert(trimmed)?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if upper == "SHOW ERRORS" {
            let rows = self
                .last_errors
                .iter()
                .map(|(l, r)| vec![l.clone(), r.clone()])
                .collect();
            return Ok(DBOutput::Rows {
                types: vec![DefaultColumnType::Text; 2],
                rows,
            });
        }
        if let Some((name, columns)) = declared_columns(trimmed) {
            // Validate now so a bad declaration fails at its own statement.
            velostream::sql::parse_script(trimmed)?;
            self.columns.insert(name, columns);
            self.prelude.push(trimmed.to_string());
            return Ok(DBOutput::StatementComplete(0));
        }
        let rows = self.query(trimmed)?;
        if upper.starts_with("CREATE") {
            self.prelude.push(trimmed.to_string());
            return Ok(DBOutput::StatementComplete(0));
        }
        let width = rows.first().map(|r| r.len()).unwrap_or(0);
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; width],
            rows,
        })
    }

    fn engine_name(&self) -> &str {
        "velostream"
    }
}

/// Runs every `.slt` file under tests/slt with `partitions` partitions; panics listing failures.
pub fn run_slt_suite(partitions: usize) {
    let mut files: Vec<_> = std::fs::read_dir("tests/slt")
        .expect("tests/slt")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files found");
    let mut failures = Vec::new();
    for file in &files {
        let mut runner =
            sqllogictest::Runner::new(move || async move { Ok(VeloDb::new(partitions)) });
        if partitions > 1 {
            // Across partitions, rows of different keys may interleave differently.
            runner.with_validator(multiset_validator);
        }
        if let Err(e) = runner.run_file(file) {
            failures.push(format!("{}: {}", file.display(), e.display(true)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} slt file(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Compares results as multisets of rows: the answer of a partitioned run, whose keys
/// interleave by partition (per-key order is checked by tests/partitions.rs).
fn multiset_validator(
    normalizer: sqllogictest::Normalizer,
    actual: &[Vec<String>],
    expected: &[String],
) -> bool {
    let mut actual: Vec<String> = actual
        .iter()
        .map(|row| normalizer(&row.join(" ")))
        .collect();
    let mut expected: Vec<String> = expected.iter().map(normalizer).collect();
    actual.sort();
    expected.sort();
    actual == expected
}

/// Parses a statement for tests that need the AST.
pub fn parse(sql: &str) -> ast::Statement {
    Parser::parse_sql(&GenericDialect {}, sql)
        .expect("valid SQL")
        .remove(0)
}
