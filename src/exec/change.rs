//! Upsert/delete marking of output batches. An aggregate's output is an upsert stream keyed by
//! its group columns; rows that stop passing HAVING are emitted as deletes. A batch holds one
//! kind only, marked in its schema metadata, so order across kinds is kept by batch order.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;

/// Schema metadata key that marks a batch of deletes.
pub const CHANGE_KEY: &str = "velostream.change";

/// True when every row of `batch` is a delete of its key.
pub fn is_delete(batch: &RecordBatch) -> bool {
    batch
        .schema()
        .metadata()
        .get(CHANGE_KEY)
        .map(String::as_str)
        == Some("delete")
}

/// The same rows, marked as deletes.
pub fn mark_delete(batch: RecordBatch) -> RecordBatch {
    let schema = batch.schema();
    let mut metadata: HashMap<String, String> = schema.metadata().clone();
    metadata.insert(CHANGE_KEY.to_string(), "delete".to_string());
    let marked = Arc::new(Schema::new_with_metadata(schema.fields().clone(), metadata));
    let columns = batch.columns().to_vec();
    let options =
        arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    RecordBatch::try_new_with_options(marked, columns, &options).unwrap_or(batch)
}

/// `output` carrying the change kind of `input`.
pub fn keep_kind(input: &RecordBatch, output: RecordBatch) -> RecordBatch {
    if is_delete(input) {
        mark_delete(output)
    } else {
        output
    }
}

/// The rows with `_deleted = true` appended, so a delete is visible in formats without
/// tombstones.
pub fn with_deleted_flag(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = batch.schema();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("_deleted", DataType::Boolean, false));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(BooleanArray::from(vec![true; batch.num_rows()])));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
