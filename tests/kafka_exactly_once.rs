//! The exactly-once Kafka sink (`'<sink>.delivery' = 'exactly_once'`): an epoch's rows stay
//! invisible to `read_committed` readers until its checkpoint is durable, a crash discards
//! them and they are written again, and a broker that loses the commit marker is caught
//! instead of doubling the output. The first test needs a real broker (`VELO_KAFKA_BOOTSTRAP`):
//! librdkafka's mock shows aborted transactions and drops transactional offset commits.

mod kafka_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_support::{consume, consume_committed, produce, with_timeout, Cluster, Consumed};
use velostream::job::StateOptions;
use velostream::server::{deploy_app, AppOptions};

/// Records `ids` of the input: key `K{id % 10}`.
fn records(ids: std::ops::Range<i64>) -> Vec<(Option<String>, String)> {
    ids.map(|i| {
        let key = format!("K{}", i % 10);
        (
            Some(key.clone()),
            serde_json::json!({ "id": i, "symbol": key }).to_string(),
        )
    })
    .collect()
}

/// A copy of `rin` into `copied` through an exactly-once sink.
fn copy_app(kafka: &Cluster) -> String {
    format!(
        "CREATE STREAM rin (id BIGINT, symbol VARCHAR) \
         WITH ('rin.type' = 'kafka_source', 'rin.topic.name' = '{}', 'rin.group.id' = '{}', \
               'rin.session.timeout.ms' = '1000', 'rin.heartbeat.interval.ms' = '200');\n\
         CREATE STREAM copied AS SELECT id, symbol FROM rin \
         WITH ('copied.type' = 'kafka_sink', 'copied.topic.name' = '{}', \
               'copied.delivery' = 'exactly_once', 'copied.transactional.id' = '{}');",
        kafka.name("rin"),
        kafka.name("copier"),
        kafka.name("copied"),
        kafka.name("copier-writer"),
    )
}

/// velo-sql running the app in `dir`, checkpointing every `interval`.
fn spawn(dir: &Path, bootstrap: &str, interval: &str) -> Child {
    kafka_support::spawn_server(dir, bootstrap, 2, interval, "server")
}

fn log_of(dir: &Path) -> String {
    kafka_support::server_log(dir, "server")
}

/// How many times each id was read.
fn id_counts(out: &[Consumed]) -> BTreeMap<i64, usize> {
    let mut counts = BTreeMap::new();
    for row in out.iter().filter_map(|(_, v)| v.as_ref()) {
        *counts.entry(row["id"].as_i64().expect("id")).or_default() += 1;
    }
    counts
}

#[test]
fn rows_are_invisible_to_read_committed_readers_until_their_checkpoint_and_a_crash_discards_them() {
    let Some(kafka) = Cluster::real(
        "the exactly-once visibility test",
        &[("rin", 2), ("copied", 2)],
    ) else {
        return;
    };
    with_timeout(Duration::from_secs(180), move || {
        let bootstrap = kafka.bootstrap().to_string();
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("app.sql"), copy_app(&kafka)).expect("app");
        let copied = kafka.name("copied");
        // No checkpoint completes within the test but the one a graceful stop takes.
        let mut server = spawn(dir.path(), &bootstrap, "1h");
        produce(&bootstrap, &kafka.name("rin"), &records(0..500));
        let written = consume(&bootstrap, &copied, Duration::from_secs(60), |o| {
            o.len() >= 500
        });
        assert_eq!(written.len(), 500, "the rows are written, in a transaction");
        let visible = consume_committed(&bootstrap, &copied, Duration::from_secs(3), |o| {
            !o.is_empty()
        });
        assert!(
            visible.is_empty(),
            "{} rows visible before their checkpoint",
            visible.len()
        );

        // SIGKILL: the open transaction is aborted when the restarted server fences it.
        server.kill().expect("kill");
        server.wait().expect("reaped");
        let server = spawn(dir.path(), &bootstrap, "1h");
        let rewritten = consume(&bootstrap, &copied, Duration::from_secs(60), |o| {
            o.len() >= 1000
        });
        assert_eq!(rewritten.len(), 1000, "the restart writes the rows again");
        Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status()
            .expect("kill -TERM");
        let mut server = server;
        assert!(
            server.wait().expect("exits").success(),
            "{}",
            log_of(dir.path())
        );

        // The graceful stop's checkpoint committed the second run's transaction only.
        let committed = consume_committed(&bootstrap, &copied, Duration::from_secs(8), |_| false);
        let counts = id_counts(&committed);
        assert_eq!(counts.len(), 500, "every id; log:\n{}", log_of(dir.path()));
        assert!(
            counts.values().all(|n| *n == 1),
            "ids read twice: {:?}",
            counts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
        );
    });
}

#[test]
fn a_broker_that_loses_the_commit_marker_is_refused_on_restart_instead_of_doubling_output() {
    with_timeout(Duration::from_secs(120), || {
        // The mock cluster runs transactions but drops the offsets sent to them.
        let kafka = Cluster::mock(&[("rin", 2), ("copied", 2)]);
        let bootstrap = kafka.bootstrap().to_string();
        let dir = tempfile::tempdir().expect("dir");
        let options = AppOptions {
            brokers: Some(bootstrap.clone()),
            partitions: 2,
            queue_depth: 0,
            state: Some(StateOptions {
                location: dir.path().to_str().expect("path").to_string(),
                interval: Duration::from_millis(100),
                reset: false,
                ..StateOptions::at("")
            }),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (sql, first_options, flag) = (copy_app(&kafka), options.clone(), Arc::clone(&stop));
        let first = std::thread::spawn(move || deploy_app(&sql, &first_options, flag));
        produce(&bootstrap, "rin", &records(0..200));
        let written = consume(&bootstrap, "copied", Duration::from_secs(60), |o| {
            o.len() >= 200
        });
        assert_eq!(written.len(), 200);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.path().join("copied").exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        let outcomes = first.join().expect("app").expect("the app plans");
        let summary = outcomes[0].1.as_ref().expect("the first run succeeds");
        let checkpoints = summary.checkpoints.as_ref().expect("checkpoint stats");
        assert!(checkpoints.completed >= 2, "{checkpoints:?}");

        let again = deploy_app(&copy_app(&kafka), &options, Arc::new(AtomicBool::new(true)))
            .expect("the app plans");
        let err = again[0]
            .1
            .as_ref()
            .expect_err("the restart is refused")
            .to_string();
        assert!(err.contains("lost the sink's commit marker"), "{err}");
        assert!(err.contains("--reset-state"), "{err}");
    });
}
