//! Joins of two Kafka topics: a LEFT interval join of orders with shipments, each topic read
//! by its own consumer group and watermarked per partition.
//! - Run in-process, its output equals DataFusion running the same SQL over the same rows.
//! - Run by the velo-sql server with durable state and SIGKILLed three times while input
//!   flows, each distinct output row is exactly the batch answer's: no pair is lost, and no
//!   order comes out NULL-padded that met a shipment (the join's state is in the checkpoints).
//!
//! Each runs on librdkafka's mock cluster and, when `VELO_KAFKA_BOOTSTRAP` names one, on a real
//! broker.

mod common;
mod kafka_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use common::batch_oracle;
use kafka_support::{consume, produce, produce_to, start_app, stop_app, with_timeout, Cluster};

const ORDERS: i64 = 3_000;
const SHIPMENTS: i64 = 2_400;
const KEYS: i64 = 50;
const BASE: i64 = 1_700_000_000_000;

/// Order `i`: key `i % 50`, 200 ms apart.
fn order(i: i64) -> (i64, i64, i64) {
    (i, i % KEYS, BASE + i * 200)
}

/// Shipment `j`: key `7j % 50`, 250 ms apart from 1 s in.
fn shipment(j: i64) -> (i64, i64, i64) {
    (100_000 + j, (j * 7) % KEYS, BASE + 1000 + j * 250)
}

fn message((id, k, ts): (i64, i64, i64)) -> (Option<String>, String) {
    let payload = serde_json::json!({ "id": id, "k": k, "ts": ts });
    (Some(k.to_string()), payload.to_string())
}

fn batch(rows: impl Iterator<Item = (i64, i64, i64)>) -> RecordBatch {
    let rows: Vec<_> = rows.collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("k", DataType::Int64, true),
        Field::new("ts", DataType::Int64, true),
    ]));
    let column =
        |f: fn(&(i64, i64, i64)) -> i64| Arc::new(Int64Array::from_iter_values(rows.iter().map(f)));
    RecordBatch::try_new(
        schema,
        vec![column(|r| r.0), column(|r| r.1), column(|r| r.2)],
    )
    .expect("batch")
}

/// The join; clock records (id -1) are filtered out on both sides, after they moved the
/// watermarks.
const JOIN: &str = "SELECT o.id AS oid, s.id AS sid FROM orders o LEFT JOIN ships s \
     ON o.k = s.k AND s.ts BETWEEN o.ts AND o.ts + 3000 AND s.id >= 0 WHERE o.id >= 0";

/// The batch answer, as `oid | sid` rows.
fn expected() -> BTreeSet<String> {
    let rows = batch_oracle(
        vec![
            ("orders", batch((0..ORDERS).map(order))),
            ("ships", batch((0..SHIPMENTS).map(shipment))),
        ],
        JOIN,
    );
    let set: BTreeSet<String> = rows.iter().cloned().collect();
    assert_eq!(set.len(), rows.len(), "every row of the answer is distinct");
    set
}

fn app(kafka: &Cluster, group: &str) -> String {
    let stream = |name: &str| {
        format!(
            "CREATE STREAM {name} (id BIGINT, k BIGINT, ts BIGINT) WITH (\
             '{name}.type' = 'kafka_source', '{name}.topic.name' = '{}', \
             '{name}.group.id' = '{}', '{name}.session.timeout.ms' = '1000', \
             '{name}.heartbeat.interval.ms' = '200', '{name}.event.time.field' = 'ts', \
             '{name}.watermark.max_out_of_orderness' = '2s');\n",
            kafka.name(name),
            kafka.name(group),
        )
    };
    format!(
        "{}{}CREATE STREAM joined AS {JOIN} WITH ('joined.type' = 'kafka_sink', \
         'joined.topic.name' = '{}');",
        stream("orders"),
        stream("ships"),
        kafka.name("joined")
    )
}

/// Produces both topics (orders, shipments) in 10 chunks, `pause` apart, in time order.
fn produce_inputs(
    bootstrap: &str,
    (orders_topic, ships_topic): &(String, String),
    pause: Duration,
) {
    for chunk in 0..10 {
        let orders: Vec<_> = (chunk * ORDERS / 10..(chunk + 1) * ORDERS / 10)
            .map(|i| message(order(i)))
            .collect();
        let ships: Vec<_> = (chunk * SHIPMENTS / 10..(chunk + 1) * SHIPMENTS / 10)
            .map(|j| message(shipment(j)))
            .collect();
        produce(bootstrap, orders_topic, &orders);
        produce(bootstrap, ships_topic, &ships);
        std::thread::sleep(pause);
    }
}

/// A record hours later on every partition of both topics: every bound is past.
fn produce_clocks(bootstrap: &str, kafka: &Cluster) {
    for topic in ["orders", "ships"] {
        for p in 0..2 {
            let clock = message((-1, -1, BASE + 6 * 3_600_000));
            produce_to(bootstrap, &kafka.name(topic), Some(p), &[clock]);
        }
    }
}

fn rows_of(out: &[kafka_support::Consumed]) -> BTreeSet<String> {
    out.iter()
        .filter_map(|(_, v)| v.as_ref())
        .map(|v| {
            let cell = |c: &str| v[c].as_i64().map_or("NULL".to_string(), |n| n.to_string());
            format!("{} | {}", cell("oid"), cell("sid"))
        })
        .collect()
}

fn topics() -> [(&'static str, i32); 3] {
    [("orders", 2), ("ships", 2), ("joined", 2)]
}

#[test]
fn a_join_of_two_topics_equals_the_batch_answer() {
    joins_two_topics(Cluster::mock(&topics()));
}

#[test]
fn a_join_of_two_topics_equals_the_batch_answer_on_a_real_broker() {
    if let Some(kafka) = Cluster::real("the real-broker join of two topics", &topics()) {
        joins_two_topics(kafka);
    }
}

fn joins_two_topics(kafka: Cluster) {
    with_timeout(Duration::from_secs(120), move || {
        let bootstrap = kafka.bootstrap().to_string();
        let expected = expected();
        let names = (kafka.name("orders"), kafka.name("ships"));
        produce_inputs(&bootstrap, &names, Duration::ZERO);
        produce_clocks(&bootstrap, &kafka);
        let (stop, handle) = start_app(app(&kafka, "join"), &bootstrap, 2);
        let out = consume(
            &bootstrap,
            &kafka.name("joined"),
            Duration::from_secs(60),
            |o| o.len() >= expected.len(),
        );
        let summaries = stop_app(stop, handle);
        let rows = rows_of(&out);
        assert_eq!(out.len(), expected.len(), "each row comes out once");
        assert_eq!(rows, expected);
        let job = &summaries[0];
        assert_eq!(job.records_in as i64, ORDERS + SHIPMENTS + 4);
        assert_eq!(job.state_keys, 0, "every row left the join's state");
    });
}

#[test]
fn a_join_of_two_topics_survives_three_sigkills() {
    joins_survive_sigkills(Cluster::mock(&topics()));
}

#[test]
fn a_join_of_two_topics_survives_three_sigkills_on_a_real_broker() {
    if let Some(kafka) = Cluster::real("the real-broker join crash test", &topics()) {
        joins_survive_sigkills(kafka);
    }
}

fn log_of(dir: &Path) -> String {
    kafka_support::server_log(dir, "server")
}

fn joins_survive_sigkills(kafka: Cluster) {
    with_timeout(Duration::from_secs(240), move || {
        let bootstrap = kafka.bootstrap().to_string();
        let expected = expected();
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("app.sql"), app(&kafka, "join-crash")).expect("app");
        let producer = {
            let bootstrap = bootstrap.clone();
            let names = (kafka.name("orders"), kafka.name("ships"));
            // Input flows through the kills.
            std::thread::spawn(move || {
                produce_inputs(&bootstrap, &names, Duration::from_millis(400))
            })
        };
        let spawn =
            |width| kafka_support::spawn_server(dir.path(), &bootstrap, width, "150ms", "server");
        let mut server = spawn(2);
        // Each run reads both topics: it is reading once both have partitions.
        for (run, (moment, width)) in [(300, 1), (700, 3), (200, 2)].into_iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while log_of(dir.path()).matches("partitions assigned").count() < 2 * (run + 1)
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(moment));
            // SIGKILL: no drain, no last checkpoint.
            server.kill().expect("kill");
            server.wait().expect("reaped");
            server = spawn(width);
        }
        producer.join().expect("producer");
        produce_clocks(&bootstrap, &kafka);
        let seen = std::cell::RefCell::new((0usize, BTreeSet::new()));
        let all = |out: &[kafka_support::Consumed]| {
            let mut seen = seen.borrow_mut();
            let (read, rows) = &mut *seen;
            rows.extend(rows_of(&out[*read..]));
            *read = out.len();
            expected.is_subset(rows)
        };
        let out = consume(
            &bootstrap,
            &kafka.name("joined"),
            Duration::from_secs(120),
            |o| all(o),
        );
        stop(server, dir.path());
        let log = log_of(dir.path());
        assert!(
            log.contains("restored state from checkpoint"),
            "the restarts restored state:\n{log}"
        );
        let rows = rows_of(&out);
        let missing: Vec<_> = expected.difference(&rows).take(5).collect();
        let extra: Vec<_> = rows.difference(&expected).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?}, extra {extra:?} (of {} rows); log:\n{log}",
            expected.len()
        );
    });
}

fn stop(server: Child, dir: &Path) {
    kafka_support::stop_server(server, dir, "server");
}

/// A file and a topic in one query: the UNION ALL of orders read from a file and from Kafka
/// has every row of both; with durable state the mix is refused, since a file's position is
/// not checkpointed.
#[test]
fn a_file_and_a_topic_mix_in_one_query() {
    with_timeout(Duration::from_secs(60), || {
        let kafka = Cluster::mock(&[("orders", 2), ("merged", 1)]);
        let bootstrap = kafka.bootstrap().to_string();
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("old_orders.jsonl");
        let lines: Vec<String> = (0..500).map(|i| message(order(10_000 + i)).1).collect();
        std::fs::write(&file, lines.join("\n") + "\n").expect("file");
        let orders: Vec<_> = (0..700).map(|i| message(order(i))).collect();
        produce(&bootstrap, "orders", &orders);
        let app = format!(
            "CREATE STREAM orders (id BIGINT, k BIGINT, ts BIGINT) WITH ('orders.type' = \
             'kafka_source', 'orders.topic.name' = 'orders', 'orders.group.id' = 'mix');\n\
             CREATE STREAM old_orders (id BIGINT, k BIGINT, ts BIGINT) WITH ('old_orders.path' = '{}');\n\
             CREATE STREAM merged AS SELECT id, k FROM orders UNION ALL SELECT id, k FROM old_orders \
             WITH ('merged.type' = 'kafka_sink', 'merged.topic.name' = 'merged');",
            file.display()
        );
        let options = velostream::server::AppOptions {
            brokers: Some(bootstrap.clone()),
            partitions: 2,
            queue_depth: 0,
            state: Some(velostream::job::StateOptions::at(
                dir.path().join("state").to_str().expect("path"),
            )),
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = velostream::server::deploy_app(&app, &options, stop).err();
        let message = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("durable state (--state-dir) covers Kafka inputs only"),
            "{message}"
        );
        let (stop, handle) = start_app(app, &bootstrap, 2);
        let out = consume(&bootstrap, "merged", Duration::from_secs(30), |o| {
            o.len() >= 1200
        });
        let summaries = stop_app(stop, handle);
        let ids: BTreeSet<i64> = out
            .iter()
            .filter_map(|(_, v)| v.as_ref()?["id"].as_i64())
            .collect();
        let all: BTreeSet<i64> = (0..700).chain(10_000..10_500).collect();
        assert_eq!(ids, all);
        assert_eq!(out.len(), 1200, "each row once");
        assert_eq!(summaries[0].records_in, 1200);
    });
}
