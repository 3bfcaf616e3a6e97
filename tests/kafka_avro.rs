//! Kafka end to end with Avro payloads: input datums are encoded by hand (so the test does not
//! trust the library it checks), decoded by the job with the schema file, and the results are
//! written as Avro datums of the sink's schema file and decoded here by hand again.

mod kafka_support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use kafka_support::*;

const TRADE_SCHEMA: &str = r#"{"type": "record", "name": "Trade", "fields": [
  {"name": "id", "type": "long"},
  {"name": "symbol", "type": "string"},
  {"name": "quantity", "type": "long"},
  {"name": "ts", "type": "long"}]}"#;

const TOTAL_SCHEMA: &str = r#"{"type": "record", "name": "Total", "fields": [
  {"name": "symbol", "type": "string"},
  {"name": "n", "type": "long"},
  {"name": "qty", "type": "long"}]}"#;

/// Avro's zigzag varint.
fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn take_long(data: &mut &[u8]) -> i64 {
    let mut z = 0u64;
    let mut shift = 0;
    loop {
        let byte = data[0];
        *data = &data[1..];
        z |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            break;
        }
        shift += 7;
    }
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

fn take_string(data: &mut &[u8]) -> String {
    let len = take_long(data) as usize;
    let text = String::from_utf8(data[..len].to_vec()).expect("UTF-8");
    *data = &data[len..];
    text
}

fn trade(id: i64) -> (Option<String>, Vec<u8>) {
    let symbol = format!("S{}", id % 5);
    let mut datum = Vec::new();
    put_long(&mut datum, id);
    put_long(&mut datum, symbol.len() as i64);
    datum.extend_from_slice(symbol.as_bytes());
    put_long(&mut datum, id % 100);
    put_long(&mut datum, 1_700_000_000_000 + id * 1000);
    (Some(symbol), datum)
}

/// A `Total` datum as (symbol, n, qty); the whole payload must be exactly one datum.
fn total(payload: &[u8]) -> (String, i64, i64) {
    let mut data = payload;
    let row = (
        take_string(&mut data),
        take_long(&mut data),
        take_long(&mut data),
    );
    assert!(data.is_empty(), "trailing bytes after the datum");
    row
}

#[test]
fn avro_in_avro_out_and_a_bad_datum_goes_to_the_dead_letter_topic() {
    with_timeout(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().expect("temp dir");
        let trade_schema = dir.path().join("trade.avsc");
        let total_schema = dir.path().join("total.avsc");
        std::fs::write(&trade_schema, TRADE_SCHEMA).expect("schema");
        std::fs::write(&total_schema, TOTAL_SCHEMA).expect("schema");
        let kafka = mock(&[("trades", 2), ("totals", 1), ("bad_trades", 1)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        let mut input: Vec<_> = (0..500).map(trade).collect();
        // A datum cut short: it lacks its last field.
        let mut poisoned = trade(9999).1;
        poisoned.truncate(poisoned.len() - 6);
        input.insert(250, (Some("S4".to_string()), poisoned.clone()));
        produce(&bootstrap, "trades", &input);

        // No columns declared: they come from the schema file.
        let sql = format!(
            "CREATE STREAM trades WITH ('trades.type' = 'kafka_source', 'trades.format' = 'avro',
               'trades.avro.schema.file' = '{}', 'trades.group.id' = 'g-avro',
               'trades.event.time.field' = 'ts', 'trades.dlq.topic' = 'bad_trades',
               'trades.commit.interval' = '0s');
             CREATE TABLE totals AS SELECT symbol, COUNT(*) AS n, SUM(quantity) AS qty
               FROM trades GROUP BY symbol EMIT CHANGES
               WITH ('totals.type' = 'kafka_sink', 'totals.format' = 'avro',
                     'totals.avro.schema.file' = '{}');",
            trade_schema.display(),
            total_schema.display()
        );
        let (stop, app) = start_app(sql, &bootstrap, 2);
        let out = consume_with(&bootstrap, "totals", Duration::from_secs(60), total, |o| {
            o.len() >= 500
        });
        let dead = consume(&bootstrap, "bad_trades", Duration::from_secs(30), |o| {
            !o.is_empty()
        });
        let summaries = stop_app(stop, app);

        assert_eq!(out.len(), 500, "one update per good trade");
        let mut last: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (key, value) in out {
            let (symbol, n, qty) = value.expect("a row");
            assert_eq!(key.as_deref(), Some(symbol.as_str()), "keyed by symbol");
            last.insert(symbol, (n, qty));
        }
        let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for id in 0..500 {
            let entry = want.entry(format!("S{}", id % 5)).or_default();
            entry.0 += 1;
            entry.1 += id % 100;
        }
        assert_eq!(last, want);

        assert_eq!(summaries[0].errors, 1);
        let letter = dead[0].1.as_ref().expect("an envelope");
        assert_eq!(letter["topic"], "trades");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(letter["payload_base64"].as_str().expect("base64 payload"))
            .expect("base64");
        assert_eq!(bytes, poisoned, "the bad message, byte for byte");
    });
}

#[test]
fn an_avro_source_needs_its_schema_file() {
    let sql =
        "CREATE STREAM trades WITH ('trades.type' = 'kafka_source', 'trades.format' = 'avro');
               CREATE STREAM copy AS SELECT * FROM trades;";
    let options = velostream::server::AppOptions {
        brokers: Some("localhost:1".into()),
        ..Default::default()
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let err = velostream::server::deploy_app(sql, &options, stop).expect_err("planning fails");
    assert!(err.to_string().contains("avro.schema.file"), "{err}");
}

#[test]
fn a_later_statement_reads_an_earlier_ones_avro_topic() {
    with_timeout(Duration::from_secs(120), || {
        let dir = tempfile::tempdir().expect("temp dir");
        let trade_schema = dir.path().join("trade.avsc");
        std::fs::write(&trade_schema, TRADE_SCHEMA).expect("schema");
        let kafka = mock(&[("trades", 2), ("big", 2), ("big_counts", 1)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        produce(
            &bootstrap,
            "trades",
            &(0..400).map(trade).collect::<Vec<_>>(),
        );
        // `big` is written as Avro with the schema derived from its columns; `big_counts`
        // reads it back with that schema and writes JSON.
        let sql = format!(
            "CREATE STREAM trades WITH ('trades.type' = 'kafka_source', 'trades.format' = 'avro',
               'trades.avro.schema.file' = '{}', 'trades.group.id' = 'g-avro-chain');
             CREATE STREAM big AS SELECT id, symbol, quantity FROM trades WHERE quantity >= 90
               WITH ('big.type' = 'kafka_sink', 'big.format' = 'avro');
             CREATE TABLE big_counts AS SELECT symbol, COUNT(*) AS n, SUM(quantity) AS qty
               FROM big GROUP BY symbol EMIT CHANGES
               WITH ('big_counts.type' = 'kafka_sink');",
            trade_schema.display()
        );
        let (stop, app) = start_app(sql, &bootstrap, 1);
        let want = (0..400).filter(|id| id % 100 >= 90).count();
        let out = consume(&bootstrap, "big_counts", Duration::from_secs(60), |o| {
            o.len() >= want
        });
        stop_app(stop, app);
        let mut last: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for (_, v) in &out {
            let v = v.as_ref().expect("a row");
            last.insert(
                v["symbol"].as_str().expect("symbol").to_string(),
                (v["n"].as_i64().expect("n"), v["qty"].as_i64().expect("qty")),
            );
        }
        let mut expected: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for id in (0..400).filter(|id| id % 100 >= 90) {
            let entry = expected.entry(format!("S{}", id % 5)).or_default();
            entry.0 += 1;
            entry.1 += id % 100;
        }
        assert_eq!(last, expected);
    });
}
