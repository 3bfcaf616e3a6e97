//! `StreamRecord`: one record with typed named fields and its stream metadata, and its
//! conversion to and from Arrow batches.

use std::sync::Arc;

use arrow::array::ArrayRef;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::scalar::ScalarValue;

use super::change::{is_delete, mark_delete};
use crate::error::Result;

/// One record of a stream: named typed values plus where and when it came from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamRecord {
    /// Field values by name, in schema order.
    pub fields: Vec<(String, ScalarValue)>,
    /// Record time (ms since the epoch): Kafka message time or ingestion time.
    pub timestamp: i64,
    /// Event time (ms), when the source defines one.
    pub event_time: Option<i64>,
    /// Position in its partition (Kafka offset, or record number in a file).
    pub offset: i64,
    /// Source partition.
    pub partition: i32,
    /// Source topic (or file).
    pub topic: Option<String>,
    /// Message key.
    pub key: Option<String>,
    /// Message headers.
    pub headers: Vec<(String, String)>,
    /// True for a delete of this row's key in an upsert stream.
    pub deleted: bool,
}

impl StreamRecord {
    /// A record with the given fields and default metadata.
    pub fn new(fields: Vec<(String, ScalarValue)>) -> Self {
        StreamRecord {
            fields,
            ..Default::default()
        }
    }

    /// The value of a field by name.
    pub fn get(&self, name: &str) -> Option<&ScalarValue> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The value for `name`: a data field, or the metadata behind a system column.
    fn column_value(&self, field: &Field) -> Result<ScalarValue> {
        let value = match field.name().as_str() {
            "_timestamp" => ScalarValue::Int64(Some(self.timestamp)),
            "_event_time" => ScalarValue::Int64(Some(self.event_time.unwrap_or(self.timestamp))),
            "_offset" => ScalarValue::Int64(Some(self.offset)),
            "_partition" => ScalarValue::Int32(Some(self.partition)),
            "_topic" => ScalarValue::Utf8(self.topic.clone()),
            "_key" => ScalarValue::Utf8(self.key.clone()),
            name => match self.get(name) {
                Some(v) if v.data_type() == *field.data_type() => v.clone(),
                Some(v) => v.cast_to(field.data_type())?,
                None => ScalarValue::try_from(field.data_type())?,
            },
        };
        Ok(value)
    }
}

/// Builds a batch of `schema` from records (fields by name; system columns from metadata).
pub fn records_to_batch(records: &[StreamRecord], schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let values = records
                .iter()
                .map(|r| r.column_value(f))
                .collect::<Result<Vec<_>>>()?;
            if values.is_empty() {
                return Ok(arrow::array::new_empty_array(f.data_type()));
            }
            Ok(ScalarValue::iter_to_array(values)?)
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(records.len()));
    let batch = RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)?;
    Ok(if records.first().is_some_and(|r| r.deleted) {
        mark_delete(batch)
    } else {
        batch
    })
}

/// Splits a batch into records; metadata is copied from `template` (the input record).
pub fn batch_to_records(batch: &RecordBatch, template: &StreamRecord) -> Result<Vec<StreamRecord>> {
    let schema: &Schema = &batch.schema();
    let deleted = is_delete(batch);
    (0..batch.num_rows())
        .map(|row| {
            let fields = schema
                .fields()
                .iter()
                .zip(batch.columns())
                .map(|(f, c)| Ok((f.name().clone(), ScalarValue::try_from_array(c, row)?)))
                .collect::<Result<Vec<_>>>()?;
            Ok(StreamRecord {
                fields,
                deleted,
                ..template.clone()
            })
        })
        .collect()
}
