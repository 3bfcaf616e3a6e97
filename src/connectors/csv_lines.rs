//! Rows as CSV lines, the bytes arrow-csv writes without a header: a NULL as an empty field,
//! and a field quoted only when it holds the delimiter, a quote or a line break, its quotes
//! doubled. A batch of plain columns (integers, floats, booleans, strings) is written row by
//! row straight into the output; any other goes to arrow-csv, as does a batch of one column
//! (arrow-csv quotes a record's only field when it is empty) and a delimiter a number or a
//! boolean can hold. The tests below check that both write the same bytes.

use arrow::array::{Array, BooleanArray, GenericStringArray, OffsetSizeTrait, PrimitiveArray};
use arrow::datatypes::ArrowPrimitiveType;
use arrow::record_batch::RecordBatch;

use super::plain_columns::{
    column, short_decimal, wide_window, write_integer, Column, PlainInteger, WIDE,
};
use crate::error::Result;

/// Appends `batch`'s rows to `out` as CSV lines separated by `delimiter`.
pub fn encode(batch: &RecordBatch, delimiter: u8, out: &mut Vec<u8>) -> Result<()> {
    match plain_columns(batch, delimiter) {
        Some(columns) => encode_plain(batch.num_rows(), &columns, delimiter, out),
        None => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(false)
                .with_delimiter(delimiter)
                .build(out);
            writer.write(batch)?;
        }
    }
    Ok(())
}

/// Every column, when the plain path writes them all.
fn plain_columns(batch: &RecordBatch, delimiter: u8) -> Option<Vec<Column<'_>>> {
    // Bytes of numbers, NaN, inf, true and false: a field holding the delimiter is quoted.
    let numeric = delimiter.is_ascii_alphanumeric() || b"+-.".contains(&delimiter);
    if batch.num_columns() < 2 || numeric || !delimiter.is_ascii() {
        return None;
    }
    batch.columns().iter().map(column).collect()
}

fn encode_plain(rows: usize, columns: &[Column<'_>], delimiter: u8, out: &mut Vec<u8>) {
    // Room for every line at its widest unquoted form, so `out` never grows in the loop.
    out.reserve(columns.iter().map(|c| widest(c, rows)).sum::<usize>() + rows * columns.len());
    for row in 0..rows {
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                out.push(delimiter);
            }
            match column {
                Column::Int8(a) => integer(*a, row, out),
                Column::Int16(a) => integer(*a, row, out),
                Column::Int32(a) => integer(*a, row, out),
                Column::Int64(a) => integer(*a, row, out),
                Column::UInt8(a) => integer(*a, row, out),
                Column::UInt16(a) => integer(*a, row, out),
                Column::UInt32(a) => integer(*a, row, out),
                Column::UInt64(a) => integer(*a, row, out),
                Column::Float32(a) => float(*a, row, out),
                Column::Float64(a) => float(*a, row, out),
                Column::Boolean(a) => boolean(a, row, out),
                Column::Utf8(a) => string(*a, row, delimiter, out),
                Column::LargeUtf8(a) => string(*a, row, delimiter, out),
            }
        }
        out.push(b'\n');
    }
}

fn integer<T>(array: &PrimitiveArray<T>, row: usize, out: &mut Vec<u8>)
where
    T: ArrowPrimitiveType,
    T::Native: PlainInteger,
{
    if !array.is_null(row) {
        write_integer(array.value(row), out);
    }
}

/// The bytes the first `rows` values of `column` take at most, unquoted.
fn widest(column: &Column<'_>, rows: usize) -> usize {
    match column {
        Column::Int8(_) | Column::UInt8(_) => rows * 4,
        Column::Int16(_) | Column::UInt16(_) => rows * 6,
        Column::Int32(_) | Column::UInt32(_) => rows * 11,
        Column::Int64(_) | Column::UInt64(_) => rows * 20,
        Column::Float32(_) | Column::Float64(_) => rows * FLOAT_TEXT,
        Column::Boolean(_) => rows * 5,
        Column::Utf8(a) => string_bytes(*a, rows) + WIDE,
        Column::LargeUtf8(a) => string_bytes(*a, rows) + WIDE,
    }
}

/// The bytes of the first `rows` values of `array`.
fn string_bytes<O: OffsetSizeTrait>(array: &GenericStringArray<O>, rows: usize) -> usize {
    let offsets = array.value_offsets();
    (offsets[rows] - offsets[0]).as_usize()
}

/// The most bytes a float's text takes: the shortest digits, sign, point and exponent.
const FLOAT_TEXT: usize = 24;

/// A float type the CSV encoder writes.
trait CsvFloat: zmij::Float + Copy {
    /// [`short_decimal`] of a double; false for a single, whose own shortest digits can be
    /// fewer than those of the double it widens to.
    fn short_decimal(self, out: &mut Vec<u8>) -> bool;

    /// Whether Żmij may write this value with a positive exponent. It switches to exponents
    /// at 1e16 for doubles and at about 1e13 for singles; the bounds here are a power lower.
    fn may_have_positive_exponent(self) -> bool;
}

impl CsvFloat for f32 {
    fn short_decimal(self, _: &mut Vec<u8>) -> bool {
        false
    }

    fn may_have_positive_exponent(self) -> bool {
        self.abs() >= 1e12
    }
}

impl CsvFloat for f64 {
    // Inlined into the row loop: as a call it saved and restored six registers a value.
    #[inline(always)]
    fn short_decimal(self, out: &mut Vec<u8>) -> bool {
        short_decimal(self, out)
    }

    fn may_have_positive_exponent(self) -> bool {
        self.abs() >= 1e15
    }
}

/// A float as arrow-csv writes one, with ryu: the shortest digits that read back to it, `NaN`,
/// `inf`. Żmij finds the same digits in about half the time; it writes a positive exponent
/// with a `+` (`1e+16`), which ryu leaves out. A short decimal, as prices are, is written
/// by [`short_decimal`], in about four fifths of Żmij's instructions.
fn float<T>(array: &PrimitiveArray<T>, row: usize, out: &mut Vec<u8>)
where
    T: ArrowPrimitiveType,
    T::Native: CsvFloat,
{
    if array.is_null(row) {
        return;
    }
    let value = array.value(row);
    if value.short_decimal(out) {
        return;
    }
    let mut buffer = zmij::Buffer::new();
    let text = buffer.format(value).as_bytes();
    let plus = match value.may_have_positive_exponent() {
        true => text.iter().position(|&b| b == b'+'),
        false => None,
    };
    match plus {
        None => out.extend_from_slice(text),
        Some(plus) => {
            out.extend_from_slice(&text[..plus]);
            out.extend_from_slice(&text[plus + 1..]);
        }
    }
}

fn boolean(array: &BooleanArray, row: usize, out: &mut Vec<u8>) {
    match (array.is_null(row), array.value(row)) {
        (true, _) => {}
        (false, true) => out.extend_from_slice(b"true"),
        (false, false) => out.extend_from_slice(b"false"),
    }
}

/// A string, quoted when it holds the delimiter, a quote or a line break. One of up to
/// [`WIDE`] bytes is checked and copied as a fixed [`WIDE`] bytes of the array's values,
/// which hold that many from its start, and cut back: a byte loop per value, or a call to
/// `memcpy`, costs more than the whole of it.
fn string<O: OffsetSizeTrait>(
    array: &GenericStringArray<O>,
    row: usize,
    delimiter: u8,
    out: &mut Vec<u8>,
) {
    if array.is_null(row) {
        return;
    }
    let value = array.value(row).as_bytes();
    let start = array.value_offsets()[row].as_usize();
    let wide = wide_window(array.value_data(), start, value.len());
    let quoted = match wide {
        Some(wide) => special_bytes(wide, delimiter) & ((1 << value.len()) - 1) != 0,
        None => value
            .iter()
            .any(|&b| b == delimiter || b == b'"' || b == b'\n' || b == b'\r'),
    };
    if !quoted {
        let at = out.len();
        match wide {
            Some(wide) => {
                out.extend_from_slice(wide);
                out.truncate(at + value.len());
            }
            None => out.extend_from_slice(value),
        }
        return;
    }
    out.push(b'"');
    for &b in value {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
}

/// A bit per byte of `wide`, bit `i` for byte `i`: those a field holding them is quoted for
/// (the delimiter, a quote, a newline, a carriage return). With SSE2, which every x86-64 has.
#[cfg(target_arch = "x86_64")]
fn special_bytes(wide: &[u8; WIDE], delimiter: u8) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of every x86-64 target, and the load reads the 16 bytes of `wide`.
    unsafe {
        let bytes = _mm_loadu_si128(wide.as_ptr().cast());
        let is = |b: u8| _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b as i8));
        let special = _mm_or_si128(
            _mm_or_si128(is(delimiter), is(b'"')),
            _mm_or_si128(is(b'\n'), is(b'\r')),
        );
        _mm_movemask_epi8(special) as u32
    }
}

/// [`special_bytes`] a byte at a time: the other targets' bits, and the reference the SSE2
/// bits are tested against.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn bytewise_special_bytes(wide: &[u8; WIDE], delimiter: u8) -> u32 {
    wide.iter().enumerate().fold(0, |bits, (i, &b)| {
        let special = b == delimiter || b == b'"' || b == b'\n' || b == b'\r';
        bits | u32::from(special) << i
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn special_bytes(wide: &[u8; WIDE], delimiter: u8) -> u32 {
    bytewise_special_bytes(wide, delimiter)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
    use proptest::prelude::*;

    use super::*;
    use crate::connectors::plain_columns::fixtures::{batch, edge_values, generated};

    /// What arrow-csv writes of `batch`, without a header.
    fn arrow_csv(batch: &RecordBatch, delimiter: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(false)
            .with_delimiter(delimiter)
            .build(&mut out);
        writer.write(batch).expect("arrow-csv");
        drop(writer);
        out
    }

    fn both(b: &RecordBatch, delimiter: u8) -> (String, String) {
        let mut plain = Vec::new();
        encode(b, delimiter, &mut plain).expect("encode");
        let arrow = arrow_csv(b, delimiter);
        (
            String::from_utf8_lossy(&plain).into_owned(),
            String::from_utf8_lossy(&arrow).into_owned(),
        )
    }

    #[test]
    fn edge_values_are_written_as_arrow_csv_writes_them() {
        let b = edge_values();
        for delimiter in [b',', b';', b'\t', b'|'] {
            let (plain, arrow) = both(&b, delimiter);
            assert_eq!(plain, arrow, "delimiter {:?}", delimiter as char);
        }
    }

    #[test]
    fn floats_where_the_text_turns_to_exponents_are_written_as_arrow_csv_writes_them() {
        let powers = (5..25).map(|p| 10f64.powi(p));
        let doubles: Vec<f64> = powers
            .flat_map(|x| [x, x.next_down(), x.next_up(), -x, 1.0 / x, x * 1.5])
            .collect();
        let singles: Vec<f32> = doubles.iter().map(|&d| d as f32).collect();
        let b = batch(vec![
            ("d", Arc::new(Float64Array::from(doubles))),
            ("s", Arc::new(arrow::array::Float32Array::from(singles))),
        ]);
        let (plain, arrow) = both(&b, b',');
        assert_eq!(plain, arrow);
    }

    #[test]
    fn short_decimals_are_written_as_arrow_csv_writes_them() {
        // Prices times quantities, the most of them short decimals and some not, near the
        // bounds of the short path, and powers of two (lopsided gaps between doubles).
        let mut doubles: Vec<f64> = (1..3000)
            .flat_map(|cents| [1, 3, 7, 859, 1000].map(|q| cents as f64 / 100.0 * q as f64))
            .collect();
        doubles.extend([
            1e-4,
            1e-4f64.next_down(),
            1e8,
            1e8f64.next_down(),
            -99_999.5,
        ]);
        doubles.extend((-16..30).flat_map(|p| [2f64.powi(p), -(2f64.powi(p).next_down())]));
        let ones = Int64Array::from(vec![1; doubles.len()]);
        let b = batch(vec![
            ("d", Arc::new(Float64Array::from(doubles))),
            ("n", Arc::new(ones)),
        ]);
        let (plain, arrow) = both(&b, b',');
        assert_eq!(plain, arrow);
    }

    #[test]
    fn one_column_other_types_and_numeric_delimiters_are_left_to_arrow_csv() {
        let one = batch(vec![(
            "s",
            Arc::new(StringArray::from(vec![Some(""), None, Some("a")])),
        )]);
        assert!(plain_columns(&one, b',').is_none());
        let (plain, arrow) = both(&one, b',');
        assert_eq!(plain, arrow);
        let timed = batch(vec![
            ("id", Arc::new(Int64Array::from(vec![1, 2]))),
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(vec![0, 1_700_000_000_000])),
            ),
        ]);
        assert!(plain_columns(&timed, b',').is_none());
        let numbers = batch(vec![
            ("f", Arc::new(Float64Array::from(vec![1.5, -2.0]))),
            ("n", Arc::new(Int64Array::from(vec![10, -3]))),
        ]);
        for delimiter in [b'.', b'-', b'1', b'e'] {
            assert!(plain_columns(&numbers, delimiter).is_none());
            let (plain, arrow) = both(&numbers, delimiter);
            assert_eq!(plain, arrow);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sse2_special_bytes_are_the_bytewise_ones() {
        let mut wide = [0u8; WIDE];
        for seed in 0..500usize {
            for (i, b) in wide.iter_mut().enumerate() {
                *b = [b'a', b',', b'\n', b'"', b'\r', b';', 0x80, 0][(seed * 7 + i * i) % 8];
            }
            for delimiter in [b',', b';', b'\t', 0x80, 0] {
                assert_eq!(
                    special_bytes(&wide, delimiter),
                    bytewise_special_bytes(&wide, delimiter)
                );
            }
        }
    }

    proptest! {
        /// Whatever the values, the plain path writes arrow-csv's bytes.
        #[test]
        fn the_plain_path_writes_what_arrow_csv_writes(
            rows in prop::collection::vec(
                (
                    prop::option::of(any::<i64>()),
                    prop::option::of(any::<f64>()),
                    // Past the 16 bytes a short string is copied in.
                    prop::option::of("[a-z,;\"\n\r é]{0,24}"),
                ),
                0..20,
            ),
            delimiter in prop::sample::select(vec![b',', b';', b'\t', b'|', b' '])
        ) {
            let b = generated(&rows);
            let (plain, arrow) = both(&b, delimiter);
            prop_assert_eq!(plain, arrow);
        }
    }
}
