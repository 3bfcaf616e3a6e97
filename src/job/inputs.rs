//! A job's inputs: which file, topic or earlier statement each source a query reads comes
//! from, and what it can be in a join (a stream, or a table).

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;

use super::JobOptions;
use crate::connectors::file_source::{FileSource, FileSourceConfig};
use crate::connectors::kafka::{KafkaDefaults, KafkaSourceConfig};
use crate::connectors::SinkConfig;
use crate::error::{Result, VeloError};
use crate::sql::script::Statement;
use crate::sql::{Properties, QueryPlanner, SourceRole};

/// Where a job's input comes from.
#[derive(Debug, Clone)]
pub(super) enum JobInput {
    File(FileSourceConfig),
    Kafka(KafkaSourceConfig),
    /// The output of an earlier statement of the script, kept in memory.
    Upstream(String),
}

impl JobInput {
    /// One line for logs.
    pub(super) fn describe(&self) -> String {
        match self {
            JobInput::File(c) => format!("file {}", c.path),
            JobInput::Kafka(c) => format!("kafka topic {}", c.topic),
            JobInput::Upstream(name) => format!("output of {name}"),
        }
    }
}

/// A source declared with CREATE STREAM or CREATE TABLE.
#[derive(Debug, Clone)]
pub(super) struct Declared {
    /// Its columns (None: the format carries them).
    pub schema: Option<SchemaRef>,
    pub properties: Properties,
    /// Some(primary key) for a table.
    pub table: Option<Vec<String>>,
}

/// An earlier statement's output, which later statements may read.
#[derive(Debug, Clone)]
pub(super) struct Upstream {
    pub schema: SchemaRef,
    pub sink: Option<SinkConfig>,
    /// Some(key columns) for CREATE TABLE AS: its output is an upsert log of a table.
    pub table: Option<Vec<String>>,
}

/// Finds where `source` comes from and registers it with the planner, with its role in joins.
pub(super) fn resolve_input(
    source: &str,
    stmt: &Statement,
    declared: &BTreeMap<String, Declared>,
    upstream: &BTreeMap<String, Upstream>,
    options: &JobOptions,
    planner: &mut QueryPlanner,
) -> Result<JobInput> {
    let (input, schema, role) = match upstream.get(source) {
        Some(up) if !options.serve => {
            let role = match &up.table {
                Some(key) => SourceRole::Table {
                    primary_key: key.clone(),
                },
                None => SourceRole::Bounded,
            };
            (
                JobInput::Upstream(source.to_string()),
                up.schema.clone(),
                role,
            )
        }
        Some(up) => {
            let config = upstream_topic(source, &up.schema, up.sink.as_ref())?;
            let role = match &up.table {
                Some(key) => SourceRole::Table {
                    primary_key: key.clone(),
                },
                None => SourceRole::Stream,
            };
            (JobInput::Kafka(config), up.schema.clone(), role)
        }
        None => {
            let declaration = declared.get(source);
            let (input, schema) = external_input(source, stmt, declaration, options)?;
            let role = match (declaration.and_then(|d| d.table.clone()), &input) {
                // A topic's table is keyed by its message key: a tombstone names only that.
                (Some(_), JobInput::Kafka(_)) => SourceRole::Table {
                    primary_key: vec!["_key".to_string()],
                },
                (Some(primary_key), _) => SourceRole::Table { primary_key },
                (None, JobInput::File(config)) if !config.watch => SourceRole::Bounded,
                (None, _) => SourceRole::Stream,
            };
            (input, schema, role)
        }
    };
    planner.register_source_as(source, schema, role)?;
    Ok(input)
}

/// Reading an earlier statement's output in a long-lived app: from its Kafka topic.
fn upstream_topic(
    source: &str,
    schema: &SchemaRef,
    sink: Option<&SinkConfig>,
) -> Result<KafkaSourceConfig> {
    let Some(SinkConfig::Kafka {
        topic,
        client,
        avro,
        key_fields,
        transactional_id,
        ..
    }) = sink
    else {
        return Err(VeloError::Config(format!(
            "'{source}' writes to no Kafka topic, so a later statement cannot read it in a \
             running app: give it '{source}.type' = 'kafka_sink'"
        )));
    };
    let mut props = Properties::default();
    props.insert(format!("{source}.topic.name"), topic.clone());
    for (k, v) in client {
        if k == "bootstrap.servers" || k.starts_with("security.") || k.starts_with("sasl.") {
            props.insert(format!("{source}.{k}"), v.clone());
        }
    }
    if transactional_id.is_some() {
        // Only committed transactions: every result once.
        props.insert(
            format!("{source}.isolation.level"),
            "read_committed".to_string(),
        );
    }
    let mut config = KafkaSourceConfig::from_properties(
        source,
        &props,
        Some(schema.clone()),
        &KafkaDefaults::default(),
    )?;
    // Read the earlier statement's output in the format it writes.
    config.avro = avro.clone();
    // Its messages are keyed by these columns (when they all exist; the sink skips missing
    // ones), so the topic is partitioned by them.
    if key_fields.iter().all(|f| schema.index_of(f).is_ok()) {
        config.key_fields = key_fields.clone();
    }
    Ok(config)
}

/// The input of a query over `source`, a file or topic (not an earlier statement): its
/// settings come from its WITH keys (from the query or its declaration) or a
/// `--source NAME=PATH` binding, and its columns are registered with the planner.
fn external_input(
    source: &str,
    stmt: &Statement,
    declared: Option<&Declared>,
    options: &JobOptions,
) -> Result<(JobInput, SchemaRef)> {
    let mut props = stmt.properties.clone();
    let mut schema = None;
    if let Some(d) = declared {
        props.merge_missing(&d.properties);
        schema = d.schema.clone();
    }
    if let Some(path) = options.source_paths.get(source) {
        props.insert(format!("{source}.path"), path.clone());
        if props.scoped(source, "type").is_none() {
            props.insert(format!("{source}.type"), "file_source");
        }
    }
    match props.scoped(source, "type").as_deref() {
        Some("file_source") | None if props.scoped(source, "path").is_some() => {
            let mut config = FileSourceConfig::from_properties(source, &props, schema)?;
            let file = FileSource::open(config.clone())?;
            // The job reads with the schema the query was planned on, not a second inference.
            config.schema = Some(file.schema().clone());
            Ok((JobInput::File(config), file.schema().clone()))
        }
        // A table is read to its end before the stream starts, so even a batch run can.
        Some("kafka_source") if options.serve || declared.is_some_and(|d| d.table.is_some()) => {
            let config =
                KafkaSourceConfig::from_properties(source, &props, schema, &options.kafka)?;
            let schema = config.schema.clone();
            Ok((JobInput::Kafka(config), schema))
        }
        Some("kafka_source") => Err(VeloError::Config(format!(
            "source '{source}' is a Kafka topic, which never ends: run the app with \
             velo-sql deploy-app instead of velo-sql-batch"
        ))),
        Some(other) if other != "file_source" => Err(VeloError::Config(format!(
            "source '{source}' has type '{other}': expected file_source or kafka_source"
        ))),
        _ => Err(VeloError::Config(format!(
            "unknown source '{source}': declare it with WITH ('{source}.type' = 'file_source', '{source}.path' = ...) \
             or bind it with --source {source}=PATH"
        ))),
    }
}
