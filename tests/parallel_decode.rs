//! One file decoded by a pool: it is cut into blocks at record ends (a newline inside CSV
//! quotes is not one), the blocks are decoded in parallel and handed on in file order. The
//! output file, each bad record's `file:line` and the dead-letter file are the same with 1
//! or 4 decode threads, at 1 and 4 partitions, and the result is DataFusion's over the good
//! rows.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use velostream::job::{plan_script, JobOptions, JobSummary};

/// Records written: ~3 MB of CSV, so several 1 MiB blocks.
const RECORDS: usize = 160_000;

/// What a generated file holds.
struct Written {
    /// The rows that decode: symbol, note, quantity.
    good: RecordBatch,
    /// The line numbers of the records that do not.
    bad_lines: Vec<u64>,
    /// Good records whose note spans two lines.
    multi_line: usize,
}

/// Writes the trades file: every 997th record's note is quoted and holds a newline, every
/// 5003rd record is bad, and every 7919th line is blank.
fn write_trades(path: &Path, csv: bool) -> Written {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let (mut symbols, mut notes, mut quantities) = (Vec::new(), Vec::new(), Vec::new());
    let mut bad_lines = Vec::new();
    let mut multi_line = 0;
    let mut line = 1u64;
    if csv {
        writeln!(out, "symbol,note,quantity").expect("write");
        line += 1;
    }
    for i in 0..RECORDS {
        if i % 7919 == 0 {
            writeln!(out).expect("write");
            line += 1;
        }
        if i % 20011 == 17 {
            let bad = if csv {
                "S1,x,not-a-number"
            } else {
                r#"{"symbol": "S1","#
            };
            writeln!(out, "{bad}").expect("write");
            bad_lines.push(line);
            line += 1;
            continue;
        }
        let symbol = format!("S{}", i % 37);
        let quantity = (i % 1000) as i64;
        let note = if i % 997 == 0 {
            multi_line += 1;
            format!("first {i}\nsecond, \"quoted\"")
        } else {
            format!("n{i}")
        };
        if csv {
            let quoted = format!("\"{}\"", note.replace('"', "\"\""));
            writeln!(out, "{symbol},{quoted},{quantity}").expect("write");
        } else {
            let note_json = serde_json::to_string(&note).expect("json");
            writeln!(
                out,
                r#"{{"symbol":"{symbol}","note":{note_json},"quantity":{quantity}}}"#
            )
            .expect("write");
        }
        line += 1 + (csv && note.contains('\n')) as u64;
        symbols.push(symbol);
        notes.push(note);
        quantities.push(quantity);
    }
    out.flush().expect("flush");
    let good = RecordBatch::try_new(
        Arc::new(schema()),
        vec![
            Arc::new(StringArray::from(symbols)),
            Arc::new(StringArray::from(notes)),
            Arc::new(Int64Array::from(quantities)),
        ],
    )
    .expect("batch");
    Written {
        good,
        bad_lines,
        multi_line,
    }
}

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("symbol", DataType::Utf8, true),
        Field::new("note", DataType::Utf8, true),
        Field::new("quantity", DataType::Int64, true),
    ])
}

/// One run's results.
struct Run {
    summary: JobSummary,
    /// The output file's bytes.
    output: Vec<u8>,
    /// The dead-letter file's bytes.
    dead_letters: Vec<u8>,
}

/// Runs `select` over `input` into a JSON-lines file with `threads` decode threads.
fn run(dir: &Path, input: &Path, select: &str, threads: usize, partitions: usize) -> Run {
    let output = dir.join(format!("out-{threads}-{partitions}.jsonl"));
    let dlq = dir.join(format!("dlq-{threads}-{partitions}.jsonl"));
    let script = format!(
        "CREATE STREAM trades (symbol VARCHAR, note VARCHAR, quantity BIGINT) WITH (\
           'trades.path' = '{}', 'trades.decode.threads' = '{threads}', \
           'trades.dlq.path' = '{}', 'trades.batch.size' = '1024');\n\
         CREATE STREAM out AS {select} \
           WITH ('out.type' = 'file_sink', 'out.path' = '{}');",
        input.display(),
        dlq.display(),
        output.display()
    );
    let options = JobOptions {
        partitions,
        source_paths: BTreeMap::new(),
        collect_output: true,
        ..Default::default()
    };
    let summary = plan_script(&script, &options)
        .and_then(|planned| planned.run(&options))
        .unwrap_or_else(|e| panic!("velostream failed on {script}: {e}"))
        .pop()
        .expect("a job");
    Run {
        summary,
        output: std::fs::read(&output).expect("output file"),
        dead_letters: std::fs::read(&dlq).expect("dead-letter file"),
    }
}

fn locations(summary: &JobSummary) -> Vec<String> {
    summary
        .bad_records
        .iter()
        .map(|b| b.location.clone())
        .collect()
}

/// Checks every run of `select` over `input` against the single-threaded run at its width
/// and against DataFusion's `oracle`.
fn same_everywhere(written: &Written, input: &Path, select: &str, oracle: &str) {
    let dir = input.parent().expect("dir");
    let expected_locations: Vec<String> = written
        .bad_lines
        .iter()
        .map(|l| format!("{}:{l}", input.display()))
        .collect();
    let expected_rows = common::batch_oracle(vec![("trades", written.good.clone())], oracle);
    for partitions in [1, 4] {
        let single = run(dir, input, select, 1, partitions);
        assert_eq!(single.summary.errors, written.bad_lines.len() as u64);
        assert_eq!(locations(&single.summary), expected_locations);
        assert_eq!(
            common::sorted_rows(single.summary.output.as_deref().unwrap_or_default()),
            expected_rows,
            "{select} at {partitions} partitions"
        );
        let pooled = run(dir, input, select, 4, partitions);
        assert!(
            pooled.output == single.output,
            "{select}: the output at 4 decode threads differs from 1, at {partitions} partitions"
        );
        assert_eq!(pooled.dead_letters, single.dead_letters);
        assert_eq!(locations(&pooled.summary), expected_locations);
    }
}

#[test]
fn a_csv_file_decoded_in_parallel_is_read_as_one_reader_reads_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("trades.csv");
    let written = write_trades(&input, true);
    assert!(std::fs::metadata(&input).expect("file").len() > 2 << 20);
    same_everywhere(
        &written,
        &input,
        "SELECT symbol, note, quantity FROM trades",
        "SELECT symbol, note, quantity FROM trades",
    );
    same_everywhere(
        &written,
        &input,
        "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q FROM trades GROUP BY symbol EMIT FINAL",
        "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q FROM trades GROUP BY symbol",
    );
    // Each quoted note kept its newline: it was one record, not two bad lines.
    let run = run(dir.path(), &input, "SELECT note FROM trades", 4, 1);
    let text = String::from_utf8(run.output).expect("utf8");
    assert_eq!(text.matches(r"\nsecond").count(), written.multi_line);
}

#[test]
fn a_json_lines_file_decoded_in_parallel_is_read_as_one_reader_reads_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("trades.jsonl");
    let written = write_trades(&input, false);
    same_everywhere(
        &written,
        &input,
        "SELECT symbol, note, quantity FROM trades",
        "SELECT symbol, note, quantity FROM trades",
    );
}

#[test]
fn a_stray_quote_costs_only_its_own_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("stray.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&input).expect("create"));
    writeln!(out, "symbol,note,quantity").expect("write");
    // 3 MB of records, one of them with a quote that never closes.
    let lines = 200_000;
    for i in 0..lines {
        match i {
            1000 => writeln!(out, "S1,\"never closed,5").expect("write"),
            _ => writeln!(out, "S{},plain,{}", i % 7, i % 10).expect("write"),
        }
    }
    out.flush().expect("flush");
    drop(out);
    for threads in [1, 4] {
        let run = run(
            dir.path(),
            &input,
            "SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol EMIT FINAL",
            threads,
            1,
        );
        assert_eq!(run.summary.records_in, lines - 1);
        assert_eq!(
            locations(&run.summary),
            vec![format!("{}:1002", input.display())]
        );
    }
}
