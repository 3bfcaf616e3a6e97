//! `NOW()`/`CURRENT_TIMESTAMP`, `CURRENT_DATE`/`TODAY()`, `CURRENT_TIME`, fixed at planning.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use chrono::{DateTime, NaiveDate, Timelike, Utc};
use datafusion::common::Result;
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::scalar::ScalarValue;

/// A function of no arguments whose value is fixed when the planner is created (query planning
/// time), the way DataFusion folds `NOW()` into a literal.
///
/// Kept although the planner simplifies projections, filters and aggregates (which folds
/// DataFusion's `now()`): `ORDER BY` expressions are lowered unsimplified, and there DataFusion's
/// `now()`, `current_date()` and `current_time()` fail with "invoke should not be called on a
/// simplified now() function". Remove it once the planner simplifies sort expressions too.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PlanTime {
    name: &'static str,
    aliases: Vec<String>,
    signature: Signature,
    value: ScalarValue,
}

impl PlanTime {
    fn new(name: &'static str, aliases: &[&str], value: ScalarValue) -> Self {
        PlanTime {
            name,
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            signature: Signature::nullary(Volatility::Stable),
            value,
        }
    }

    /// `NOW()` / `CURRENT_TIMESTAMP`: `now` as a UTC timestamp (nanoseconds).
    pub fn now(now: DateTime<Utc>) -> Self {
        PlanTime::new(
            "now",
            &["current_timestamp"],
            ScalarValue::TimestampNanosecond(now.timestamp_nanos_opt(), Some("+00:00".into())),
        )
    }

    /// `CURRENT_DATE` / `TODAY()`: the UTC date of `now`.
    pub fn current_date(now: DateTime<Utc>) -> Self {
        let today = now.date_naive();
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        let days = i32::try_from((today - epoch).num_days()).ok();
        PlanTime::new("current_date", &["today"], ScalarValue::Date32(days))
    }

    /// `CURRENT_TIME`: the UTC time of day of `now` (nanoseconds).
    pub fn current_time(now: DateTime<Utc>) -> Self {
        let time = now.time();
        let nanos = i64::from(time.num_seconds_from_midnight()) * 1_000_000_000
            + i64::from(time.nanosecond());
        PlanTime::new(
            "current_time",
            &[],
            ScalarValue::Time64Nanosecond(Some(nanos)),
        )
    }
}

impl ScalarUDFImpl for PlanTime {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.value.data_type())
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        Ok(Arc::new(Field::new(
            self.name,
            self.value.data_type(),
            false,
        )))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(self.value.clone()))
    }
}

#[cfg(test)]
mod tests {
    use crate::sql::udfs::test_support::*;

    #[test]
    fn now_and_unix_timestamp_are_fixed_at_planning() {
        let before = chrono::Utc::now();
        let out = rows_of(
            "SELECT UNIX_TIMESTAMP(), DATE_FORMAT(NOW(), '%Y-%m-%d'), CURRENT_DATE, \
             CURRENT_TIMESTAMP = NOW(), CAST(CURRENT_TIMESTAMP AS TIME) = CURRENT_TIME FROM t",
            &[r#"{"k": 1}"#, r#"{"k": 2}"#],
        );
        let after = chrono::Utc::now();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], out[1], "one value for the whole query");
        let secs: i64 = out[0][0].parse().expect("seconds");
        assert!(before.timestamp() <= secs && secs <= after.timestamp());
        let days = [before, after].map(|t| t.format("%Y-%m-%d").to_string());
        assert!(days.contains(&out[0][1]) && days.contains(&out[0][2]));
        assert_eq!(out[0][3], "true");
        assert_eq!(out[0][4], "true");
    }

    #[test]
    fn order_by_evaluates_them_unsimplified() {
        // ORDER BY expressions skip the planner's simplifier (see `PlanTime`).
        let rows = [
            r#"{"x": 1, "ms": 1000}"#,
            r#"{"x": null, "ms": 3000}"#,
            r#"{"x": 3, "ms": 2000}"#,
            r#"{"x": -2, "ms": 4000}"#,
        ];
        let ordered = |order: &str| {
            first_column(
                &format!("SELECT x FROM t ORDER BY {order} EMIT FINAL"),
                &rows,
            )
        };
        assert_eq!(
            ordered("DATEDIFF(millisecond, ms, NOW())"),
            ["-2", "NULL", "3", "1"]
        );
        assert_eq!(
            ordered("DATEDIFF(day, CURRENT_DATE, CURRENT_TIMESTAMP), x DESC"),
            ["NULL", "3", "1", "-2"]
        );
    }
}
