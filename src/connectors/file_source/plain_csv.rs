//! A fast path for plain CSV: no quotes, no carriage returns, and only BIGINT, DOUBLE and
//! VARCHAR columns read. It parses each field straight into its column, where arrow-csv first
//! copies every field of a record into a buffer of its own. A chunk with anything outside
//! that plain subset (a quote, a field that is not a plain number, a short or long record)
//! goes to arrow-csv instead, whose semantics and errors stay the reference; the test below
//! checks that both read the same rows the same way.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBufferBuilder, PrimitiveArray, StringArray};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Float64Type, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use memchr::memchr2;

use super::field_starts::field_starts;
use super::plain_numbers::{plain_float, plain_int};
use crate::connectors::plain_columns::{wide_window, WIDE};

/// A column's type, of those the plain path reads.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Int64,
    Float64,
    Utf8,
}

/// The plain-CSV reader of one file layout and projection.
#[derive(Debug, Clone)]
pub(super) struct PlainCsv {
    delimiter: u8,
    /// For each column of the file: its place among the decoded columns and its type, or
    /// None when it is not decoded.
    columns: Vec<Option<(usize, Kind)>>,
    projection: SchemaRef,
}

impl PlainCsv {
    /// The plain reader of `schema`'s files decoded to `projection`, if every decoded column
    /// is one it reads.
    pub(super) fn new(schema: &Schema, projection: &SchemaRef, delimiter: u8) -> Option<Self> {
        let special = [b'"', b'\n', b'\r'];
        // A delimiter beyond ASCII could be the middle of a character.
        if special.contains(&delimiter) || !delimiter.is_ascii() || schema.fields().is_empty() {
            return None;
        }
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let slot = match projection.index_of(field.name()) {
                Ok(slot) => Some((
                    slot,
                    match field.data_type() {
                        DataType::Int64 => Kind::Int64,
                        DataType::Float64 => Kind::Float64,
                        DataType::Utf8 => Kind::Utf8,
                        _ => return None,
                    },
                )),
                Err(_) => None,
            };
            columns.push(slot);
        }
        Some(PlainCsv {
            delimiter,
            columns,
            projection: Arc::clone(projection),
        })
    }

    /// Decodes `rows` records, each ending with a newline, laid back to back in `data`, which
    /// has [`plain_bytes`]; None when they are not plain CSV of this layout.
    pub(super) fn decode(&self, data: &[u8], rows: usize) -> Option<RecordBatch> {
        let text = std::str::from_utf8(data).ok()?;
        let (batch, read) = self.read(text, 0, rows)?;
        (read == data.len()).then_some(batch)
    }

    /// Decodes a whole block (records each ending with a newline, with [`plain_bytes`]) into
    /// batches of `batch_size` records; None when any record is not plain, or is blank (a
    /// blank line is no record, which the general path knows).
    pub(super) fn decode_block(&self, data: &[u8], batch_size: usize) -> Option<Vec<RecordBatch>> {
        let text = std::str::from_utf8(data).ok()?;
        let mut batches = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let (batch, read) = self.read(text, at, batch_size.max(1))?;
            batches.push(batch);
            at = read;
        }
        Some(batches)
    }

    /// Reads up to `rows` records of `text` from byte `at`: the batch, and where the next
    /// record starts. None when a record is not plain.
    ///
    /// It finds where every field starts first ([`field_starts`]), then parses one column
    /// at a time: each column is a tight loop of one type, with no per-field dispatch.
    fn read(&self, text: &str, at: usize, rows: usize) -> Option<(RecordBatch, usize)> {
        let data = text.as_bytes();
        let fields = self.columns.len();
        if rows == 0 {
            return None;
        }
        let starts = field_starts(data, at, self.delimiter, fields, rows)?;
        let read = (starts.len() - 1) / fields;
        let next = *starts.last()?;
        // Field `f`'s spans, record by record: from its start to the separator that ends it.
        // (`starts` has `read * fields + 1` entries.)
        let starts = starts.as_slice();
        let spans = |f: usize| {
            (0..read).map(move |r| {
                let i = r * fields + f;
                (starts[i], starts[i + 1] - 1)
            })
        };
        let blank = |(s, e): (usize, usize)| {
            data.get(s..e)
                .is_some_and(|f| f.iter().all(u8::is_ascii_whitespace))
        };
        if fields == 1 && spans(0).any(blank) {
            return None;
        }
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.projection.fields().len()];
        for (f, decoded) in self.columns.iter().enumerate() {
            let Some((slot, kind)) = decoded else {
                continue;
            };
            // arrow-csv reads an empty field as NULL, whatever the type.
            let array: ArrayRef = match kind {
                Kind::Int64 => primitive_column::<Int64Type>(data, spans(f), read, plain_int)?,
                Kind::Float64 => {
                    primitive_column::<Float64Type>(data, spans(f), read, plain_float)?
                }
                Kind::Utf8 => string_column(data, spans(f), read)?,
            };
            columns[*slot] = Some(array);
        }
        let columns = columns.into_iter().collect::<Option<Vec<_>>>()?;
        let batch = RecordBatch::try_new(Arc::clone(&self.projection), columns);
        Some((batch.ok()?, next))
    }
}

/// The validity of a column's values, kept only once one is NULL: most columns have none.
struct Validity {
    rows: usize,
    bits: Option<BooleanBufferBuilder>,
}

impl Validity {
    fn new(rows: usize) -> Self {
        Validity { rows, bits: None }
    }

    /// Notes value `row`, the next one: NULL when `null`.
    #[inline(always)]
    fn push(&mut self, row: usize, null: bool) {
        match &mut self.bits {
            Some(bits) => bits.append(!null),
            None if null => self.first_null(row),
            None => {}
        }
    }

    /// Notes value `row`, the first NULL: the values before it were all valid.
    #[cold]
    fn first_null(&mut self, row: usize) {
        let mut bits = BooleanBufferBuilder::new(self.rows);
        bits.append_n(row, true);
        bits.append(false);
        self.bits = Some(bits);
    }

    fn finish(self) -> Option<NullBuffer> {
        self.bits.map(|mut bits| NullBuffer::new(bits.finish()))
    }
}

/// A column of `rows` numbers, the `spans` of `data` parsed by `parse` (an empty one is
/// NULL); None when one is not plain.
fn primitive_column<T: ArrowPrimitiveType>(
    data: &[u8],
    spans: impl Iterator<Item = (usize, usize)>,
    rows: usize,
    parse: impl Fn(&[u8], usize, usize) -> Option<T::Native>,
) -> Option<ArrayRef> {
    let mut values = Vec::with_capacity(rows);
    let mut validity = Validity::new(rows);
    let mut plain = true;
    // Extending from the spans, whose count is known, writes the values with no capacity
    // check and no zeroing first. A value that is not plain is noted, not returned at.
    values.extend(spans.enumerate().map(|(row, (start, end))| {
        let null = start == end;
        validity.push(row, null);
        match null {
            true => T::Native::default(),
            false => parse(data, start, end).unwrap_or_else(|| {
                plain = false;
                T::Native::default()
            }),
        }
    }));
    if !plain {
        return None;
    }
    Some(Arc::new(PrimitiveArray::<T>::new(
        ScalarBuffer::from(values),
        validity.finish(),
    )))
}

/// A column of `rows` strings, the `spans` of `data` (an empty one is NULL), copied into one
/// buffer. A value of up to [`WIDE`] bytes is copied as a fixed [`WIDE`] bytes, running past
/// its end into room kept for that: a call to `memcpy` per value costs more than the copy.
/// `data` is UTF-8, and every span lies between ASCII separators, so each is UTF-8 too.
fn string_column(
    data: &[u8],
    spans: impl Iterator<Item = (usize, usize)> + Clone,
    rows: usize,
) -> Option<ArrayRef> {
    let bytes: usize = spans.clone().map(|(start, end)| end - start).sum();
    let mut buffer = vec![0u8; bytes + WIDE];
    let mut offsets: Vec<i32> = Vec::with_capacity(rows + 1);
    offsets.push(0);
    let mut validity = Validity::new(rows);
    let mut at = 0;
    for (row, (start, end)) in spans.enumerate() {
        let len = end - start;
        match wide_window(data, start, len) {
            Some(wide) => buffer.get_mut(at..at + WIDE)?.copy_from_slice(wide),
            None => buffer
                .get_mut(at..at + len)?
                .copy_from_slice(data.get(start..end)?),
        }
        at += len;
        offsets.push(i32::try_from(at).ok()?);
        // arrow-csv reads an empty field as NULL.
        validity.push(row, len == 0);
    }
    buffer.truncate(bytes);
    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
    // SAFETY: the buffer is the spans back to back, each UTF-8 (see above), so it is UTF-8
    // and every offset falls between two of them (a char boundary); the offsets rise from 0
    // to its end.
    Some(Arc::new(unsafe {
        StringArray::new_unchecked(offsets, Buffer::from_vec(buffer), validity.finish())
    }))
}

/// True when `data` has no quote and no carriage return, the bytes the plain path leaves to
/// arrow-csv.
pub(super) fn plain_bytes(data: &[u8]) -> bool {
    memchr2(b'"', b'\r', data).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use proptest::prelude::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("f", DataType::Float64, true),
            Field::new("skipped", DataType::Utf8, true),
            Field::new("i", DataType::Int64, true),
        ])
    }

    /// What arrow-csv reads of `data`: the batch, or None when it fails.
    fn arrow_csv(schema: &Schema, projection: &[usize], data: &[u8]) -> Option<RecordBatch> {
        let mut decoder = arrow::csv::ReaderBuilder::new(Arc::new(schema.clone()))
            .with_header(false)
            .with_batch_size(1 << 16)
            .with_projection(projection.to_vec())
            .build_decoder();
        let read = decoder.decode(data).ok()?;
        if read != data.len() {
            return None;
        }
        decoder.decode(&[]).ok()?;
        decoder.flush().ok()?
    }

    /// A field: mostly what the plain path reads, now and then what it must leave to
    /// arrow-csv.
    fn field_text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "-?[0-9]{1,3}(\\.[0-9]{1,4})?",
            2 => "[a-z ]{0,6}",
            // Past the 16 bytes a short string is copied in, with two-byte characters.
            1 => "[a-zé☃ ]{7,30}",
            1 => "-?[0-9]{17,20}",
            1 => prop_oneof![
                Just("1e5".to_string()),
                Just("NaN".to_string()),
                Just("+4".to_string()),
                Just("1.".to_string()),
                Just("\"q\"".to_string()),
                Just("é".to_string()),
            ],
        ]
    }

    /// A record: four fields, now and then three or five.
    fn record() -> impl Strategy<Value = Vec<String>> {
        prop_oneof![
            9 => prop::collection::vec(field_text(), 4),
            1 => prop::collection::vec(field_text(), 3..=5),
        ]
    }

    proptest! {
        /// Wherever the plain path reads a chunk, arrow-csv reads the same rows; where it
        /// declines, arrow-csv decides.
        #[test]
        fn the_plain_path_reads_what_arrow_csv_reads(
            records in prop::collection::vec(record(), 1..6)
        ) {
            let schema = schema();
            let projection = Arc::new(schema.project(&[0, 1, 3]).expect("projection"));
            let plain = PlainCsv::new(&schema, &projection, b',').expect("plain layout");
            let mut data = Vec::new();
            for r in &records {
                data.extend_from_slice(r.join(",").as_bytes());
                data.push(b'\n');
            }
            let batch = plain_bytes(&data).then(|| plain.decode(&data, records.len())).flatten();
            if let Some(batch) = batch {
                let reference = arrow_csv(&schema, &[0, 1, 3], &data);
                prop_assert_eq!(Some(batch), reference);
            }
        }
    }

    #[test]
    fn a_block_is_read_in_batches_of_the_batch_size() {
        let schema = schema();
        let projection = Arc::new(schema.project(&[0, 3]).expect("projection"));
        let plain = PlainCsv::new(&schema, &projection, b',').expect("plain layout");
        let data = b"a,1,x,1\nb,2,y,2\nc,3,z,3\nd,4,w,4\ne,5,v,5\n";
        let batches = plain.decode_block(data, 2).expect("plain");
        let rows: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(rows, [2, 2, 1]);
        let whole = arrow::compute::concat_batches(&projection, &batches).expect("concat");
        assert_eq!(Some(whole), arrow_csv(&schema, &[0, 3], data));
        // A blank line is no record: the general path, which skips it, reads this block.
        assert!(plain.decode_block(b"a,1,x,1\n\nb,2,y,2\n", 2).is_none());
        let one = Schema::new(vec![Field::new("s", DataType::Utf8, true)]);
        let plain = PlainCsv::new(&one, &Arc::new(one.clone()), b',').expect("plain layout");
        assert!(plain.decode_block(b"a\n  \nb\n", 8).is_none());
        assert_eq!(
            plain.decode_block(b"a\nb\n", 8).expect("plain")[0].num_rows(),
            2
        );
    }

    #[test]
    fn plain_records_take_the_plain_path() {
        let schema = schema();
        let projection = Arc::new(schema.project(&[0, 1, 3]).expect("projection"));
        let plain = PlainCsv::new(&schema, &projection, b',').expect("plain layout");
        let data = b"a,1.25,x,-7\n,,,\nb c,3,y,123456789012345678\n";
        let batch = plain.decode(data, 3).expect("plain");
        assert_eq!(Some(batch), arrow_csv(&schema, &[0, 1, 3], data));
        assert!(plain.decode(b"a,1e5,x,1\n", 1).is_none());
        assert!(plain.decode(b"a,1,x\n", 1).is_none());
        assert!(!plain_bytes(b"a,1,x,1\r\n"));
        assert!(!plain_bytes(b"a,\"1\",x,1\n"));
    }

    #[test]
    fn strings_short_and_long_empty_and_wide_are_read_as_arrow_csv_reads_them() {
        let schema = Schema::new(vec![
            Field::new("i", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        let projection = Arc::new(schema.clone());
        let plain = PlainCsv::new(&schema, &projection, b',').expect("plain layout");
        // 16 bytes, 17, empty (NULL), wide characters, long, and the last record's end.
        let data =
            "1,abcdefghijklmnop\n2,abcdefghijklmnopq\n3,\n4,é☃é\n5,Petropavlovsk-Kamchatsky\n6,x\n";
        let batch = plain.decode(data.as_bytes(), 6).expect("plain");
        assert_eq!(batch.column(1).null_count(), 1);
        assert_eq!(Some(batch), arrow_csv(&schema, &[0, 1], data.as_bytes()));
    }
}
