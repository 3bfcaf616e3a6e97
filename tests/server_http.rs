//! `velo-sql server` over real HTTP: an app deployed with `POST /api/v1/apps` follows a
//! growing file; its `records_in` grows in `/api/v1/jobs` and in `/metrics` (read with a
//! Prometheus text parser); a stop drains the job, and every row is in the sink; bad SQL is a
//! 400 with its line and column.

mod kafka_support;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use velostream::server::http::Server;
use velostream::server::AppOptions;

struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    fn new(server: &Server) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            agent,
            base: format!("http://{}", server.addr),
        }
    }

    /// (status, body) of a request with an optional body.
    fn call(&self, method: &str, path: &str, body: Option<(&str, String)>) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, Some((kind, body))) => self
                .agent
                .post(&url)
                .header("Content-Type", kind)
                .send(body),
            (_, None) => self.agent.post(&url).send_empty(),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("body");
        (status, text)
    }

    fn json(&self, method: &str, path: &str, body: Option<(&str, String)>) -> (u16, Value) {
        let (status, text) = self.call(method, path, body);
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        (status, value)
    }

    /// The job's `records_in` in /metrics, parsed as Prometheus text.
    fn scraped_records_in(&self, job: &str) -> Option<f64> {
        let (status, text) = self.call("GET", "/metrics", None);
        assert_eq!(status, 200);
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "velostream_job_records_in_total" && s.labels.get("job") == Some(job)
            })
            .and_then(|s| match s.value {
                prometheus_parse::Value::Counter(v) => Some(v),
                _ => None,
            })
    }
}

fn append(path: &std::path::Path, ids: std::ops::Range<i64>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("input");
    for id in ids {
        writeln!(f, "{}", json!({"id": id, "v": id % 20})).expect("write");
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_app_deployed_over_http_runs_reports_and_stops() {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("events.jsonl");
    let output = dir.path().join("big.jsonl");
    append(&input, 0..100);
    let mut server = Server::start(
        "127.0.0.1:0",
        AppOptions {
            partitions: 2,
            ..Default::default()
        },
        None,
    )
    .expect("server");
    let client = Client::new(&server);
    assert_eq!(client.json("GET", "/health", None).0, 200);

    let sql = format!(
        "CREATE STREAM events (id BIGINT, v BIGINT) WITH ('events.type' = 'file_source', \
         'events.path' = '{}', 'events.watch' = 'true');\n\
         CREATE STREAM big AS SELECT id, v FROM events WHERE v > 9 \
         WITH ('big.type' = 'file_sink', 'big.path' = '{}');\n",
        input.display(),
        output.display()
    );
    let body = json!({"name": "demo", "sql": sql}).to_string();
    let (status, deployed) = client.json("POST", "/api/v1/apps", Some(("application/json", body)));
    assert_eq!(status, 201, "{deployed}");
    assert_eq!(deployed, json!({"app": "demo", "jobs": ["big"]}));

    let records_in = |client: &Client| {
        let (_, jobs) = client.json("GET", "/api/v1/jobs", None);
        jobs[0]["records_in"].as_u64().unwrap_or(0)
    };
    wait_until("the first 100 records", || records_in(&client) >= 100);
    append(&input, 100..250);
    wait_until("the file's growth", || records_in(&client) >= 250);
    wait_until("the metrics", || {
        client.scraped_records_in("big").is_some_and(|n| n >= 250.0)
    });
    let (_, job) = client.json("GET", "/api/v1/jobs/big", None);
    assert_eq!(job["status"], "running");
    assert_eq!(job["app"], "demo");
    assert_eq!(job["partitions"], 2);

    let (status, stopped) = client.json("POST", "/api/v1/jobs/big/stop", None);
    assert_eq!(status, 200);
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert_eq!(stopped["records_in"], 250);
    let written: Vec<i64> = std::fs::read_to_string(&output)
        .expect("sink")
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("row")["id"]
                .as_i64()
                .expect("id")
        })
        .collect();
    let mut ids = written.clone();
    ids.sort();
    let expected: Vec<i64> = (0..250).filter(|id| id % 20 > 9).collect();
    assert_eq!(ids, expected, "every row with v > 9 is in the sink, once");
    assert_eq!(stopped["records_out"], expected.len());

    let bad = format!(
        "CREATE STREAM events (id BIGINT) WITH ('events.type' = 'file_source', \
         'events.path' = '{}');\nCREATE STREAM oops AS SELECT idd FROM events;",
        input.display()
    );
    let (status, error) = client.json("POST", "/api/v1/apps", Some(("text/plain", bad)));
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["line"], 2, "{error}");
    assert_eq!(error["column"], 30, "{error}");
    assert_eq!(error["statement"], "oops", "{error}");
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("idd")),
        "{error}"
    );
    assert_eq!(
        client
            .json("GET", "/api/v1/apps", None)
            .1
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let (status, plan) = client.json("POST", "/api/v1/sql/validate", Some(("text/plain", sql)));
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["valid"], true);
    assert_eq!(plan["jobs"][0]["name"], "big");
    assert_eq!(plan["jobs"][0]["operators"][0]["operator"], "0-filter");

    assert_eq!(client.json("DELETE", "/api/v1/apps/demo", None).0, 200);
    assert_eq!(client.json("GET", "/api/v1/apps/demo", None).0, 404);
    assert_eq!(client.json("GET", "/api/v1/jobs/big", None).0, 404);
    server.shutdown().expect("shutdown");
}

/// `velo-sql server` drains every job on SIGTERM and exits 0: the rows read are in the sink.
#[test]
fn sigterm_drains_the_server_and_exits_zero() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("events.jsonl");
    let output = dir.path().join("all.jsonl");
    append(&input, 0..50);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_velo-sql"))
        .args(["server", "--http", "127.0.0.1:0", "--partitions", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("velo-sql server");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("stderr") > 0,
            "no address printed"
        );
        if let Some(addr) = line.trim().strip_prefix("serving on http://") {
            break addr.to_string();
        }
    };
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || for _ in stderr.lines() {});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let sql = format!(
        "CREATE STREAM events (id BIGINT, v BIGINT) WITH ('events.type' = 'file_source', \
         'events.path' = '{}', 'events.watch' = 'true');\n\
         CREATE STREAM all_rows AS SELECT id FROM events \
         WITH ('all_rows.type' = 'file_sink', 'all_rows.path' = '{}');\n",
        input.display(),
        output.display()
    );
    let mut deployed = agent
        .post(format!("http://{addr}/api/v1/apps"))
        .send(sql)
        .expect("deploy");
    assert_eq!(deployed.status().as_u16(), 201);
    let _ = deployed.body_mut().read_to_string();
    wait_until("the 50 records", || {
        let mut r = agent
            .get(format!("http://{addr}/api/v1/jobs/all_rows"))
            .call()
            .expect("job");
        let job: Value =
            serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
        job["records_in"].as_u64() == Some(50)
    });
    // SAFETY: a plain kill(2) of the child we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().expect("exit");
    assert_eq!(status.code(), Some(0));
    let rows = std::fs::read_to_string(&output)
        .expect("sink")
        .lines()
        .count();
    assert_eq!(rows, 50, "the drained job flushed every row");
}

/// `velo-sql apps ...` and `velo-sql jobs ...` against a running server: a deploy, the job in
/// the list (as a table and as JSON), a stop, a delete, and bad SQL printed with its caret.
#[test]
fn the_cli_deploys_lists_stops_and_deletes() {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("events.jsonl");
    append(&input, 0..30);
    let mut server = Server::start("127.0.0.1:0", AppOptions::default(), None).expect("server");
    let url = format!("http://{}", server.addr);
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_velo-sql"))
            .args(args)
            .args(["--server", &url])
            .output()
            .expect("velo-sql");
        let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let app = dir.path().join("app.sql");
    std::fs::write(
        &app,
        format!(
            "CREATE STREAM events (id BIGINT, v BIGINT) WITH ('events.type' = 'file_source', \
             'events.path' = '{}', 'events.watch' = 'true');\n\
             CREATE STREAM copied AS SELECT id FROM events \
             WITH ('copied.type' = 'file_sink', 'copied.path' = '{}');\n",
            input.display(),
            dir.path().join("out.jsonl").display()
        ),
    )
    .expect("app");
    let app = app.display().to_string();
    let (code, out, err) = cli(&["apps", "deploy", &app]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("copied"), "{out}");
    wait_until("the 30 records", || {
        let (_, out, _) = cli(&["jobs", "list", "--json"]);
        let jobs: Value = serde_json::from_str(&out).expect("json");
        jobs[0]["records_in"] == 30
    });
    let (code, table, _) = cli(&["jobs", "list"]);
    assert_eq!(code, Some(0));
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("STATUS"),
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row[..4], ["copied", "app-1", "running", "30"], "{table}");
    let (code, shown, _) = cli(&["jobs", "show", "copied"]);
    assert_eq!(code, Some(0));
    assert!(
        shown
            .lines()
            .any(|l| l.split_whitespace().eq(["records_in:", "30"])),
        "{shown}"
    );
    let (code, stopped, _) = cli(&["jobs", "stop", "copied"]);
    assert_eq!(code, Some(0));
    assert!(
        stopped
            .lines()
            .any(|l| l.split_whitespace().eq(["status:", "stopped"])),
        "{stopped}"
    );
    let (code, _, err) = cli(&["jobs", "show", "nope"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no job named 'nope'"), "{err}");
    let (code, out, _) = cli(&["apps", "delete", "app-1"]);
    assert_eq!((code, out.trim()), (Some(0), "deleted app app-1"));

    let bad = dir.path().join("bad.sql");
    std::fs::write(
        &bad,
        format!(
            "CREATE STREAM events (id BIGINT) WITH ('events.type' = 'file_source', \
             'events.path' = '{}');\nCREATE STREAM oops AS SELECT idd FROM events;\n",
            input.display()
        ),
    )
    .expect("bad");
    let (code, _, err) = cli(&["apps", "deploy", &bad.display().to_string()]);
    assert_eq!(code, Some(2), "bad SQL exits 2: {err}");
    assert!(err.contains("line 2, column 30"), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    let (code_line, caret) = (lines[lines.len() - 2], lines[lines.len() - 1]);
    assert_eq!(
        caret.find('^'),
        code_line.find("idd"),
        "a caret under idd: {err}"
    );
    server.shutdown().expect("shutdown");
}

/// A job with event time shows each input partition's watermark and its lags, in
/// `/api/v1/jobs/{name}` and in `/metrics`: the newest event less the allowed disorder.
#[test]
fn a_windowed_job_shows_its_watermark_per_input_partition() {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("ticks.jsonl");
    let mut f = std::fs::File::create(&input).expect("input");
    for i in 0..40i64 {
        writeln!(f, "{}", json!({"id": i, "ts": 1_000 * i})).expect("write");
    }
    drop(f);
    let mut server = Server::start("127.0.0.1:0", AppOptions::default(), None).expect("server");
    let client = Client::new(&server);
    let sql = format!(
        "CREATE STREAM ticks (id BIGINT, ts BIGINT) WITH ('ticks.type' = 'file_source', \
         'ticks.path' = '{}', 'ticks.watch' = 'true', 'ticks.event.time.field' = 'ts', \
         'ticks.watermark.max_out_of_orderness' = '2s');\n\
         CREATE STREAM per_10s AS SELECT COUNT(*) AS n FROM ticks WINDOW TUMBLING(ts, 10s) \
         WITH ('per_10s.type' = 'file_sink', 'per_10s.path' = '{}');\n",
        input.display(),
        dir.path().join("out.jsonl").display()
    );
    let (status, _) = client.json("POST", "/api/v1/apps", Some(("text/plain", sql)));
    assert_eq!(status, 201);
    wait_until("the watermark", || {
        let (_, job) = client.json("GET", "/api/v1/jobs/per_10s", None);
        job["watermark"] == 37_000
    });
    let (_, job) = client.json("GET", "/api/v1/jobs/per_10s", None);
    let input = &job["inputs"][0];
    assert_eq!(input["source"], "ticks", "{job}");
    assert_eq!(input["partition"], 0, "{job}");
    assert_eq!(input["newest_event"], 39_000, "{job}");
    assert_eq!(input["watermark"], 37_000, "{job}");
    assert_eq!(input["lag_behind_newest_ms"], 2_000, "{job}");
    assert!(
        input["lag_behind_wall_ms"]
            .as_i64()
            .is_some_and(|l| l > 1_000_000_000),
        "{job}"
    );
    assert_eq!(
        job["records_out"], 3,
        "three 10 s windows closed by 37 s: {job}"
    );
    let (_, text) = client.call("GET", "/metrics", None);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    let watermark = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "velostream_job_watermark_seconds"
                && s.labels.get("job") == Some("per_10s")
                && s.labels.get("source") == Some("ticks")
                && s.labels.get("partition") == Some("0")
        })
        .map(|s| s.value.clone());
    assert_eq!(watermark, Some(prometheus_parse::Value::Gauge(37.0)));
    // The open window [30 s, 40 s) is state: one group, with its key and accumulator.
    assert_eq!(job["state_keys"], 1, "{job}");
    assert!(job["state_bytes"].as_u64().is_some_and(|b| b > 0), "{job}");
    let state_bytes: f64 = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "velostream_job_state_bytes" && s.labels.get("job") == Some("per_10s")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(
        Some(state_bytes as u64),
        job["state_bytes"].as_u64(),
        "{text}"
    );
    server.shutdown().expect("shutdown");
}

/// The OpenAPI document and the server agree: every operation it names is served (a path the
/// server has no route for would be a bare 404 or a 405) and answers a status it documents,
/// and docs/server.md's API table lists exactly its operations.
#[test]
fn the_openapi_document_matches_the_routes_and_the_docs() {
    let server = Server::start("127.0.0.1:0", AppOptions::default(), None).expect("server");
    let client = Client::new(&server);
    let (status, doc) = client.json("GET", "/api/v1/openapi.json", None);
    assert_eq!(status, 200);
    let mut operations = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            let method = method.to_uppercase();
            operations.insert(format!("{method} {path}"));
            let body = (method == "POST").then(|| ("text/plain", "SELECT 1 FROM nowhere".into()));
            let (status, text) = client.call(&method, &path.replace("{name}", "nope"), body);
            let documented = operation["responses"].as_object().expect("responses");
            assert!(
                documented.contains_key(&status.to_string()),
                "{method} {path} answered {status} ({text}); documented: {:?}",
                documented.keys().collect::<Vec<_>>()
            );
            if status == 404 {
                let answer: Value = serde_json::from_str(&text).expect("a JSON 404");
                assert!(
                    answer["error"].as_str().is_some_and(|e| e.contains("nope")),
                    "{method} {path}: the 404 of a route, not of a missing one: {text}"
                );
            }
        }
    }
    let (status, missing) = client.json("GET", "/api/v1/nothing-here", None);
    assert_eq!(
        (status, missing["error"].as_str()),
        (404, Some("no such path: /api/v1/nothing-here"))
    );
    operations.insert("GET /api/v1/openapi.json".to_string());
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/server.md"))
        .expect("docs/server.md");
    let listed: std::collections::BTreeSet<String> = docs
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
        .filter(|op| {
            op.split(' ')
                .next()
                .is_some_and(|m| ["GET", "POST", "DELETE"].contains(&m))
        })
        .map(str::to_string)
        .collect();
    assert_eq!(
        listed, operations,
        "docs/server.md's table and the OpenAPI document"
    );
}

/// Metrics declared in SQL (`-- @metric`) are computed from the job's output rows and exported
/// in /metrics with the built-in ones; a malformed annotation fails the deploy at its line.
#[test]
fn metrics_declared_in_sql_count_the_output_rows() {
    let dir = tempfile::tempdir().expect("dir");
    let input = dir.path().join("events.jsonl");
    let output = dir.path().join("tagged.jsonl");
    append(&input, 0..200);
    let server = Server::start(
        "127.0.0.1:0",
        AppOptions {
            partitions: 2,
            ..Default::default()
        },
        None,
    )
    .expect("server");
    let client = Client::new(&server);
    let source = format!(
        "CREATE STREAM events (id BIGINT, v BIGINT) WITH ('events.type' = 'file_source', \
         'events.path' = '{}');\n",
        input.display()
    );
    let query = format!(
        "CREATE STREAM tagged AS SELECT id, v, \
         CASE WHEN id % 2 = 0 THEN 'even' ELSE 'odd' END AS parity FROM events \
         WITH ('tagged.type' = 'file_sink', 'tagged.path' = '{}');",
        output.display()
    );
    let bad = format!("{source}-- @metric: m\n-- @metric_labels: parityy\n{query}");
    let (status, error) = client.json("POST", "/api/v1/apps", Some(("text/plain", bad)));
    assert_eq!(status, 400, "{error}");
    assert_eq!(
        (error["line"].as_u64(), error["column"].as_u64()),
        (Some(3), Some(20)),
        "{error}"
    );
    assert_eq!(error["statement"], "tagged", "{error}");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("did you mean 'parity'")),
        "{error}"
    );

    let sql = format!(
        "{source}-- @metric: big_events_total\n-- @metric_help: \"events with v over 15\"\n\
         -- @metric_labels: parity\n-- @metric_condition: v > 15\n\
         -- @metric: last_v\n-- @metric_type: gauge\n-- @metric_field: v\n\
         -- @metric_labels: parity\n\
         -- @metric: v_sizes\n-- @metric_type: histogram\n-- @metric_field: v * 10\n\
         -- @metric_buckets: 50, 100, 150\n{query}"
    );
    let (status, deployed) = client.json("POST", "/api/v1/apps", Some(("text/plain", sql)));
    assert_eq!(status, 201, "{deployed}");
    wait_until("the job to finish", || {
        client.json("GET", "/api/v1/jobs/tagged", None).1["status"] == "finished"
    });
    let rows: Vec<(i64, i64)> = std::fs::read_to_string(&output)
        .expect("sink")
        .lines()
        .map(|l| {
            let row: Value = serde_json::from_str(l).expect("row");
            (
                row["id"].as_i64().expect("id"),
                row["v"].as_i64().expect("v"),
            )
        })
        .collect();
    assert_eq!(rows.len(), 200);
    let parity = |id: i64| if id % 2 == 0 { "even" } else { "odd" };

    let (_, text) = client.call("GET", "/metrics", None);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    let sample = |metric: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == metric
                    && s.labels.get("job") == Some("tagged")
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| s.value.clone())
            .unwrap_or_else(|| panic!("no {metric} {labels:?} in:\n{text}"))
    };
    for side in ["even", "odd"] {
        let big = rows
            .iter()
            .filter(|(id, v)| parity(*id) == side && *v > 15)
            .count();
        assert_eq!(
            sample("big_events_total", &[("parity", side)]),
            prometheus_parse::Value::Counter(big as f64)
        );
        // The gauge holds the value of the last row written for its labels.
        let last = rows
            .iter()
            .rev()
            .find(|(id, _)| parity(*id) == side)
            .expect("a row");
        assert_eq!(
            sample("last_v", &[("parity", side)]),
            prometheus_parse::Value::Gauge(last.1 as f64)
        );
    }
    let prometheus_parse::Value::Histogram(buckets) = sample("v_sizes", &[]) else {
        panic!("v_sizes is not a histogram:\n{text}");
    };
    for bucket in buckets {
        let expected = rows
            .iter()
            .filter(|(_, v)| (*v * 10) as f64 <= bucket.less_than)
            .count();
        assert_eq!(
            bucket.count, expected as f64,
            "bucket le={}",
            bucket.less_than
        );
    }
    assert!(
        text.contains("# HELP big_events_total events with v over 15"),
        "{text}"
    );
}

/// A Kafka job's consumer lag per input partition, in the API and in /metrics: every partition
/// it has read from, with its topic, none behind once it has read everything.
#[test]
fn a_kafka_jobs_consumer_lag_is_shown_per_partition() {
    let mock = velostream::connectors::kafka::MockKafka::start(1).expect("mock");
    let bootstrap = mock.bootstrap_servers().to_string();
    let options = AppOptions {
        brokers: Some(bootstrap.clone()),
        ..Default::default()
    };
    let server = Server::start("127.0.0.1:0", options, Some(mock)).expect("server");
    let client = Client::new(&server);
    let sql = "CREATE STREAM ticks (symbol VARCHAR, n BIGINT) WITH ('ticks.type' = 'kafka_source', \
               'ticks.topic.name' = 'ticks', 'ticks.group.id' = 'lag');\n\
               CREATE STREAM copied AS SELECT symbol, n FROM ticks WITH ('copied.type' = 'stdout');";
    let (status, deployed) = client.json("POST", "/api/v1/apps", Some(("text/plain", sql.into())));
    assert_eq!(status, 201, "{deployed}");
    let records: Vec<(Option<String>, String)> = (0..200)
        .map(|i| {
            (
                Some(format!("K{}", i % 16)),
                json!({"symbol": format!("K{}", i % 16), "n": i}).to_string(),
            )
        })
        .collect();
    kafka_support::produce(&bootstrap, "ticks", &records);
    wait_until("every record and the lag of each partition", || {
        let (_, job) = client.json("GET", "/api/v1/jobs/copied", None);
        job["records_in"] == 200
            && job["kafka_lag"].as_array().is_some_and(|l| {
                l.len() == 4 && l.iter().all(|p| p["records"] == 0 && p["topic"] == "ticks")
            })
    });
    let (_, text) = client.call("GET", "/metrics", None);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text");
    let partitions: std::collections::BTreeSet<String> = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "velostream_kafka_consumer_lag_records"
                && s.labels.get("job") == Some("copied")
                && s.labels.get("topic") == Some("ticks")
                && s.labels.get("source") == Some("ticks")
                && s.value == prometheus_parse::Value::Gauge(0.0)
        })
        .filter_map(|s| s.labels.get("partition").map(str::to_string))
        .collect();
    assert_eq!(partitions.len(), 4, "{text}");
}
