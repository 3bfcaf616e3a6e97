//! `DELTA(x)`: the last minus the first non-null value, in arrival order.

use std::mem::size_of_val;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef, UInt64Type};
use datafusion::common::{exec_datafusion_err, exec_err, plan_err, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{format_state_name, AggregateOrderSensitivity};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use datafusion::scalar::ScalarValue;

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
            t if t.is_integer() => DataType::Int64,
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

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
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

#[cfg(test)]
mod tests {
    use arrow::array::Int64Array;

    use super::*;
    use crate::sql::udfs::test_support::*;

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
        a.update_batch(&[Arc::new(Int64Array::from(vec![
            None,
            Some(1),
            None,
            Some(3),
        ]))])
        .unwrap();
        let mut empty = mk();
        let mut b = mk();
        b.update_batch(&[Arc::new(Int64Array::from(vec![Some(8), None, Some(5)]))])
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

    #[test]
    fn delta_in_windows() {
        let query = |window: &str| {
            run(
                WINDOWED,
                &TICKS,
                &format!(
                    "SELECT s, _window_start, DELTA(v) AS d FROM t GROUP BY s WINDOW {window}"
                ),
            )
            .rows
        };
        // The A record at 70000 is too late for [60000, 120000) but not for [60000, 180000).
        assert_eq!(
            query("TUMBLING(ts, 1m)"),
            strs(&[
                &["A", "0", "2"],
                &["B", "0", "0"],
                &["A", "60000", "0"],
                &["B", "60000", "0"],
                &["A", "180000", "0"],
            ])
        );
        assert_eq!(
            query("SLIDING(ts, 2m, 1m)"),
            strs(&[
                &["A", "-60000", "2"],
                &["B", "-60000", "0"],
                &["A", "0", "3"],
                &["B", "0", "3"],
                &["A", "60000", "-2"],
                &["B", "60000", "0"],
                &["A", "120000", "0"],
                &["A", "180000", "0"],
            ])
        );
        assert_eq!(
            query("SESSION(ts, 30s)"),
            strs(&[
                &["A", "1000", "0"],
                &["B", "2000", "0"],
                &["A", "59999", "1"],
                &["B", "61000", "0"],
                &["A", "185000", "0"],
            ])
        );
    }

    #[test]
    fn delta_keeps_arrival_order_when_sessions_merge() {
        // 25000 bridges the sessions of 1000 and 50000: arrival order is 1, 5, 3.
        let out = run(
            WINDOWED,
            &BRIDGED,
            "SELECT s, _window_start, _window_end, DELTA(v) FROM t GROUP BY s WINDOW SESSION(ts, 30s)",
        );
        assert_eq!(out.rows, strs(&[&["x", "1000", "80000", "2"]]));
    }
}
