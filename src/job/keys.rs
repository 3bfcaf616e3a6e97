//! Checks a statement's WITH keys before anything is planned or opened: each key is the job's,
//! or declared by what its name is in the statement (a source, the sink, a declared name), so
//! a misspelt key is an error at its line instead of being ignored.

use std::collections::BTreeMap;

use super::inputs::{Declared, Upstream};
use crate::connectors::config_keys::{check_keys, connector_for_type, KeyError};
use crate::connectors::file_source::FILE_SOURCE;
use crate::connectors::sink::{FILE_SINK, STDOUT};
use crate::error::{Result, VeloError};
use crate::sql::key_spec::{Connector, Role, UPSTREAM};
use crate::sql::properties::KeyOrigin;
use crate::sql::{Script, Statement};

/// What a statement's keys may be scoped to.
pub(super) enum Names<'a> {
    /// A declaration (`CREATE STREAM name (...) WITH (...)`) of the source `name`.
    Declaration(&'a str),
    /// A query: its sink's name (the job id) and the sources it reads.
    Query {
        sink: &'a str,
        sources: &'a [String],
    },
}

/// Checks every WITH key of `stmt` (see [`check_keys`]); the error points at the key.
pub(super) fn check_statement_keys(
    script: &Script,
    stmt: &Statement,
    names: Names<'_>,
    declared: &BTreeMap<String, Declared>,
    upstream: &BTreeMap<String, Upstream>,
) -> Result<()> {
    scopes(stmt, names, declared, upstream)
        .and_then(|scopes| check_keys(&stmt.properties, &scopes))
        .map_err(|e| at_key(script, stmt, e))
}

/// Each name the statement's keys may be scoped to, with what it is there.
fn scopes<'a>(
    stmt: &'a Statement,
    names: Names<'a>,
    declared: &BTreeMap<String, Declared>,
    upstream: &BTreeMap<String, Upstream>,
) -> std::result::Result<Vec<(&'a str, &'static Connector)>, KeyError> {
    let props = &stmt.properties;
    let type_of = |name: &str, role: Option<Role>| -> std::result::Result<_, KeyError> {
        let key = format!("{name}.type");
        match props.get(&key) {
            Some(kind) => connector_for_type(name, kind, role)
                .map(Some)
                .map_err(|message| KeyError { key, message }),
            None => Ok(None),
        }
    };
    let mut scopes: Vec<(&str, &'static Connector)> = Vec::new();
    match names {
        Names::Declaration(name) => {
            scopes.push((
                name,
                type_of(name, Some(Role::Source))?.unwrap_or(&FILE_SOURCE),
            ));
        }
        Names::Query { sink, sources } => {
            for source in sources {
                // As `resolve_input` finds it: an earlier statement's output first, then the
                // query's own `type`, then the declaration's.
                let connector = if upstream.contains_key(source) {
                    &UPSTREAM
                } else if let Some(c) = type_of(source, Some(Role::Source))? {
                    c
                } else {
                    declared
                        .get(source)
                        .and_then(|d| d.properties.get(&format!("{source}.type")))
                        .and_then(|kind| connector_for_type(source, kind, Some(Role::Source)).ok())
                        .unwrap_or(&FILE_SOURCE)
                };
                scopes.push((source, connector));
            }
            let connector = match type_of(sink, Some(Role::Sink))? {
                Some(c) => c,
                None if props.get(&format!("{sink}.path")).is_some() => &FILE_SINK,
                None => &STDOUT,
            };
            scopes.push((sink, connector));
        }
    }
    // Any other name the statement gives a type to is that connector, whatever it is for.
    for (key, _) in props.iter() {
        let Some(name) = key.strip_suffix(".type") else {
            continue;
        };
        if !scopes.iter().any(|(n, _)| *n == name) {
            if let Some(c) = type_of(name, None)? {
                scopes.push((name, c));
            }
        }
    }
    Ok(scopes)
}

/// The error of a key, at the key's position in the SQL (at the `config_file` key for a key
/// from a YAML file, which the message names).
fn at_key(script: &Script, stmt: &Statement, e: KeyError) -> VeloError {
    let props = &stmt.properties;
    let (origin, message) = match props.origin(&e.key) {
        Some(KeyOrigin::File {
            path,
            config_file_key,
        }) => (
            props.origin(config_file_key),
            format!("{}, in {path} (from '{config_file_key}')", e.message),
        ),
        origin => (origin, e.message),
    };
    let (line, column) = match origin {
        Some(KeyOrigin::Sql { line, column }) => (*line, *column),
        _ => stmt.position,
    };
    script.source.error(line, column, message)
}

#[cfg(test)]
mod tests {
    use crate::connectors::kafka::KafkaDefaults;
    use crate::job::{plan_script, JobOptions};
    use crate::VeloError;

    const TRADES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/data/trades.jsonl");

    fn options() -> JobOptions {
        JobOptions {
            serve: true,
            kafka: KafkaDefaults {
                brokers: Some("127.0.0.1:1".into()),
            },
            ..Default::default()
        }
    }

    /// The error of planning `sql`: (line, column, message).
    fn refused(sql: &str) -> (u64, u64, String) {
        match plan_script(sql, &options()) {
            Err(VeloError::Sql {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            Err(other) => panic!("not a SQL error: {other}"),
            Ok(_) => panic!("planned: {sql}"),
        }
    }

    const KAFKA_TRADES: &str = "CREATE STREAM trades (symbol VARCHAR, quantity BIGINT, ts BIGINT)
WITH ('trades.type' = 'kafka_source', 'trades.topic.name' = 'trades'";

    #[test]
    fn kafka_keys_are_declared_keys_or_librdkafka_properties() {
        let ok = format!(
            "{KAFKA_TRADES}, 'trades.session.timeout.ms' = '6000', 'trades.group.id' = 'g');
CREATE STREAM big AS SELECT symbol FROM trades WHERE quantity > 10
WITH ('big.type' = 'kafka_sink', 'big.linger.ms' = '5', 'big.acks' = 'all');"
        );
        if let Err(e) = plan_script(&ok, &options()) {
            panic!("refused: {e}");
        }
        let typo = format!(
            "{KAFKA_TRADES},\n  'trades.sesion.timeout.ms' = '6000');\nSELECT symbol FROM trades;"
        );
        assert_eq!(
            refused(&typo),
            (
                3,
                3,
                "unknown key 'sesion.timeout.ms' for kafka_source 'trades': neither a \
                 kafka_source key nor a librdkafka property (did you mean 'session.timeout.ms'?)"
                    .into()
            )
        );
        // A query's keys for a declared source are checked as that source's.
        let on_query =
            format!("{KAFKA_TRADES});\nSELECT symbol FROM trades WITH ('trades.watch' = 'true');");
        let (line, column, message) = refused(&on_query);
        assert_eq!((line, column), (3, 33));
        assert!(
            message.starts_with("unknown key 'watch' for kafka_source 'trades'"),
            "{message}"
        );
    }

    #[test]
    fn a_key_from_a_config_file_is_checked_and_the_error_names_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("trades.yaml");
        std::fs::write(&file, "topic:\n  nme: trades\nsession.timeout.ms: 6000\n").expect("yaml");
        let sql = format!(
            "CREATE STREAM trades (symbol VARCHAR) WITH ('trades.type' = 'kafka_source',\n  \
             'trades.config_file' = '{}');\nSELECT symbol FROM trades;",
            file.display()
        );
        let (line, column, message) = refused(&sql);
        assert_eq!((line, column), (2, 3), "at the config_file key: {message}");
        assert_eq!(
            message,
            format!(
                "unknown key 'topic.nme' for kafka_source 'trades': neither a kafka_source key \
                 nor a librdkafka property (did you mean 'topic.name'?), in {} (from \
                 'trades.config_file')",
                file.display()
            )
        );
    }

    #[test]
    fn an_earlier_statements_output_takes_only_watermark_keys() {
        let first = format!(
            "CREATE STREAM t (symbol VARCHAR, quantity BIGINT, ts BIGINT) WITH ('t.path' = '{TRADES}');
CREATE STREAM big AS SELECT symbol, ts FROM t WHERE quantity > 10;"
        );
        let batch = JobOptions::default();
        let ok = format!(
            "{first}\nSELECT symbol FROM big WITH ('big.watermark.max_out_of_orderness' = '1s');"
        );
        if let Err(e) = plan_script(&ok, &batch) {
            panic!("refused: {e}");
        }
        let bad = format!("{first}\nSELECT symbol FROM big WITH ('big.event.time.field' = 'ts');");
        match plan_script(&bad, &batch) {
            Err(e) => assert!(
                e.to_string().contains(
                    "line 3, column 30: unknown key 'event.time.field' for the earlier \
                     statement's output 'big'"
                ),
                "{e}"
            ),
            Ok(_) => panic!("planned: {bad}"),
        }
    }

    #[test]
    fn a_type_of_the_wrong_role_is_refused_at_the_type_key() {
        let sql = format!(
            "CREATE STREAM t (symbol VARCHAR) WITH ('t.path' = '{TRADES}');
CREATE STREAM out AS SELECT symbol FROM t WITH ('out.type' = 'file_source', 'out.path' = 'x');"
        );
        assert_eq!(
            refused(&sql),
            (
                2,
                49,
                "'out.type' = 'file_source', but 'out' is the statement's sink here: expected \
                 stdout, file_sink or kafka_sink"
                    .into()
            )
        );
    }
}
