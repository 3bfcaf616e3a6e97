//! A fast path for plain CSV: no quotes, no carriage returns, and only BIGINT, DOUBLE and
//! VARCHAR columns read. It parses each field straight into its column, where arrow-csv first
//! copies every field of a record into a buffer of its own. A chunk with anything outside
//! that plain subset (a quote, a field that is not a plain number, a short or long record)
//! goes to arrow-csv instead, whose semantics and errors stay the reference; the test below
//! checks that both read the same rows the same way.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Builder, Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use memchr::{memchr2, memchr_iter};

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

/// One decoded column being built.
enum Builder {
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
}

impl PlainCsv {
    /// The plain reader of `schema`'s files decoded to `projection`, if every decoded column
    /// is one it reads.
    pub(super) fn new(schema: &Schema, projection: &SchemaRef, delimiter: u8) -> Option<Self> {
        if delimiter == b'"' || delimiter == b'\n' || delimiter == b'\r' {
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

    /// Decodes `rows` records, each ending with a newline, laid back to back in `data`; None
    /// when they are not plain CSV of this layout.
    pub(super) fn decode(&self, data: &[u8], rows: usize) -> Option<RecordBatch> {
        if memchr2(b'"', b'\r', data).is_some() {
            return None;
        }
        let text = std::str::from_utf8(data).ok()?;
        let mut builders: Vec<(usize, Builder)> = self
            .columns
            .iter()
            .flatten()
            .map(|&(slot, kind)| {
                let builder = match kind {
                    Kind::Int64 => Builder::Int64(Int64Builder::with_capacity(rows)),
                    Kind::Float64 => Builder::Float64(Float64Builder::with_capacity(rows)),
                    Kind::Utf8 => Builder::Utf8(StringBuilder::with_capacity(rows, rows * 8)),
                };
                (slot, builder)
            })
            .collect();
        // The builders in file column order, for the columns decoded.
        let order: Vec<Option<usize>> = {
            let mut next = 0;
            self.columns
                .iter()
                .map(|c| {
                    c.map(|_| {
                        next += 1;
                        next - 1
                    })
                })
                .collect()
        };
        let mut start = 0;
        let mut count = 0;
        for end in memchr_iter(b'\n', data) {
            self.record(&text[start..end], &order, &mut builders)?;
            start = end + 1;
            count += 1;
        }
        if count != rows || start != data.len() {
            return None;
        }
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.projection.fields().len()];
        for (slot, builder) in builders {
            columns[slot] = Some(match builder {
                Builder::Int64(mut b) => Arc::new(b.finish()),
                Builder::Float64(mut b) => Arc::new(b.finish()),
                Builder::Utf8(mut b) => Arc::new(b.finish()),
            });
        }
        let columns = columns.into_iter().collect::<Option<Vec<_>>>()?;
        RecordBatch::try_new(Arc::clone(&self.projection), columns).ok()
    }

    /// Appends one record's decoded fields; None when it is not plain.
    fn record(
        &self,
        line: &str,
        order: &[Option<usize>],
        builders: &mut [(usize, Builder)],
    ) -> Option<()> {
        // Fields are a few bytes long: a plain scan finds their ends faster than a search.
        let bytes = line.as_bytes();
        let mut start = 0;
        for slot in order {
            if start > bytes.len() {
                return None;
            }
            let end = bytes[start..]
                .iter()
                .position(|&b| b == self.delimiter)
                .map_or(bytes.len(), |i| start + i);
            let field = &line[start..end];
            start = end + 1;
            let Some(b) = slot else { continue };
            // arrow-csv reads an empty field as NULL, whatever the type.
            match &mut builders[*b].1 {
                Builder::Int64(b) if field.is_empty() => b.append_null(),
                Builder::Int64(b) => b.append_value(plain_int(field)?),
                Builder::Float64(b) if field.is_empty() => b.append_null(),
                Builder::Float64(b) => b.append_value(plain_float(field)?),
                Builder::Utf8(b) if field.is_empty() => b.append_null(),
                Builder::Utf8(b) => b.append_value(field),
            }
        }
        // A delimiter after the last field: the record has more fields than the file.
        (start > bytes.len()).then_some(())
    }
}

/// `-?[0-9]{1,18}`: an integer no BIGINT overflows on.
fn plain_int(field: &str) -> Option<i64> {
    let (negative, digits) = match field.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, field),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut value: i64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    Some(if negative { -value } else { value })
}

/// `-?[0-9]+(\.[0-9]+)?`, parsed with correct rounding as arrow-csv's parser does.
fn plain_float(field: &str) -> Option<f64> {
    let digits = field.strip_prefix('-').unwrap_or(field);
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !plain(whole) || fraction.is_some_and(|f| !plain(f)) {
        return None;
    }
    field.parse().ok()
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
            if let Some(batch) = plain.decode(&data, records.len()) {
                let reference = arrow_csv(&schema, &[0, 1, 3], &data);
                prop_assert_eq!(Some(batch), reference);
            }
        }
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
        assert!(plain.decode(b"a,1,x,1\r\n", 1).is_none());
    }
}
