//! A consumer-group rebalance must not leave state built from a revoked partition behind:
//! its new owner rebuilds that state, so the old owner emitting it too would publish windows
//! holding only part of their records.

mod kafka_support;

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_support::*;

#[test]
fn a_rebalance_leaves_no_partial_window_behind() {
    with_timeout(Duration::from_secs(180), || {
        let kafka = mock(&[("trades", 2), ("per_minute", 1)]);
        let bootstrap = kafka.bootstrap_servers().to_string();
        let sql = source("g-rebalance")
            + "CREATE STREAM per_minute AS SELECT symbol, _window_start, COUNT(*) AS n FROM trades \
               WHERE id < 100000 GROUP BY symbol WINDOW TUMBLING(ts, 1m) EMIT FINAL \
               WITH ('per_minute.type' = 'kafka_sink', 'per_minute.topic.name' = 'per_minute');";
        let start_of = |id: i64| {
            let ts = 1_700_000_000_000i64 + id * 1000;
            ts - ts.rem_euclid(60_000)
        };
        // Windows start at ids 40, 100, 160, 220, ...: the first 250 trades close the windows
        // before id 220 and leave [220, 280) half full when the second instance joins.
        produce_trades(&bootstrap, 0..250);
        let (stop_a, app_a) = start_app(sql.clone(), &bootstrap, 2);
        let n_sum = |o: &[Consumed]| -> i64 {
            o.iter()
                .filter_map(|(_, v)| v.as_ref())
                .map(|v| v["n"].as_i64().unwrap_or(0))
                .sum()
        };
        consume(&bootstrap, "per_minute", Duration::from_secs(60), |o| {
            n_sum(o) >= 220
        });
        // The second instance takes one partition over from the first, whose open window
        // holds records of it.
        let (stop_b, app_b) = start_app(sql, &bootstrap, 2);
        std::thread::sleep(Duration::from_secs(8));
        produce_trades(&bootstrap, 250..600);
        produce_clocks(&bootstrap, 2);
        let mut want: BTreeMap<(String, i64), i64> = BTreeMap::new();
        for id in 0..600i64 {
            *want
                .entry((format!("S{}", id % 7), start_of(id)))
                .or_default() += 1;
        }
        let windows = |o: &[Consumed]| -> std::collections::BTreeSet<(String, i64)> {
            o.iter()
                .filter_map(|(_, v)| v.as_ref())
                .map(|v| {
                    let symbol = v["symbol"].as_str().unwrap_or_default().to_string();
                    (symbol, v["_window_start"].as_i64().unwrap_or_default())
                })
                .collect()
        };
        let out = consume(&bootstrap, "per_minute", Duration::from_secs(90), |o| {
            windows(o).len() >= want.len()
        });
        let a = stop_app(stop_a, app_a);
        let b = stop_app(stop_b, app_b);
        assert!(b[0].records_in > 0, "the second instance got a partition");
        let mut seen = BTreeMap::new();
        for (_, v) in &out {
            let v = v.as_ref().expect("a row");
            let key = (
                v["symbol"].as_str().expect("symbol").to_string(),
                v["_window_start"].as_i64().expect("start"),
            );
            let n = v["n"].as_i64().expect("n");
            // At least once allows a window twice, but never with part of its records.
            assert_eq!(
                Some(&n),
                want.get(&key),
                "window {key:?} ({} in A)",
                a[0].records_in
            );
            seen.insert(key, n);
        }
        assert_eq!(seen, want);
    });
}
