//! `DATEDIFF(unit, a, b)` / `TIMESTAMPDIFF`: `b - a` in whole units.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, Int64Builder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Int32Type, Int64Type, TimeUnit};
use chrono::{DateTime, Datelike, NaiveDateTime};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{arrays, as_utf8, is_string};

/// A unit of DATEDIFF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DateUnit {
    /// Milliseconds.
    Millisecond,
    /// Seconds.
    Second,
    /// Minutes.
    Minute,
    /// Hours.
    Hour,
    /// Days (24 hours).
    Day,
    /// Weeks (7 days).
    Week,
    /// Calendar months.
    Month,
    /// Calendar quarters (3 months).
    Quarter,
    /// Calendar years (12 months).
    Year,
}

impl DateUnit {
    /// Parses a unit name, case-insensitively, in singular, plural or short form.
    pub fn parse(name: &str) -> Option<DateUnit> {
        let name = name.trim().to_ascii_lowercase();
        Self::exact(&name).or_else(|| name.strip_suffix('s').and_then(Self::exact))
    }

    fn exact(name: &str) -> Option<DateUnit> {
        Some(match name {
            "millisecond" | "ms" | "milli" | "millis" | "msec" => DateUnit::Millisecond,
            "second" | "s" | "sec" | "ss" => DateUnit::Second,
            "minute" | "min" | "mi" => DateUnit::Minute,
            "hour" | "h" | "hh" | "hr" => DateUnit::Hour,
            "day" | "d" | "dd" => DateUnit::Day,
            "week" | "w" | "wk" | "ww" => DateUnit::Week,
            "month" | "mon" | "mm" => DateUnit::Month,
            "quarter" | "q" | "qq" => DateUnit::Quarter,
            "year" | "y" | "yy" | "yyyy" => DateUnit::Year,
            _ => return None,
        })
    }

    /// Whole units from `a` to `b` (epoch milliseconds), truncated toward zero.
    fn between(self, a: i64, b: i64) -> Option<i64> {
        let per = match self {
            DateUnit::Millisecond => 1,
            DateUnit::Second => 1_000,
            DateUnit::Minute => 60_000,
            DateUnit::Hour => 3_600_000,
            DateUnit::Day => 86_400_000,
            DateUnit::Week => 7 * 86_400_000,
            DateUnit::Month => return months_between(a, b),
            DateUnit::Quarter => return months_between(a, b).map(|m| m / 3),
            DateUnit::Year => return months_between(a, b).map(|m| m / 12),
        };
        b.checked_sub(a).map(|d| d / per)
    }
}

/// Whole calendar months from `a` to `b` (epoch millis): a month counts once the day of month
/// and time of day of `b` reach those of `a` (Flink's TIMESTAMPDIFF).
fn months_between(a: i64, b: i64) -> Option<i64> {
    let da: NaiveDateTime = DateTime::from_timestamp_millis(a)?.naive_utc();
    let db: NaiveDateTime = DateTime::from_timestamp_millis(b)?.naive_utc();
    let mut months = (i64::from(db.year()) - i64::from(da.year())) * 12
        + (i64::from(db.month()) - i64::from(da.month()));
    let rest_a = (da.day(), da.time());
    let rest_b = (db.day(), db.time());
    if months > 0 && rest_b < rest_a {
        months -= 1;
    } else if months < 0 && rest_b > rest_a {
        months += 1;
    }
    Some(months)
}

/// Epoch milliseconds of timestamps, dates, epoch-millis integers or timestamp strings.
fn epoch_millis(array: &ArrayRef) -> Result<Int64Array> {
    let scale = |array: &ArrayRef, f: &dyn Fn(i64) -> Option<i64>| -> Result<Int64Array> {
        let raw = cast(array, &DataType::Int64)?;
        Ok(raw
            .as_primitive::<Int64Type>()
            .iter()
            .map(|v| v.and_then(f))
            .collect())
    };
    match array.data_type() {
        DataType::Timestamp(unit, _) => match unit {
            TimeUnit::Second => scale(array, &|v| v.checked_mul(1_000)),
            TimeUnit::Millisecond => scale(array, &Some),
            TimeUnit::Microsecond => scale(array, &|v| Some(v.div_euclid(1_000))),
            TimeUnit::Nanosecond => scale(array, &|v| Some(v.div_euclid(1_000_000))),
        },
        DataType::Date32 => {
            let days = cast(array, &DataType::Int32)?;
            Ok(days
                .as_primitive::<Int32Type>()
                .iter()
                .map(|d| d.map(|d| i64::from(d) * 86_400_000))
                .collect())
        }
        DataType::Date64 | DataType::Null => scale(array, &Some),
        t if t.is_integer() => scale(array, &Some),
        t if is_string(t) => {
            let ts = cast(array, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            scale(&ts, &Some)
        }
        other => exec_err!("DATEDIFF cannot take a value of type {other}"),
    }
}

/// `DATEDIFF(unit, a, b)`: `b - a` in whole units, as BIGINT.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateDiff {
    signature: Signature,
    aliases: Vec<String>,
}

impl Default for DateDiff {
    fn default() -> Self {
        Self::new()
    }
}

impl DateDiff {
    /// The DATEDIFF function (alias TIMESTAMPDIFF).
    pub fn new() -> Self {
        DateDiff {
            signature: Signature::user_defined(Volatility::Immutable),
            aliases: vec!["timestampdiff".to_string()],
        }
    }
}

impl ScalarUDFImpl for DateDiff {
    fn name(&self) -> &str {
        "datediff"
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [unit, a, b] = arg_types else {
            return plan_err!(
                "DATEDIFF takes (unit, start, end), e.g. DATEDIFF('day', a, b); got {} arguments",
                arg_types.len()
            );
        };
        if !is_string(unit) && !unit.is_null() {
            return plan_err!("DATEDIFF's unit must be a string such as 'day', got {unit}");
        }
        for t in [a, b] {
            let ok = matches!(
                t,
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 | DataType::Null
            ) || t.is_integer()
                || is_string(t);
            if !ok {
                return plan_err!(
                    "DATEDIFF takes timestamps, dates or epoch milliseconds, got {t}"
                );
            }
        }
        Ok(vec![DataType::Utf8, a.clone(), b.clone()])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if let Some(Some(unit)) = args.scalar_arguments.first() {
            if let Some(name) = unit.try_as_str().flatten() {
                if DateUnit::parse(name).is_none() {
                    return plan_err!("{}", unknown_unit(name));
                }
            }
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Int64, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let [unit, a, b] = arrays.as_slice() else {
            return exec_err!("DATEDIFF takes three arguments");
        };
        let units = as_utf8(unit)?;
        let a = epoch_millis(a)?;
        let b = epoch_millis(b)?;
        let mut out = Int64Builder::with_capacity(args.number_rows);
        // A literal unit was checked at planning; a unit read from a column that names no
        // unit gives NULL rather than failing the job.
        let mut last: Option<(String, Option<DateUnit>)> = None;
        for row in 0..args.number_rows {
            if units.is_null(row) || a.is_null(row) || b.is_null(row) {
                out.append_null();
                continue;
            }
            let name = units.value(row);
            let unit = match &last {
                Some((n, u)) if n == name => *u,
                _ => {
                    let u = DateUnit::parse(name);
                    last = Some((name.to_string(), u));
                    u
                }
            };
            out.append_option(unit.and_then(|u| u.between(a.value(row), b.value(row))));
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

fn unknown_unit(name: &str) -> String {
    format!(
        "DATEDIFF: unknown unit '{name}' (expected millisecond, second, minute, hour, day, \
         week, month, quarter or year)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::udfs::test_support::*;

    #[test]
    fn datediff_counts_whole_units_from_a_to_b() {
        let rows = [
            r#"{"a": "2024-01-31T10:00:00Z", "b": "2024-03-01T09:00:00Z"}"#,
            r#"{"a": "2020-02-29T00:00:00Z", "b": "2024-02-28T23:59:59Z"}"#,
        ];
        let out = rows_of(
            "SELECT DATEDIFF(millisecond, a, b), DATEDIFF(second, a, b), DATEDIFF(minute, a, b), \
             DATEDIFF(hour, a, b), DATEDIFF(day, a, b), DATEDIFF(week, a, b), \
             DATEDIFF(month, a, b), DATEDIFF(quarter, a, b), DATEDIFF(year, a, b), \
             DATEDIFF('DAYS', b, a), TIMESTAMPDIFF(MONTH, b, a) FROM t",
            &rows,
        );
        assert_eq!(
            out,
            strs(&[
                &[
                    "2588400000",
                    "2588400",
                    "43140",
                    "719",
                    "29",
                    "4",
                    "1",
                    "0",
                    "0",
                    "-29",
                    "-1"
                ],
                &[
                    "126230399000",
                    "126230399",
                    "2103839",
                    "35063",
                    "1460",
                    "208",
                    "47",
                    "15",
                    "3",
                    "-1460",
                    "-47"
                ],
            ])
        );
    }

    #[test]
    fn datediff_takes_timestamps_dates_and_epoch_millis() {
        let rows = [r#"{"a": "2024-01-01T00:00:00Z", "ms": 1704067200000, "n": null}"#];
        let out = run(
            "",
            &rows,
            "SELECT DATEDIFF(hour, CAST(a AS TIMESTAMP), CAST('2024-01-02 12:00:00' AS TIMESTAMP)), \
             DATEDIFF(day, CAST('2024-01-01' AS DATE), CAST('2024-03-01' AS DATE)), \
             DATEDIFF(second, 1000, 61000), DATEDIFF(minute, ms, a), DATEDIFF(day, n, a), \
             DATEDIFF(minute, _timestamp, _timestamp) FROM t",
        );
        assert_eq!(out.rows, strs(&[&["36", "60", "60", "0", "NULL", "0"]]));
        assert!(out.types.iter().all(|t| t == &DataType::Int64));
    }

    #[test]
    fn datediff_rejects_unknown_units() {
        let e = error_of("SELECT DATEDIFF('fortnight', k, k) FROM t", ONE);
        assert!(e.contains("unknown unit 'fortnight'"), "{e}");
        let e = error_of("SELECT DATEDIFF(k, k) FROM t", ONE);
        assert!(e.contains("DATEDIFF takes (unit, start, end)"), "{e}");
    }

    #[test]
    fn units_may_come_from_columns() {
        let rows = [
            r#"{"u": "minute"}"#,
            r#"{"u": "hours"}"#,
            r#"{"u": "fortnight"}"#,
        ];
        let out = rows_of(
            "SELECT DATEDIFF(u, 0, 7200000), \
             DATEDIFF(second, NOW(), NOW() + INTERVAL '90' SECOND) FROM t",
            &rows,
        );
        assert_eq!(out, strs(&[&["120", "90"], &["2", "90"], &["NULL", "90"]]));
    }

    #[test]
    fn date_units_and_calendar_months() {
        assert_eq!(DateUnit::parse("Days"), Some(DateUnit::Day));
        assert_eq!(DateUnit::parse("ms"), Some(DateUnit::Millisecond));
        assert_eq!(DateUnit::parse("s"), Some(DateUnit::Second));
        assert_eq!(DateUnit::parse("HOURS"), Some(DateUnit::Hour));
        assert_eq!(DateUnit::parse("fortnight"), None);
        let ms = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .expect("timestamp")
                .timestamp_millis()
        };
        let jan31 = ms("2024-01-31T00:00:00Z");
        assert_eq!(months_between(jan31, ms("2024-02-29T00:00:00Z")), Some(0));
        assert_eq!(months_between(jan31, ms("2024-03-31T00:00:00Z")), Some(2));
        assert_eq!(months_between(ms("2024-03-31T00:00:00Z"), jan31), Some(-2));
        assert_eq!(months_between(ms("2024-03-30T00:00:00Z"), jan31), Some(-1));
    }
}
