//! Event time: turning a source column into epoch milliseconds (`_event_time`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, TimeUnit};

use crate::error::{Result, VeloError};

/// How an event-time column is written (`'<src>.event.time.format'`).
#[derive(Debug, Clone, PartialEq)]
pub enum EventTimeFormat {
    /// Integer milliseconds since the epoch (default for integers).
    EpochMillis,
    /// Integer seconds since the epoch.
    EpochSeconds,
    /// ISO 8601 / RFC 3339 text (default for strings).
    Iso8601,
    /// A strftime pattern such as `%Y-%m-%d %H:%M:%S`.
    Pattern(String),
}

impl EventTimeFormat {
    /// Parses the format key's value; None means "by the column's type".
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value?.to_lowercase().as_str() {
            "epoch_millis" | "epoch_ms" | "millis" => Some(EventTimeFormat::EpochMillis),
            "epoch_seconds" | "epoch_secs" | "seconds" => Some(EventTimeFormat::EpochSeconds),
            "iso8601" | "iso_8601" | "rfc3339" => Some(EventTimeFormat::Iso8601),
            _ => Some(EventTimeFormat::Pattern(value?.to_string())),
        }
    }
}

/// Converts `array` to epoch milliseconds; values that cannot be read become NULL.
pub fn to_epoch_millis(array: &ArrayRef, format: Option<&EventTimeFormat>) -> Result<Int64Array> {
    let millis = |a: &ArrayRef| -> Result<Int64Array> {
        let ts = cast(a, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        Ok(cast(&ts, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .clone())
    };
    match (array.data_type(), format) {
        (
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View,
            Some(EventTimeFormat::Pattern(p)),
        ) => {
            let strings = cast(array, &DataType::Utf8)?;
            let strings = strings.as_string::<i32>();
            Ok(strings
                .iter()
                .map(|s| s.and_then(|s| parse_with_pattern(s, p)))
                .collect())
        }
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, _) => {
            let options = arrow::compute::CastOptions {
                safe: true,
                ..Default::default()
            };
            let ts = arrow::compute::cast_with_options(
                array,
                &DataType::Timestamp(TimeUnit::Millisecond, None),
                &options,
            )?;
            Ok(cast(&ts, &DataType::Int64)?
                .as_primitive::<Int64Type>()
                .clone())
        }
        (DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64, _) => millis(array),
        (t, f) if t.is_numeric() => {
            let ints = cast(array, &DataType::Int64)?;
            let ints = ints.as_primitive::<Int64Type>();
            Ok(match f {
                Some(EventTimeFormat::EpochSeconds) => {
                    ints.iter().map(|v| v.map(|v| v * 1000)).collect()
                }
                _ => ints.clone(),
            })
        }
        (t, _) => Err(VeloError::Config(format!(
            "an event-time column must be an integer, text or timestamp, not {t}"
        ))),
    }
}

fn parse_with_pattern(s: &str, pattern: &str) -> Option<i64> {
    if let Ok(dt) = chrono::DateTime::parse_from_str(s, pattern) {
        return Some(dt.timestamp_millis());
    }
    if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(s, pattern) {
        return Some(dt.and_utc().timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(s, pattern)
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_millis())
}

/// A constant column of `len` values.
pub fn constant_millis(value: i64, len: usize) -> ArrayRef {
    Arc::new(Int64Array::from_value(value, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    #[test]
    fn converts_formats() {
        let iso: ArrayRef = Arc::new(StringArray::from(vec![
            Some("2024-01-01T00:00:01Z"),
            Some("junk"),
            None,
        ]));
        let m = to_epoch_millis(&iso, None).unwrap();
        assert_eq!(m.value(0), 1_704_067_201_000);
        assert!(m.is_null(1) && m.is_null(2));
        let secs: ArrayRef = Arc::new(Int64Array::from(vec![10]));
        assert_eq!(
            to_epoch_millis(&secs, Some(&EventTimeFormat::EpochSeconds))
                .unwrap()
                .value(0),
            10_000
        );
        let pat: ArrayRef = Arc::new(StringArray::from(vec!["01/02/2024 10:00"]));
        let fmt = EventTimeFormat::Pattern("%d/%m/%Y %H:%M".into());
        assert_eq!(
            to_epoch_millis(&pat, Some(&fmt)).unwrap().value(0),
            1_706_781_600_000
        );
    }
}
