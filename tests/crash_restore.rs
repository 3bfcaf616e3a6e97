//! Crash tests: the velo-sql server, reading Kafka while input flows, is SIGKILLed at five
//! moments and restarted each time (at a different width), with its state in a state
//! directory. A GROUP BY EMIT CHANGES app must end with the exact count and sum of every key
//! in its upsert output; a tumbling EMIT FINAL app must emit every window with its exact
//! values: at least once by default, and exactly once to a `read_committed` reader with an
//! exactly_once Kafka sink. Without durable state the first test loses about half the counts.
//! Each runs on librdkafka's mock cluster and, when `VELO_KAFKA_BOOTSTRAP` names one, on a
//! real broker (exactly-once output needs the real one: the mock ignores `read_committed`).

mod kafka_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use kafka_support::{
    consume, consume_committed, mock, produce, window_of, with_timeout, Cluster, Consumed,
};

const KEYS: i64 = 40;
const RECORDS: i64 = 12_000;

/// The velo-sql server running the app in `dir` with its state in `dir/state`.
fn spawn(dir: &Path, bootstrap: &str, partitions: usize) -> Child {
    kafka_support::spawn_server(dir, bootstrap, partitions, "150ms", "server")
}

/// Record `i` of the input: key `K{i % 40}`, quantity `i % 13`, one second apart.
fn record(i: i64) -> (Option<String>, String) {
    let key = format!("K{}", i % KEYS);
    let payload = serde_json::json!({
        "symbol": key, "quantity": i % 13, "ts": 1_700_000_000_000i64 + i * 1000,
    });
    (Some(key), payload.to_string())
}

/// Produces the records in 24 chunks, 600 ms apart, on a thread: input flows through all
/// five kills.
fn produce_while_running(bootstrap: String, topic: String) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let chunk = RECORDS / 24;
        for start in (0..RECORDS).step_by(chunk as usize) {
            let records: Vec<_> = (start..(start + chunk).min(RECORDS)).map(record).collect();
            produce(&bootstrap, &topic, &records);
            std::thread::sleep(Duration::from_millis(600));
        }
    })
}

/// Kills the server at five moments while input flows, each some time after the run got its
/// partitions (a restarted member waits for the killed one's session to expire first), and
/// restarts it each time at another width; returns the server running after the last restart.
fn kill_five_times(dir: &Path, bootstrap: &str) -> Child {
    let mut server = spawn_reading(dir, bootstrap, 2);
    for (moment, width) in [(250, 4), (600, 1), (100, 3), (900, 2), (400, 4)] {
        std::thread::sleep(Duration::from_millis(moment));
        // SIGKILL: no drain, no last checkpoint.
        server.kill().expect("kill");
        server.wait().expect("reaped");
        server = spawn_reading(dir, bootstrap, width);
    }
    server
}

/// A server that has got its partitions. librdkafka's mock cluster now and then leaves a
/// member that joins while a killed one's session expires waiting for good; such a run is
/// killed and started again (a crash before reading, which the test may add).
fn spawn_reading(dir: &Path, bootstrap: &str, width: usize) -> Child {
    for _attempt in 0..3 {
        let logged = log_of(dir).len();
        let mut server = spawn(dir, bootstrap, width);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if log_of(dir)
                .get(logged..)
                .is_some_and(|run| run.contains("partitions assigned"))
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("a run got no partitions in 20 s: starting it again");
        server.kill().expect("kill");
        server.wait().expect("reaped");
    }
    panic!("three runs in a row got no partitions:\n{}", log_of(dir));
}

fn stop(server: Child, dir: &Path) {
    kafka_support::stop_server(server, dir, "server");
}

/// The latest row of each key in the upsert output.
fn latest(out: &[Consumed]) -> BTreeMap<String, serde_json::Value> {
    out.iter()
        .filter_map(|(k, v)| Some((k.clone()?, v.clone()?)))
        .collect()
}

fn log_of(dir: &Path) -> String {
    kafka_support::server_log(dir, "server")
}

#[test]
fn group_by_emit_changes_survives_five_sigkills_with_exact_totals() {
    group_by_totals_survive_five_sigkills(Cluster::mock(&[("rin", 4), ("totals", 2)]));
}

#[test]
fn group_by_emit_changes_survives_five_sigkills_on_a_real_broker() {
    let topics = [("rin", 4), ("totals", 2)];
    if let Some(kafka) = Cluster::real("the real-broker GROUP BY crash test", &topics) {
        group_by_totals_survive_five_sigkills(kafka);
    }
}

fn group_by_totals_survive_five_sigkills(kafka: Cluster) {
    with_timeout(Duration::from_secs(240), move || {
        let bootstrap = kafka.bootstrap().to_string();
        let dir = tempfile::tempdir().expect("dir");
        let app = format!(
            "CREATE STREAM rin (symbol VARCHAR, quantity BIGINT, ts BIGINT) \
             WITH ('rin.type' = 'kafka_source', 'rin.topic.name' = '{}', \
                   'rin.group.id' = '{}', 'rin.session.timeout.ms' = '1000', 'rin.heartbeat.interval.ms' = '200');\n\
             CREATE TABLE totals AS SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q \
             FROM rin GROUP BY symbol EMIT CHANGES \
             WITH ('totals.type' = 'kafka_sink', 'totals.topic.name' = '{}');",
            kafka.name("rin"),
            kafka.name("crash"),
            kafka.name("totals")
        );
        std::fs::write(dir.path().join("app.sql"), app).expect("app");
        let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for i in 0..RECORDS {
            let e = expected.entry(format!("K{}", i % KEYS)).or_default();
            e.0 += 1;
            e.1 += i % 13;
        }
        let producer = produce_while_running(bootstrap.clone(), kafka.name("rin"));
        let server = kill_five_times(dir.path(), &bootstrap);
        producer.join().expect("producer");
        // The latest (n, q) per key, kept up to date as messages arrive (re-reading every
        // message on every poll would be quadratic).
        let seen = std::cell::RefCell::new((0usize, BTreeMap::<String, (i64, i64)>::new()));
        let exact = |out: &[Consumed]| {
            let mut seen = seen.borrow_mut();
            let (read, latest) = &mut *seen;
            for (k, v) in &out[*read..] {
                if let (Some(k), Some(v)) = (k, v) {
                    let row = (v["n"].as_i64().unwrap_or(-1), v["q"].as_i64().unwrap_or(-1));
                    latest.insert(k.clone(), row);
                }
            }
            *read = out.len();
            *latest == expected
        };
        let started = Instant::now();
        let out = consume(
            &bootstrap,
            &kafka.name("totals"),
            Duration::from_secs(120),
            |o| exact(o),
        );
        let waited = started.elapsed();
        stop(server, dir.path());
        let log = log_of(dir.path());
        assert!(
            log.contains("restored state from checkpoint"),
            "the restarts restored state:\n{log}"
        );
        let latest = latest(&out);
        // Every key that is off, so a failure shows which partitions' records were miscounted.
        let wrong: Vec<String> = expected
            .iter()
            .filter_map(|(k, (n, q))| {
                let row = latest.get(k).map(|r| (r["n"].as_i64(), r["q"].as_i64()));
                (row != Some((Some(*n), Some(*q))))
                    .then(|| format!("{k}: (n, q) {row:?}, want ({n}, {q})"))
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "after {waited:?}:\n{}\nserver log:\n{}",
            wrong.join("\n"),
            kafka_support::compact_log(&log)
        );
    });
}

#[test]
fn tumbling_emit_final_survives_five_sigkills_with_every_window_exact() {
    windows_survive_five_sigkills(Cluster::mock(&[("rin", 4), ("per_minute", 2)]), false);
}

#[test]
fn an_exactly_once_kafka_sink_emits_every_window_once_through_five_sigkills() {
    let topics = [("rin", 4), ("per_minute", 2)];
    if let Some(kafka) = Cluster::real("the exactly-once Kafka crash test", &topics) {
        windows_survive_five_sigkills(kafka, true);
    }
}

/// Every window is emitted with its exact values: at least once, or with `exactly_once`
/// exactly once to a `read_committed` reader.
fn windows_survive_five_sigkills(kafka: Cluster, exactly_once: bool) {
    with_timeout(Duration::from_secs(240), move || {
        let bootstrap = kafka.bootstrap().to_string();
        let dir = tempfile::tempdir().expect("dir");
        let delivery = if exactly_once {
            "exactly_once"
        } else {
            "at_least_once"
        };
        let app = format!(
            "CREATE STREAM rin (symbol VARCHAR, quantity BIGINT, ts BIGINT) \
             WITH ('rin.type' = 'kafka_source', 'rin.topic.name' = '{}', \
                   'rin.group.id' = '{}', 'rin.session.timeout.ms' = '1000', 'rin.heartbeat.interval.ms' = '200', \
                   'rin.event.time.field' = 'ts');\n\
             CREATE STREAM per_minute AS SELECT symbol, _window_start, COUNT(*) AS n, \
             SUM(quantity) AS q FROM rin GROUP BY symbol \
             WINDOW TUMBLING(ts, INTERVAL '1' MINUTE) EMIT FINAL \
             WITH ('per_minute.type' = 'kafka_sink', 'per_minute.topic.name' = '{}', \
                   'per_minute.delivery' = '{delivery}', \
                   'per_minute.transactional.id' = '{}');",
            kafka.name("rin"),
            kafka.name("crash-windows"),
            kafka.name("per_minute"),
            kafka.name("per-minute-writer"),
        );
        std::fs::write(dir.path().join("app.sql"), app).expect("app");
        let mut expected: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
        for i in 0..RECORDS {
            let ts = 1_700_000_000_000i64 + i * 1000;
            let e = expected
                .entry((format!("K{}", i % KEYS), ts - ts.rem_euclid(60_000)))
                .or_default();
            e.0 += 1;
            e.1 += i % 13;
        }
        let producer = produce_while_running(bootstrap.clone(), kafka.name("rin"));
        let server = kill_five_times(dir.path(), &bootstrap);
        producer.join().expect("producer");
        // A record an hour later on every partition closes every window.
        for p in 0..4 {
            let clock = serde_json::json!({
                "symbol": "clock", "quantity": 0, "ts": 1_700_000_000_000i64 + 6 * 3_600_000,
            });
            let rin = kafka.name("rin");
            kafka_support::produce_to(&bootstrap, &rin, Some(p), &[(None, clock.to_string())]);
        }
        // Windows seen so far, kept up to date as messages arrive.
        let seen = std::cell::RefCell::new((0usize, std::collections::BTreeSet::new()));
        let topic = kafka.name("per_minute");
        let all_windows = |o: &[Consumed]| {
            let mut seen = seen.borrow_mut();
            let (read, windows) = &mut *seen;
            for (_, v) in &o[*read..] {
                if let Some(row) = v {
                    windows.insert(window_of(row));
                }
            }
            *read = o.len();
            expected.keys().all(|w| windows.contains(w))
        };
        let limit = Duration::from_secs(120);
        let mut out = match exactly_once {
            true => consume_committed(&bootstrap, &topic, limit, all_windows),
            false => consume(&bootstrap, &topic, limit, all_windows),
        };
        stop(server, dir.path());
        if exactly_once {
            // Everything the stopped server wrote is committed or aborted by now: read it
            // all, to see any window twice.
            out = consume_committed(&bootstrap, &topic, Duration::from_secs(8), |_| false);
        }
        let log = log_of(dir.path());
        let mut seen: BTreeMap<(String, i64), Vec<(i64, i64)>> = BTreeMap::new();
        for row in out.iter().filter_map(|(_, v)| v.as_ref()) {
            let values = (
                row["n"].as_i64().unwrap_or(-1),
                row["q"].as_i64().unwrap_or(-1),
            );
            seen.entry(window_of(row)).or_default().push(values);
        }
        for (window, values) in &expected {
            let emitted = seen
                .get(window)
                .unwrap_or_else(|| panic!("window {window:?} was never emitted; log:\n{log}"));
            assert!(
                emitted.iter().all(|v| v == values),
                "window {window:?}: emitted {emitted:?}, expected {values:?}"
            );
            if exactly_once {
                assert_eq!(
                    emitted.len(),
                    1,
                    "window {window:?} was emitted {emitted:?}"
                );
            }
        }
        assert!(log.contains("restored state from checkpoint"), "{log}");
    });
}

/// The rows of the visible part files under `dir`, in part order.
fn published_rows(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut parts: Vec<std::path::PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-"))
        })
        .collect();
    parts.sort();
    parts
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON row"))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn an_exactly_once_file_sink_ends_with_exactly_the_rows_of_an_uninterrupted_run() {
    with_timeout(Duration::from_secs(240), || {
        let kafka = mock(&[("rin", 4)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("totals");
        let app = format!(
            "CREATE STREAM rin (symbol VARCHAR, quantity BIGINT, ts BIGINT) \
             WITH ('rin.type' = 'kafka_source', 'rin.topic.name' = 'rin', \
                   'rin.group.id' = 'crash-files', 'rin.session.timeout.ms' = '1000', \
                   'rin.heartbeat.interval.ms' = '200');\n\
             CREATE TABLE totals AS SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q \
             FROM rin GROUP BY symbol EMIT CHANGES \
             WITH ('totals.type' = 'file_sink', 'totals.path' = '{}', \
                   'totals.delivery' = 'exactly_once');",
            out.display()
        );
        std::fs::write(dir.path().join("app.sql"), app).expect("app");
        // An uninterrupted run emits, per key, one row per record with the running count and
        // sum (a key's records come in offset order from its one partition).
        let mut expected: Vec<(String, i64, i64)> = Vec::new();
        let mut running: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for i in 0..RECORDS {
            let key = format!("K{}", i % KEYS);
            let r = running.entry(key.clone()).or_default();
            r.0 += 1;
            r.1 += i % 13;
            expected.push((key, r.0, r.1));
        }
        expected.sort();
        let producer = produce_while_running(bootstrap.clone(), "rin".to_string());
        let server = kill_five_times(dir.path(), &bootstrap);
        producer.join().expect("producer");
        let deadline = Instant::now() + Duration::from_secs(120);
        while published_rows(&out).len() < RECORDS as usize && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        stop(server, dir.path());
        let mut rows: Vec<(String, i64, i64)> = published_rows(&out)
            .iter()
            .map(|r| {
                (
                    r["symbol"].as_str().expect("symbol").to_string(),
                    r["n"].as_i64().expect("n"),
                    r["q"].as_i64().expect("q"),
                )
            })
            .collect();
        rows.sort();
        assert_eq!(rows.len(), expected.len(), "no row lost, none doubled");
        assert_eq!(rows, expected);
    });
}
