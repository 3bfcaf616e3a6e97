//! velo-sql-batch end to end: files in, JSON lines out, bad records reported, exit codes.

use std::io::Write;
use std::process::Command;

fn velo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_velo-sql-batch"))
}

fn write_lines(path: &std::path::Path, lines: impl Iterator<Item = String>) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

#[test]
fn one_malformed_line_in_100k_skips_only_that_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    write_lines(
        &input,
        (1..=100_000).map(|i| {
            if i == 50_000 {
                r#"{"id": 50000, "amount": oops}"#.to_string()
            } else {
                format!(r#"{{"id": {i}, "amount": {}}}"#, i % 100)
            }
        }),
    );
    let output = dir.path().join("out.jsonl");
    let result = velo()
        .args(["-e", "SELECT id, amount FROM orders", "--source"])
        .arg(format!("orders={}", input.display()))
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    let written = std::fs::read_to_string(&output).unwrap();
    assert_eq!(written.lines().count(), 99_999);
    assert!(!written.contains(r#""id":50000,"#));
    assert!(written.contains(r#"{"id":49999,"amount":99}"#));
    assert!(written.contains(r#"{"id":50001,"amount":1}"#));
    assert!(stderr.contains("orders.jsonl:50000"), "{stderr}");
    assert!(
        stderr.contains("99999 records in, 99999 out, 1 errors"),
        "{stderr}"
    );
}

#[test]
fn on_error_fail_stops_with_the_location() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.jsonl");
    write_lines(
        &input,
        ["{\"a\": 1}", "{\"a\": ", "{\"a\": 3}"]
            .iter()
            .map(|s| s.to_string()),
    );
    let sql = format!(
        "SELECT a FROM t WITH ('t.type' = 'file_source', 't.path' = '{}', 't.on_error' = 'fail')",
        input.display()
    );
    let result = velo().args(["-e", &sql]).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("t.jsonl:2"), "{stderr}");
}

#[test]
fn dead_letter_file_receives_bad_records() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.jsonl");
    let dlq = dir.path().join("dlq.jsonl");
    write_lines(
        &input,
        ["{\"a\": 1}", "not json", "{\"a\": 3}"]
            .iter()
            .map(|s| s.to_string()),
    );
    let sql = format!(
        "SELECT a FROM t WITH ('t.path' = '{}', 't.dlq.path' = '{}')",
        input.display(),
        dlq.display()
    );
    let result = velo().args(["-e", &sql]).output().unwrap();
    assert!(result.status.success());
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![r#"{"a":1}"#, r#"{"a":3}"#]
    );
    let dead = std::fs::read_to_string(&dlq).unwrap();
    assert!(
        dead.contains("t.jsonl:2") && dead.contains("not json"),
        "{dead}"
    );
}

#[test]
fn bad_sql_exits_2_with_line_and_column() {
    let result = velo()
        .args([
            "-e",
            "SELECT symbol,\n  pricee FROM trades",
            "--source",
            "trades=examples/data/trades.jsonl",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 2, column 3"), "{stderr}");
    assert!(
        stderr.contains("unknown column 'pricee' (did you mean 'price'?)"),
        "{stderr}"
    );

    let result = velo().args(["-e", "SELECT FROM WHERE"]).output().unwrap();
    assert_eq!(result.status.code(), Some(2));
}

#[test]
fn csv_input_and_csv_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.csv");
    write_lines(
        &input,
        ["sym,qty", "A,1", "B,2", "A,3"]
            .iter()
            .map(|s| s.to_string()),
    );
    let out = dir.path().join("o.csv");
    let result = velo()
        .args([
            "-e",
            "SELECT sym, SUM(qty) AS total FROM t GROUP BY sym EMIT FINAL",
            "--source",
        ])
        .arg(format!("t={}", input.display()))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "sym,total\nA,4\nB,2\n"
    );
}

#[test]
fn bundled_example_runs() {
    let result = velo().arg("examples/trades.sql").output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    assert!(stdout.contains(r#""symbol":"AAPL""#), "{stdout}");
}

#[test]
fn joins_example_runs() {
    let result = velo().arg("examples/joins.sql").output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            r#"{"sector":"consumer","trades":34,"notional":296653.53}"#,
            r#"{"sector":"tech","trades":126,"notional":1163313.19}"#,
            r#"{"sector":null,"trades":40,"notional":401358.53}"#,
        ],
        "{stdout}"
    );
}

#[test]
fn json_array_files_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("in");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("a.json"),
        r#"[{"k": "x", "v": 1}, {"k": "y", "v": 2}]"#,
    )
    .unwrap();
    std::fs::write(data.join("b.json"), r#"[{"k": "x", "v": 10}]"#).unwrap();
    let sql = format!(
        "SELECT k, SUM(v) AS total FROM t GROUP BY k EMIT FINAL WITH ('t.path' = '{}', 't.format' = 'json')",
        data.display()
    );
    let result = velo().args(["-e", &sql]).output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert_eq!(
        stdout,
        "{\"k\":\"x\",\"total\":11}\n{\"k\":\"y\",\"total\":2}\n"
    );
}

#[test]
fn watch_follows_a_growing_file() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("live.jsonl");
    std::fs::write(&input, "{\"n\": 1}\n").unwrap();
    let sql = format!(
        "SELECT n * 10 AS m FROM t WITH ('t.path' = '{}', 't.watch' = 'true', 't.batch.size' = '1')",
        input.display()
    );
    let mut child = velo()
        .args(["-e", &sql])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Append a record in two writes: the half-written line must wait for its newline.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    write!(f, "{{\"n\": 2}}").unwrap();
    f.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    writeln!(f).unwrap();
    f.flush().unwrap();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        (first.as_str(), second.as_str()),
        (r#"{"m":10}"#, r#"{"m":20}"#)
    );
}

#[test]
fn late_records_go_to_the_dead_letter_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.jsonl");
    let dlq = dir.path().join("late.jsonl");
    write_lines(
        &input,
        [
            r#"{"k":"a","ts":1000}"#,
            r#"{"k":"a","ts":70000}"#,
            r#"{"k":"a","ts":5000}"#,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let sql = format!(
        "SELECT k, _window_start, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(ts, 1m) \
         WITH ('t.path' = '{}', 't.batch.size' = '1', 'late.data.strategy' = 'dead_letter', 'late.data.dlq.path' = '{}')",
        input.display(),
        dlq.display()
    );
    let result = velo().args(["-e", &sql]).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        vec![
            r#"{"k":"a","_window_start":0,"n":1}"#,
            r#"{"k":"a","_window_start":60000,"n":1}"#
        ]
    );
    assert!(stderr.contains("1 late"), "{stderr}");
    let dead = std::fs::read_to_string(&dlq).unwrap();
    assert_eq!(dead.lines().count(), 1, "{dead}");
    assert!(
        dead.contains(r#""ts":5000"#) && dead.contains("windows closed"),
        "{dead}"
    );
}

#[test]
fn a_later_statement_reads_windowed_rows_by_window_end() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.jsonl");
    write_lines(
        &input,
        (0..6).map(|i| format!(r#"{{"k":"a","v":{i},"ts":{}}}"#, i * 30_000)),
    );
    let sql = format!(
        "CREATE STREAM t (k VARCHAR, v BIGINT, ts BIGINT) WITH ('t.path' = '{}', 't.event.time.field' = 'ts');
         CREATE STREAM per_minute AS SELECT k, _window_end, SUM(v) AS total FROM t GROUP BY k WINDOW TUMBLING(1m) WITH ('per_minute.type' = 'stdout');
         SELECT k, _event_time, total FROM per_minute;",
        input.display()
    );
    let result = velo().args(["-e", &sql]).output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let last: Vec<&str> = stdout.lines().skip(3).collect();
    assert_eq!(
        last,
        vec![
            r#"{"k":"a","_event_time":60000,"total":1}"#,
            r#"{"k":"a","_event_time":120000,"total":5}"#,
            r#"{"k":"a","_event_time":180000,"total":9}"#
        ],
        "{stdout}"
    );
}

#[test]
fn partitions_come_from_the_flag_or_the_statement_annotation() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.jsonl");
    write_lines(
        &input,
        (0..1000).map(|i| format!(r#"{{"k": "k{}", "v": {i}}}"#, i % 10)),
    );
    let source = format!("t={}", input.display());
    let group_by = "SELECT k, SUM(v) AS total FROM t GROUP BY k EMIT FINAL";
    let run = |sql: &str, extra: &[&str]| {
        let out = velo()
            .arg(format!("--execute={sql}"))
            .args(["--source", &source])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        let mut rows: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        rows.sort();
        (rows, stderr)
    };
    let (one, stderr) = run(group_by, &["--partitions", "1"]);
    assert!(
        stderr.contains("1000 records in, 10 out, 0 errors, 1 partitions"),
        "{stderr}"
    );
    let (three, stderr) = run(group_by, &["--partitions", "3"]);
    assert!(stderr.contains("3 partitions"), "{stderr}");
    assert_eq!(one, three);
    let annotated = format!("-- @num_partitions: 5\n{group_by}");
    let (five, stderr) = run(&annotated, &["--partitions", "2"]);
    assert!(stderr.contains("5 partitions"), "{stderr}");
    assert_eq!(one, five);
    // LIMIT needs every row in one place, whatever was asked.
    let (_, stderr) = run("SELECT k FROM t LIMIT 3", &["--partitions", "4"]);
    assert!(stderr.contains("3 out, 0 errors, 1 partitions"), "{stderr}");

    let bad = velo()
        .arg(format!("--execute=-- @num_partitions: zero\n{group_by}"))
        .args(["--source", &source])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("@num_partitions must be a positive whole number"),
        "{stderr}"
    );
}
