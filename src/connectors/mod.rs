//! Sources and sinks: where records come from and where results go.

pub mod avro;
pub mod config_keys;
pub mod csv_lines;
pub mod decode;
pub mod file_sink;
pub mod file_source;
pub mod json_lines;
pub mod kafka;
pub mod part_files;
mod plain_columns;
pub mod sink;

pub use file_sink::{FileSink, StdoutSink};
pub use file_source::{BadRecord, FileFormat, FileSource, FileSourceConfig};
pub use sink::{open_sink, CommittedOutput, Sink, SinkConfig, SinkProgress};

use arrow::datatypes::Schema;

use crate::error::{Result, VeloError};

/// Checks that every column of source `name`'s `'<name>.key.field'` is one of its columns.
pub(crate) fn check_key_fields(name: &str, key_fields: &[String], schema: &Schema) -> Result<()> {
    match key_fields.iter().find(|f| schema.index_of(f).is_err()) {
        Some(missing) => Err(VeloError::Config(format!(
            "'{name}.key.field' names '{missing}', which is not a column of '{name}'"
        ))),
        None => Ok(()),
    }
}
