//! Rows as JSON lines, the bytes arrow-json writes with explicit nulls. A batch of plain
//! columns (integers, floats, booleans, strings) is written row by row straight into the
//! output, a typed loop per column with no per-value dispatch; any other column type goes to
//! arrow-json. The test below checks that both write the same bytes.

use arrow::array::{Array, GenericStringArray, OffsetSizeTrait, PrimitiveArray};
use arrow::datatypes::ArrowPrimitiveType;
use arrow::record_batch::RecordBatch;

use super::plain_columns::{column, write_integer, Column, PlainInteger};
use crate::error::Result;

/// Appends `batch`'s rows to `out` as JSON lines (`{"name":value,...}\n`, a NULL as `null`).
pub fn encode(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
    match plain_columns(batch) {
        Some(columns) => encode_plain(batch, &columns, out),
        None => {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(out);
            writer.write(batch)?;
            writer.finish()?;
        }
    }
    Ok(())
}

/// Each column with the `"name":` before it (`,"name":` after the first), when every column
/// is one the plain path writes.
fn plain_columns(batch: &RecordBatch) -> Option<Vec<(Vec<u8>, Column<'_>)>> {
    batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .enumerate()
        .map(|(i, (field, array))| {
            let mut name = Vec::with_capacity(field.name().len() + 4);
            if i > 0 {
                name.push(b',');
            }
            encode_str(field.name(), &mut name);
            name.push(b':');
            Some((name, column(array)?))
        })
        .collect()
}

fn encode_plain(batch: &RecordBatch, columns: &[(Vec<u8>, Column<'_>)], out: &mut Vec<u8>) {
    let rows = batch.num_rows();
    // A guess at the line length, so `out` grows once or twice per batch, not per row.
    let width: usize = columns.iter().map(|(name, _)| name.len() + 12).sum();
    out.reserve(rows * (width + 3));
    for row in 0..rows {
        out.push(b'{');
        for (name, column) in columns {
            out.extend_from_slice(name);
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
                Column::Boolean(a) => match a.is_null(row) {
                    true => out.extend_from_slice(b"null"),
                    false if a.value(row) => out.extend_from_slice(b"true"),
                    false => out.extend_from_slice(b"false"),
                },
                Column::Utf8(a) => string(*a, row, out),
                Column::LargeUtf8(a) => string(*a, row, out),
            }
        }
        out.extend_from_slice(b"}\n");
    }
}

fn integer<T>(array: &PrimitiveArray<T>, row: usize, out: &mut Vec<u8>)
where
    T: ArrowPrimitiveType,
    T::Native: PlainInteger,
{
    match array.is_null(row) {
        true => out.extend_from_slice(b"null"),
        false => write_integer(array.value(row), out),
    }
}

/// A float type, as the plain path writes it.
trait JsonFloat: lexical_core::ToLexical + Copy {
    fn is_finite(self) -> bool;
}

impl JsonFloat for f32 {
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
}

impl JsonFloat for f64 {
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
}

/// A float as arrow-json writes one: NaN and infinities are `null`.
fn float<T>(array: &PrimitiveArray<T>, row: usize, out: &mut Vec<u8>)
where
    T: ArrowPrimitiveType,
    T::Native: JsonFloat,
{
    let value = array.value(row);
    if array.is_null(row) || !value.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    let mut buffer = [0u8; lexical_core::BUFFER_SIZE];
    out.extend_from_slice(lexical_core::write(value, &mut buffer));
}

fn string<O: OffsetSizeTrait>(array: &GenericStringArray<O>, row: usize, out: &mut Vec<u8>) {
    match array.is_null(row) {
        true => out.extend_from_slice(b"null"),
        false => encode_str(array.value(row), out),
    }
}

/// `s` as a JSON string. One that needs no escape is copied as it is; any other is written
/// by serde_json, as arrow-json writes every string.
fn encode_str(s: &str, out: &mut Vec<u8>) {
    let plain = s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, TimestampMillisecondArray};
    use proptest::prelude::*;

    use super::*;
    use crate::connectors::plain_columns::fixtures::{batch, edge_values, generated};

    /// What arrow-json writes of `batch`.
    fn arrow_json(batch: &RecordBatch) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut out);
        writer.write(batch).expect("arrow-json");
        writer.finish().expect("arrow-json");
        out
    }

    fn plain_and_arrow(b: &RecordBatch) -> (Vec<u8>, Vec<u8>) {
        let mut plain = Vec::new();
        encode(b, &mut plain).expect("encode");
        (plain, arrow_json(b))
    }

    #[test]
    fn edge_values_are_written_as_arrow_json_writes_them() {
        let (plain, arrow) = plain_and_arrow(&edge_values());
        assert_eq!(
            String::from_utf8_lossy(&plain),
            String::from_utf8_lossy(&arrow)
        );
    }

    #[test]
    fn other_column_types_are_left_to_arrow_json() {
        let b = batch(vec![
            ("id", Arc::new(Int32Array::from(vec![1, 2]))),
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(vec![0, 1_700_000_000_000])),
            ),
        ]);
        assert!(plain_columns(&b).is_none());
        let (plain, arrow) = plain_and_arrow(&b);
        assert_eq!(plain, arrow);
    }

    proptest! {
        /// Whatever the values, the plain path writes arrow-json's bytes.
        #[test]
        fn the_plain_path_writes_what_arrow_json_writes(
            rows in prop::collection::vec(
                (
                    prop::option::of(any::<i64>()),
                    prop::option::of(any::<f64>()),
                    prop::option::of(".{0,6}"),
                ),
                0..20,
            )
        ) {
            let b = generated(&rows);
            let (plain, arrow) = plain_and_arrow(&b);
            prop_assert_eq!(plain, arrow);
        }
    }
}
