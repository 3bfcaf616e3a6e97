//! Helpers for the Kafka end-to-end tests: a mock cluster or the real broker, a producer, a
//! consumer, and an app run on a thread. Every test has a hard timeout: a stuck client must
//! fail the test, not hang CI.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use velostream::connectors::kafka::MockKafka;
use velostream::job::JobSummary;
use velostream::server::{deploy_app, AppOptions};

/// Runs `test` on its own thread and fails if it takes longer than `limit`.
pub fn with_timeout(limit: Duration, test: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        test();
        let _ = done.send(());
    });
    match finished.recv_timeout(limit) {
        Ok(()) => handle.join().expect("test thread"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The test panicked: surface its message.
            if let Err(e) = handle.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(_) => panic!("test timed out after {limit:?}"),
    }
}

/// Produces `messages` (key, payload) to `topic`, partitioned by key.
pub fn produce<P: AsRef<[u8]>>(bootstrap: &str, topic: &str, messages: &[(Option<String>, P)]) {
    produce_to(bootstrap, topic, None, messages)
}

/// Produces to one partition, or by key when `partition` is None.
pub fn produce_to<P: AsRef<[u8]>>(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
    messages: &[(Option<String>, P)],
) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for (key, payload) in messages {
        let mut record = BaseRecord::to(topic).payload(payload.as_ref());
        if let Some(k) = key {
            record = record.key(k.as_str());
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// A consumed message: key and payload (None for a tombstone).
pub type Consumed = (Option<String>, Option<serde_json::Value>);

/// Reads `topic`'s JSON messages from the start until `until` says enough or `limit` passes.
pub fn consume(
    bootstrap: &str,
    topic: &str,
    limit: Duration,
    until: impl Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    consume_with(
        bootstrap,
        topic,
        limit,
        |p| serde_json::from_slice(p).expect("JSON output"),
        until,
    )
}

/// As [`consume`], seeing only messages of committed transactions (`read_committed`).
pub fn consume_committed(
    bootstrap: &str,
    topic: &str,
    limit: Duration,
    until: impl Fn(&[Consumed]) -> bool,
) -> Vec<Consumed> {
    read(
        bootstrap,
        topic,
        "read_committed",
        limit,
        |p| serde_json::from_slice(p).expect("JSON output"),
        until,
    )
}

/// Reads made so far in this process (each gets its own consumer group).
static READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Reads `topic` from the start, each payload through `parse`, until `until` says enough or
/// `limit` passes.
pub fn consume_with<T>(
    bootstrap: &str,
    topic: &str,
    limit: Duration,
    parse: impl Fn(&[u8]) -> T,
    until: impl Fn(&[(Option<String>, Option<T>)]) -> bool,
) -> Vec<(Option<String>, Option<T>)> {
    read(bootstrap, topic, "read_uncommitted", limit, parse, until)
}

fn read<T>(
    bootstrap: &str,
    topic: &str,
    isolation: &str,
    limit: Duration,
    parse: impl Fn(&[u8]) -> T,
    until: impl Fn(&[(Option<String>, Option<T>)]) -> bool,
) -> Vec<(Option<String>, Option<T>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("isolation.level", isolation)
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            // A group of its own per read: a second read joining the first's group would wait
            // for the first reader's session to time out.
            format!(
                "test-reader-{topic}-{}-{}",
                std::process::id(),
                READS.fetch_add(1, Ordering::SeqCst)
            ),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    while Instant::now() < deadline && !until(&out) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            let value = m.payload().map(&parse);
            out.push((key, value));
        }
    }
    out
}

/// Runs the app on a thread until `stop` is set; returns the jobs' summaries.
pub fn start_app(
    sql: String,
    bootstrap: &str,
    partitions: usize,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<JobSummary>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let options = AppOptions {
        brokers: Some(bootstrap.to_string()),
        partitions,
        queue_depth: 0,
        state: None,
    };
    let flag = Arc::clone(&stop);
    let handle = std::thread::spawn(move || {
        deploy_app(&sql, &options, flag)
            .expect("the app plans")
            .into_iter()
            .map(|(job, r)| r.unwrap_or_else(|e| panic!("job {job} failed: {e}")))
            .collect()
    });
    (stop, handle)
}

pub fn stop_app(
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<JobSummary>>,
) -> Vec<JobSummary> {
    stop.store(true, Ordering::SeqCst);
    handle.join().expect("app thread")
}

/// A Kafka cluster for one test: librdkafka's mock, or the real broker that
/// `VELO_KAFKA_BOOTSTRAP` names (`ci/kafka/broker start`), which every test shares: there, a
/// test's topics and consumer groups get names of their own.
pub enum Cluster {
    Mock(MockKafka),
    Real { bootstrap: String, prefix: String },
}

/// Clusters made so far in this process, for unique names on the real broker.
static CLUSTERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Cluster {
    /// A mock cluster with `topics` (name, partitions).
    pub fn mock(topics: &[(&str, i32)]) -> Self {
        Cluster::Mock(mock(topics))
    }

    /// The real broker with `topics` created, or None (the test skips, saying so) when
    /// `VELO_KAFKA_BOOTSTRAP` is not set.
    pub fn real(test: &str, topics: &[(&str, i32)]) -> Option<Self> {
        let Ok(bootstrap) = std::env::var("VELO_KAFKA_BOOTSTRAP") else {
            eprintln!(
                "skipping {test}: it needs a real Kafka broker; start one with \
                 `ci/kafka/broker start` and set VELO_KAFKA_BOOTSTRAP=127.0.0.1:39092"
            );
            return None;
        };
        let prefix = format!(
            "t{}-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis())
        );
        let cluster = Cluster::Real { bootstrap, prefix };
        cluster.create_topics(topics);
        Some(cluster)
    }

    pub fn bootstrap(&self) -> &str {
        match self {
            Cluster::Mock(m) => m.bootstrap_servers(),
            Cluster::Real { bootstrap, .. } => bootstrap,
        }
    }

    /// The name of this test's topic or group `base`.
    pub fn name(&self, base: &str) -> String {
        match self {
            Cluster::Mock(_) => base.to_string(),
            Cluster::Real { prefix, .. } => format!("{prefix}-{base}"),
        }
    }

    fn create_topics(&self, topics: &[(&str, i32)]) {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("admin client");
        let names: Vec<String> = topics.iter().map(|(t, _)| self.name(t)).collect();
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .zip(topics)
            .map(|(n, (_, p))| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let results = runtime
            .block_on(admin.create_topics(&new, &AdminOptions::new()))
            .expect("create topics");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
        // Wait until the broker serves every partition's leader.
        let deadline = Instant::now() + Duration::from_secs(30);
        for (name, (_, partitions)) in names.iter().zip(topics) {
            loop {
                let metadata = admin
                    .inner()
                    .fetch_metadata(Some(name), Duration::from_secs(5))
                    .expect("metadata");
                let ready = metadata.topics().first().is_some_and(|t| {
                    t.partitions().len() == *partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                });
                if ready {
                    break;
                }
                assert!(Instant::now() < deadline, "topic {name} never became ready");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The velo-sql server `instance` running the app in `dir/app.sql` with its state in
/// `dir/state`, checkpointing every `interval`; its log goes to `dir/<instance>.log`.
pub fn spawn_server(
    dir: &std::path::Path,
    bootstrap: &str,
    partitions: usize,
    interval: &str,
    instance: &str,
) -> std::process::Child {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("{instance}.log")))
        .expect("log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_velo-sql"))
        .args(["deploy-app", "--brokers", bootstrap, "--partitions"])
        .arg(partitions.to_string())
        .arg("--file")
        .arg(dir.join("app.sql"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--checkpoint-interval", interval])
        .args(["--instance-id", instance, "--lease-timeout", "2s"])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .expect("velo-sql starts")
}

/// Stops server `instance` of [`spawn_server`] with SIGTERM and checks it drained and exited 0.
pub fn stop_server(mut server: std::process::Child, dir: &std::path::Path, instance: &str) {
    std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill -TERM");
    let status = server.wait().expect("exits");
    assert!(
        status.success(),
        "a drained server exits 0: {status}; log:\n{}",
        server_log(dir, instance)
    );
}

/// What server `instance` of [`spawn_server`] logged so far.
pub fn server_log(dir: &std::path::Path, instance: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{instance}.log"))).unwrap_or_default()
}

/// `log` made short enough for a failure message to hold it whole: no colour codes, no
/// targets, and a job's sink description left out.
pub fn compact_log(log: &str) -> String {
    let mut out = String::with_capacity(log.len() / 2);
    for line in log.lines() {
        let mut plain = String::with_capacity(line.len());
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // An escape sequence ends with its first letter.
                for e in chars.by_ref() {
                    if e.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        let plain = match (plain.find(" sink=Some("), plain.rfind(") partitions=")) {
            (Some(a), Some(b)) if a < b => format!("{}{}", &plain[..a], &plain[b + 1..]),
            _ => plain,
        };
        out.push_str(&plain.replace("velostream::", ""));
        out.push('\n');
    }
    out
}

/// A one-broker mock cluster with `topics` (name, partitions).
pub fn mock(topics: &[(&str, i32)]) -> MockKafka {
    let mock = MockKafka::start(1).expect("mock cluster");
    for (t, p) in topics {
        mock.create_topic(t, *p).expect("topic");
    }
    mock
}

/// Produces the trades with ids in `ids` to topic `trades`, keyed by symbol.
pub fn produce_trades(bootstrap: &str, ids: std::ops::Range<i64>) {
    produce(bootstrap, "trades", &ids.map(trade).collect::<Vec<_>>());
}

/// The JSON `trades` source, consuming as group `GROUP`.
pub const SOURCE: &str =
    "CREATE STREAM trades (id BIGINT, symbol VARCHAR, price DOUBLE, quantity BIGINT, ts BIGINT)
WITH ('trades.type' = 'kafka_source', 'trades.topic.name' = 'trades',
      'trades.group.id' = 'GROUP', 'trades.session.timeout.ms' = '6000',
      'trades.event.time.field' = 'ts', 'trades.commit.interval' = '0s');\n";

/// The `trades` source for consumer group `group`.
pub fn source(group: &str) -> String {
    SOURCE.replace("GROUP", group)
}

/// Trade `id`: one of seven symbols, one second after trade `id - 1`; keyed by symbol.
pub fn trade(id: i64) -> (Option<String>, String) {
    let symbol = format!("S{}", id % 7);
    let payload = serde_json::json!({
        "id": id, "symbol": symbol, "price": (id % 100) as f64 / 4.0,
        "quantity": id % 1000, "ts": 1_700_000_000_000i64 + id * 1000,
    });
    (Some(symbol), payload.to_string())
}

/// On each of `partitions` partitions of `trades`, a "clock" trade (id 100000 + partition) an
/// hour after the first trade: it moves every partition's watermark past the trades before it.
pub fn produce_clocks(bootstrap: &str, partitions: i32) {
    for p in 0..partitions {
        let clock = serde_json::json!({
            "id": 100_000 + p, "symbol": "clock", "price": 1.0, "quantity": 0,
            "ts": 1_700_000_000_000i64 + 3_600_000,
        });
        produce_to(bootstrap, "trades", Some(p), &[(None, clock.to_string())]);
    }
}

/// The sum over `topic`'s `partitions` partitions of the offsets `group` has committed.
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> i64 {
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    watcher
        .committed_offsets(list, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// The per-minute tumbling-window counts of the trades with ids in `ids`, by (symbol, window
/// start): what a `COUNT(*) ... GROUP BY symbol WINDOW TUMBLING(ts, 1m)` job emits.
pub fn trades_per_minute(ids: std::ops::Range<i64>) -> BTreeMap<(String, i64), i64> {
    let mut counts = BTreeMap::new();
    for id in ids {
        let ts = 1_700_000_000_000i64 + id * 1000;
        *counts
            .entry((format!("S{}", id % 7), ts - ts.rem_euclid(60_000)))
            .or_default() += 1;
    }
    counts
}

/// A window row's (symbol, window start).
pub fn window_of(row: &serde_json::Value) -> (String, i64) {
    (
        row["symbol"].as_str().expect("symbol").to_string(),
        row["_window_start"].as_i64().expect("window start"),
    )
}

/// The sum of the `n` column over the rows consumed.
pub fn n_sum(out: &[Consumed]) -> i64 {
    out.iter()
        .filter_map(|(_, v)| v.as_ref())
        .map(|v| v["n"].as_i64().unwrap_or(0))
        .sum()
}
