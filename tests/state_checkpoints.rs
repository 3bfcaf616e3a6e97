//! Checkpoints as a user meets them: a changed plan is refused with what changed unless
//! `--reset-state`, and a damaged latest checkpoint falls back to the one before with exact
//! results.

mod kafka_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_support::{consume, mock, produce, with_timeout};
use velostream::job::{JobSummary, StateOptions};
use velostream::server::{deploy_app, AppOptions};
use velostream::VeloError;

const SOURCE: &str = "CREATE STREAM rin (symbol VARCHAR, quantity BIGINT) \
    WITH ('rin.type' = 'kafka_source', 'rin.topic.name' = 'rin', 'rin.group.id' = 'ckpt', \
          'rin.session.timeout.ms' = '6000');\n";

fn app(aggregate: &str) -> String {
    format!(
        "{SOURCE}CREATE TABLE totals AS SELECT symbol, COUNT(*) AS n, {aggregate} AS q FROM rin \
         GROUP BY symbol EMIT CHANGES \
         WITH ('totals.type' = 'kafka_sink', 'totals.topic.name' = 'totals');"
    )
}

fn options(bootstrap: &str, state: &Path, reset: bool) -> AppOptions {
    AppOptions {
        brokers: Some(bootstrap.to_string()),
        partitions: 2,
        queue_depth: 0,
        state: Some(StateOptions {
            location: state.to_str().expect("path").to_string(),
            interval: Duration::from_millis(100),
            reset,
            ..StateOptions::at("")
        }),
    }
}

/// Each job's outcome.
type Outcomes = Vec<(String, velostream::Result<JobSummary>)>;

/// Runs the app on a thread until the returned flag is set.
fn start(sql: String, options: AppOptions) -> (Arc<AtomicBool>, std::thread::JoinHandle<Outcomes>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let handle =
        std::thread::spawn(move || deploy_app(&sql, &options, flag).expect("the app plans"));
    (stop, handle)
}

fn records(ids: std::ops::Range<i64>) -> Vec<(Option<String>, String)> {
    ids.map(|i| {
        let key = format!("K{}", i % 10);
        let payload = serde_json::json!({ "symbol": key, "quantity": i % 7 });
        (Some(key), payload.to_string())
    })
    .collect()
}

/// The latest (n, q) of every key in the upsert output.
fn latest_totals(out: &[kafka_support::Consumed]) -> BTreeMap<String, (i64, i64)> {
    out.iter()
        .filter_map(|(k, v)| {
            let v = v.as_ref()?;
            Some((k.clone()?, (v["n"].as_i64()?, v["q"].as_i64()?)))
        })
        .collect()
}

/// Waits until the upsert output says every key has its count and sum over `ids`.
fn wait_exact(bootstrap: &str, ids: std::ops::Range<i64>) -> bool {
    let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for i in ids {
        let e = expected.entry(format!("K{}", i % 10)).or_default();
        e.0 += 1;
        e.1 += i % 7;
    }
    let out = consume(bootstrap, "totals", Duration::from_secs(60), |out| {
        latest_totals(out) == expected
    });
    latest_totals(&out) == expected
}

fn run_once(sql: String, options: AppOptions) -> Outcomes {
    // Already told to stop: the job restores (or refuses to), then drains at once.
    deploy_app(&sql, &options, Arc::new(AtomicBool::new(true))).expect("the app plans")
}

#[test]
fn a_changed_plan_is_refused_with_what_changed_unless_reset() {
    with_timeout(Duration::from_secs(120), || {
        let kafka = mock(&[("rin", 2), ("totals", 1)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        let dir = tempfile::tempdir().expect("dir");
        let (stop, handle) = start(app("SUM(quantity)"), options(&bootstrap, dir.path(), false));
        produce(&bootstrap, "rin", &records(0..300));
        assert!(wait_exact(&bootstrap, 0..300), "the first run's totals");
        stop.store(true, Ordering::SeqCst);
        let first = handle.join().expect("app");
        let summary = first[0].1.as_ref().expect("the first run succeeds");
        let checkpoints = summary.checkpoints.as_ref().expect("checkpoint stats");
        assert!(checkpoints.completed > 0, "{checkpoints:?}");

        let changed = run_once(app("MAX(quantity)"), options(&bootstrap, dir.path(), false));
        let err = changed[0]
            .1
            .as_ref()
            .expect_err("a changed plan is refused");
        let text = err.to_string();
        assert!(matches!(err, VeloError::Config(_)), "{err:?}");
        assert!(text.contains("changed since its checkpoint"), "{text}");
        assert!(
            text.contains("max(") && text.contains("sum("),
            "names both: {text}"
        );
        assert!(text.contains("--reset-state"), "{text}");

        let reset = run_once(app("MAX(quantity)"), options(&bootstrap, dir.path(), true));
        assert!(
            reset[0].1.is_ok(),
            "--reset-state starts empty: {:?}",
            reset[0].1
        );
    });
}

#[test]
fn a_damaged_latest_checkpoint_falls_back_to_the_one_before_with_exact_results() {
    with_timeout(Duration::from_secs(120), || {
        let kafka = mock(&[("rin", 2), ("totals", 1)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        let dir = tempfile::tempdir().expect("dir");
        let sql = app("SUM(quantity)");
        let (stop, handle) = start(sql.clone(), options(&bootstrap, dir.path(), false));
        produce(&bootstrap, "rin", &records(0..200));
        assert!(wait_exact(&bootstrap, 0..200));
        produce(&bootstrap, "rin", &records(200..400));
        assert!(wait_exact(&bootstrap, 0..400));
        stop.store(true, Ordering::SeqCst);
        handle.join().expect("app")[0]
            .1
            .as_ref()
            .expect("first run");
        // Flip a byte in every state file of the newest checkpoint.
        let job = dir.path().join("totals");
        let newest = std::fs::read_dir(&job)
            .expect("checkpoints")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .max()
            .expect("a checkpoint");
        let mut damaged = 0;
        for operator in std::fs::read_dir(&newest).expect("dir").flatten() {
            if !operator.path().is_dir() {
                continue;
            }
            for file in std::fs::read_dir(operator.path()).expect("dir").flatten() {
                let mut bytes = std::fs::read(file.path()).expect("read");
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x5a;
                std::fs::write(file.path(), bytes).expect("write");
                damaged += 1;
            }
        }
        assert!(damaged > 0, "state files in {}", newest.display());
        produce(&bootstrap, "rin", &records(400..600));
        let (stop, handle) = start(sql, options(&bootstrap, dir.path(), false));
        assert!(
            wait_exact(&bootstrap, 0..600),
            "restored from the checkpoint before the damaged one, every count exact"
        );
        stop.store(true, Ordering::SeqCst);
        handle.join().expect("app")[0]
            .1
            .as_ref()
            .expect("second run");
    });
}

/// Plans `sql` as an app without durable state: the error it is refused with.
fn refused_without_state(sql: &str) -> VeloError {
    let options = AppOptions {
        brokers: Some("127.0.0.1:1".into()),
        ..Default::default()
    };
    deploy_app(sql, &options, Arc::new(AtomicBool::new(true))).expect_err("refused")
}

#[test]
fn an_exactly_once_sink_without_durable_state_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("parts");
    let sql = format!(
        "{SOURCE}CREATE TABLE totals AS SELECT symbol, COUNT(*) AS n FROM rin GROUP BY symbol \
         EMIT CHANGES WITH ('totals.type' = 'file_sink', 'totals.path' = '{}', \
         'totals.delivery' = 'exactly_once');",
        out.display()
    );
    let err = refused_without_state(&sql);
    let text = err.to_string();
    assert!(
        text.contains("exactly_once") && text.contains("--state-dir"),
        "{text}"
    );
    assert!(
        matches!(err, VeloError::Sql { .. }),
        "with its line and column: {err:?}"
    );
    assert!(!out.exists(), "nothing was created");
}

#[test]
fn an_exactly_once_kafka_sink_without_durable_state_is_refused_before_anything_runs() {
    let sql = format!(
        "{SOURCE}CREATE TABLE totals AS SELECT symbol, COUNT(*) AS n FROM rin GROUP BY symbol \
         EMIT CHANGES WITH ('totals.type' = 'kafka_sink', 'totals.delivery' = 'exactly_once');"
    );
    let text = refused_without_state(&sql).to_string();
    assert!(
        text.contains("'totals' has an exactly_once sink") && text.contains("--state-dir"),
        "{text}"
    );
    let err = refused_without_state(&sql.replace("exactly_once", "exactly-once"));
    assert!(
        err.to_string()
            .contains("expected at_least_once or exactly_once"),
        "{err}"
    );
}
