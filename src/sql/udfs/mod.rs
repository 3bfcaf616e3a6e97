//! velostream's own functions, implemented as DataFusion UDFs and UDAFs:
//!
//! - `DATEDIFF(unit, a, b)` (also `TIMESTAMPDIFF`): `b - a` in whole units.
//! - `DATE_FORMAT(ts, pattern)`: `TO_CHAR` that also takes epoch-millis integers and strings.
//! - `JSON_VALUE(json, path)` / `JSON_EXTRACT(json, path)`: JSONPath-lite lookups.
//! - `SPLIT(str, delim)`: a list of strings.
//! - `DELTA(x)`: last − first non-null value in arrival order.
//! - `PERCENTILE_DISC(p) WITHIN GROUP (ORDER BY x)` / `PERCENTILE_DISC(x, p)`.
//! - `NOW()`/`CURRENT_TIMESTAMP`, `CURRENT_DATE`, `CURRENT_TIME`: fixed when the query is planned.
//! - `COALESCE`, `NVL`/`IFNULL`, `NVL2`: DataFusion's, made evaluable without the simplifier.
//!
//! The last two exist only because the planner lowers `ORDER BY` expressions without
//! DataFusion's expression simplifier (projections, filters and aggregates go through it);
//! DataFusion's versions of these functions cannot be evaluated unsimplified.

use std::mem::size_of_val;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, Int64Builder, ListArray, ListBuilder, StringArray,
    StringBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::kernels::zip::zip;
use arrow::compute::{cast, concat, filter, is_not_null, sort_to_indices, SortOptions};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, TimeUnit, UInt64Type};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use datafusion::common::{
    exec_datafusion_err, exec_err, not_impl_err, plan_datafusion_err, plan_err, Result,
};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

/// Every velostream scalar function defined here, ready to register.
pub fn scalar_udfs() -> Vec<ScalarUDF> {
    // One instant for NOW, CURRENT_DATE and CURRENT_TIME.
    let now = Utc::now();
    vec![
        ScalarUDF::from(DateDiff::new()),
        ScalarUDF::from(DateFormat::new()),
        ScalarUDF::from(JsonPathFunction::new(JsonPathMode::Value)),
        ScalarUDF::from(JsonPathFunction::new(JsonPathMode::Extract)),
        ScalarUDF::from(Split::new()),
        ScalarUDF::from(PlanTime::now(now)),
        ScalarUDF::from(PlanTime::current_date(now)),
        ScalarUDF::from(PlanTime::current_time(now)),
        ScalarUDF::from(Conditional::new(
            datafusion::functions::core::coalesce(),
            ConditionalKind::Coalesce,
        )),
        ScalarUDF::from(Conditional::new(
            datafusion::functions::core::nvl(),
            ConditionalKind::Coalesce,
        )),
        ScalarUDF::from(Conditional::new(
            datafusion::functions::core::nvl2(),
            ConditionalKind::Nvl2,
        )),
    ]
}

/// Every velostream aggregate function defined here, ready to register.
pub fn aggregate_udfs() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(Delta::new()),
        AggregateUDF::from(PercentileDisc::new()),
    ]
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn is_integer(t: &DataType) -> bool {
    t.is_integer()
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

// ---------------------------------------------------------------------------------------------
// DATEDIFF
// ---------------------------------------------------------------------------------------------

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
            .as_primitive::<arrow::datatypes::Int64Type>()
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
                .as_primitive::<arrow::datatypes::Int32Type>()
                .iter()
                .map(|d| d.map(|d| i64::from(d) * 86_400_000))
                .collect())
        }
        DataType::Date64 | DataType::Null => scale(array, &Some),
        t if is_integer(t) => scale(array, &Some),
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
            ) || is_integer(t)
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

// ---------------------------------------------------------------------------------------------
// NOW / CURRENT_TIMESTAMP / CURRENT_DATE / CURRENT_TIME
// ---------------------------------------------------------------------------------------------

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
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        let days = i32::try_from((today - epoch).num_days()).ok();
        PlanTime::new("current_date", &["today"], ScalarValue::Date32(days))
    }

    /// `CURRENT_TIME`: the UTC time of day of `now` (nanoseconds).
    pub fn current_time(now: DateTime<Utc>) -> Self {
        let time = now.time();
        let nanos = i64::from(chrono::Timelike::num_seconds_from_midnight(&time)) * 1_000_000_000
            + i64::from(chrono::Timelike::nanosecond(&time));
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

// ---------------------------------------------------------------------------------------------
// COALESCE / NVL / IFNULL / NVL2
// ---------------------------------------------------------------------------------------------

/// What a [`Conditional`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionalKind {
    /// `COALESCE(a, b, ...)`, `NVL(a, b)`: the first non-null argument.
    Coalesce,
    /// `NVL2(a, b, c)`: `b` where `a` is not null, else `c`.
    Nvl2,
}

/// DataFusion's COALESCE, NVL and NVL2 (same name, types and `simplify`) with an `invoke` of
/// their own: DataFusion evaluates them only once its simplifier has turned them into CASE.
/// The planner simplifies projections, filters and aggregates (where `simplify` makes the CASE
/// and this `invoke` never runs), but lowers `ORDER BY` expressions unsimplified, where
/// DataFusion's versions fail with "coalesce should have been simplified to case". Remove it once
/// the planner simplifies sort expressions too. Here every argument is evaluated (no short
/// circuit).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Conditional {
    inner: Arc<ScalarUDF>,
    kind: ConditionalKind,
}

impl Conditional {
    /// Wraps DataFusion's `inner` function.
    pub fn new(inner: Arc<ScalarUDF>, kind: ConditionalKind) -> Self {
        Conditional { inner, kind }
    }
}

impl ScalarUDFImpl for Conditional {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }

    fn simplify(
        &self,
        args: Vec<datafusion::logical_expr::Expr>,
        info: &datafusion::logical_expr::simplify::SimplifyContext,
    ) -> Result<datafusion::logical_expr::simplify::ExprSimplifyResult> {
        self.inner.inner().simplify(args, info)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let result = match (self.kind, arrays.as_slice()) {
            (ConditionalKind::Coalesce, [init @ .., last]) => {
                let mut result = Arc::clone(last);
                for a in init.iter().rev() {
                    result = zip(&is_not_null(a)?, a, &result)?;
                }
                result
            }
            (ConditionalKind::Nvl2, [tested, if_set, if_null]) => {
                zip(&is_not_null(tested)?, if_set, if_null)?
            }
            _ => return exec_err!("{}: wrong number of arguments", self.name()),
        };
        Ok(ColumnarValue::Array(result))
    }
}

// ---------------------------------------------------------------------------------------------
// DATE_FORMAT
// ---------------------------------------------------------------------------------------------

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
            t if is_integer(t) || is_string(t) => millis,
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

// ---------------------------------------------------------------------------------------------
// JSON_VALUE / JSON_EXTRACT
// ---------------------------------------------------------------------------------------------

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// `.name` or `['name']`.
    Key(String),
    /// `[n]`.
    Index(usize),
}

/// Parses `$.a.b`, `$.a[0]`, `$['a']`, `$."a b"`; a path without `$` is taken as `$.` + path.
pub fn parse_json_path(path: &str) -> std::result::Result<Vec<PathStep>, String> {
    let path = path.trim();
    let rest = match path.strip_prefix('$') {
        Some(r) => r,
        None if path.starts_with('[') || path.starts_with('.') || path.is_empty() => path,
        None => return parse_json_path(&format!("$.{path}")),
    };
    let chars: Vec<char> = rest.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    let bad = |why: &str| format!("invalid JSON path '{path}': {why}");
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
                    let (key, next) = quoted(&chars, i).ok_or_else(|| bad("unclosed quote"))?;
                    steps.push(PathStep::Key(key));
                    i = next;
                } else {
                    let start = i;
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        i += 1;
                    }
                    if start == i {
                        return Err(bad("empty key after '.'"));
                    }
                    let key: String = chars[start..i].iter().collect();
                    if key == "*" {
                        return Err(bad("wildcards are not supported"));
                    }
                    steps.push(PathStep::Key(key));
                }
            }
            '[' => {
                i += 1;
                while i < chars.len() && chars[i] == ' ' {
                    i += 1;
                }
                if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
                    let (key, next) = quoted(&chars, i).ok_or_else(|| bad("unclosed quote"))?;
                    steps.push(PathStep::Key(key));
                    i = next;
                } else {
                    let start = i;
                    while i < chars.len() && chars[i] != ']' {
                        i += 1;
                    }
                    let index: String = chars[start..i].iter().collect();
                    let index = index.trim().parse::<usize>().map_err(|_| {
                        bad("an index must be a non-negative integer or a quoted key")
                    })?;
                    steps.push(PathStep::Index(index));
                }
                while i < chars.len() && chars[i] == ' ' {
                    i += 1;
                }
                if i >= chars.len() || chars[i] != ']' {
                    return Err(bad("expected ']'"));
                }
                i += 1;
            }
            c => return Err(bad(&format!("unexpected '{c}'"))),
        }
    }
    Ok(steps)
}

/// A quoted key starting at `chars[start]`; returns it and the index after the closing quote.
fn quoted(chars: &[char], start: usize) -> Option<(String, usize)> {
    let quote = chars[start];
    let mut key = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                key.push(chars[i + 1]);
                i += 2;
            }
            c if c == quote => return Some((key, i + 1)),
            c => {
                key.push(c);
                i += 1;
            }
        }
    }
    None
}

/// The value at `path` in `doc`, if any.
fn lookup<'a>(doc: &'a serde_json::Value, path: &[PathStep]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(doc, |v, step| match step {
        PathStep::Key(k) => v.as_object()?.get(k),
        PathStep::Index(i) => v.as_array()?.get(*i),
    })
}

/// Which JSON function: the scalar as text, or the JSON text of any value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonPathMode {
    /// `JSON_VALUE`: strings unquoted, numbers and booleans as text; NULL for objects/arrays.
    Value,
    /// `JSON_EXTRACT`: the value's JSON text (strings keep their quotes).
    Extract,
}

/// `JSON_VALUE(json, path)` and `JSON_EXTRACT(json, path)`. Missing paths, JSON nulls and
/// documents that do not parse give NULL. The document may be a string or a nested column.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct JsonPathFunction {
    signature: Signature,
    mode: JsonPathMode,
}

impl JsonPathFunction {
    /// JSON_VALUE or JSON_EXTRACT.
    pub fn new(mode: JsonPathMode) -> Self {
        JsonPathFunction {
            signature: Signature::user_defined(Volatility::Immutable),
            mode,
        }
    }

    fn render(&self, v: &serde_json::Value) -> Option<String> {
        match (self.mode, v) {
            (_, serde_json::Value::Null) => None,
            (JsonPathMode::Value, serde_json::Value::String(s)) => Some(s.clone()),
            (JsonPathMode::Value, serde_json::Value::Number(n)) => Some(n.to_string()),
            (JsonPathMode::Value, serde_json::Value::Bool(b)) => Some(b.to_string()),
            (JsonPathMode::Value, _) => None,
            (JsonPathMode::Extract, v) => Some(v.to_string()),
        }
    }

    fn label(&self) -> &'static str {
        match self.mode {
            JsonPathMode::Value => "JSON_VALUE",
            JsonPathMode::Extract => "JSON_EXTRACT",
        }
    }
}

/// The documents of `array` as parsed JSON (None for nulls and text that does not parse).
fn json_documents(array: &ArrayRef) -> Result<Vec<Option<serde_json::Value>>> {
    if is_string(array.data_type()) || array.data_type().is_null() {
        let text = as_utf8(array)?;
        return Ok(text
            .iter()
            .map(|t| t.and_then(|t| serde_json::from_str(t).ok()))
            .collect());
    }
    // A nested column (struct, list, map): write each row as JSON and read it back.
    let schema = Arc::new(Schema::new(vec![Field::new(
        "v",
        array.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema, vec![Arc::clone(array)])?;
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    writer.write(&batch)?;
    writer.finish()?;
    let bytes = writer.into_inner();
    let text = String::from_utf8_lossy(&bytes);
    let mut docs: Vec<Option<serde_json::Value>> = text
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|mut row| row.get_mut("v").map(serde_json::Value::take))
        })
        .collect();
    docs.resize(array.len(), None);
    Ok(docs)
}

impl ScalarUDFImpl for JsonPathFunction {
    fn name(&self) -> &str {
        match self.mode {
            JsonPathMode::Value => "json_value",
            JsonPathMode::Extract => "json_extract",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [doc, path] = arg_types else {
            return plan_err!(
                "{} takes (json, path), e.g. {}(payload, '$.a.b'); got {} arguments",
                self.label(),
                self.label(),
                arg_types.len()
            );
        };
        let doc = match doc {
            t if is_string(t) || t.is_null() => DataType::Utf8,
            DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Map(..) => doc.clone(),
            other => {
                return plan_err!(
                    "{} takes JSON text or a nested column, got {other}",
                    self.label()
                )
            }
        };
        if !is_string(path) && !path.is_null() {
            return plan_err!("{}'s path must be a string, got {path}", self.label());
        }
        Ok(vec![doc, DataType::Utf8])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if let Some(Some(path)) = args.scalar_arguments.get(1) {
            if let Some(path) = path.try_as_str().flatten() {
                parse_json_path(path).map_err(|e| plan_datafusion_err!("{}: {e}", self.label()))?;
            }
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Utf8, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let [doc, path] = arrays.as_slice() else {
            return exec_err!("{} takes two arguments", self.label());
        };
        let docs = json_documents(doc)?;
        let paths = as_utf8(path)?;
        let mut out = StringBuilder::with_capacity(args.number_rows, args.number_rows * 8);
        // A literal path was checked at planning; a path read from a column that does not
        // parse gives NULL rather than failing the job.
        let mut parsed: Option<(String, Option<Vec<PathStep>>)> = None;
        for (row, doc) in docs.iter().enumerate() {
            let (Some(doc), true) = (doc, paths.is_valid(row)) else {
                out.append_null();
                continue;
            };
            let text = paths.value(row);
            if parsed.as_ref().is_none_or(|(p, _)| p != text) {
                parsed = Some((text.to_string(), parse_json_path(text).ok()));
            }
            let steps = parsed.as_ref().and_then(|(_, s)| s.as_deref());
            out.append_option(
                steps
                    .and_then(|steps| lookup(doc, steps))
                    .and_then(|v| self.render(v)),
            );
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

// ---------------------------------------------------------------------------------------------
// SPLIT
// ---------------------------------------------------------------------------------------------

/// `SPLIT(str, delim)`: the pieces of `str` between occurrences of `delim`, as a list of
/// strings. An empty string gives an empty list; an empty delimiter gives `[str]`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Split {
    signature: Signature,
}

impl Default for Split {
    fn default() -> Self {
        Self::new()
    }
}

impl Split {
    /// The SPLIT function.
    pub fn new() -> Self {
        Split {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

impl ScalarUDFImpl for Split {
    fn name(&self) -> &str {
        "split"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return plan_err!(
                "SPLIT takes (string, delimiter), got {} arguments",
                arg_types.len()
            );
        }
        for t in arg_types {
            if !is_string(t) && !t.is_null() {
                return plan_err!("SPLIT takes strings, got {t}");
            }
        }
        Ok(vec![DataType::Utf8, DataType::Utf8])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(string_list_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let [text, delim] = arrays.as_slice() else {
            return exec_err!("SPLIT takes two arguments");
        };
        let text = as_utf8(text)?;
        let delim = as_utf8(delim)?;
        let mut out = ListBuilder::new(StringBuilder::new());
        for row in 0..args.number_rows {
            if text.is_null(row) || delim.is_null(row) {
                out.append_null();
                continue;
            }
            let (s, d) = (text.value(row), delim.value(row));
            if d.is_empty() {
                out.values().append_value(s);
            } else if !s.is_empty() {
                for piece in s.split(d) {
                    out.values().append_value(piece);
                }
            }
            out.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

// ---------------------------------------------------------------------------------------------
// DELTA
// ---------------------------------------------------------------------------------------------

/// `DELTA(x)`: the last minus the first non-null value, in arrival order. BIGINT for integer
/// input, DOUBLE for floating point, an exact DECIMAL for decimals.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Delta {
    signature: Signature,
}

impl Default for Delta {
    fn default() -> Self {
        Self::new()
    }
}

impl Delta {
    /// The DELTA aggregate.
    pub fn new() -> Self {
        Delta {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for Delta {
    fn name(&self) -> &str {
        "delta"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [t] = arg_types else {
            return plan_err!("DELTA takes one argument, got {}", arg_types.len());
        };
        let coerced = match t {
            DataType::Null => DataType::Int64,
            t if is_integer(t) => DataType::Int64,
            DataType::Float16 | DataType::Float32 | DataType::Float64 => DataType::Float64,
            DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
                DataType::Decimal128(*p, *s)
            }
            DataType::Decimal256(p, s) => DataType::Decimal256(*p, *s),
            other => return plan_err!("DELTA takes a number, got {other}"),
        };
        Ok(vec![coerced])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(match arg_types.first() {
            Some(DataType::Decimal128(p, s)) => DataType::Decimal128((*p + 1).min(38), *s),
            Some(DataType::Decimal256(p, s)) => DataType::Decimal256((*p + 1).min(76), *s),
            Some(DataType::Float64) => DataType::Float64,
            _ => DataType::Int64,
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let input = args
            .input_fields
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Int64);
        let field = |what: &str, t: DataType| {
            Arc::new(Field::new(format_state_name(args.name, what), t, true))
        };
        Ok(vec![
            field("first", input.clone()),
            field("first_seq", DataType::UInt64),
            field("last", input),
            field("last_seq", DataType::UInt64),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let input = args
            .expr_fields
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Int64);
        Ok(Box::new(DeltaAccumulator::new(
            &input,
            args.return_type().clone(),
        )?))
    }

    fn order_sensitivity(&self) -> datafusion::logical_expr::utils::AggregateOrderSensitivity {
        datafusion::logical_expr::utils::AggregateOrderSensitivity::Insensitive
    }
}

/// Arrival stamps shared by all DELTA accumulators of the process.
static ARRIVAL: AtomicU64 = AtomicU64::new(1);

/// First and last non-null values seen with their arrival stamps; null until a value arrives.
/// Each update takes a stamp from a process-wide counter, so states merged in any order
/// (partitions, window panes, merging sessions) keep the earliest first and the latest last.
#[derive(Debug)]
struct DeltaAccumulator {
    first: ScalarValue,
    first_seq: u64,
    last: ScalarValue,
    last_seq: u64,
    output: DataType,
}

impl DeltaAccumulator {
    fn new(input: &DataType, output: DataType) -> Result<Self> {
        Ok(DeltaAccumulator {
            first: ScalarValue::try_from(input)?,
            first_seq: 0,
            last: ScalarValue::try_from(input)?,
            last_seq: 0,
            output,
        })
    }

    /// Adds a run of non-null values: its first and last, with their arrival stamps.
    fn append(&mut self, first: ScalarValue, first_seq: u64, last: ScalarValue, last_seq: u64) {
        if self.first.is_null() || first_seq < self.first_seq {
            self.first = first;
            self.first_seq = first_seq;
        }
        if self.last.is_null() || last_seq > self.last_seq {
            self.last = last;
            self.last_seq = last_seq;
        }
    }
}

impl Accumulator for DeltaAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(values) = values.first() else {
            return Ok(());
        };
        let first = (0..values.len()).find(|&i| values.is_valid(i));
        let last = (0..values.len()).rev().find(|&i| values.is_valid(i));
        if let (Some(f), Some(l)) = (first, last) {
            let seq = ARRIVAL.fetch_add(1, Ordering::Relaxed);
            let first = ScalarValue::try_from_array(values, f)?;
            let last = ScalarValue::try_from_array(values, l)?;
            self.append(first, seq, last, seq);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.first.is_null() || self.last.is_null() {
            return ScalarValue::try_from(&self.output);
        }
        let diff = match (&self.first, &self.last) {
            (ScalarValue::Decimal128(Some(a), _, s), ScalarValue::Decimal128(Some(b), _, _)) => {
                let DataType::Decimal128(p, _) = self.output else {
                    return exec_err!("DELTA: unexpected output type {}", self.output);
                };
                let v = b
                    .checked_sub(*a)
                    .ok_or_else(|| exec_datafusion_err!("DELTA overflowed"))?;
                ScalarValue::Decimal128(Some(v), p, *s)
            }
            (first, last) => last.sub_checked(first)?,
        };
        if diff.data_type() == self.output {
            Ok(diff)
        } else {
            diff.cast_to(&self.output)
        }
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.first.size() + self.last.size() - 2 * size_of_val(&self.first)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let seq = |s: u64, v: &ScalarValue| ScalarValue::UInt64((!v.is_null()).then_some(s));
        Ok(vec![
            self.first.clone(),
            seq(self.first_seq, &self.first),
            self.last.clone(),
            seq(self.last_seq, &self.last),
        ])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let [firsts, first_seqs, lasts, last_seqs] = states else {
            return exec_err!("DELTA: expected four state columns, got {}", states.len());
        };
        let first_seqs = first_seqs.as_primitive::<UInt64Type>();
        let last_seqs = last_seqs.as_primitive::<UInt64Type>();
        for row in 0..firsts.len() {
            let valid = [firsts.is_valid(row), lasts.is_valid(row)];
            if valid == [true, true] && first_seqs.is_valid(row) && last_seqs.is_valid(row) {
                let first = ScalarValue::try_from_array(firsts, row)?;
                let last = ScalarValue::try_from_array(lasts, row)?;
                self.append(first, first_seqs.value(row), last, last_seqs.value(row));
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// PERCENTILE_DISC
// ---------------------------------------------------------------------------------------------

/// `PERCENTILE_DISC(p) WITHIN GROUP (ORDER BY x)`, `PERCENTILE_DISC(x, p)`: the first value in
/// the ordering whose cumulative distribution reaches `p` (an actual input value, never an
/// interpolation). Works on any orderable type.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PercentileDisc {
    signature: Signature,
    aliases: Vec<String>,
}

impl Default for PercentileDisc {
    fn default() -> Self {
        Self::new()
    }
}

impl PercentileDisc {
    /// The PERCENTILE_DISC aggregate (alias QUANTILE_DISC).
    pub fn new() -> Self {
        PercentileDisc {
            signature: Signature::user_defined(Volatility::Immutable),
            aliases: vec!["quantile_disc".to_string()],
        }
    }
}

/// The constant percentile argument, checked to lie in [0, 1].
fn percentile_argument(expr: &Arc<dyn PhysicalExpr>) -> Result<f64> {
    let empty = RecordBatch::new_empty(Arc::new(Schema::empty()));
    let value = match expr.evaluate(&empty) {
        Ok(ColumnarValue::Scalar(s)) => s,
        _ => return plan_err!("PERCENTILE_DISC's percentile must be a constant"),
    };
    let p = match value.cast_to(&DataType::Float64)? {
        ScalarValue::Float64(Some(p)) => p,
        _ => return plan_err!("PERCENTILE_DISC's percentile must not be NULL"),
    };
    if !(0.0..=1.0).contains(&p) {
        return plan_err!("PERCENTILE_DISC's percentile must be between 0 and 1, got {p}");
    }
    Ok(p)
}

impl AggregateUDFImpl for PercentileDisc {
    fn name(&self) -> &str {
        "percentile_disc"
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [value, p] = arg_types else {
            return plan_err!(
                "PERCENTILE_DISC takes (p) WITHIN GROUP (ORDER BY x) or (x, p); got {} arguments",
                arg_types.len()
            );
        };
        let value = match value {
            DataType::Null => DataType::Float64,
            t if t.is_nested() => {
                return plan_err!("PERCENTILE_DISC cannot order values of type {t}")
            }
            t => t.clone(),
        };
        if !p.is_numeric() && !p.is_null() {
            return plan_err!("PERCENTILE_DISC's percentile must be a number, got {p}");
        }
        Ok(vec![value, DataType::Float64])
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(match arg_types.first() {
            None | Some(DataType::Null) => DataType::Float64,
            Some(t) => t.clone(),
        })
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let input = args
            .input_fields
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Float64);
        Ok(vec![Arc::new(Field::new(
            format_state_name(args.name, "percentile_disc"),
            DataType::List(Arc::new(Field::new_list_field(input, true))),
            true,
        ))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        if args.is_distinct {
            return not_impl_err!("PERCENTILE_DISC(DISTINCT ...) is not supported");
        }
        let Some(p) = args.exprs.get(1) else {
            return plan_err!("PERCENTILE_DISC needs a percentile");
        };
        let percentile = percentile_argument(p)?;
        let descending = args.order_bys.first().is_some_and(|s| s.options.descending);
        let data_type = args
            .expr_fields
            .first()
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Float64);
        Ok(Box::new(PercentileDiscAccumulator {
            data_type,
            percentile,
            descending,
            chunks: Vec::new(),
        }))
    }

    fn supports_within_group_clause(&self) -> bool {
        true
    }
}

/// All non-null values seen, in chunks; sorted only when evaluated.
#[derive(Debug)]
struct PercentileDiscAccumulator {
    data_type: DataType,
    percentile: f64,
    descending: bool,
    chunks: Vec<ArrayRef>,
}

impl PercentileDiscAccumulator {
    fn push(&mut self, values: &ArrayRef) -> Result<()> {
        let values = if values.null_count() > 0 {
            filter(values, &is_not_null(values)?)?
        } else {
            Arc::clone(values)
        };
        if !values.is_empty() {
            self.chunks.push(values);
        }
        Ok(())
    }

    /// The values as one array (and kept as one chunk).
    fn values(&mut self) -> Result<ArrayRef> {
        let all = match self.chunks.as_slice() {
            [] => arrow::array::new_empty_array(&self.data_type),
            [one] => Arc::clone(one),
            many => {
                let refs: Vec<&dyn Array> = many.iter().map(|a| a.as_ref()).collect();
                concat(&refs)?
            }
        };
        if self.chunks.len() > 1 {
            self.chunks = vec![Arc::clone(&all)];
        }
        Ok(all)
    }
}

impl Accumulator for PercentileDiscAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        match values.first() {
            Some(v) => self.push(v),
            None => Ok(()),
        }
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let all = self.values()?;
        let n = all.len();
        if n == 0 {
            return ScalarValue::try_from(&self.data_type);
        }
        let options = SortOptions {
            descending: self.descending,
            nulls_first: false,
        };
        let order = sort_to_indices(&all, Some(options), None)?;
        // The first position whose cumulative share (pos / n) reaches p; tolerate float noise.
        let position = (self.percentile * n as f64 - 1e-9).ceil().max(1.0) as usize;
        let index = order.value(position.min(n) - 1) as usize;
        ScalarValue::try_from_array(&all, index)
    }

    fn size(&self) -> usize {
        size_of_val(self)
            + self
                .chunks
                .iter()
                .map(|c| c.get_array_memory_size())
                .sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let all = self.values()?;
        let field = Arc::new(Field::new_list_field(self.data_type.clone(), true));
        let list = ListArray::try_new(field, OffsetBuffer::from_lengths([all.len()]), all, None)?;
        Ok(vec![ScalarValue::List(Arc::new(list))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(lists) = states.first() else {
            return Ok(());
        };
        let lists = lists.as_list::<i32>();
        for row in 0..lists.len() {
            if lists.is_valid(row) {
                self.push(&lists.value(row))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use arrow::array::{Float64Array, Int64Array as I64};
    use arrow::util::display::{ArrayFormatter, FormatOptions};

    use super::*;
    use crate::job::{plan_script, JobOptions};

    /// Runs `sql` (after the optional declaration `decl`) over `rows` bound as source `t`;
    /// returns the output column types and the rows rendered as strings.
    fn try_run(decl: &str, rows: &[&str], sql: &str) -> crate::error::Result<Output> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.jsonl");
        let mut file = std::fs::File::create(&path).expect("temp file");
        for row in rows {
            writeln!(file, "{row}").expect("write row");
        }
        let mut source_paths = BTreeMap::new();
        source_paths.insert("t".to_string(), path.display().to_string());
        let options = JobOptions {
            source_paths,
            partitions: 1,
            collect_output: true,
            ..Default::default()
        };
        let script = if decl.is_empty() {
            sql.to_string()
        } else {
            format!("{decl};\n{sql}")
        };
        let planned = plan_script(&script, &options)?;
        let types = planned
            .queries()
            .last()
            .expect("a query")
            .output_schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let summaries = planned.run(&options)?;
        let format = FormatOptions::default().with_null("NULL");
        let mut out = Vec::new();
        for batch in summaries.last().expect("a job").output.iter().flatten() {
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &format).expect("formatter"))
                .collect::<Vec<_>>();
            for row in 0..batch.num_rows() {
                out.push(
                    formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .collect(),
                );
            }
        }
        Ok(Output { types, rows: out })
    }

    struct Output {
        types: Vec<DataType>,
        rows: Vec<Vec<String>>,
    }

    fn run(decl: &str, rows: &[&str], sql: &str) -> Output {
        try_run(decl, rows, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn rows_of(sql: &str, rows: &[&str]) -> Vec<Vec<String>> {
        run("", rows, sql).rows
    }

    fn error_of(sql: &str, rows: &[&str]) -> String {
        match try_run("", rows, sql) {
            Ok(out) => panic!("{sql} should fail, gave {:?}", out.rows),
            Err(e) => e.to_string(),
        }
    }

    fn strs(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    const ONE: &[&str] = &[r#"{"k": 1}"#];

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
    fn units_and_paths_may_come_from_columns() {
        let rows = [
            r#"{"u": "minute", "path": "$.a", "j": "{\"a\": 1}"}"#,
            r#"{"u": "hours", "path": "$.b[0]", "j": "{\"b\": [2]}"}"#,
            r#"{"u": "fortnight", "path": "$[", "j": "{}"}"#,
        ];
        let out = rows_of(
            "SELECT DATEDIFF(u, 0, 7200000), JSON_VALUE(j, path), \
             DATEDIFF(second, NOW(), NOW() + INTERVAL '90' SECOND) FROM t",
            &rows,
        );
        assert_eq!(
            out,
            strs(&[
                &["120", "1", "90"],
                &["2", "2", "90"],
                &["NULL", "NULL", "90"]
            ])
        );
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
    fn json_value_and_extract_follow_paths() {
        let doc = r#"{"user":{"name":"ann","tags":["x","y"],"age":31,"score":1.5,"vip":true,"nick":null},"a b":{"c":"q"}}"#;
        let rows = [
            serde_json::json!({ "j": doc }).to_string(),
            serde_json::json!({ "j": "not json" }).to_string(),
            serde_json::json!({ "j": null }).to_string(),
        ];
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let out = rows_of(
            "SELECT JSON_VALUE(j, '$.user.name'), JSON_VALUE(j, '$.user.tags[1]'), \
             JSON_VALUE(j, '$.user.age'), JSON_VALUE(j, '$.user.score'), \
             JSON_VALUE(j, '$.user.vip'), JSON_VALUE(j, '$.user.nick'), \
             JSON_VALUE(j, '$.user.missing'), JSON_VALUE(j, '$.user'), \
             JSON_VALUE(j, '$[''a b''].c'), JSON_VALUE(j, '$.user[\"name\"]'), \
             JSON_EXTRACT(j, '$.user.tags'), JSON_EXTRACT(j, '$.user.name'), \
             JSON_EXTRACT(j, '$.user.age'), JSON_EXTRACT(j, '$.nope') FROM t",
            &rows,
        );
        let nulls = ["NULL"; 14];
        assert_eq!(
            out,
            strs(&[
                &[
                    "ann",
                    "y",
                    "31",
                    "1.5",
                    "true",
                    "NULL",
                    "NULL",
                    "NULL",
                    "q",
                    "ann",
                    r#"["x","y"]"#,
                    r#""ann""#,
                    "31",
                    "NULL"
                ],
                &nulls,
                &nulls,
            ])
        );
    }

    #[test]
    fn json_functions_read_nested_columns() {
        let rows = [
            r#"{"p": {"a": 1, "b": [10, 20], "c": {"d": "e"}}}"#,
            r#"{"q": 1}"#,
        ];
        let out = rows_of(
            "SELECT JSON_VALUE(p, '$.b[1]'), JSON_VALUE(p, 'c.d'), JSON_EXTRACT(p, '$.c') FROM t",
            &rows,
        );
        assert_eq!(
            out,
            strs(&[&["20", "e", r#"{"d":"e"}"#], &["NULL", "NULL", "NULL"]])
        );
    }

    #[test]
    fn json_paths_parse_or_fail_at_planning() {
        assert_eq!(
            parse_json_path("$.a[2]['b c'].d"),
            Ok(vec![
                PathStep::Key("a".into()),
                PathStep::Index(2),
                PathStep::Key("b c".into()),
                PathStep::Key("d".into()),
            ])
        );
        assert_eq!(parse_json_path("$"), Ok(vec![]));
        assert_eq!(parse_json_path("a"), Ok(vec![PathStep::Key("a".into())]));
        assert!(parse_json_path("$.a[x]").is_err());
        assert!(parse_json_path("$.a[1").is_err());
        assert!(parse_json_path("$.*").is_err());
        let e = error_of("SELECT JSON_VALUE('{}', '$.a[') FROM t", ONE);
        assert!(e.contains("invalid JSON path '$.a['"), "{e}");
    }

    #[test]
    fn split_returns_a_list_of_strings() {
        let rows = [r#"{"s": "a,b,,c"}"#, r#"{"s": null}"#, r#"{"s": ""}"#];
        let out = run(
            "",
            &rows,
            "SELECT SPLIT(s, ','), SPLIT('abc', ''), SPLIT('x--y', '--') FROM t",
        );
        assert_eq!(
            out.rows,
            strs(&[
                &["[a, b, , c]", "[abc]", "[x, y]"],
                &["NULL", "[abc]", "[x, y]"],
                &["[]", "[abc]", "[x, y]"],
            ])
        );
        assert_eq!(out.types[0], string_list_type());
    }

    const SERIES: [&str; 5] = [
        r#"{"g": "a", "i": 10, "x": 1.5}"#,
        r#"{"g": "b", "i": 3, "x": null}"#,
        r#"{"g": "a", "i": null, "x": 4.0}"#,
        r#"{"g": "a", "i": 7, "x": 2.25}"#,
        r#"{"g": "b", "i": 1}"#,
    ];

    #[test]
    fn delta_is_last_minus_first_in_arrival_order() {
        let out = run(
            "",
            &SERIES,
            "SELECT g, DELTA(i), DELTA(x) FROM t GROUP BY g EMIT FINAL",
        );
        let mut rows = out.rows;
        rows.sort();
        assert_eq!(rows, strs(&[&["a", "-3", "0.75"], &["b", "-2", "NULL"]]));
        assert_eq!(out.types[1..], [DataType::Int64, DataType::Float64]);

        let changes = rows_of(
            "SELECT g, DELTA(i) AS di, DELTA(x) AS dx FROM t GROUP BY g",
            &SERIES,
        );
        assert_eq!(
            changes,
            strs(&[
                &["a", "0", "0.0"],
                &["b", "0", "NULL"],
                &["a", "0", "2.5"],
                &["a", "-3", "0.75"],
                &["b", "-2", "NULL"],
            ])
        );
    }

    #[test]
    fn delta_keeps_decimals_exact() {
        let rows = [
            r#"{"g": "a", "price": 22.50}"#,
            r#"{"g": "a", "price": 20.10}"#,
        ];
        let out = run(
            "CREATE STREAM t (g VARCHAR, price DECIMAL(10,2))",
            &rows,
            "SELECT g, DELTA(price) FROM t GROUP BY g EMIT FINAL",
        );
        assert_eq!(out.rows, strs(&[&["a", "-2.40"]]));
        assert_eq!(out.types[1], DataType::Decimal128(11, 2));
    }

    #[test]
    fn delta_state_merges_in_any_order() {
        let mk = || DeltaAccumulator::new(&DataType::Int64, DataType::Int64).unwrap();
        let mut a = mk();
        a.update_batch(&[Arc::new(I64::from(vec![None, Some(1), None, Some(3)]))])
            .unwrap();
        let mut empty = mk();
        let mut b = mk();
        b.update_batch(&[Arc::new(I64::from(vec![Some(8), None, Some(5)]))])
            .unwrap();
        let states: Vec<Vec<ScalarValue>> = vec![
            a.state().unwrap(),
            empty.state().unwrap(),
            b.state().unwrap(),
        ];
        let merged_in = |order: [usize; 3]| {
            let column = |i: usize| {
                ScalarValue::iter_to_array(order.iter().map(|&s| states[s][i].clone())).unwrap()
            };
            let mut merged = mk();
            merged
                .merge_batch(&[column(0), column(1), column(2), column(3)])
                .unwrap();
            merged
        };
        // a arrived before b: 5 - 1, whatever order the states are merged in.
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let mut merged = merged_in(order);
            assert_eq!(merged.evaluate().unwrap(), ScalarValue::Int64(Some(4)));
            // evaluate does not consume state.
            assert_eq!(merged.evaluate().unwrap(), ScalarValue::Int64(Some(4)));
        }
        // Merging one state at a time, later first, gives the same.
        let mut stepwise = mk();
        for s in [&states[2], &states[0]] {
            let arrays: Vec<ArrayRef> = s.iter().map(|v| v.to_array().unwrap()).collect();
            stepwise.merge_batch(&arrays).unwrap();
        }
        assert_eq!(stepwise.evaluate().unwrap(), ScalarValue::Int64(Some(4)));
        assert_eq!(empty.evaluate().unwrap(), ScalarValue::Int64(None));
    }

    const VALUES: [&str; 6] = [
        r#"{"g": "a", "x": 30, "s": "c"}"#,
        r#"{"g": "a", "x": 10, "s": "a"}"#,
        r#"{"g": "a", "x": null, "s": null}"#,
        r#"{"g": "a", "x": 40, "s": "d"}"#,
        r#"{"g": "a", "x": 20, "s": "b"}"#,
        r#"{"g": "b", "x": 5, "s": "z"}"#,
    ];

    #[test]
    fn percentile_disc_picks_an_input_value() {
        let out = run(
            "",
            &VALUES,
            "SELECT g, PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY x), \
             PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY x), \
             PERCENTILE_DISC(0.26) WITHIN GROUP (ORDER BY x), \
             PERCENTILE_DISC(0) WITHIN GROUP (ORDER BY x), \
             PERCENTILE_DISC(1.0) WITHIN GROUP (ORDER BY x), \
             PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY x DESC), \
             PERCENTILE_DISC(x, 0.5), \
             PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY s), \
             PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY x) \
             FROM t GROUP BY g EMIT FINAL",
        );
        let mut rows = out.rows;
        rows.sort();
        assert_eq!(
            rows,
            strs(&[
                &["a", "20", "10", "20", "10", "40", "40", "20", "b", "25.0"],
                &["b", "5", "5", "5", "5", "5", "5", "5", "z", "5.0"],
            ])
        );
        assert_eq!(out.types[1], DataType::Int64);
        assert_eq!(out.types[8], DataType::Utf8);
    }

    #[test]
    fn percentile_disc_updates_with_each_change() {
        let changes = rows_of(
            "SELECT g, PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY x) AS p FROM t GROUP BY g",
            &VALUES,
        );
        assert_eq!(
            changes,
            strs(&[
                &["a", "30"],
                &["a", "10"],
                &["a", "10"],
                &["a", "30"],
                &["a", "20"],
                &["b", "5"],
            ])
        );
    }

    #[test]
    fn percentile_disc_checks_its_percentile() {
        let e = error_of(
            "SELECT PERCENTILE_DISC(1.5) WITHIN GROUP (ORDER BY k) FROM t GROUP BY k",
            ONE,
        );
        assert!(e.contains("between 0 and 1"), "{e}");
        let e = error_of("SELECT PERCENTILE_DISC(k, k) FROM t GROUP BY k", ONE);
        assert!(e.contains("must be a constant"), "{e}");
    }

    #[test]
    fn percentile_disc_state_merges() {
        let mk = || PercentileDiscAccumulator {
            data_type: DataType::Float64,
            percentile: 0.5,
            descending: false,
            chunks: Vec::new(),
        };
        let mut a = mk();
        a.update_batch(&[Arc::new(Float64Array::from(vec![30.0, 10.0]))])
            .unwrap();
        let mut b = mk();
        b.update_batch(&[Arc::new(Float64Array::from(vec![
            Some(40.0),
            None,
            Some(20.0),
        ]))])
        .unwrap();
        let mut empty = mk();
        let states = [
            a.state().unwrap(),
            empty.state().unwrap(),
            b.state().unwrap(),
        ];
        let lists = ScalarValue::iter_to_array(states.iter().map(|s| s[0].clone())).unwrap();
        let mut merged = mk();
        merged.merge_batch(&[lists]).unwrap();
        assert_eq!(merged.evaluate().unwrap(), ScalarValue::Float64(Some(20.0)));
        assert_eq!(a.evaluate().unwrap(), ScalarValue::Float64(Some(10.0)));
        assert_eq!(empty.evaluate().unwrap(), ScalarValue::Float64(None));
    }

    const WINDOWED: &str = "CREATE STREAM t (s VARCHAR, v INT, ts BIGINT) \
        WITH ('t.batch.size' = '1', 't.watermark.max_out_of_orderness' = '60s')";

    const TICKS: [&str; 7] = [
        r#"{"s": "A", "v": 1, "ts": 1000}"#,
        r#"{"s": "B", "v": 2, "ts": 2000}"#,
        r#"{"s": "A", "v": 3, "ts": 59999}"#,
        r#"{"s": "A", "v": 4, "ts": 60000}"#,
        r#"{"s": "B", "v": 5, "ts": 61000}"#,
        r#"{"s": "A", "v": 6, "ts": 185000}"#,
        r#"{"s": "A", "v": 2, "ts": 70000}"#,
    ];

    #[test]
    fn delta_and_percentile_disc_in_windows() {
        let query = |window: &str| {
            run(
                WINDOWED,
                &TICKS,
                &format!(
                    "SELECT s, _window_start, DELTA(v) AS d, \
                     PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY v) AS p \
                     FROM t GROUP BY s WINDOW {window}"
                ),
            )
            .rows
        };
        // The A record at 70000 is too late for [60000, 120000) but not for [60000, 180000).
        assert_eq!(
            query("TUMBLING(ts, 1m)"),
            strs(&[
                &["A", "0", "2", "1"],
                &["B", "0", "0", "2"],
                &["A", "60000", "0", "4"],
                &["B", "60000", "0", "5"],
                &["A", "180000", "0", "6"],
            ])
        );
        assert_eq!(
            query("SLIDING(ts, 2m, 1m)"),
            strs(&[
                &["A", "-60000", "2", "1"],
                &["B", "-60000", "0", "2"],
                &["A", "0", "3", "3"],
                &["B", "0", "3", "2"],
                &["A", "60000", "-2", "2"],
                &["B", "60000", "0", "5"],
                &["A", "120000", "0", "6"],
                &["A", "180000", "0", "6"],
            ])
        );
        assert_eq!(
            query("SESSION(ts, 30s)"),
            strs(&[
                &["A", "1000", "0", "1"],
                &["B", "2000", "0", "2"],
                &["A", "59999", "1", "3"],
                &["B", "61000", "0", "5"],
                &["A", "185000", "0", "6"],
            ])
        );
    }

    #[test]
    fn delta_keeps_arrival_order_when_sessions_merge() {
        // 25000 bridges the sessions of 1000 and 50000: arrival order is 1, 5, 3.
        let rows = [
            r#"{"s": "x", "v": 1, "ts": 1000}"#,
            r#"{"s": "x", "v": 5, "ts": 50000}"#,
            r#"{"s": "x", "v": 3, "ts": 25000}"#,
        ];
        let out = run(
            WINDOWED,
            &rows,
            "SELECT s, _window_start, _window_end, DELTA(v), \
             PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY v) FROM t GROUP BY s WINDOW SESSION(ts, 30s)",
        );
        assert_eq!(out.rows, strs(&[&["x", "1000", "80000", "2", "3"]]));
    }

    #[test]
    fn coalesce_nvl_and_nvl2_evaluate() {
        let rows = [
            r#"{"x": 1, "y": 10}"#,
            r#"{"x": null, "y": 20}"#,
            r#"{"k": 0}"#,
        ];
        let out = run(
            "",
            &rows,
            "SELECT COALESCE(x, y, 0), COALESCE(NULL, x, -1), NVL(x, 3), IFNULL(y, 4), \
             NVL2(x, 'set', 'unset'), NULLIF(x, 1), COALESCE(x) FROM t",
        );
        assert_eq!(
            out.rows,
            strs(&[
                &["1", "1", "1", "10", "set", "NULL", "1"],
                &["20", "-1", "3", "20", "unset", "NULL", "NULL"],
                &["0", "-1", "3", "4", "unset", "NULL", "NULL"],
            ])
        );
        assert_eq!(out.types[0], DataType::Int64);
        let grouped = rows_of(
            "SELECT COALESCE(x, 0) AS k, COUNT(*) AS n FROM t GROUP BY COALESCE(x, 0) EMIT FINAL",
            &rows,
        );
        assert_eq!(grouped, strs(&[&["1", "1"], &["0", "2"]]));
    }

    #[test]
    fn order_by_expressions_evaluate_unsimplified() {
        // ORDER BY expressions skip the planner's simplifier: COALESCE, NVL2 and NOW must
        // evaluate as they are (see `Conditional` and `PlanTime`).
        let rows = [
            r#"{"x": 1, "ms": 1000}"#,
            r#"{"x": null, "ms": 3000}"#,
            r#"{"x": 3, "ms": 2000}"#,
            r#"{"x": -2, "ms": 4000}"#,
        ];
        let ordered = |order: &str| {
            rows_of(
                &format!("SELECT x FROM t ORDER BY {order} EMIT FINAL"),
                &rows,
            )
            .into_iter()
            .map(|r| r[0].clone())
            .collect::<Vec<_>>()
        };
        assert_eq!(ordered("COALESCE(x, 0)"), ["-2", "NULL", "1", "3"]);
        assert_eq!(ordered("NVL(x, 10) DESC"), ["NULL", "3", "1", "-2"]);
        assert_eq!(ordered("IFNULL(x, 2)"), ["-2", "1", "NULL", "3"]);
        assert_eq!(ordered("NVL2(x, 0, 1), x"), ["-2", "1", "3", "NULL"]);
        assert_eq!(
            ordered("DATEDIFF(millisecond, ms, NOW())"),
            ["-2", "NULL", "3", "1"]
        );
        assert_eq!(
            ordered("DATEDIFF(day, CURRENT_DATE, CURRENT_TIMESTAMP), x DESC"),
            ["NULL", "3", "1", "-2"]
        );
    }

    #[test]
    fn catalogue_aliases_work() {
        let rows = [
            r#"{"g": "a", "s": "hello", "x": 1.2, "i": 7, "j": 3}"#,
            r#"{"g": "a", "s": "world", "x": -2.5, "i": 4, "j": 2}"#,
            r#"{"g": "a", "s": "hello", "x": 0.5, "i": 9, "j": 5}"#,
        ];
        let out = rows_of(
            "SELECT LEN(s), CEILING(x), REGEXP(s, 'l+o'), MOD(i, j), POSITION('l', s) AS p1, \
             POSITION('l' IN s) AS p2, UNIX_TIMESTAMP('2024-01-01T00:00:00Z'), \
             LEAST(i, j, 4), GREATEST(x, i), CONCAT('a', 1, 2.5), CONCAT(s, '-', i, '-', x) \
             FROM t",
            &rows,
        );
        assert_eq!(
            out[0],
            [
                "5",
                "2.0",
                "true",
                "1",
                "3",
                "3",
                "1704067200",
                "3",
                "7.0",
                "a12.5",
                "hello-7-1.2"
            ]
        );
        assert_eq!(
            out[1],
            [
                "5",
                "-2.0",
                "false",
                "0",
                "4",
                "4",
                "1704067200",
                "2",
                "4.0",
                "a12.5",
                "world-4--2.5"
            ]
        );
        let out = rows_of(
            "SELECT g, FIRST(s), LAST(s), GROUP_CONCAT(s, ','), LISTAGG(s, '|'), \
             APPROX_COUNT_DISTINCT(s), VARIANCE(i), COUNT_DISTINCT(s) FROM t GROUP BY g EMIT FINAL",
            &rows,
        );
        assert_eq!(
            out,
            strs(&[&[
                "a",
                "hello",
                "hello",
                "hello,world,hello",
                "hello|world|hello",
                "2",
                "6.333333333333333",
                "2"
            ]])
        );
    }
}
