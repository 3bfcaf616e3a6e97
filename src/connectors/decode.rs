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

/// A chunk of records decoded with [`decode_with_fallback`].
pub struct Decoded {
    /// The records that decoded, in order.
    pub batch: RecordBatch,
    /// The chunk index of each row of `batch`.
    pub kept: Vec<usize>,
    /// The chunk index and reason of each record that did not decode.
    pub failed: Vec<(usize, String)>,
}

/// Decodes the records laid out back to back in `data` (record `i` ends at `ends[i]`) with
/// `decode(bytes, ends)`: all in one go, and if that fails or miscounts, one by one, so only
/// the bad ones drop out. A record that decodes to no row or to several fails with
/// `not_one_record` as its reason.
pub fn decode_with_fallback(
    schema: &SchemaRef,
    data: &[u8],
    ends: &[usize],
    not_one_record: &str,
    mut decode: impl FnMut(&[u8], &[usize]) -> std::result::Result<RecordBatch, String>,
) -> crate::error::Result<Decoded> {
    let n = ends.len();
    if let Ok(batch) = decode(data, ends) {
        if batch.num_rows() == n {
            return Ok(Decoded {
                batch,
                kept: (0..n).collect(),
                failed: Vec::new(),
            });
        }
    }
    let mut batches = Vec::new();
    let mut kept = Vec::new();
    let mut failed = Vec::new();
    for i in 0..n {
        let start = if i == 0 { 0 } else { ends[i - 1] };
        match decode(&data[start..ends[i]], &[ends[i] - start]) {
            Ok(b) if b.num_rows() == 1 => {
                kept.push(i);
                batches.push(b);
            }
            Ok(_) => failed.push((i, not_one_record.to_string())),
            Err(reason) => failed.push((i, reason)),
        }
    }
    Ok(Decoded {
        batch: concat_batches(schema, &batches)?,
        kept,
        failed,
    })
}
