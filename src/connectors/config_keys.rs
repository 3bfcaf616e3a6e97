//! Every connector's declared WITH keys in one list: the check that refuses a key nothing
//! reads (with the nearest known key), and docs/config.md rendered from the declarations.

use super::file_source::FILE_SOURCE;
use super::kafka::config::check_client_property;
use super::kafka::sink::KAFKA_SINK;
use super::kafka::source::KAFKA_SOURCE;
use super::sink::{FILE_SINK, STDOUT};
use crate::sql::key_spec::{Connector, KeyDefault, KeyKind, KeySpec, Role, JOB, UPSTREAM};
use crate::sql::source_text::nearest;
use crate::sql::Properties;

/// The connectors a `'<name>.type'` can name.
pub const CONNECTORS: &[&Connector] = &[
    &FILE_SOURCE,
    &KAFKA_SOURCE,
    &STDOUT,
    &FILE_SINK,
    &KAFKA_SINK,
];

/// A key that is wrong: the key as written, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The full key, `t.formt`.
    pub key: String,
    /// What is wrong, for the user.
    pub message: String,
}

/// The connector `'<name>.type' = kind` names, for a name in `role` (None: in any); Err says
/// why not.
pub fn connector_for_type(
    name: &str,
    kind: &str,
    role: Option<Role>,
) -> std::result::Result<&'static Connector, String> {
    let Some(connector) = CONNECTORS.iter().copied().find(|c| c.kind == kind) else {
        let hint = match nearest(kind, CONNECTORS.iter().map(|c| c.kind)) {
            Some(best) => format!(" (did you mean '{best}'?)"),
            None => format!(
                ": expected {}",
                CONNECTORS
                    .iter()
                    .map(|c| c.kind)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return Err(format!("unknown type '{kind}' for '{name}'{hint}"));
    };
    if let Some(role) = role.filter(|r| *r != connector.role) {
        let (what, kinds) = match role {
            Role::Source => ("a source", "file_source or kafka_source"),
            _ => ("the statement's sink", "stdout, file_sink or kafka_sink"),
        };
        return Err(format!(
            "'{name}.type' = '{kind}', but '{name}' is {what} here: expected {kinds}"
        ));
    }
    Ok(connector)
}

/// Checks every key of `props`: a job key, or a key `scopes` declares for the name it starts
/// with (for Kafka connectors, else a librdkafka property), with a value of its type.
/// `scopes` are the names the statement's keys may be scoped to, and what each is.
pub fn check_keys(
    props: &Properties,
    scopes: &[(&str, &'static Connector)],
) -> std::result::Result<(), KeyError> {
    for (key, value) in props.iter() {
        let error = |message: String| KeyError {
            key: key.clone(),
            message,
        };
        if let Some(spec) = JOB.key(key) {
            spec.kind
                .check(value)
                .map_err(|expected| error(format!("'{key}' = '{value}': expected {expected}")))?;
            continue;
        }
        let scope = scopes
            .iter()
            .filter(|(name, _)| {
                key.strip_prefix(name)
                    .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.'))
            })
            .max_by_key(|(name, _)| name.len());
        let Some((name, connector)) = scope else {
            return Err(error(unknown_name(key, scopes)));
        };
        let rest = &key[name.len() + 1..];
        let whose = format!("{} '{name}'", connector.label);
        match connector.key(rest) {
            Some(spec) if spec.kind == KeyKind::Client => {
                check_client_value(key, rest, value, &whose).map_err(error)?;
            }
            Some(spec) => spec.kind.check(value).map_err(|expected| {
                error(format!(
                    "'{key}' = '{value}' for {whose}: expected {expected}"
                ))
            })?,
            None if connector.librdkafka => match check_client_property(rest, value) {
                Ok(()) => {}
                Err(None) => {
                    return Err(error(format!(
                        "unknown key '{rest}' for {whose}: neither a {} key nor a librdkafka \
                         property{}",
                        connector.kind,
                        did_you_mean(rest, connector)
                    )))
                }
                Err(Some(reason)) => {
                    return Err(error(format!(
                        "'{key}' = '{value}' for {whose}: librdkafka refuses it: {reason}"
                    )))
                }
            },
            None => {
                return Err(error(format!(
                    "unknown key '{rest}' for {whose}{}",
                    did_you_mean(rest, connector)
                )))
            }
        }
    }
    Ok(())
}

/// The value of `key`, a declared librdkafka `property`, as librdkafka takes it.
fn check_client_value(
    key: &str,
    property: &str,
    value: &str,
    whose: &str,
) -> std::result::Result<(), String> {
    match check_client_property(property, value) {
        Ok(()) | Err(None) => Ok(()),
        Err(Some(reason)) => Err(format!(
            "'{key}' = '{value}' for {whose}: librdkafka refuses it: {reason}"
        )),
    }
}

/// ` (did you mean 'x'?)` for the declared key of `connector` nearest to `key`, if one is near.
fn did_you_mean(key: &str, connector: &Connector) -> String {
    let mut candidates: Vec<&str> = connector.keys.iter().map(|k| k.name).collect();
    if connector.librdkafka {
        candidates.extend(super::kafka::config::client_property_names());
    }
    match nearest(key, candidates) {
        Some(best) => format!(" (did you mean '{best}'?)"),
        None => String::new(),
    }
}

/// Why `key`, which starts with no name of `scopes`, is refused.
fn unknown_name(key: &str, scopes: &[(&str, &'static Connector)]) -> String {
    if let Some(best) = nearest(key, JOB.keys.iter().map(|k| k.name)) {
        return format!("unknown key '{key}' (did you mean '{best}'?)");
    }
    let names: Vec<&str> = scopes.iter().map(|(name, _)| *name).collect();
    let listed = if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    };
    let Some((prefix, _)) = key.split_once('.') else {
        return format!(
            "unknown key '{key}': a key is '<name>.<key>' for a source or sink of the statement \
             ({listed}), or one of the job's ({})",
            JOB.keys
                .iter()
                .map(|k| k.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    match nearest(prefix, names.iter().copied()) {
        Some(best) => format!(
            "unknown key '{key}': no source or sink of the statement is named '{prefix}' \
             (did you mean '{best}'?)"
        ),
        None => format!(
            "unknown key '{key}': no source or sink of the statement is named '{prefix}' \
             (its names: {listed})"
        ),
    }
}

/// docs/config.md: every connector's keys and the job's, from the declarations.
pub fn render_config_md() -> String {
    let mut md = String::from(
        "# WITH keys\n\n\
         <!-- Generated from the key declarations in src/ (each connector's `Connector` \
         constant); do not edit. After changing a declaration, run \
         `UPDATE_DOCS=1 cargo test --lib config_md`. -->\n\n\
         Sources and sinks are configured with `WITH ('<name>.<key>' = 'value', ...)`, where \
         `<name>` is a source's name in `FROM` or the CSAS/CTAS name for its sink, and \
         `'<name>.type'` says which connector it is. Keys may sit on the query or on the \
         source's `CREATE STREAM` / `CREATE TABLE` declaration. The job's own keys have no name \
         in front.\n\n\
         Every key is checked when the statement is planned: a key that nothing below declares \
         is an error that names the connector and the nearest declared key \
         (`unknown key 'formt' for file_source 't' (did you mean 'format'?)`), a key whose name \
         is no source or sink of the statement suggests the nearest name, and a value of the \
         wrong type names the key and what it expects. Kafka connectors hand every key they do \
         not declare to librdkafka, which must know it (see librdkafka's \
         [CONFIGURATION.md](https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md)).\n\n\
         `'<name>.config_file' = 'path.yaml'` loads more keys from a YAML file (nested maps \
         flatten with dots, so `bootstrap: {servers: k:9092}` is `bootstrap.servers`); they are \
         checked the same way, and the error names the file. Keys in the SQL override the file, \
         and an environment variable `VELOSTREAM_<NAME>_<KEY>` (upper case, dots as \
         underscores) overrides both.\n\n\
         Types: *text*; *bool* (`true`/`false`, `1`/`0`, `yes`/`no`); *integer*; *duration* \
         (`100ms`, `5s`, `10m`, `1h`, `1d`, `INTERVAL '5' SECOND`); *list* (column names, \
         comma-separated); *character* (`\\t` or `tab` for a tab); one of the values listed, in \
         any case; *librdkafka*: a librdkafka property velostream sets or gives a meaning to, \
         checked by librdkafka.\n",
    );
    let sections = [
        &FILE_SOURCE,
        &KAFKA_SOURCE,
        &UPSTREAM,
        &STDOUT,
        &FILE_SINK,
        &KAFKA_SINK,
    ];
    for connector in sections {
        md.push_str(&format!("\n## {}\n\n{}\n\n", connector.kind, connector.doc));
        md.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
        for spec in connector.keys {
            md.push_str(&key_row(spec, connector));
        }
        if connector.librdkafka {
            md.push_str(
                "\nAny other key is a librdkafka property, handed to the client as written \
                 (`session.timeout.ms`, `security.protocol`, `linger.ms`, ...).\n",
            );
        }
    }
    md.push_str(&format!("\n## job\n\n{}\n\n", JOB.doc));
    md.push_str("| key | type | default | meaning |\n|---|---|---|---|\n");
    for spec in JOB.keys {
        md.push_str(&key_row(spec, &JOB));
    }
    md
}

/// One table row of docs/config.md.
fn key_row(spec: &KeySpec, connector: &Connector) -> String {
    let kind = match spec.kind {
        _ if spec.name == "type" => format!("`{}`", connector.kind),
        KeyKind::Text => "text".into(),
        KeyKind::Bool => "bool".into(),
        KeyKind::Integer { min } => format!("integer ≥ {min}"),
        KeyKind::Duration { positive: false } => "duration".into(),
        KeyKind::Duration { positive: true } => "duration > 0".into(),
        KeyKind::List => "list".into(),
        KeyKind::Choice(values) => values
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", "),
        KeyKind::Char => "character".into(),
        KeyKind::Client => "librdkafka".into(),
    };
    let default = match spec.default {
        KeyDefault::Required => "required".to_string(),
        KeyDefault::None => "none".to_string(),
        KeyDefault::Value(v) => format!("`{v}`"),
        KeyDefault::Note(note) => note.to_string(),
    };
    format!(
        "| `{}` | {kind} | {default} | {} |\n",
        spec.name,
        spec.doc.replace('|', "\\|")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::properties::KeyOrigin;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        let mut p = Properties::default();
        for (k, v) in pairs {
            p.insert_at(*k, *v, KeyOrigin::Sql { line: 1, column: 1 });
        }
        p
    }

    fn message(pairs: &[(&str, &str)], scopes: &[(&str, &'static Connector)]) -> String {
        match check_keys(&props(pairs), scopes) {
            Ok(()) => panic!("{pairs:?} passed"),
            Err(e) => e.message,
        }
    }

    #[test]
    fn a_misspelt_key_names_the_connector_and_the_nearest_key() {
        let scopes = [("t", &FILE_SOURCE), ("out", &FILE_SINK)];
        assert_eq!(
            message(&[("t.formt", "jsonl")], &scopes),
            "unknown key 'formt' for file_source 't' (did you mean 'format'?)"
        );
        assert_eq!(
            message(&[("out.pth", "x.jsonl")], &scopes),
            "unknown key 'pth' for file_sink 'out' (did you mean 'path'?)"
        );
        assert_eq!(
            message(&[("t.colour", "red")], &scopes),
            "unknown key 'colour' for file_source 't'"
        );
        // A key of another connector is unknown here, even if it is a real key elsewhere.
        assert!(message(&[("out.watch", "true")], &scopes).starts_with("unknown key 'watch'"));
        let ok = props(&[
            ("t.type", "file_source"),
            ("t.path", "x.csv"),
            ("t.header", "false"),
            ("t.watermark.max_out_of_orderness", "5s"),
            ("out.path", "o.csv"),
            ("late.data.strategy", "dead_letter"),
            ("state.ttl", "1h"),
        ]);
        assert_eq!(check_keys(&ok, &scopes), Ok(()));
    }

    #[test]
    fn a_key_of_no_name_of_the_statement_suggests_the_nearest_name_or_job_key() {
        let scopes = [("trades", &FILE_SOURCE), ("out", &STDOUT)];
        assert_eq!(
            message(&[("trade.path", "x")], &scopes),
            "unknown key 'trade.path': no source or sink of the statement is named 'trade' \
             (did you mean 'trades'?)"
        );
        assert_eq!(
            message(&[("zzz.path", "x")], &scopes),
            "unknown key 'zzz.path': no source or sink of the statement is named 'zzz' \
             (its names: trades, out)"
        );
        assert_eq!(
            message(&[("late.data.strategi", "drop")], &scopes),
            "unknown key 'late.data.strategi' (did you mean 'late.data.strategy'?)"
        );
        assert!(message(&[("formt", "x")], &scopes)
            .starts_with("unknown key 'formt': a key is '<name>.<key>'"));
    }

    #[test]
    fn a_value_of_the_wrong_type_names_the_key_and_what_it_expects() {
        let scopes = [("t", &FILE_SOURCE)];
        assert_eq!(
            message(&[("t.watch", "maybe")], &scopes),
            "'t.watch' = 'maybe' for file_source 't': expected true or false"
        );
        assert_eq!(
            message(&[("t.batch.size", "lots")], &scopes),
            "'t.batch.size' = 'lots' for file_source 't': expected a whole number, at least 1"
        );
        assert_eq!(
            message(&[("state.ttl.clock", "wall")], &scopes),
            "'state.ttl.clock' = 'wall': expected event, processing, event_time or \
             processing_time"
        );
        assert_eq!(
            message(&[("late.data.allowed_lateness", "soon")], &scopes),
            "'late.data.allowed_lateness' = 'soon': expected a duration such as 5s"
        );
    }

    #[test]
    fn kafka_connectors_take_librdkafka_properties_and_refuse_unknown_ones() {
        let scopes = [("t", &KAFKA_SOURCE), ("out", &KAFKA_SINK)];
        let ok = props(&[
            ("t.session.timeout.ms", "6000"),
            ("t.heartbeat.interval.ms", "2000"),
            ("t.group.id", "g"),
            ("t.bootstrap.servers", "localhost:9092"),
            ("t.commit.interval", "0s"),
            ("out.linger.ms", "5"),
            ("out.acks", "1"),
        ]);
        assert_eq!(check_keys(&ok, &scopes), Ok(()));
        assert_eq!(
            message(&[("t.topic.nme", "x")], &scopes),
            "unknown key 'topic.nme' for kafka_source 't': neither a kafka_source key nor a \
             librdkafka property (did you mean 'topic.name'?)"
        );
        assert_eq!(
            message(&[("t.sesion.timeout.ms", "6000")], &scopes),
            "unknown key 'sesion.timeout.ms' for kafka_source 't': neither a kafka_source key \
             nor a librdkafka property (did you mean 'session.timeout.ms'?)"
        );
        let bad = message(&[("t.session.timeout.ms", "soon")], &scopes);
        assert!(
            bad.starts_with("'t.session.timeout.ms' = 'soon' for kafka_source 't': librdkafka"),
            "{bad}"
        );
        let acks = message(&[("out.acks", "most")], &scopes);
        assert!(acks.contains("librdkafka refuses it"), "{acks}");
        // A source's key on a sink is passed to librdkafka, which knows no such property.
        assert!(message(&[("out.commit.interval", "1s")], &scopes)
            .starts_with("unknown key 'commit.interval' for kafka_sink 'out'"));
    }

    #[test]
    fn a_type_names_a_connector_of_the_role() {
        assert_eq!(
            connector_for_type("t", "file_sorce", Some(Role::Source)),
            Err("unknown type 'file_sorce' for 't' (did you mean 'file_source'?)".into())
        );
        assert_eq!(
            connector_for_type("t", "kafka_sink", Some(Role::Source)),
            Err(
                "'t.type' = 'kafka_sink', but 't' is a source here: expected file_source or \
                 kafka_source"
                    .into()
            )
        );
        assert_eq!(
            connector_for_type("out", "kafka_sink", Some(Role::Sink)),
            Ok(&KAFKA_SINK)
        );
    }

    #[test]
    fn declarations_are_well_formed_and_match_the_readers_defaults() {
        for connector in CONNECTORS.iter().copied().chain([&UPSTREAM, &JOB]) {
            let mut names: Vec<&str> = connector.keys.iter().map(|k| k.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(
                before,
                names.len(),
                "{} declares a key twice",
                connector.kind
            );
            for spec in connector.keys {
                assert!(
                    !spec.doc.is_empty(),
                    "{}.{} has no doc",
                    connector.kind,
                    spec.name
                );
                if let KeyDefault::Value(v) = spec.default {
                    if spec.kind != KeyKind::Client {
                        assert_eq!(
                            spec.kind.check(v),
                            Ok(()),
                            "{}.{}",
                            connector.kind,
                            spec.name
                        );
                    }
                }
            }
        }
        let value = |spec: &KeySpec| match spec.default {
            KeyDefault::Value(v) => v.to_string(),
            other => panic!("{} has default {other:?}", spec.name),
        };
        use super::super::file_source as fs;
        use super::super::kafka::source as ks;
        assert_eq!(value(&fs::BATCH_SIZE), fs::DEFAULT_BATCH_SIZE.to_string());
        assert_eq!(value(&fs::READERS), fs::DEFAULT_READERS.to_string());
        assert_eq!(value(&ks::BATCH_SIZE), ks::DEFAULT_BATCH_SIZE.to_string());
        // The keys velo-sql's mock cluster reads for every Kafka connector.
        for connector in [&KAFKA_SOURCE, &KAFKA_SINK] {
            for key in ["type", "topic.name", "partitions"] {
                assert!(
                    connector.key(key).is_some(),
                    "{} lacks {key}",
                    connector.kind
                );
            }
        }
    }

    /// Every literal key that code reads raw (`scoped(name, "key")`, `props.get("key")`) is
    /// declared: connectors read through `Keys`, and this catches the reads that do not.
    #[test]
    fn every_key_read_raw_in_the_source_is_declared() {
        let declared = |key: &str| {
            CONNECTORS
                .iter()
                .copied()
                .chain([&UPSTREAM, &JOB])
                .any(|c| c.key(key).is_some())
        };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![root];
        let mut read = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                for entry in std::fs::read_dir(&path).expect("src dir").flatten() {
                    files.push(entry.path());
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source file");
            // Tests set and read keys of their own.
            let text = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            for (call, quote_after_comma) in [
                (".scoped(", true),
                ("props.get(", false),
                ("properties.get(", false),
            ] {
                for (at, _) in text.match_indices(call) {
                    let args = &text[at + call.len()..];
                    let args = args.split(')').next().unwrap_or_default();
                    let literal = if quote_after_comma {
                        args.split_once(',').map(|(_, k)| k.trim())
                    } else {
                        Some(args.trim())
                    };
                    if let Some(key) = literal
                        .and_then(|k| k.strip_prefix('"'))
                        .and_then(|k| k.strip_suffix('"'))
                    {
                        read.push((path.display().to_string(), key.to_string()));
                    }
                }
            }
        }
        assert!(
            read.iter().any(|(_, key)| key == "partitions"),
            "the scan finds velo-sql's reads: {read:?}"
        );
        let undeclared: Vec<_> = read.iter().filter(|(_, key)| !declared(key)).collect();
        assert!(
            undeclared.is_empty(),
            "read but not declared: {undeclared:?}"
        );
    }

    #[test]
    fn docs_config_md_is_rendered_from_the_declarations() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md");
        let rendered = render_config_md();
        if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &rendered).expect("writing docs/config.md");
            return;
        }
        let written = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            written == rendered,
            "docs/config.md differs from the key declarations: run \
             `UPDATE_DOCS=1 cargo test --lib config_md` to rewrite it"
        );
    }
}
