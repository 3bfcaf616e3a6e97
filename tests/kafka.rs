//! Kafka end to end with JSON payloads, against librdkafka's in-process mock cluster (a real
//! Kafka protocol peer; no Docker): produce input, run an app with `deploy_app`, consume the
//! output topic.

mod kafka_support;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use kafka_support::*;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use velostream::job::JobSummary;
use velostream::server::{deploy_app, AppOptions};

#[test]
fn filter_job_writes_matching_records() {
    with_timeout(Duration::from_secs(120), || {
        let kafka = mock(&[("trades", 4), ("big", 2)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        produce_trades(&bootstrap, 0..2000);
        let sql = source("g-filter")
            + "CREATE STREAM big AS SELECT id, symbol, quantity FROM trades WHERE quantity > 900 \
               WITH ('big.type' = 'kafka_sink', 'big.topic.name' = 'big');";
        let (stop, app) = start_app(sql, &bootstrap, 2);
        let expected = (0..2000).filter(|id| id % 1000 > 900).count();
        let out = consume(&bootstrap, "big", Duration::from_secs(60), |o| {
            o.len() >= expected
        });
        let summaries = stop_app(stop, app);
        let mut ids: Vec<i64> = out
            .iter()
            .map(|(_, v)| v.as_ref().expect("a record")["id"].as_i64().expect("id"))
            .collect();
        ids.sort();
        let want: Vec<i64> = (0..2000).filter(|id| id % 1000 > 900).collect();
        assert_eq!(ids, want);
        assert_eq!(summaries[0].records_in, 2000);
    });
}

#[test]
fn group_by_emit_changes_keys_messages_and_deletes_become_tombstones() {
    with_timeout(Duration::from_secs(120), || {
        let kafka = mock(&[("trades", 4), ("counts", 2)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        produce_trades(&bootstrap, 0..700);
        // Every symbol reaches 100 records; HAVING COUNT(*) < 100 turns the last into a delete.
        let sql = source("g-counts")
            + "CREATE TABLE counts AS SELECT symbol, COUNT(*) AS n FROM trades GROUP BY symbol \
               HAVING COUNT(*) < 100 EMIT CHANGES WITH ('counts.type' = 'kafka_sink', 'counts.topic.name' = 'counts');";
        let (stop, app) = start_app(sql, &bootstrap, 2);
        let tombstones = |o: &[Consumed]| o.iter().filter(|(_, v)| v.is_none()).count();
        let out = consume(&bootstrap, "counts", Duration::from_secs(60), |o| {
            o.len() >= 700 && tombstones(o) >= 7
        });
        stop_app(stop, app);
        assert_eq!(out.len(), 700, "99 upserts and one tombstone per symbol");
        let mut last: BTreeMap<String, Option<i64>> = BTreeMap::new();
        for (key, value) in &out {
            let key = key.clone().expect("keyed by symbol");
            if let Some(v) = value {
                assert_eq!(v["symbol"].as_str(), Some(key.as_str()));
            }
            last.insert(key, value.as_ref().map(|v| v["n"].as_i64().expect("n")));
        }
        assert_eq!(last.len(), 7);
        assert!(last.values().all(Option::is_none), "{last:?}");
    });
}

/// Runs a per-minute tumbling count over 600 trades (ten minutes, keyed by symbol, on four
/// partitions) read through `source_sql`, on `workers` workers, until every trade is counted;
/// the output messages and the job summaries.
fn per_minute_counts(source_sql: String, workers: usize) -> (Vec<Consumed>, Vec<JobSummary>) {
    let kafka = mock(&[("trades", 4), ("per_minute", 1)]);
    let bootstrap = kafka.bootstrap_servers().to_string();
    produce_trades(&bootstrap, 0..600);
    // On every partition, a record an hour later moves that partition's watermark, so every
    // window closes. The clocks are unkeyed, so "clock" rows sit in every partition; the
    // WHERE drops them.
    produce_clocks(&bootstrap, 4);
    let sql = source_sql
        + "CREATE STREAM per_minute AS SELECT symbol, _window_start, COUNT(*) AS n FROM trades \
           WHERE quantity > 0 OR id < 100000 \
           GROUP BY symbol WINDOW TUMBLING(ts, 1m) EMIT FINAL \
           WITH ('per_minute.type' = 'kafka_sink', 'per_minute.topic.name' = 'per_minute');";
    let (stop, app) = start_app(sql, &bootstrap, workers);
    let out = consume(&bootstrap, "per_minute", Duration::from_secs(60), |o| {
        n_sum(o) >= 600
    });
    (out, stop_app(stop, app))
}

#[test]
fn tumbling_emit_final_closes_windows_on_event_time() {
    with_timeout(Duration::from_secs(120), || {
        let (out, summaries) = per_minute_counts(source("g-window"), 2);
        assert!(summaries.iter().all(|s| !s.direct), "no key.field: hashed");
        let mut counts: BTreeMap<(String, i64), i64> = BTreeMap::new();
        for (k, v) in &out {
            let v = v.as_ref().expect("a row");
            // Keyed by the GROUP BY columns, window included, as a typed JSON object.
            let key: serde_json::Value =
                serde_json::from_str(k.as_deref().expect("a key")).expect("JSON key");
            assert_eq!(key["symbol"], v["symbol"]);
            assert_eq!(key["_window_start"], v["_window_start"]);
            assert!(
                counts
                    .insert(window_of(v), v["n"].as_i64().expect("n"))
                    .is_none(),
                "one row per window"
            );
        }
        assert_eq!(counts, trades_per_minute(0..600));
    });
}

#[test]
fn a_topic_keyed_by_the_group_key_feeds_its_partitions_to_the_workers_directly() {
    with_timeout(Duration::from_secs(120), || {
        let keyed = source("g-direct").replace(
            "'trades.event.time.field'",
            "'trades.key.field' = 'symbol', 'trades.event.time.field'",
        );
        let (out, summaries) = per_minute_counts(keyed, 3);
        assert!(
            summaries.iter().all(|s| s.direct && s.partitions == 3),
            "fed directly on 3 workers"
        );
        let counts: BTreeMap<(String, i64), i64> = out
            .iter()
            .filter_map(|(_, v)| v.as_ref())
            .map(|v| (window_of(v), v["n"].as_i64().expect("n")))
            .collect();
        assert_eq!(counts, trades_per_minute(0..600));
        assert_eq!(out.len(), counts.len(), "one row per window");
    });
}

#[test]
fn a_source_key_field_must_name_a_column() {
    let sql = source("g-bad-key").replace(
        "'trades.event.time.field'",
        "'trades.key.field' = 'sym', 'trades.event.time.field'",
    ) + "CREATE STREAM copy AS SELECT * FROM trades;";
    let options = AppOptions {
        brokers: Some("localhost:1".into()),
        ..Default::default()
    };
    let stop = Arc::new(AtomicBool::new(true));
    let err = deploy_app(&sql, &options, stop).expect_err("planning fails");
    assert!(
        err.to_string().contains("'trades.key.field' names 'sym'"),
        "{err}"
    );
}

#[test]
fn a_poisoned_message_goes_to_the_dead_letter_topic() {
    with_timeout(Duration::from_secs(120), || {
        let kafka = mock(&[("trades", 1), ("copy", 1), ("bad_trades", 1)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        let mut input: Vec<_> = (0..50).map(trade).collect();
        input.insert(20, (None, "{\"id\": 20x, not json".to_string()));
        produce(&bootstrap, "trades", &input);
        let sql = source("g-dlq").replace(
            "'trades.commit.interval' = '0s'",
            "'trades.commit.interval' = '0s', 'trades.dlq.topic' = 'bad_trades'",
        ) + "CREATE STREAM copy AS SELECT id FROM trades \
             WITH ('copy.type' = 'kafka_sink', 'copy.topic.name' = 'copy');";
        let (stop, app) = start_app(sql, &bootstrap, 1);
        let out = consume(&bootstrap, "copy", Duration::from_secs(60), |o| {
            o.len() >= 50
        });
        let dead = consume(&bootstrap, "bad_trades", Duration::from_secs(30), |o| {
            !o.is_empty()
        });
        let summaries = stop_app(stop, app);
        assert_eq!(out.len(), 50, "every good record passes");
        assert_eq!(summaries[0].errors, 1);
        let letter = dead[0].1.as_ref().expect("an envelope");
        assert_eq!(letter["topic"], "trades");
        assert_eq!(letter["partition"], 0);
        assert_eq!(letter["offset"], 20);
        assert!(letter["payload"]
            .as_str()
            .is_some_and(|p| p.contains("20x")));
        let location = &summaries[0].bad_records[0].location;
        assert_eq!(location, "topic trades partition 0 offset 20");
    });
}

#[test]
fn a_batch_decoded_by_four_threads_keeps_its_order_and_loses_only_its_bad_messages() {
    with_timeout(Duration::from_secs(120), || {
        let kafka = mock(&[("trades", 1), ("copy", 1)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        let bad = [10, 3000, 5990];
        let mut input: Vec<_> = (0..6000).map(trade).collect();
        for &at in &bad {
            input[at as usize].1 = format!("{{\"id\": {at}x, not json");
        }
        produce(&bootstrap, "trades", &input);
        let sql = source("g-decode-threads").replace(
            "'trades.commit.interval' = '0s'",
            "'trades.commit.interval' = '0s', 'trades.decode.threads' = '4'",
        ) + "CREATE STREAM copy AS SELECT id FROM trades \
             WITH ('copy.type' = 'kafka_sink', 'copy.topic.name' = 'copy');";
        let (stop, app) = start_app(sql, &bootstrap, 1);
        let good: Vec<i64> = (0..6000).filter(|id| !bad.contains(id)).collect();
        let out = consume(&bootstrap, "copy", Duration::from_secs(60), |o| {
            o.len() >= good.len()
        });
        let summaries = stop_app(stop, app);
        let ids: Vec<i64> = out
            .iter()
            .map(|(_, v)| v.as_ref().expect("a record")["id"].as_i64().expect("id"))
            .collect();
        assert_eq!(ids, good, "every good message, in topic order");
        let locations: Vec<&str> = summaries[0]
            .bad_records
            .iter()
            .map(|b| b.location.as_str())
            .collect();
        let want: Vec<String> = bad
            .iter()
            .map(|o| format!("topic trades partition 0 offset {o}"))
            .collect();
        assert_eq!(locations, want);
    });
}

#[test]
fn a_restarted_job_resumes_from_committed_offsets_and_loses_nothing() {
    with_timeout(Duration::from_secs(180), || {
        let kafka = mock(&[("trades", 4), ("copy", 2)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        let sql = source("g-restart")
            + "CREATE STREAM copy AS SELECT id FROM trades \
               WITH ('copy.type' = 'kafka_sink', 'copy.topic.name' = 'copy');";
        produce_trades(&bootstrap, 0..1000);
        let (stop, app) = start_app(sql.clone(), &bootstrap, 2);
        // Stop mid-stream: as soon as some output exists, while more input keeps coming.
        consume(&bootstrap, "copy", Duration::from_secs(60), |o| {
            !o.is_empty()
        });
        produce_trades(&bootstrap, 1000..2000);
        let first = stop_app(stop, app);
        produce_trades(&bootstrap, 2000..3000);
        let (stop, app) = start_app(sql, &bootstrap, 2);
        let out = consume(&bootstrap, "copy", Duration::from_secs(90), |o| {
            ids_in(o).len() >= 3000
        });
        let second = stop_app(stop, app);
        assert_eq!(
            ids_in(&out).len(),
            3000,
            "every input record reaches the output"
        );
        // The second run starts where the first committed: it does not read everything again.
        assert!(
            second[0].records_in < 3000,
            "first read {}, second read {}",
            first[0].records_in,
            second[0].records_in
        );
        assert!(first[0].records_in + second[0].records_in >= 3000);
    });
}

#[test]
fn two_instances_in_one_group_split_the_partitions() {
    with_timeout(Duration::from_secs(180), || {
        let kafka = mock(&[("trades", 4), ("copy", 2)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        let sql = source("g-shared")
            + "CREATE STREAM copy AS SELECT id FROM trades \
               WITH ('copy.type' = 'kafka_sink', 'copy.topic.name' = 'copy');";
        let (stop_a, app_a) = start_app(sql.clone(), &bootstrap, 1);
        let (stop_b, app_b) = start_app(sql, &bootstrap, 1);
        // Let both join the group before the input arrives.
        std::thread::sleep(Duration::from_secs(3));
        produce_trades(&bootstrap, 0..4000);
        // Distinct ids, not messages: a rebalance replays records (at least once), and the
        // read must not stop on duplicates before every id has arrived.
        let seen = std::cell::RefCell::new((0usize, std::collections::BTreeSet::new()));
        let out = consume(&bootstrap, "copy", Duration::from_secs(90), |o| {
            let mut seen = seen.borrow_mut();
            let (read, ids) = &mut *seen;
            ids.extend(ids_in(&o[*read..]));
            *read = o.len();
            ids.len() >= 4000
        });
        let a = stop_app(stop_a, app_a);
        let b = stop_app(stop_b, app_b);
        assert_eq!(ids_in(&out).len(), 4000);
        assert!(
            a[0].records_in > 0 && b[0].records_in > 0,
            "{} / {}",
            a[0].records_in,
            b[0].records_in
        );
        // A rebalance may hand a partition over before its offsets were committed: its new
        // owner reads those records again (at least once), never fewer.
        assert!(a[0].records_in + b[0].records_in >= 4000);
    });
}

/// The velo-sql binary running `sql` against `bootstrap`, as a child process.
fn spawn_velo_sql(dir: &std::path::Path, sql: &str, bootstrap: &str) -> std::process::Child {
    let app = dir.join("app.sql");
    std::fs::write(&app, sql).expect("app file");
    std::process::Command::new(env!("CARGO_BIN_EXE_velo-sql"))
        .args([
            "deploy-app",
            "--brokers",
            bootstrap,
            "--partitions",
            "2",
            "--file",
        ])
        .arg(&app)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("velo-sql starts")
}

fn ids_in(out: &[Consumed]) -> std::collections::BTreeSet<i64> {
    out.iter()
        .filter_map(|(_, v)| v.as_ref().and_then(|v| v["id"].as_i64()))
        .collect()
}

#[test]
fn a_server_killed_mid_stream_loses_nothing_after_restart() {
    with_timeout(Duration::from_secs(180), || {
        let kafka = mock(&[("trades", 4), ("copy", 2)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let sql = source("g-killed")
            + "CREATE STREAM copy AS SELECT id FROM trades \
               WITH ('copy.type' = 'kafka_sink', 'copy.topic.name' = 'copy');";
        let mut server = spawn_velo_sql(dir.path(), &sql, &bootstrap);
        produce_trades(&bootstrap, 0..1000);
        consume(&bootstrap, "copy", Duration::from_secs(60), |o| {
            !o.is_empty()
        });
        produce_trades(&bootstrap, 1000..2000);
        // SIGKILL: no drain, no final commit.
        server.kill().expect("kill");
        server.wait().expect("reaped");
        produce_trades(&bootstrap, 2000..3000);
        let mut server = spawn_velo_sql(dir.path(), &sql, &bootstrap);
        let out = consume(&bootstrap, "copy", Duration::from_secs(90), |o| {
            ids_in(o).len() >= 3000
        });
        // SIGTERM: drain and exit 0.
        let pid = server.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        let status = server.wait().expect("exits");
        assert_eq!(
            ids_in(&out).len(),
            3000,
            "every input record reaches the output"
        );
        assert!(status.success(), "a drained server exits 0: {status}");
    });
}

#[test]
fn two_jobs_over_one_topic_each_see_every_record() {
    with_timeout(Duration::from_secs(120), || {
        let kafka = mock(&[("trades", 4), ("small", 2), ("large", 2)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        produce_trades(&bootstrap, 0..1000);
        // One declared source with one group.id, two jobs: each must get all 4 partitions.
        let sql = source("shared-group")
            + "CREATE STREAM small AS SELECT id FROM trades WHERE quantity < 500 \
               WITH ('small.type' = 'kafka_sink', 'small.topic.name' = 'small');
               CREATE STREAM large AS SELECT id FROM trades WHERE quantity >= 500 \
               WITH ('large.type' = 'kafka_sink', 'large.topic.name' = 'large');";
        let (stop, app) = start_app(sql, &bootstrap, 1);
        let small = consume(&bootstrap, "small", Duration::from_secs(60), |o| {
            o.len() >= 500
        });
        let large = consume(&bootstrap, "large", Duration::from_secs(60), |o| {
            o.len() >= 500
        });
        let summaries = stop_app(stop, app);
        assert_eq!(ids_in(&small).len(), 500);
        assert_eq!(ids_in(&large).len(), 500);
        assert!(
            summaries.iter().all(|s| s.records_in == 1000),
            "each job reads every record"
        );
    });
}

#[test]
fn headers_are_readable_in_sql() {
    with_timeout(Duration::from_secs(120), || {
        use rdkafka::message::{Header, OwnedHeaders};
        let kafka = mock(&[("trades", 1), ("traced", 1)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("producer");
        for id in 0..10 {
            let (_, payload) = trade(id);
            let mut record = BaseRecord::<(), str>::to("trades").payload(payload.as_str());
            if id % 2 == 0 {
                let value = format!("t-{id}");
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: "trace-id",
                    value: Some(value.as_str()),
                }));
            }
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
        let sql = source("g-headers")
            + "CREATE STREAM traced AS SELECT id, HEADER('trace-id') AS trace FROM trades \
               WHERE HAS_HEADER('trace-id') \
               WITH ('traced.type' = 'kafka_sink', 'traced.topic.name' = 'traced');";
        let (stop, app) = start_app(sql, &bootstrap, 1);
        let out = consume(&bootstrap, "traced", Duration::from_secs(60), |o| {
            o.len() >= 5
        });
        stop_app(stop, app);
        let mut rows: Vec<(i64, String)> = out
            .iter()
            .map(|(_, v)| {
                let v = v.as_ref().expect("a row");
                (
                    v["id"].as_i64().expect("id"),
                    v["trace"].as_str().expect("trace").to_string(),
                )
            })
            .collect();
        rows.sort();
        let want: Vec<(i64, String)> = (0..10).step_by(2).map(|i| (i, format!("t-{i}"))).collect();
        assert_eq!(rows, want);
    });
}

#[test]
fn a_later_statement_reads_an_earlier_ones_topic() {
    with_timeout(Duration::from_secs(120), || {
        let kafka = mock(&[("trades", 2), ("big", 2), ("big_per_symbol", 1)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        produce_trades(&bootstrap, 0..2000);
        // `big` is keyed by symbol, so the second statement's GROUP BY symbol reads its
        // partitions directly.
        let sql = source("g-chain")
            + "CREATE STREAM big AS SELECT id, symbol FROM trades WHERE quantity > 900 \
               WITH ('big.type' = 'kafka_sink', 'big.topic.name' = 'big', 'big.key.field' = 'symbol');
               CREATE TABLE big_per_symbol AS SELECT symbol, COUNT(*) AS n FROM big \
               GROUP BY symbol EMIT CHANGES \
               WITH ('big_per_symbol.type' = 'kafka_sink', 'big_per_symbol.topic.name' = 'big_per_symbol');";
        let (stop, app) = start_app(sql, &bootstrap, 2);
        let want = (0..2000).filter(|id| id % 1000 > 900).count();
        let out = consume(&bootstrap, "big_per_symbol", Duration::from_secs(60), |o| {
            o.len() >= want
        });
        let summaries = stop_app(stop, app);
        assert!(
            summaries[1].direct,
            "the keyed topic feeds the workers directly"
        );
        // The last count per symbol adds up to every big trade.
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        for (_, v) in &out {
            let v = v.as_ref().expect("a row");
            last.insert(
                v["symbol"].as_str().expect("symbol").to_string(),
                v["n"].as_i64().expect("n"),
            );
        }
        assert_eq!(last.values().sum::<i64>(), want as i64, "{last:?}");
    });
}

#[test]
fn a_running_app_reads_earlier_output_only_from_kafka() {
    let sql = source("g-bad-chain")
        + "CREATE STREAM big AS SELECT id FROM trades WHERE quantity > 900 \
           WITH ('big.type' = 'stdout');
           CREATE STREAM again AS SELECT id FROM big WITH ('again.type' = 'stdout');";
    let options = AppOptions {
        brokers: Some("localhost:1".into()),
        ..Default::default()
    };
    let err =
        deploy_app(&sql, &options, Arc::new(AtomicBool::new(true))).expect_err("planning fails");
    assert!(
        err.to_string().contains("writes to no Kafka topic"),
        "{err}"
    );
}

/// A Kafka source's consumer lag is the records between its position and the partition's end:
/// after a first batch of up to 10 of 100 (a first fetch may bring fewer), the rest; none once
/// it has read them all.
#[test]
fn a_kafka_sources_consumer_lag_counts_the_records_it_has_not_read() {
    use arrow::datatypes::{DataType, Field, Schema};
    use velostream::connectors::kafka::{KafkaDefaults, KafkaSource, KafkaSourceConfig};
    use velostream::sql::properties::Properties;

    let cluster = mock(&[("lagged", 1)]);
    let records: Vec<(Option<String>, String)> = (0..100)
        .map(|i| (None, serde_json::json!({ "id": i }).to_string()))
        .collect();
    produce(cluster.bootstrap_servers(), "lagged", &records);
    let mut props = Properties::default();
    for (key, value) in [
        ("l.type", "kafka_source"),
        ("l.topic.name", "lagged"),
        ("l.group.id", "lag-test"),
        ("l.batch.size", "10"),
    ] {
        props.insert(key, value);
    }
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    let defaults = KafkaDefaults {
        brokers: Some(cluster.bootstrap_servers().to_string()),
    };
    let config =
        KafkaSourceConfig::from_properties("l", &props, Some(schema), &defaults).expect("config");
    let mut source = KafkaSource::open(config).expect("source");
    let mut read = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while read == 0 {
        assert!(std::time::Instant::now() < deadline, "no first batch");
        if let Some(b) = source.next_batch(Duration::from_millis(200)).expect("poll") {
            read += b.batch.num_rows();
        }
    }
    assert!((1..=10).contains(&read), "a first batch of {read}");
    assert_eq!(
        source.consumer_lag().expect("lag"),
        vec![(0, 100 - read as i64)]
    );
    while read < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {read} of 100 read"
        );
        if let Some(b) = source.next_batch(Duration::from_millis(200)).expect("poll") {
            read += b.batch.num_rows();
        }
    }
    assert_eq!(source.consumer_lag().expect("lag"), vec![(0, 0)]);
}
