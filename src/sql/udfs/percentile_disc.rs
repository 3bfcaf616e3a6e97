//! `PERCENTILE_DISC(p) WITHIN GROUP (ORDER BY x)` / `PERCENTILE_DISC(x, p)`.

use std::mem::size_of_val;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListArray};
use arrow::buffer::OffsetBuffer;
use arrow::compute::{concat, filter, is_not_null, sort_to_indices, SortOptions};
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::{not_impl_err, plan_err, Result};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::format_state_name;
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, ColumnarValue, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

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
    use arrow::array::Float64Array;

    use super::*;
    use crate::sql::udfs::test_support::*;

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

    #[test]
    fn percentile_disc_in_windows() {
        let query = |window: &str| {
            run(
                WINDOWED,
                &TICKS,
                &format!(
                    "SELECT s, _window_start, PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY v) AS p \
                     FROM t GROUP BY s WINDOW {window}"
                ),
            )
            .rows
        };
        // The A record at 70000 is too late for [60000, 120000) but not for [60000, 180000).
        assert_eq!(
            query("TUMBLING(ts, 1m)"),
            strs(&[
                &["A", "0", "1"],
                &["B", "0", "2"],
                &["A", "60000", "4"],
                &["B", "60000", "5"],
                &["A", "180000", "6"],
            ])
        );
        assert_eq!(
            query("SLIDING(ts, 2m, 1m)"),
            strs(&[
                &["A", "-60000", "1"],
                &["B", "-60000", "2"],
                &["A", "0", "3"],
                &["B", "0", "2"],
                &["A", "60000", "2"],
                &["B", "60000", "5"],
                &["A", "120000", "6"],
                &["A", "180000", "6"],
            ])
        );
        assert_eq!(
            query("SESSION(ts, 30s)"),
            strs(&[
                &["A", "1000", "1"],
                &["B", "2000", "2"],
                &["A", "59999", "3"],
                &["B", "61000", "5"],
                &["A", "185000", "6"],
            ])
        );
        // Merged sessions keep every value: the median of 1, 5, 3.
        let merged = run(
            WINDOWED,
            &BRIDGED,
            "SELECT s, _window_start, _window_end, PERCENTILE_DISC(0.5) WITHIN GROUP (ORDER BY v) \
             FROM t GROUP BY s WINDOW SESSION(ts, 30s)",
        );
        assert_eq!(merged.rows, strs(&[&["x", "1000", "80000", "3"]]));
    }
}
