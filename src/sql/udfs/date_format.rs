//! `DATE_FORMAT(ts, pattern)`: `TO_CHAR` that also takes epoch millis and strings.

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::is_string;

/// `DATE_FORMAT(ts, pattern)`: DataFusion's `TO_CHAR` (strftime patterns) that also accepts
/// epoch-millisecond integers (like `_timestamp`) and timestamp strings.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateFormat {
    signature: Signature,
}

impl Default for DateFormat {
    fn default() -> Self {
        Self::new()
    }
}

impl DateFormat {
    /// The DATE_FORMAT function.
    pub fn new() -> Self {
        DateFormat {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [value, pattern] = arg_types else {
            return plan_err!(
                "DATE_FORMAT takes (timestamp, pattern), got {} arguments",
                arg_types.len()
            );
        };
        let millis = DataType::Timestamp(TimeUnit::Millisecond, None);
        let value = match value {
            DataType::Timestamp(..)
            | DataType::Date32
            | DataType::Date64
            | DataType::Time32(_)
            | DataType::Time64(_)
            | DataType::Duration(_) => value.clone(),
            DataType::Null => millis,
            t if t.is_integer() || is_string(t) => millis,
            other => {
                return plan_err!(
                    "DATE_FORMAT takes a timestamp, date or epoch milliseconds, got {other}"
                )
            }
        };
        if !is_string(pattern) && !pattern.is_null() {
            return plan_err!("DATE_FORMAT's pattern must be a string, got {pattern}");
        }
        Ok(vec![value, DataType::Utf8])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        datafusion::functions::datetime::to_char().invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::udfs::test_support::*;

    #[test]
    fn date_format_takes_epoch_millis_strings_and_dates() {
        let rows = [r#"{"ms": 1704067200000, "s": "2024-05-06T07:08:09Z", "secs": 1704067200}"#];
        let out = rows_of(
            "SELECT DATE_FORMAT(ms, '%Y-%m-%d %H:%M:%S'), DATE_FORMAT(s, '%Y/%m/%d %H'), \
             DATE_FORMAT(CAST('2024-05-06' AS DATE), '%d.%m.%Y'), \
             FROM_UNIXTIME(secs), FROM_UNIXTIME(secs, '%Y-%m-%d'), \
             DATE_FORMAT(CAST(s AS TIMESTAMP), '%H:%M') FROM t",
            &rows,
        );
        assert_eq!(
            out,
            strs(&[&[
                "2024-01-01 00:00:00",
                "2024/05/06 07",
                "06.05.2024",
                "2024-01-01T00:00:00",
                "2024-01-01",
                "07:08"
            ]])
        );
    }
}
