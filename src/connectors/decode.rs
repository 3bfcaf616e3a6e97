//! Decoding of JSON records into Arrow batches, shared by the file and Kafka sources.

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

/// Decodes `rows` whitespace-separated JSON objects from `data` into one batch of `schema`
/// (fields missing from a record are NULL; fields not in the schema are ignored). The error is
/// the decoder's reason, for a bad-record report.
pub fn decode_json(
    schema: &SchemaRef,
    data: &[u8],
    rows: usize,
) -> std::result::Result<RecordBatch, String> {
    let mut decoder = arrow::json::ReaderBuilder::new(SchemaRef::clone(schema))
        .with_batch_size(rows.max(1))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    let mut batches = Vec::new();
    let mut offset = 0;
    loop {
        let read = decoder.decode(&data[offset..]).map_err(|e| e.to_string())?;
        offset += read;
        if let Some(b) = decoder.flush().map_err(|e| e.to_string())? {
            batches.push(b);
        }
        if read == 0 || offset >= data.len() {
            break;
        }
    }
    match batches.len() {
        1 => Ok(batches.remove(0)),
        _ => concat_batches(schema, &batches).map_err(|e| e.to_string()),
    }
}
