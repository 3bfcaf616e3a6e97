//! A table read from a Kafka topic: the whole topic up to its end offsets, before the stream
//! starts, as an upsert log keyed by the message key; the latest value of a key wins and a
//! tombstone deletes it. On the mock cluster and, when `VELO_KAFKA_BOOTSTRAP` is set, on the
//! real broker.

mod kafka_support;

use std::io::Write;
use std::time::Duration;

use kafka_support::{produce, with_timeout, Cluster};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use velostream::connectors::kafka::KafkaDefaults;
use velostream::job::{plan_script, JobOptions};

/// Messages without a value: each deletes its key from the table.
fn produce_tombstones(bootstrap: &str, topic: &str, keys: &[&str]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for key in keys {
        let record = BaseRecord::<str, [u8]>::to(topic).key(*key);
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn customer(id: i64, name: &str) -> (Option<String>, String) {
    let payload = serde_json::json!({"id": id, "name": name}).to_string();
    (Some(id.to_string()), payload)
}

/// Orders joined with the `customers` topic as it stands: 11's latest name, 12 deleted.
fn joins_the_topic_as_a_table(cluster: Cluster) {
    let topic = cluster.name("customers");
    let bootstrap = cluster.bootstrap().to_string();
    produce(
        &bootstrap,
        &topic,
        &[
            customer(10, "ann"),
            customer(11, "bob"),
            customer(12, "cy"),
            customer(11, "bobby"),
        ],
    );
    produce_tombstones(&bootstrap, &topic, &["12"]);
    let dir = tempfile::tempdir().expect("dir");
    let orders = dir.path().join("orders.jsonl");
    let mut f = std::fs::File::create(&orders).expect("orders");
    for (id, customer_id) in [(1, 10), (2, 11), (3, 12), (4, 13)] {
        writeln!(
            f,
            "{}",
            serde_json::json!({"id": id, "customer_id": customer_id})
        )
        .expect("write");
    }
    let script = format!(
        "CREATE STREAM orders (id BIGINT, customer_id BIGINT) WITH ('orders.path' = '{}');
         CREATE TABLE customers (id BIGINT, name VARCHAR, PRIMARY KEY (id)) WITH (
           'customers.type' = 'kafka_source', 'customers.topic.name' = '{topic}',
           'customers.group.id' = '{}');
         SELECT o.id, c.name FROM orders o LEFT JOIN customers c ON o.customer_id = c.id",
        orders.display(),
        cluster.name("tables"),
    );
    let options = JobOptions {
        partitions: 2,
        collect_output: true,
        kafka: KafkaDefaults {
            brokers: Some(bootstrap.clone()),
        },
        ..Default::default()
    };
    let summaries = plan_script(&script, &options)
        .and_then(|planned| planned.run(&options))
        .expect("the job runs");
    let mut rows: Vec<(i64, Option<String>)> = Vec::new();
    for batch in summaries
        .last()
        .and_then(|s| s.output.clone())
        .unwrap_or_default()
    {
        for row in velostream::exec::record::batch_to_records(&batch, &Default::default())
            .expect("records")
        {
            let id = match row.get("id") {
                Some(datafusion::scalar::ScalarValue::Int64(Some(id))) => *id,
                other => panic!("id {other:?}"),
            };
            let name = match row.get("name") {
                Some(datafusion::scalar::ScalarValue::Utf8(name)) => name.clone(),
                other => panic!("name {other:?}"),
            };
            rows.push((id, name));
        }
    }
    rows.sort();
    assert_eq!(
        rows,
        vec![
            (1, Some("ann".to_string())),
            (2, Some("bobby".to_string())),
            (3, None),
            (4, None),
        ],
        "the latest value of each key, without the deleted one"
    );
}

#[test]
fn a_topic_is_a_table_on_the_mock_cluster() {
    with_timeout(Duration::from_secs(60), || {
        joins_the_topic_as_a_table(Cluster::mock(&[("customers", 2)]))
    });
}

#[test]
fn a_topic_is_a_table_on_the_broker() {
    with_timeout(Duration::from_secs(90), || {
        if let Some(cluster) =
            Cluster::real("a_topic_is_a_table_on_the_broker", &[("customers", 2)])
        {
            joins_the_topic_as_a_table(cluster);
        }
    });
}
