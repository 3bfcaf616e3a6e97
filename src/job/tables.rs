//! The tables a job joins: where each comes from, and reading each whole, before the stream
//! starts, so that no result depends on how fast a table loaded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::record_batch::RecordBatch;

use super::inputs::{Declared, JobInput, Upstream};
use super::output::{lock, record_bad, DeadLetterFile};
use super::JobSummary;
use crate::connectors::file_source::FileSource;
use crate::connectors::kafka::KafkaSource;
use crate::error::{Result, VeloError};
use crate::exec::join::{latest_per_key, LookupTable};
use crate::sql::PlannedQuery;

/// How long reading a table's topic to its end may take.
const TABLE_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where one table of a job comes from.
#[derive(Debug, Clone)]
pub(super) struct TableSource {
    input: JobInput,
    /// The latest row of each key wins (empty: every row counts).
    primary_key: Vec<String>,
}

/// The source of each table `plan` joins, from the inputs its statement resolved.
pub(super) fn table_inputs(
    plan: &PlannedQuery,
    inputs: &BTreeMap<String, JobInput>,
    declared: &BTreeMap<String, Declared>,
    upstream: &BTreeMap<String, Upstream>,
) -> Result<Vec<TableSource>> {
    plan.tables
        .iter()
        .map(|table| {
            let name = &table.plan.source;
            let input = inputs.get(name).cloned().ok_or_else(|| {
                VeloError::Execution(format!("the table '{name}' was not resolved"))
            })?;
            match &input {
                JobInput::Kafka(_) if declared.get(name).is_none_or(|d| d.table.is_none()) => {
                    return Err(VeloError::Config(format!(
                        "'{name}' is a Kafka topic joined as a table: declare it with CREATE \
                         TABLE, so that it is read as an upsert log keyed by the message key"
                    )))
                }
                JobInput::File(config) if config.watch => {
                    return Err(VeloError::Config(format!(
                        "'{name}' is joined as a table, which is read whole before the stream \
                         starts, so it cannot be followed: remove '{name}.watch'"
                    )))
                }
                _ => {}
            }
            let primary_key = match &input {
                JobInput::Kafka(_) => vec!["_key".to_string()],
                _ => declared
                    .get(name)
                    .and_then(|d| d.table.clone())
                    .or_else(|| upstream.get(name).and_then(|u| u.table.clone()))
                    .unwrap_or_default(),
            };
            Ok(TableSource { input, primary_key })
        })
        .collect()
}

/// Reads every table of `plan` whole, through its side of the join, and indexes it by the
/// join key. Bad records count in `summary` and go to the dead-letter file, as the stream's do.
pub(super) fn load_tables(
    plan: &PlannedQuery,
    sources: &[TableSource],
    outputs: &BTreeMap<String, Vec<RecordBatch>>,
    summary: &mut JobSummary,
    dead_letter: &Mutex<DeadLetterFile>,
) -> Result<Vec<Arc<LookupTable>>> {
    let mut tables = Vec::with_capacity(sources.len());
    for (table, source) in plan.tables.iter().zip(sources) {
        let started = Instant::now();
        let name = &table.plan.source;
        let raw = match &source.input {
            JobInput::File(config) => {
                let mut file = FileSource::open(config.clone())?;
                file.set_projection(&table.plan.input_schema);
                if let Some(p) = &config.dead_letter_path {
                    lock(dead_letter).open(p)?;
                }
                let mut batches = Vec::new();
                while let Some(chunk) = file.next_batch()? {
                    record_bad(summary, dead_letter, &config.name, chunk.bad_records)?;
                    if chunk.batch.num_rows() > 0 {
                        batches.push(chunk.batch);
                    }
                }
                batches
            }
            JobInput::Upstream(statement) => outputs.get(statement).cloned().unwrap_or_default(),
            JobInput::Kafka(config) => {
                let mut topic = KafkaSource::open_table(config.clone())?;
                topic.set_projection(&table.plan.input_schema);
                let log = topic.read_to_end(TABLE_READ_TIMEOUT)?;
                record_bad(summary, dead_letter, &config.name, log.bad_records)?;
                log.batches
            }
        };
        let schema = raw
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| Arc::clone(&table.plan.input_schema));
        // A temporal join meets every version; otherwise the latest row of a key wins.
        let key = match table.version {
            Some(_) => &[][..],
            None => &source.primary_key[..],
        };
        let lookup = LookupTable::load(table, latest_per_key(&schema, &raw, key)?)?;
        tracing::info!(
            job = %plan.id,
            table = %name,
            rows = lookup.len(),
            seconds = started.elapsed().as_secs_f64(),
            "table loaded"
        );
        tables.push(Arc::new(lookup));
    }
    Ok(tables)
}
