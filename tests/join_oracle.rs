//! Joins, subqueries and UNION ALL against a batch oracle: on random bounded inputs (small key domains,
//! NULL keys, duplicate keys, several batch sizes), every query's streaming result at 1, 2
//! and 4 partitions equals, as a multiset, DataFusion running the same SQL over the same rows.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use proptest::prelude::*;

mod common;
use common::{batch_oracle, run_collected, sorted_rows};

/// Queries whose answer on a bounded input is the batch answer; `EMIT FINAL` is velostream's
/// and is cut for the oracle.
const QUERIES: &[&str] = &[
    "SELECT o.id, o.k, c.name FROM orders o JOIN customers c ON o.k = c.id",
    "SELECT o.id, c.name, c.tier FROM orders o LEFT JOIN customers c ON o.k = c.id",
    "SELECT o.id, t.tag FROM orders o JOIN tags t ON o.k = t.k",
    "SELECT o.id, t.tag FROM orders o LEFT JOIN tags t ON o.k = t.k AND o.v > 3",
    "SELECT o.id, c.name FROM customers c RIGHT JOIN orders o ON c.id = o.k",
    "SELECT o.id, t.tag FROM orders o, tags t WHERE o.k = t.k AND t.tag <> 'b'",
    "SELECT o.id, c.name, t.tag FROM orders o JOIN customers c ON o.k = c.id LEFT JOIN tags t ON c.id = t.k",
    "SELECT id FROM orders WHERE k IN (SELECT k FROM tags)",
    "SELECT id FROM orders WHERE k NOT IN (SELECT k FROM tags)",
    "SELECT id FROM orders WHERE k NOT IN (SELECT id FROM customers)",
    "SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM tags t WHERE t.k = o.k AND t.tag <> 'a')",
    "SELECT id FROM orders o WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = o.k)",
    "SELECT id, (SELECT MAX(tier) FROM customers) AS m FROM orders",
    "SELECT id FROM orders WHERE v > (SELECT COUNT(*) FROM tags)",
    "SELECT id, (SELECT COUNT(*) FROM tags t WHERE t.k = o.k) AS n FROM orders o",
    "SELECT id FROM orders WHERE k IN (SELECT id FROM customers WHERE tier = 1) OR v > 7",
    "SELECT c.tier, COUNT(*) AS n, SUM(o.v) AS total FROM orders o JOIN customers c ON o.k = c.id GROUP BY c.tier EMIT FINAL",
    "SELECT o.k, COUNT(t.tag) AS n FROM orders o LEFT JOIN tags t ON o.k = t.k GROUP BY o.k EMIT FINAL",
    "SELECT id, k FROM orders WHERE v > 5 UNION ALL SELECT k AS id, k FROM tags",
    "SELECT k, COUNT(*) AS n FROM (SELECT k FROM orders UNION ALL SELECT k FROM tags) GROUP BY k EMIT FINAL",
    "SELECT o.id, c.name FROM orders o JOIN customers c ON o.k = c.id UNION ALL SELECT t.k, t.tag FROM tags t WHERE t.k IN (SELECT id FROM customers)",
];

/// One generated input: the stream and two tables.
#[derive(Debug, Clone)]
struct Input {
    /// (id, k, v, ts): keys from a small domain, some NULL; times out of order.
    orders: Vec<(i64, Option<i64>, i64, i64)>,
    /// (id, name, tier): unique ids (the table's primary key).
    customers: Vec<(i64, String, Option<i64>)>,
    /// (k, tag): duplicate and NULL keys (a file read once, joined as a table).
    tags: Vec<(Option<i64>, String)>,
    batch_size: usize,
}

fn input() -> impl Strategy<Value = Input> {
    let key = prop_oneof![1 => Just(None), 6 => (0i64..6).prop_map(Some)];
    let orders = prop::collection::vec((key.clone(), 0i64..10, 0i64..1000), 0..40);
    let customers = prop::collection::btree_map(
        0i64..8,
        (
            prop::sample::select(vec!["ann", "bob", "cy"]),
            prop_oneof![1 => Just(None), 3 => (0i64..3).prop_map(Some)],
        ),
        0..6,
    );
    let tags = prop::collection::vec((key, prop::sample::select(vec!["a", "b", "c"])), 0..10);
    (
        orders,
        customers,
        tags,
        prop::sample::select(vec![1usize, 3, 64]),
    )
        .prop_map(|(orders, customers, tags, batch_size)| Input {
            orders: orders
                .into_iter()
                .enumerate()
                .map(|(i, (k, v, ts))| (i as i64, k, v, ts))
                .collect(),
            customers: customers
                .into_iter()
                .map(|(id, (name, tier))| (id, name.to_string(), tier))
                .collect(),
            tags: tags.into_iter().map(|(k, t)| (k, t.to_string())).collect(),
            batch_size,
        })
}

fn int(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

impl Input {
    fn batches(&self) -> [(&'static str, RecordBatch); 3] {
        let ints = |v: Vec<Option<i64>>| Arc::new(Int64Array::from(v)) as _;
        let texts = |v: Vec<&str>| Arc::new(StringArray::from(v)) as _;
        let batch = |fields: Vec<Field>, columns| {
            let schema: SchemaRef = Arc::new(Schema::new(fields));
            RecordBatch::try_new(schema, columns).expect("batch")
        };
        let o = &self.orders;
        let c = &self.customers;
        let t = &self.tags;
        [
            (
                "orders",
                batch(
                    vec![int("id"), int("k"), int("v"), int("ts")],
                    vec![
                        ints(o.iter().map(|r| Some(r.0)).collect()),
                        ints(o.iter().map(|r| r.1).collect()),
                        ints(o.iter().map(|r| Some(r.2)).collect()),
                        ints(o.iter().map(|r| Some(r.3)).collect()),
                    ],
                ),
            ),
            (
                "customers",
                batch(
                    vec![int("id"), text("name"), int("tier")],
                    vec![
                        ints(c.iter().map(|r| Some(r.0)).collect()),
                        texts(c.iter().map(|r| r.1.as_str()).collect()),
                        ints(c.iter().map(|r| r.2).collect()),
                    ],
                ),
            ),
            (
                "tags",
                batch(
                    vec![int("k"), text("tag")],
                    vec![
                        ints(t.iter().map(|r| r.0).collect()),
                        texts(t.iter().map(|r| r.1.as_str()).collect()),
                    ],
                ),
            ),
        ]
    }

    /// Writes each input as a JSON-lines file under `dir`.
    fn write(&self, dir: &Path) {
        let write = |name: &str, lines: Vec<serde_json::Value>| {
            let mut f = std::fs::File::create(dir.join(format!("{name}.jsonl"))).expect("file");
            for line in lines {
                writeln!(f, "{line}").expect("write");
            }
        };
        write(
            "orders",
            self.orders
                .iter()
                .map(|(id, k, v, ts)| serde_json::json!({"id": id, "k": k, "v": v, "ts": ts}))
                .collect(),
        );
        write(
            "customers",
            self.customers
                .iter()
                .map(|(id, name, tier)| serde_json::json!({"id": id, "name": name, "tier": tier}))
                .collect(),
        );
        write(
            "tags",
            self.tags
                .iter()
                .map(|(k, tag)| serde_json::json!({"k": k, "tag": tag}))
                .collect(),
        );
    }
}

/// The declarations velostream reads the files with.
fn declarations(dir: &Path, batch_size: usize) -> String {
    let path = |name: &str| dir.join(format!("{name}.jsonl")).display().to_string();
    format!(
        "CREATE STREAM orders (id BIGINT, k BIGINT, v BIGINT, ts BIGINT) WITH \
         ('orders.path' = '{}', 'orders.batch.size' = '{batch_size}');\n\
         CREATE TABLE customers (id BIGINT, name VARCHAR, tier BIGINT, PRIMARY KEY (id)) WITH \
         ('customers.path' = '{}');\n\
         CREATE STREAM tags (k BIGINT, tag VARCHAR) WITH ('tags.path' = '{}');\n",
        path("orders"),
        path("customers"),
        path("tags"),
    )
}

fn oracle(input: &Input, sql: &str) -> Vec<String> {
    batch_oracle(input.batches().into(), sql.trim_end_matches(" EMIT FINAL"))
}

fn velostream(input: &Input, dir: &Path, sql: &str, partitions: usize) -> Vec<String> {
    let last = run_collected(
        &format!("{}{sql}", declarations(dir, input.batch_size)),
        partitions,
    );
    assert_eq!(last.errors, 0, "{sql}: no record is bad");
    sorted_rows(last.output.as_deref().unwrap_or_default())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn joins_subqueries_and_unions_equal_the_batch_answer(input in input()) {
        let dir = tempfile::tempdir().expect("dir");
        input.write(dir.path());
        for sql in QUERIES {
            let expected = oracle(&input, sql);
            for partitions in [1, 2, 4] {
                let actual = velostream(&input, dir.path(), sql, partitions);
                prop_assert_eq!(
                    &actual, &expected,
                    "{} at {} partitions, batch size {}", sql, partitions, input.batch_size
                );
            }
        }
    }
}

/// A temporal join's answer computed directly: each order meets, per key, the rate with the
/// latest version time at or before the order's time (the last such row of the file on a tie).
fn temporal_reference(
    orders: &[(i64, Option<i64>, i64)],
    rates: &[(Option<i64>, i64, i64)],
) -> Vec<String> {
    let mut rows = Vec::new();
    for (id, k, ts) in orders {
        let valid = rates
            .iter()
            .enumerate()
            .filter(|(_, (rk, _, version))| k.is_some() && rk == k && version <= ts)
            .max_by_key(|(i, (_, _, version))| (*version, *i));
        let rate = valid.map_or("NULL".to_string(), |(_, (_, rate, _))| rate.to_string());
        rows.push(format!("{id} | {rate}"));
    }
    rows.sort();
    rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn temporal_joins_meet_the_version_valid_at_each_time(
        orders in prop::collection::vec(
            (prop_oneof![1 => Just(None), 4 => (0i64..3).prop_map(Some)], 0i64..100), 0..30),
        rates in prop::collection::vec(
            (prop_oneof![1 => Just(None), 4 => (0i64..3).prop_map(Some)], 0i64..1000, 0i64..100),
            0..12),
        batch_size in prop::sample::select(vec![1usize, 5, 64]),
    ) {
        let orders: Vec<(i64, Option<i64>, i64)> = orders
            .into_iter()
            .enumerate()
            .map(|(i, (k, ts))| (i as i64, k, ts))
            .collect();
        let dir = tempfile::tempdir().expect("dir");
        let write = |name: &str, lines: Vec<serde_json::Value>| {
            let mut f = std::fs::File::create(dir.path().join(format!("{name}.jsonl"))).expect("file");
            for line in lines {
                writeln!(f, "{line}").expect("write");
            }
        };
        write("orders", orders.iter().map(|(id, k, ts)| serde_json::json!({"id": id, "k": k, "ts": ts})).collect());
        write("rates", rates.iter().map(|(k, rate, ts)| serde_json::json!({"k": k, "rate": rate, "ts": ts})).collect());
        let path = |name: &str| dir.path().join(format!("{name}.jsonl")).display().to_string();
        let script = format!(
            "CREATE STREAM orders (id BIGINT, k BIGINT, ts BIGINT) WITH ('orders.path' = '{}', \
             'orders.batch.size' = '{batch_size}', 'orders.event.time.field' = 'ts');\n\
             CREATE TABLE rates (k BIGINT, rate BIGINT, ts BIGINT, PRIMARY KEY (k)) WITH \
             ('rates.path' = '{}', 'rates.event.time.field' = 'ts');\n\
             SELECT o.id, r.rate FROM orders o LEFT JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r \
             ON o.k = r.k",
            path("orders"),
            path("rates"),
        );
        let expected = temporal_reference(&orders, &rates);
        for partitions in [1, 2, 4] {
            let last = run_collected(&script, partitions);
            let actual = sorted_rows(last.output.as_deref().unwrap_or_default());
            prop_assert_eq!(&actual, &expected, "at {} partitions", partitions);
        }
    }
}
