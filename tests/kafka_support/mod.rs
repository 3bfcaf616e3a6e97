//! Helpers for the Kafka end-to-end tests: a mock cluster, a producer, a consumer, and an app
//! run on a thread. Every test has a hard timeout: a stuck client must fail the test, not hang CI.

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
    let consumer: BaseConsumer = ClientConfig::new()
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
