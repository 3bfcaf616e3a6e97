//! A delete of a row without a message key (a global aggregate's row that stops passing
//! HAVING) reaches a JSON Kafka sink as the row with `"_deleted": true`, as in files. It used
//! to be written as a plain row, which read as the row coming back.

mod kafka_support;

use std::time::Duration;

use kafka_support::*;

#[test]
fn a_delete_without_a_key_is_flagged_in_the_message() {
    with_timeout(Duration::from_secs(120), || {
        let kafka = mock(&[("trades", 1), ("total", 1)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        produce_trades(&bootstrap, 0..700);
        let sql = source("g-total")
            + "CREATE STREAM total AS SELECT COUNT(*) AS n FROM trades HAVING COUNT(*) < 700 \
               EMIT CHANGES WITH ('total.type' = 'kafka_sink', 'total.topic.name' = 'total');";
        let (stop, app) = start_app(sql, &bootstrap, 1);
        let deleted = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .and_then(|v| v.get("_deleted"))
                .and_then(serde_json::Value::as_bool)
                == Some(true)
        };
        let out = consume(&bootstrap, "total", Duration::from_secs(60), |o| {
            o.iter().any(|(_, v)| deleted(v))
        });
        stop_app(stop, app);
        let (last, before) = out.split_last().expect("messages");
        assert!(deleted(&last.1), "the last message is the delete: {last:?}");
        assert_eq!(last.1.as_ref().and_then(|v| v["n"].as_i64()), Some(700));
        assert!(before.iter().all(|(key, v)| key.is_none() && !deleted(v)));
        assert!(!before.is_empty());
    });
}
