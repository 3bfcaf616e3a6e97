//! `ChangeAccumulator`: one aggregate of an EMIT CHANGES table, whose value per group must be
//! read after every record. COUNT, SUM, MIN, MAX and AVG over 64-bit integers and floats keep
//! plain per-group state updated in one tight loop per batch; every other aggregate keeps a
//! DataFusion `Accumulator` per group, fed one row at a time (exact for any function, slower).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, Int64Array, PrimitiveArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{ArrowPrimitiveType, DataType, Float64Type, Int64Type};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::scalar::ScalarValue;

use crate::error::{Result, VeloError};

/// Per-group state of an aggregate evaluated after every record.
pub enum ChangeAccumulator {
    /// Not yet decided: the first batch's argument type picks the representation.
    Unset(Arc<AggregateFunctionExpr>),
    /// A running aggregate over primitive state.
    Running(Running),
    /// One DataFusion accumulator per group.
    PerGroup {
        function: Arc<AggregateFunctionExpr>,
        groups: Vec<Box<dyn Accumulator>>,
    },
}

/// Running aggregates with per-group state; `seen` marks groups with a non-NULL input.
pub enum Running {
    Count(Vec<i64>),
    SumInt(Vec<i64>, Vec<bool>),
    SumFloat(Vec<f64>, Vec<bool>),
    MinInt(Vec<i64>, Vec<bool>),
    MaxInt(Vec<i64>, Vec<bool>),
    MinFloat(Vec<f64>, Vec<bool>),
    MaxFloat(Vec<f64>, Vec<bool>),
    Avg(Vec<(f64, i64)>, Vec<bool>),
}

impl ChangeAccumulator {
    /// The bytes its per-group state holds.
    pub fn size(&self) -> usize {
        match self {
            ChangeAccumulator::Unset(_) => 0,
            ChangeAccumulator::Running(r) => r.size(),
            ChangeAccumulator::PerGroup { groups, .. } => groups.iter().map(|a| a.size()).sum(),
        }
    }
}

impl Running {
    /// The bytes its per-group vectors hold.
    fn size(&self) -> usize {
        use std::mem::size_of_val;
        match self {
            Running::Count(v) => size_of_val(v.as_slice()),
            Running::SumInt(v, s) | Running::MinInt(v, s) | Running::MaxInt(v, s) => {
                size_of_val(v.as_slice()) + s.len()
            }
            Running::SumFloat(v, s) | Running::MinFloat(v, s) | Running::MaxFloat(v, s) => {
                size_of_val(v.as_slice()) + s.len()
            }
            Running::Avg(v, s) => size_of_val(v.as_slice()) + s.len(),
        }
    }

    /// The running form of `function` over arguments of type `arg`, if it has one.
    fn for_function(function: &AggregateFunctionExpr, arg: &DataType) -> Option<Running> {
        if function.is_distinct() || function.expressions().len() != 1 {
            return None;
        }
        let returns = function.field().data_type().clone();
        let int = matches!(arg, DataType::Int64) && returns == DataType::Int64;
        let float = matches!(arg, DataType::Float64) && returns == DataType::Float64;
        Some(match function.fun().name() {
            "count" if returns == DataType::Int64 => Running::Count(Vec::new()),
            "sum" if int => Running::SumInt(Vec::new(), Vec::new()),
            "sum" if float => Running::SumFloat(Vec::new(), Vec::new()),
            "min" if int => Running::MinInt(Vec::new(), Vec::new()),
            "max" if int => Running::MaxInt(Vec::new(), Vec::new()),
            "min" if float => Running::MinFloat(Vec::new(), Vec::new()),
            "max" if float => Running::MaxFloat(Vec::new(), Vec::new()),
            "avg" if float => Running::Avg(Vec::new(), Vec::new()),
            _ => return None,
        })
    }

    /// Adds the rows and returns each row's value after it.
    fn update(
        &mut self,
        groups: &[usize],
        num_groups: usize,
        values: &ArrayRef,
        filter: Option<&BooleanArray>,
    ) -> Result<ArrayRef> {
        let rows = Rows { groups, filter };
        match self {
            Running::Count(counts) => {
                counts.resize(num_groups, 0);
                let out: Int64Array = groups
                    .iter()
                    .enumerate()
                    .map(|(row, &g)| {
                        if rows.selected(row) && values.is_valid(row) {
                            counts[g] += 1;
                        }
                        Some(counts[g])
                    })
                    .collect();
                Ok(Arc::new(out))
            }
            Running::SumInt(s, seen) => rows.fold::<Int64Type, i64, Int64Type>(
                values,
                s,
                seen,
                num_groups,
                |s, v, _| s.wrapping_add(v),
                |s| s,
            ),
            Running::SumFloat(s, seen) => rows.fold::<Float64Type, f64, Float64Type>(
                values,
                s,
                seen,
                num_groups,
                |s, v, _| s + v,
                |s| s,
            ),
            Running::MinInt(s, seen) => rows.fold::<Int64Type, i64, Int64Type>(
                values,
                s,
                seen,
                num_groups,
                |s, v, first| if first { v } else { s.min(v) },
                |s| s,
            ),
            Running::MaxInt(s, seen) => rows.fold::<Int64Type, i64, Int64Type>(
                values,
                s,
                seen,
                num_groups,
                |s, v, first| if first { v } else { s.max(v) },
                |s| s,
            ),
            Running::MinFloat(s, seen) => rows.fold::<Float64Type, f64, Float64Type>(
                values,
                s,
                seen,
                num_groups,
                |s, v, first| {
                    if first || v.total_cmp(&s).is_lt() {
                        v
                    } else {
                        s
                    }
                },
                |s| s,
            ),
            Running::MaxFloat(s, seen) => rows.fold::<Float64Type, f64, Float64Type>(
                values,
                s,
                seen,
                num_groups,
                |s, v, first| {
                    if first || v.total_cmp(&s).is_gt() {
                        v
                    } else {
                        s
                    }
                },
                |s| s,
            ),
            Running::Avg(s, seen) => rows.fold::<Float64Type, (f64, i64), Float64Type>(
                values,
                s,
                seen,
                num_groups,
                |(sum, n), v, _| (sum + v, n + 1),
                |(sum, n)| sum / n as f64,
            ),
        }
    }
}

/// The rows of one update: each row's group and the aggregate's FILTER mask.
struct Rows<'a> {
    groups: &'a [usize],
    filter: Option<&'a BooleanArray>,
}

impl Rows<'_> {
    fn selected(&self, row: usize) -> bool {
        self.filter.is_none_or(|f| f.is_valid(row) && f.value(row))
    }

    /// Folds each selected non-NULL value into its group's state and reads the state after
    /// every row; a group with no value yet reads NULL.
    fn fold<T, S, O>(
        &self,
        values: &ArrayRef,
        state: &mut Vec<S>,
        seen: &mut Vec<bool>,
        num_groups: usize,
        step: impl Fn(S, T::Native, bool) -> S,
        read: impl Fn(S) -> O::Native,
    ) -> Result<ArrayRef>
    where
        T: ArrowPrimitiveType,
        S: Copy + Default,
        O: ArrowPrimitiveType,
    {
        let values: &PrimitiveArray<T> = values.as_primitive_opt().ok_or_else(|| {
            VeloError::Execution(format!(
                "a running aggregate expected {}, got {}",
                T::DATA_TYPE,
                values.data_type()
            ))
        })?;
        state.resize(num_groups, S::default());
        seen.resize(num_groups, false);
        let mut out = Vec::with_capacity(self.groups.len());
        let mut valid = BooleanBufferBuilder::new(self.groups.len());
        for (row, &g) in self.groups.iter().enumerate() {
            if values.is_valid(row) && self.selected(row) {
                state[g] = step(state[g], values.value(row), !seen[g]);
                seen[g] = true;
            }
            out.push(read(state[g]));
            valid.append(seen[g]);
        }
        Ok(Arc::new(PrimitiveArray::<O>::new(
            out.into(),
            Some(NullBuffer::new(valid.finish())),
        )))
    }
}

impl ChangeAccumulator {
    /// State for `function`, decided on its first input.
    pub fn new(function: &Arc<AggregateFunctionExpr>) -> Self {
        ChangeAccumulator::Unset(Arc::clone(function))
    }

    /// Adds the rows (`groups[i]` is row i's group) and returns the aggregate's value after
    /// each row.
    pub fn update(
        &mut self,
        groups: &[usize],
        num_groups: usize,
        values: &[ArrayRef],
        filter: Option<&BooleanArray>,
    ) -> Result<ArrayRef> {
        if let ChangeAccumulator::Unset(function) = self {
            let function = Arc::clone(function);
            *self = match values
                .first()
                .and_then(|v| Running::for_function(&function, v.data_type()))
            {
                Some(running) => ChangeAccumulator::Running(running),
                None => ChangeAccumulator::PerGroup {
                    function,
                    groups: Vec::new(),
                },
            };
        }
        match self {
            ChangeAccumulator::Running(running) => match values.first() {
                Some(v) => running.update(groups, num_groups, v, filter),
                None => Err(VeloError::Execution(
                    "a running aggregate lost its argument".into(),
                )),
            },
            ChangeAccumulator::PerGroup {
                function,
                groups: accumulators,
            } => {
                while accumulators.len() < num_groups {
                    accumulators.push(function.create_accumulator()?);
                }
                let mut results = Vec::with_capacity(groups.len());
                for (row, &g) in groups.iter().enumerate() {
                    let acc = &mut accumulators[g];
                    if filter.is_none_or(|f| f.is_valid(row) && f.value(row)) {
                        let slice: Vec<ArrayRef> = values.iter().map(|v| v.slice(row, 1)).collect();
                        acc.update_batch(&slice)?;
                    }
                    results.push(acc.evaluate()?);
                }
                if results.is_empty() {
                    return Ok(arrow::array::new_empty_array(function.field().data_type()));
                }
                Ok(ScalarValue::iter_to_array(results)?)
            }
            ChangeAccumulator::Unset(_) => Err(VeloError::Execution(
                "an aggregate was not initialised".into(),
            )),
        }
    }
}

impl ChangeAccumulator {
    /// Every group's current value (`num_groups` of them), as [`Self::update`] last returned
    /// it for each.
    pub fn evaluate(&mut self, num_groups: usize) -> Result<ArrayRef> {
        match self {
            ChangeAccumulator::Unset(function) => Ok(arrow::array::new_null_array(
                function.field().data_type(),
                num_groups,
            )),
            ChangeAccumulator::Running(Running::Avg(state, seen)) => {
                let values: PrimitiveArray<Float64Type> = (0..num_groups)
                    .map(|g| match (state.get(g), seen.get(g)) {
                        (Some((sum, n)), Some(true)) => Some(sum / *n as f64),
                        _ => None,
                    })
                    .collect();
                Ok(Arc::new(values))
            }
            // The other running forms keep the value itself.
            ChangeAccumulator::Running(running) => {
                let (_, mut columns) = running_state(running, num_groups);
                Ok(columns.swap_remove(0))
            }
            ChangeAccumulator::PerGroup { function, groups } => {
                while groups.len() < num_groups {
                    groups.push(function.create_accumulator()?);
                }
                if num_groups == 0 {
                    return Ok(arrow::array::new_empty_array(function.field().data_type()));
                }
                let values = groups
                    .iter_mut()
                    .take(num_groups)
                    .map(|acc| Ok(acc.evaluate()?))
                    .collect::<Result<Vec<_>>>()?;
                Ok(ScalarValue::iter_to_array(values)?)
            }
        }
    }
}

/// The state columns of a running aggregate, and its name in a checkpoint.
fn running_state(running: &Running, num_groups: usize) -> (&'static str, Vec<ArrayRef>) {
    fn valid(seen: &[bool], n: usize) -> Option<NullBuffer> {
        let mut bits = BooleanBufferBuilder::new(n);
        for g in 0..n {
            bits.append(seen.get(g).copied().unwrap_or(false));
        }
        Some(NullBuffer::new(bits.finish()))
    }
    fn padded<S: Copy + Default>(values: &[S], n: usize) -> Vec<S> {
        let mut v = values.to_vec();
        v.resize(n, S::default());
        v
    }
    let n = num_groups;
    let ints = |v: &[i64], seen: &[bool]| -> ArrayRef {
        Arc::new(Int64Array::new(padded(v, n).into(), valid(seen, n)))
    };
    let floats = |v: &[f64], seen: &[bool]| -> ArrayRef {
        Arc::new(PrimitiveArray::<Float64Type>::new(
            padded(v, n).into(),
            valid(seen, n),
        ))
    };
    match running {
        Running::Count(c) => ("count", vec![Arc::new(Int64Array::from(padded(c, n)))]),
        Running::SumInt(s, seen) => ("sum_int", vec![ints(s, seen)]),
        Running::SumFloat(s, seen) => ("sum_float", vec![floats(s, seen)]),
        Running::MinInt(s, seen) => ("min_int", vec![ints(s, seen)]),
        Running::MaxInt(s, seen) => ("max_int", vec![ints(s, seen)]),
        Running::MinFloat(s, seen) => ("min_float", vec![floats(s, seen)]),
        Running::MaxFloat(s, seen) => ("max_float", vec![floats(s, seen)]),
        Running::Avg(s, seen) => {
            let sums: Vec<f64> = s.iter().map(|(sum, _)| *sum).collect();
            let counts: Vec<i64> = s.iter().map(|(_, count)| *count).collect();
            ("avg", vec![floats(&sums, seen), ints(&counts, seen)])
        }
    }
}

/// A running aggregate rebuilt from its checkpointed columns (see `running_state`).
fn running_from_state(form: &str, columns: &[ArrayRef]) -> Result<Option<Running>> {
    fn ints(c: Option<&ArrayRef>) -> Result<(Vec<i64>, Vec<bool>)> {
        let a = c
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| {
                VeloError::Execution("a running aggregate's state is not BIGINT".into())
            })?;
        Ok((
            a.values().to_vec(),
            (0..a.len()).map(|i| a.is_valid(i)).collect(),
        ))
    }
    fn floats(c: Option<&ArrayRef>) -> Result<(Vec<f64>, Vec<bool>)> {
        let a = c
            .and_then(|c| c.as_primitive_opt::<Float64Type>())
            .ok_or_else(|| {
                VeloError::Execution("a running aggregate's state is not DOUBLE".into())
            })?;
        Ok((
            a.values().to_vec(),
            (0..a.len()).map(|i| a.is_valid(i)).collect(),
        ))
    }
    let first = columns.first();
    Ok(Some(match form {
        "count" => Running::Count(ints(first)?.0),
        "sum_int" => ints(first).map(|(v, s)| Running::SumInt(v, s))?,
        "sum_float" => floats(first).map(|(v, s)| Running::SumFloat(v, s))?,
        "min_int" => ints(first).map(|(v, s)| Running::MinInt(v, s))?,
        "max_int" => ints(first).map(|(v, s)| Running::MaxInt(v, s))?,
        "min_float" => floats(first).map(|(v, s)| Running::MinFloat(v, s))?,
        "max_float" => floats(first).map(|(v, s)| Running::MaxFloat(v, s))?,
        "avg" => {
            let (sums, seen) = floats(first)?;
            let (counts, _) = ints(columns.get(1))?;
            Running::Avg(sums.into_iter().zip(counts).collect(), seen)
        }
        _ => return Ok(None),
    }))
}

/// The form name of per-group DataFusion accumulators in a checkpoint.
const ACCUMULATOR_FORM: &str = "accumulator";

impl ChangeAccumulator {
    /// The state of every group (`num_groups` of them) as columns, with the name of the
    /// form they are in; the accumulator is unchanged. An aggregate that has seen no input
    /// has no columns.
    pub fn state(&mut self, num_groups: usize) -> Result<(&'static str, Vec<ArrayRef>)> {
        match self {
            ChangeAccumulator::Unset(_) => Ok(("unset", Vec::new())),
            ChangeAccumulator::Running(running) => Ok(running_state(running, num_groups)),
            ChangeAccumulator::PerGroup { function, groups } => {
                while groups.len() < num_groups {
                    groups.push(function.create_accumulator()?);
                }
                let states = groups
                    .iter_mut()
                    .map(|acc| Ok(acc.state()?))
                    .collect::<Result<Vec<Vec<ScalarValue>>>>()?;
                let fields = function.state_fields()?;
                let columns = (0..fields.len())
                    .map(|j| {
                        if states.is_empty() {
                            return Ok(arrow::array::new_empty_array(fields[j].data_type()));
                        }
                        Ok(ScalarValue::iter_to_array(
                            states.iter().map(|s| s[j].clone()),
                        )?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok((ACCUMULATOR_FORM, columns))
            }
        }
    }

    /// Restores the state written by [`Self::state`] (`form` and its columns, one row per
    /// group) into an accumulator that has seen nothing.
    pub fn restore(&mut self, form: &str, columns: &[ArrayRef]) -> Result<()> {
        let function = match self {
            ChangeAccumulator::Unset(f) => Arc::clone(f),
            _ => {
                return Err(VeloError::Execution(
                    "state restored into an aggregate that already has state".into(),
                ))
            }
        };
        if form == "unset" {
            return Ok(());
        }
        if let Some(running) = running_from_state(form, columns)? {
            *self = ChangeAccumulator::Running(running);
            return Ok(());
        }
        if form != ACCUMULATOR_FORM {
            return Err(VeloError::Execution(format!(
                "unknown aggregate state form '{form}' in a checkpoint"
            )));
        }
        let rows = columns.first().map_or(0, |c| c.len());
        let mut groups = Vec::with_capacity(rows);
        for row in 0..rows {
            let mut acc = function.create_accumulator()?;
            let slice: Vec<ArrayRef> = columns.iter().map(|c| c.slice(row, 1)).collect();
            acc.merge_batch(&slice)?;
            groups.push(acc);
        }
        *self = ChangeAccumulator::PerGroup { function, groups };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{PlanStage, QueryPlanner};
    use arrow::array::Float64Array;
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;

    /// The aggregates of `SELECT k, f(i), f(x) ... GROUP BY k EMIT CHANGES`.
    fn functions() -> Vec<Arc<AggregateFunctionExpr>> {
        let mut planner = QueryPlanner::new();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("i", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
        ]));
        planner.register_source("t", schema).expect("source");
        let plan = planner
            .plan_sql(
                "SELECT k, COUNT(*), COUNT(i), SUM(i), MIN(i), MAX(i), AVG(i), \
                 SUM(x), MIN(x), MAX(x), AVG(x) FROM t GROUP BY k EMIT CHANGES",
                "q",
            )
            .expect("plan");
        plan.stages
            .iter()
            .find_map(|s| match s {
                PlanStage::Aggregate(a) => Some(a.aggregates.clone()),
                _ => None,
            })
            .expect("an aggregate stage")
    }

    #[test]
    fn running_aggregates_match_datafusion_accumulators() {
        let mut seed: u64 = 11;
        let mut next = move || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            seed >> 33
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("i", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let batches: Vec<(Vec<usize>, RecordBatch, BooleanArray)> = (0..4)
            .map(|_| {
                let groups: Vec<usize> = (0..300).map(|_| next() as usize % 17).collect();
                let ints: Int64Array = (0..300)
                    .map(|_| (next() % 5 != 0).then(|| next() as i64 % 1000 - 500))
                    .collect();
                let floats: Float64Array = (0..300)
                    .map(|_| (next() % 5 != 0).then(|| (next() % 10_000) as f64 / 7.0 - 600.0))
                    .collect();
                let filter: BooleanArray = (0..300).map(|_| Some(next() % 3 != 0)).collect();
                let keys = Int64Array::from_iter_values(groups.iter().map(|g| *g as i64));
                let batch = RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(keys), Arc::new(ints), Arc::new(floats)],
                )
                .expect("batch");
                (groups, batch, filter)
            })
            .collect();
        let functions = functions();
        assert_eq!(functions.len(), 10);
        for function in &functions {
            let mut running = ChangeAccumulator::new(function);
            let mut reference = ChangeAccumulator::PerGroup {
                function: Arc::clone(function),
                groups: Vec::new(),
            };
            for (groups, batch, filter) in &batches {
                let values: Vec<ArrayRef> = function
                    .expressions()
                    .iter()
                    .map(|e| crate::exec::operator::evaluate(e, batch).expect("argument"))
                    .collect();
                for filter in [None, Some(filter)] {
                    let got = running
                        .update(groups, 17, &values, filter)
                        .expect("running");
                    let want = reference
                        .update(groups, 17, &values, filter)
                        .expect("reference");
                    assert_eq!(&got, &want, "{}", function.name());
                }
            }
            assert!(
                matches!(running, ChangeAccumulator::Running(_)),
                "{} should run",
                function.name()
            );
        }
    }
}
