//! Decoding a [`Block`] of records into batches: a pure function of the block, so any thread
//! may run it. A block's records are split (skipping blank lines), taken `batch_size` at a
//! time and decoded in one go each; a batch that fails is decoded record by record, so only
//! the bad records drop out, reported with their `file:line`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use memchr::{memchr, memchr2_iter, memchr_iter};

use super::blocks::Block;
use super::plain_csv::{plain_bytes, PlainCsv};
use super::{BadRecord, FileFormat, FileSourceConfig, OnError, SourceBatch};
use crate::connectors::decode::{decode_json, decode_with_fallback};
use crate::error::{Result, VeloError};
use crate::exec::event_time::{constant_millis, to_epoch_millis, EventTimeFormat};
use crate::exec::input::now_millis;

/// What a file source's blocks decode into, and how.
#[derive(Debug, Clone)]
pub struct BlockDecoder {
    source: String,
    format: FileFormat,
    /// The files' full data schema.
    pub(super) schema: SchemaRef,
    /// The data columns decoded.
    projection: SchemaRef,
    /// System columns added after the data columns.
    system_columns: Vec<String>,
    event_time_field: Option<String>,
    event_time_format: Option<EventTimeFormat>,
    on_error: OnError,
    batch_size: usize,
    /// The fast path for plain CSV, when the format and the decoded columns allow it.
    plain: Option<PlainCsv>,
}

/// The records of a block: where each starts and ends, and the line it starts on.
#[derive(Debug, Default)]
struct Records {
    starts: Vec<usize>,
    ends: Vec<usize>,
    lines: Vec<u64>,
}

impl BlockDecoder {
    /// Decodes `config`'s files of `schema`, every data column and no system column.
    pub(super) fn new(config: &FileSourceConfig, schema: SchemaRef) -> Self {
        let mut decoder = BlockDecoder {
            source: config.name.clone(),
            format: config.format.clone(),
            projection: Arc::clone(&schema),
            schema,
            system_columns: Vec::new(),
            event_time_field: config.event_time_field.clone(),
            event_time_format: config.event_time_format.clone(),
            on_error: config.on_error.clone(),
            batch_size: config.batch_size,
            plain: None,
        };
        decoder.set_projection(Arc::clone(&decoder.schema), Vec::new());
        decoder
    }

    /// Decodes only the `projection` data columns, then adds `system_columns`.
    pub(super) fn set_projection(&mut self, projection: SchemaRef, system_columns: Vec<String>) {
        self.plain = match self.format {
            FileFormat::Csv { delimiter, .. } => {
                PlainCsv::new(&self.schema, &projection, delimiter)
            }
            _ => None,
        };
        self.projection = projection;
        self.system_columns = system_columns;
    }

    /// Decodes `block` into batches of at most `batch_size` rows, in record order.
    pub fn decode(&self, block: &Block) -> Result<Vec<SourceBatch>> {
        let quoted = matches!(self.format, FileFormat::Csv { .. });
        let (batches, split_quote) = self.decode_records(block, quoted)?;
        if !split_quote {
            return Ok(batches);
        }
        // A record that spans lines did not decode: the quote that joined them was likely a
        // stray one, so the block is read again with each line a record of its own.
        Ok(self.decode_records(block, false)?.0)
    }

    /// Decodes the block's records (`quoted`: newlines inside quotes do not end one); true
    /// beside the batches when a record of several lines failed.
    fn decode_records(&self, block: &Block, quoted: bool) -> Result<(Vec<SourceBatch>, bool)> {
        // Whether the plain CSV path may read the block, or its chunks: one scan per block.
        let plain = self.plain.is_some() && plain_bytes(&block.data);
        if let Some(batches) = self.decode_plain_block(block, plain)? {
            return Ok((batches, false));
        }
        let records = split_records(&block.data, quoted, block.first_line);
        let mut out = Vec::with_capacity(records.ends.len() / self.batch_size.max(1) + 1);
        let mut split_quote = false;
        let mut scratch = Vec::new();
        let mut from = 0;
        while from < records.ends.len() {
            let to = (from + self.batch_size).min(records.ends.len());
            let (data, ends) = records.chunk(&block.data, from, to, &mut scratch);
            let lines = &records.lines[from..to];
            let (batch, bad) = self.decode_chunk(block, data, &ends, lines, plain)?;
            split_quote |= quoted && bad.iter().any(|b| b.raw.contains('\n'));
            if let (OnError::Fail, Some(b)) = (&self.on_error, bad.first()) {
                if !split_quote {
                    return Err(VeloError::BadRecord {
                        location: b.location.clone(),
                        reason: b.reason.clone(),
                    });
                }
            }
            out.push(SourceBatch {
                batch,
                file: block.file,
                bad_records: bad,
                bytes: if from == 0 { block.bytes } else { 0 },
            });
            from = to;
        }
        if out.is_empty() {
            out.push(SourceBatch {
                batch: RecordBatch::new_empty(self.output_schema()),
                file: block.file,
                bad_records: Vec::new(),
                bytes: block.bytes,
            });
        }
        Ok((out, split_quote))
    }

    /// Decodes a block of plain CSV (`plain`: it has [`plain_bytes`]) in one pass, without
    /// splitting it into records first; None when the block is not all plain records.
    fn decode_plain_block(&self, block: &Block, plain: bool) -> Result<Option<Vec<SourceBatch>>> {
        let Some(batches) = self
            .plain
            .as_ref()
            .filter(|_| plain)
            .and_then(|p| p.decode_block(&block.data, self.batch_size))
        else {
            return Ok(None);
        };
        // No quotes and no blank lines: record `i` is on line `first_line + i`.
        let mut line = block.first_line;
        let mut out = Vec::with_capacity(batches.len());
        for (i, batch) in batches.into_iter().enumerate() {
            let rows = batch.num_rows() as u64;
            let lines: Vec<u64> = match self.system_columns.is_empty() {
                true => Vec::new(),
                false => (line..line + rows).collect(),
            };
            line += rows;
            out.push(SourceBatch {
                batch: self.add_system_columns(batch, &lines, block)?,
                file: block.file,
                bad_records: Vec::new(),
                bytes: if i == 0 { block.bytes } else { 0 },
            });
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// Decodes one chunk of records (`data`, record `i` ending at `ends[i]`, starting on line
    /// `lines[i]`; `plain`: its block has [`plain_bytes`]) into a batch with its system
    /// columns, and its bad records.
    fn decode_chunk(
        &self,
        block: &Block,
        data: &[u8],
        ends: &[usize],
        lines: &[u64],
        plain: bool,
    ) -> Result<(RecordBatch, Vec<BadRecord>)> {
        let decoded =
            decode_with_fallback(&self.projection, data, ends, "not a record", |d, e| {
                self.decode_bytes(d, e.len(), plain)
            })?;
        let bad = decoded
            .failed
            .into_iter()
            .map(|(i, reason)| {
                let location = match self.format {
                    FileFormat::Json => format!("{}:[{}]", block.path.display(), lines[i] - 1),
                    _ => format!("{}:{}", block.path.display(), lines[i]),
                };
                let start = if i == 0 { 0 } else { ends[i - 1] };
                let raw = String::from_utf8_lossy(&data[start..ends[i]])
                    .trim_end()
                    .to_string();
                tracing::warn!(source = %self.source, %location, %reason, "skipping bad record");
                BadRecord {
                    location,
                    reason,
                    raw,
                }
            })
            .collect();
        let lines_ok: Vec<u64> = decoded.kept.iter().map(|&i| lines[i]).collect();
        let batch = self.add_system_columns(decoded.batch, &lines_ok, block)?;
        Ok((batch, bad))
    }

    /// Decodes newline-separated records (`rows` of them) into one batch; `plain`: `data` has
    /// [`plain_bytes`].
    fn decode_bytes(
        &self,
        data: &[u8],
        rows: usize,
        plain: bool,
    ) -> std::result::Result<RecordBatch, String> {
        let FileFormat::Csv { delimiter, .. } = &self.format else {
            return decode_json(&self.projection, data, rows);
        };
        let fast = self.plain.as_ref().filter(|_| plain);
        if let Some(batch) = fast.and_then(|p| p.decode(data, rows)) {
            return Ok(batch);
        }
        let projection: Vec<usize> = self
            .projection
            .fields()
            .iter()
            .filter_map(|f| self.schema.index_of(f.name()).ok())
            .collect();
        let mut decoder = arrow::csv::ReaderBuilder::new(Arc::clone(&self.schema))
            .with_header(false)
            .with_delimiter(*delimiter)
            .with_batch_size(rows.max(1))
            .with_projection(projection)
            .build_decoder();
        let mut batches = Vec::new();
        let mut offset = 0;
        loop {
            let read = decoder.decode(&data[offset..]).map_err(|e| e.to_string())?;
            offset += read;
            let done = read == 0 || offset >= data.len();
            if done {
                // The end of input completes a last record without its newline.
                decoder.decode(&[]).map_err(|e| e.to_string())?;
            }
            if let Some(b) = decoder.flush().map_err(|e| e.to_string())? {
                batches.push(b);
            }
            if done {
                break;
            }
        }
        match batches.len() {
            1 => Ok(batches.remove(0)),
            _ => concat_batches(&self.projection, &batches).map_err(|e| e.to_string()),
        }
    }

    /// Schema of the batches: the decoded data columns, then the system columns.
    pub fn output_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .projection
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for name in &self.system_columns {
            let t = crate::sql::planner::SYSTEM_COLUMNS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .unwrap_or(DataType::Utf8);
            fields.push(Field::new(name, t, true));
        }
        Arc::new(Schema::new(fields))
    }

    fn add_system_columns(
        &self,
        batch: RecordBatch,
        lines: &[u64],
        block: &Block,
    ) -> Result<RecordBatch> {
        if self.system_columns.is_empty() {
            return Ok(batch);
        }
        let n = batch.num_rows();
        let now = now_millis();
        let mut columns = batch.columns().to_vec();
        for name in &self.system_columns {
            let col: ArrayRef = match name.as_str() {
                "_offset" => Arc::new(Int64Array::from_iter_values(
                    lines.iter().map(|l| *l as i64),
                )),
                "_partition" => Arc::new(Int32Array::from_value(block.file as i32, n)),
                "_topic" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    block.path.display().to_string(),
                    n,
                ))),
                "_event_time" => match &self.event_time_field {
                    Some(field) => {
                        // set_projection always decodes the event-time field.
                        let array = batch.column_by_name(field).cloned().ok_or_else(|| {
                            VeloError::Config(format!(
                                "event-time field '{field}' is not a column of source '{}'",
                                self.source
                            ))
                        })?;
                        let millis = to_epoch_millis(&array, self.event_time_format.as_ref())?;
                        let filled: Int64Array =
                            millis.iter().map(|v| Some(v.unwrap_or(now))).collect();
                        Arc::new(filled)
                    }
                    None => constant_millis(now, n),
                },
                "_timestamp" => constant_millis(now, n),
                _ => arrow::array::new_null_array(&DataType::Utf8, n),
            };
            columns.push(col);
        }
        Ok(RecordBatch::try_new(self.output_schema(), columns)?)
    }
}

impl Records {
    /// Records `from..to` as one run of bytes and the end of each in it: a slice of `data`
    /// when they lie back to back, else a copy in `scratch` without the blank lines between.
    fn chunk<'a>(
        &self,
        data: &'a [u8],
        from: usize,
        to: usize,
        scratch: &'a mut Vec<u8>,
    ) -> (&'a [u8], Vec<usize>) {
        let base = self.starts[from];
        let adjacent = (from + 1..to).all(|i| self.starts[i] == self.ends[i - 1]);
        if adjacent {
            let ends = self.ends[from..to].iter().map(|e| e - base).collect();
            return (&data[base..self.ends[to - 1]], ends);
        }
        scratch.clear();
        let mut ends = Vec::with_capacity(to - from);
        for i in from..to {
            scratch.extend_from_slice(&data[self.starts[i]..self.ends[i]]);
            ends.push(scratch.len());
        }
        (scratch.as_slice(), ends)
    }
}

/// Splits `data` (whole records, the first starting on line `first_line`) into records;
/// a line of only whitespace is no record. With `quoted`, a newline inside double quotes
/// does not end a record.
fn split_records(data: &[u8], quoted: bool, first_line: u64) -> Records {
    let mut records = Records::default();
    let mut start = 0;
    let mut line = first_line;
    let mut push = |start: usize, end: usize, line: u64| {
        let blank = data[start..end].iter().all(u8::is_ascii_whitespace);
        if !blank {
            records.starts.push(start);
            records.ends.push(end);
            records.lines.push(line);
        }
    };
    if !quoted || memchr(b'"', data).is_none() {
        for i in memchr_iter(b'\n', data) {
            push(start, i + 1, line);
            line += 1;
            start = i + 1;
        }
    } else {
        let mut in_quotes = false;
        let mut newlines = 0;
        for i in memchr2_iter(b'"', b'\n', data) {
            if data[i] == b'"' {
                in_quotes = !in_quotes;
                continue;
            }
            newlines += 1;
            if !in_quotes {
                push(start, i + 1, line);
                line += newlines;
                newlines = 0;
                start = i + 1;
            }
        }
    }
    if start < data.len() {
        push(start, data.len(), line);
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_skip_blank_lines_and_keep_their_line_numbers() {
        let r = split_records(b"a\n\n  \nb\n", false, 5);
        assert_eq!(r.lines, vec![5, 8]);
        assert_eq!(r.starts, vec![0, 6]);
        assert_eq!(r.ends, vec![2, 8]);
    }

    #[test]
    fn a_quoted_record_spans_lines_and_the_next_starts_after_them() {
        let r = split_records(b"1,\"x\ny\"\n2,z\n", true, 1);
        assert_eq!(r.lines, vec![1, 3]);
        assert_eq!(r.ends, vec![8, 12]);
    }
}
