//! velostream's own functions, implemented as DataFusion UDFs and UDAFs:
//!
//! - `DATEDIFF(unit, a, b)` (also `TIMESTAMPDIFF`): `b - a` in whole units.
//! - `DATE_FORMAT(ts, pattern)`: `TO_CHAR` that also takes epoch-millis integers and strings.
//! - `JSON_VALUE(json, path)` / `JSON_EXTRACT(json, path)`: JSONPath-lite lookups.
//! - `SPLIT(str, delim)`: a list of strings.
//! - `DELTA(x)`: last − first non-null value in arrival order.
//! - `PERCENTILE_DISC(p) WITHIN GROUP (ORDER BY x)` / `PERCENTILE_DISC(x, p)`.

mod date_format;
mod datediff;
mod delta;
mod json_path;
mod percentile_disc;
mod split;
#[cfg(test)]
pub(crate) mod test_support;

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::logical_expr::{AggregateUDF, ScalarFunctionArgs, ScalarUDF};

pub use date_format::DateFormat;
pub use datediff::{DateDiff, DateUnit};
pub use delta::Delta;
pub use json_path::{parse_json_path, JsonPathFunction, JsonPathMode, PathStep};
pub use percentile_disc::PercentileDisc;
pub use split::Split;

/// Every velostream scalar function defined here, ready to register.
pub fn scalar_udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(DateDiff::new()),
        ScalarUDF::from(DateFormat::new()),
        ScalarUDF::from(JsonPathFunction::new(JsonPathMode::Value)),
        ScalarUDF::from(JsonPathFunction::new(JsonPathMode::Extract)),
        ScalarUDF::from(Split::new()),
    ]
}

/// Every velostream aggregate function defined here, ready to register.
pub fn aggregate_udfs() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(Delta::new()),
        AggregateUDF::from(PercentileDisc::new()),
    ]
}

/// Whether `t` is a string type (Utf8, LargeUtf8 or Utf8View).
fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Each argument as an array of `rows` rows (scalars repeated).
fn arrays(args: &ScalarFunctionArgs) -> Result<Vec<ArrayRef>> {
    args.args
        .iter()
        .map(|a| a.to_array(args.number_rows))
        .collect()
}

/// `array` as UTF-8 strings (casting LargeUtf8, Utf8View and Null).
fn as_utf8(array: &ArrayRef) -> Result<StringArray> {
    let array = if array.data_type() == &DataType::Utf8 {
        Arc::clone(array)
    } else {
        cast(array, &DataType::Utf8)?
    };
    Ok(array.as_string::<i32>().clone())
}
