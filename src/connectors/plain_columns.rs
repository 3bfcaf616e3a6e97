//! The column types the JSON-lines and CSV encoders write themselves, row by row with a typed
//! loop per column; a batch with any other type goes to arrow's writer.

use arrow::array::{ArrayRef, AsArray, BooleanArray, GenericStringArray, PrimitiveArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};

/// A column a plain encoder writes.
pub(super) enum Column<'a> {
    Int8(&'a PrimitiveArray<Int8Type>),
    Int16(&'a PrimitiveArray<Int16Type>),
    Int32(&'a PrimitiveArray<Int32Type>),
    Int64(&'a PrimitiveArray<Int64Type>),
    UInt8(&'a PrimitiveArray<UInt8Type>),
    UInt16(&'a PrimitiveArray<UInt16Type>),
    UInt32(&'a PrimitiveArray<UInt32Type>),
    UInt64(&'a PrimitiveArray<UInt64Type>),
    Float32(&'a PrimitiveArray<Float32Type>),
    Float64(&'a PrimitiveArray<Float64Type>),
    Boolean(&'a BooleanArray),
    Utf8(&'a GenericStringArray<i32>),
    LargeUtf8(&'a GenericStringArray<i64>),
}

/// `array` as a column a plain encoder writes, if it is one.
pub(super) fn column(array: &ArrayRef) -> Option<Column<'_>> {
    Some(match array.data_type() {
        DataType::Int8 => Column::Int8(array.as_primitive()),
        DataType::Int16 => Column::Int16(array.as_primitive()),
        DataType::Int32 => Column::Int32(array.as_primitive()),
        DataType::Int64 => Column::Int64(array.as_primitive()),
        DataType::UInt8 => Column::UInt8(array.as_primitive()),
        DataType::UInt16 => Column::UInt16(array.as_primitive()),
        DataType::UInt32 => Column::UInt32(array.as_primitive()),
        DataType::UInt64 => Column::UInt64(array.as_primitive()),
        DataType::Float32 => Column::Float32(array.as_primitive()),
        DataType::Float64 => Column::Float64(array.as_primitive()),
        DataType::Boolean => Column::Boolean(array.as_boolean()),
        DataType::Utf8 => Column::Utf8(array.as_string()),
        DataType::LargeUtf8 => Column::LargeUtf8(array.as_string()),
        _ => return None,
    })
}

/// The bytes a short string is copied in: a fixed-size copy is a few moves, where a copy of
/// the value's own length is a call to `memcpy`.
pub(crate) const WIDE: usize = 16;

/// The [`WIDE`] bytes of `bytes` from `start`, to copy a value of `len` bytes there from: None
/// when the value is longer or the bytes end too soon (copy it at its own length).
pub(crate) fn wide_window(bytes: &[u8], start: usize, len: usize) -> Option<&[u8; WIDE]> {
    let window = bytes.get(start..start.checked_add(WIDE)?)?;
    (len <= WIDE).then(|| window.try_into().ok()).flatten()
}

/// Appends an integer's decimal digits, as arrow writes them. They are written in place, in
/// room of the type's widest form: a copy from a buffer of their own is a `memcpy` call.
pub(super) fn write_integer<N: lexical_core::ToLexical>(value: N, out: &mut Vec<u8>) {
    let at = out.len();
    out.resize(at + N::FORMATTED_SIZE_DECIMAL, 0);
    let written = lexical_core::write(value, &mut out[at..]).len();
    out.truncate(at + written);
}

/// Batches the encoders' tests compare with arrow's writers.
#[cfg(test)]
pub(super) mod fixtures {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Float32Array, Float64Array, Int64Array, LargeStringArray,
        StringArray, UInt64Array,
    };
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;

    /// A batch of `columns` (name, values), every field nullable.
    pub fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        let fields: Vec<Field> = columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect();
        let arrays = columns.into_iter().map(|(_, a)| a).collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch")
    }

    /// Generated rows as a batch of columns `i` (BIGINT), `f` (DOUBLE) and `s` (VARCHAR).
    pub fn generated(rows: &[(Option<i64>, Option<f64>, Option<String>)]) -> RecordBatch {
        batch(vec![
            (
                "i",
                Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
            ),
            (
                "f",
                Arc::new(rows.iter().map(|r| r.1).collect::<Float64Array>()),
            ),
            (
                "s",
                Arc::new(rows.iter().map(|r| r.2.clone()).collect::<StringArray>()),
            ),
        ])
    }

    /// Eight rows of every plain type at its edges: extreme integers, non-finite and
    /// shortest-digit floats, NULLs, and strings with quotes, separators, escapes and wide
    /// characters (a column name, too, that JSON must escape).
    pub fn edge_values() -> RecordBatch {
        let floats = [
            0.1 + 0.2,
            -0.0,
            1e16,
            f64::NAN,
            f64::INFINITY,
            0.0,
            5.0,
            1.5e-7,
        ];
        let floats = floats
            .into_iter()
            .enumerate()
            .map(|(i, f)| (i != 5).then_some(f));
        let singles = [0.1, f32::NEG_INFINITY, 0.0, 3.0, 1e20, -2.5, f32::MAX, 0.0];
        let singles = singles
            .into_iter()
            .enumerate()
            .map(|(i, f)| (i != 2).then_some(f));
        let strings = [
            Some("plain"),
            Some("a \"q\" b"),
            Some("back\\slash, comma"),
            Some("tab\tnew\nline\u{1}\r"),
            None,
            Some(""),
            Some("é ☃ ; \u{7f}"),
            Some("/"),
        ];
        let large = [
            Some("x"),
            None,
            Some("\"y\""),
            Some(""),
            Some("z;w"),
            Some("w|v"),
            Some("v"),
            Some("u"),
        ];
        let booleans = [
            Some(true),
            Some(false),
            None,
            Some(true),
            Some(true),
            Some(false),
            None,
            Some(false),
        ];
        batch(vec![
            ("f", Arc::new(floats.collect::<Float64Array>())),
            ("g", Arc::new(singles.collect::<Float32Array>())),
            (
                "s \"quoted\"\n",
                Arc::new(StringArray::from(strings.to_vec())),
            ),
            (
                "n",
                Arc::new(Int64Array::from(vec![
                    Some(i64::MIN),
                    Some(i64::MAX),
                    None,
                    Some(0),
                    Some(-1),
                    Some(42),
                    Some(7),
                    Some(8),
                ])),
            ),
            (
                "u",
                Arc::new(UInt64Array::from(vec![
                    Some(u64::MAX),
                    None,
                    Some(0),
                    Some(1),
                    Some(2),
                    Some(3),
                    Some(4),
                    Some(5),
                ])),
            ),
            ("b", Arc::new(BooleanArray::from(booleans.to_vec()))),
            ("l", Arc::new(LargeStringArray::from(large.to_vec()))),
        ])
    }
}
