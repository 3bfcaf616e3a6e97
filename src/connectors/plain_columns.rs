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

/// Appends an integer's decimal digits, as arrow writes them.
pub(super) fn write_integer<N: lexical_core::ToLexical>(value: N, out: &mut Vec<u8>) {
    let mut buffer = [0u8; lexical_core::BUFFER_SIZE];
    out.extend_from_slice(lexical_core::write(value, &mut buffer));
}
