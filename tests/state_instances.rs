//! Two instances of one app on one state directory: the first runs the job, holding its
//! lease; the second waits as a standby, out of the consumer group. While both are up the
//! totals are those of one instance (no partial row per key from each). When the first is
//! SIGKILLed, the standby takes over from the latest checkpoint, and the upsert view ends
//! exact: nothing lost, nothing doubled. The topic is not keyed by the GROUP BY column.

mod kafka_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kafka_support::{consume, produce, server_log, spawn_server, with_timeout, Cluster, Consumed};

const KEYS: i64 = 20;

/// Record `i`: symbol `K{i % 20}`, quantity `i % 11`, keyed by its id, not its symbol.
fn record(i: i64) -> (Option<String>, String) {
    let payload = serde_json::json!({ "symbol": format!("K{}", i % KEYS), "quantity": i % 11 });
    (Some(format!("id-{i}")), payload.to_string())
}

/// The true (count, sum) per symbol of records `0..n`.
fn totals(n: i64) -> BTreeMap<String, (i64, i64)> {
    let mut t: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for i in 0..n {
        let e = t.entry(format!("K{}", i % KEYS)).or_default();
        e.0 += 1;
        e.1 += i % 11;
    }
    t
}

/// Reads the upsert output until the latest row of every key is `expected`; returns the
/// latest rows.
fn read_until_exact(
    bootstrap: &str,
    topic: &str,
    expected: &BTreeMap<String, (i64, i64)>,
) -> BTreeMap<String, (i64, i64)> {
    let latest = std::cell::RefCell::new((0usize, BTreeMap::new()));
    consume(
        bootstrap,
        topic,
        Duration::from_secs(60),
        |out: &[Consumed]| {
            let mut seen = latest.borrow_mut();
            let (read, rows) = &mut *seen;
            for (k, v) in &out[*read..] {
                if let (Some(k), Some(v)) = (k, v) {
                    let row = (v["n"].as_i64().unwrap_or(-1), v["q"].as_i64().unwrap_or(-1));
                    rows.insert(k.clone(), row);
                }
            }
            *read = out.len();
            rows == expected
        },
    );
    latest.into_inner().1
}

fn wait_for(dir: &Path, instance: &str, line: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if server_log(dir, instance).contains(line) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_standby_instance_takes_over_a_killed_one_with_exact_totals() {
    with_timeout(Duration::from_secs(180), || {
        let kafka = Cluster::mock(&[("rin", 4), ("totals", 2)]);
        let bootstrap = kafka.bootstrap().to_string();
        let dir = tempfile::tempdir().expect("dir");
        let app = "CREATE STREAM rin (symbol VARCHAR, quantity BIGINT) \
             WITH ('rin.type' = 'kafka_source', 'rin.topic.name' = 'rin', 'rin.group.id' = 'pair', \
                   'rin.session.timeout.ms' = '1000', 'rin.heartbeat.interval.ms' = '200');\n\
             CREATE TABLE totals AS SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q \
             FROM rin GROUP BY symbol EMIT CHANGES \
             WITH ('totals.type' = 'kafka_sink', 'totals.topic.name' = 'totals');";
        std::fs::write(dir.path().join("app.sql"), app).expect("app");
        let mut first = spawn_server(dir.path(), &bootstrap, 2, "200ms", "first");
        assert!(
            wait_for(dir.path(), "first", "partitions assigned"),
            "{}",
            server_log(dir.path(), "first")
        );
        let second = spawn_server(dir.path(), &bootstrap, 3, "200ms", "second");
        assert!(
            wait_for(dir.path(), "second", "standby"),
            "{}",
            server_log(dir.path(), "second")
        );

        // Both up: one instance's totals.
        produce(
            &bootstrap,
            "rin",
            &(0..3000).map(record).collect::<Vec<_>>(),
        );
        let half = totals(3000);
        assert_eq!(read_until_exact(&bootstrap, "totals", &half), half);
        assert!(
            !server_log(dir.path(), "second").contains("partitions assigned"),
            "the standby read nothing while the first instance ran"
        );

        // SIGKILL the first while input flows; the standby takes over.
        let producer = {
            let bootstrap = bootstrap.clone();
            std::thread::spawn(move || {
                for start in (3000..6000).step_by(500) {
                    let records: Vec<_> = (start..start + 500).map(record).collect();
                    produce(&bootstrap, "rin", &records);
                    std::thread::sleep(Duration::from_millis(300));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(700));
        first.kill().expect("kill");
        first.wait().expect("reaped");
        producer.join().expect("producer");
        let all = totals(6000);
        assert_eq!(
            read_until_exact(&bootstrap, "totals", &all),
            all,
            "first:\n{}\nsecond:\n{}",
            server_log(dir.path(), "first"),
            server_log(dir.path(), "second")
        );
        let log = server_log(dir.path(), "second");
        assert!(log.contains("taking over a stale lease"), "{log}");
        assert!(log.contains("restored state from checkpoint"), "{log}");

        Command::new("kill")
            .args(["-TERM", &second.id().to_string()])
            .status()
            .expect("kill -TERM");
        let mut second = second;
        assert!(second.wait().expect("exits").success(), "{log}");
    });
}
