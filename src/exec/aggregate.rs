//! Continuous GROUP BY. State per group is a set of DataFusion accumulators, updated
//! incrementally per batch; rows are never buffered and rescanned.
//!
//! - EMIT FINAL keeps vectorized `GroupsAccumulator`s and emits every group at end of input.
//! - EMIT CHANGES keeps one `Accumulator` per (group, aggregate), because each input record must
//!   emit its group's row as of that record, and `Accumulator::evaluate` does not consume state.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatchOptions};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};
use datafusion::scalar::ScalarValue;

use super::change::mark_delete;
use super::group_keys::GroupKeys;
use super::operator::{evaluate, evaluate_predicate, Operator};
use crate::error::Result;
use crate::sql::script::EmitMode;
use crate::sql::AggregatePlan;

/// Accumulator state of all groups, in the form the emit mode needs.
enum GroupState {
    /// One vectorized accumulator per aggregate, indexed by group.
    Final(Vec<Box<dyn GroupsAccumulator>>),
    /// Per group, one accumulator per aggregate.
    Changes(Vec<Vec<Box<dyn Accumulator>>>),
}

/// The GROUP BY operator.
pub struct GroupByAggregator {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Argument expressions of each aggregate.
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    having: Option<Arc<dyn PhysicalExpr>>,
    output_schema: SchemaRef,
    input_schema: SchemaRef,
    keys: GroupKeys,
    state: GroupState,
    /// EMIT CHANGES with HAVING: whether each group's last emitted row passed HAVING.
    passing: Vec<bool>,
    group_indices: Vec<usize>,
}

impl GroupByAggregator {
    /// Builds the operator for `plan` over batches of `input_schema`.
    pub fn new(plan: &AggregatePlan, input_schema: SchemaRef) -> Result<Self> {
        let key_fields: Vec<_> = plan
            .output_schema
            .fields()
            .iter()
            .take(plan.group_exprs.len())
            .cloned()
            .collect();
        let keys = GroupKeys::new(&Arc::new(Schema::new(key_fields)))?;
        let state = match plan.emit {
            EmitMode::Final => GroupState::Final(
                plan.aggregates
                    .iter()
                    .map(|a| groups_accumulator(a))
                    .collect::<Result<_>>()?,
            ),
            EmitMode::Changes => GroupState::Changes(Vec::new()),
        };
        Ok(GroupByAggregator {
            group_exprs: plan.group_exprs.clone(),
            arguments: plan.aggregates.iter().map(|a| a.expressions()).collect(),
            aggregates: plan.aggregates.clone(),
            filters: plan.filters.clone(),
            having: plan.having.clone(),
            output_schema: Arc::clone(&plan.output_schema),
            input_schema,
            keys,
            state,
            passing: Vec::new(),
            group_indices: Vec::new(),
        })
    }

    fn evaluate_arguments(
        &self,
        batch: &RecordBatch,
    ) -> Result<(Vec<Vec<ArrayRef>>, Vec<Option<BooleanArray>>)> {
        let values = self
            .arguments
            .iter()
            .map(|args| {
                args.iter()
                    .map(|e| evaluate(e, batch))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let filters = self
            .filters
            .iter()
            .map(|f| f.as_ref().map(|f| evaluate_predicate(f, batch)).transpose())
            .collect::<Result<Vec<_>>>()?;
        Ok((values, filters))
    }

    fn output_batch(&self, columns: Vec<ArrayRef>, num_rows: usize) -> Result<RecordBatch> {
        let options = RecordBatchOptions::new().with_row_count(Some(num_rows));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.output_schema),
            columns,
            &options,
        )?)
    }

    /// EMIT CHANGES: update each row's group in input order and emit its row as of that record.
    fn process_changes(
        &mut self,
        batch: &RecordBatch,
        key_columns: Vec<ArrayRef>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let (values, filters) = self.evaluate_arguments(batch)?;
        let GroupState::Changes(groups) = &mut self.state else {
            return Ok(());
        };
        while groups.len() < self.keys.len() {
            groups.push(
                self.aggregates
                    .iter()
                    .map(|a| Ok(a.create_accumulator()?))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let mut results: Vec<Vec<ScalarValue>> =
            vec![Vec::with_capacity(batch.num_rows()); self.aggregates.len()];
        for (row, &g) in self.group_indices.iter().enumerate() {
            for (a, acc) in groups[g].iter_mut().enumerate() {
                let selected = filters[a]
                    .as_ref()
                    .is_none_or(|f| f.is_valid(row) && f.value(row));
                if selected {
                    let slice: Vec<ArrayRef> = values[a].iter().map(|v| v.slice(row, 1)).collect();
                    acc.update_batch(&slice)?;
                }
                results[a].push(acc.evaluate()?);
            }
        }
        let mut columns = key_columns;
        for r in results {
            let field = self.output_schema.field(columns.len());
            let array = if r.is_empty() {
                arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(r)?
            };
            let array = if array.data_type() != field.data_type() {
                arrow::compute::cast(&array, field.data_type())?
            } else {
                array
            };
            columns.push(array);
        }
        let rows = self.output_batch(columns, batch.num_rows())?;
        self.emit_changes(rows, out)
    }

    /// Applies HAVING to per-record change rows: passing rows are upserts; a row that fails
    /// after its group last passed is a delete. Order is kept by cutting runs of one kind.
    fn emit_changes(&mut self, rows: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let Some(having) = &self.having else {
            out.push(rows);
            return Ok(());
        };
        let mask = evaluate_predicate(having, &rows)?;
        self.passing.resize(self.keys.len(), false);
        // kind per row: Some(true) upsert, Some(false) delete, None nothing.
        let mut kinds = Vec::with_capacity(rows.num_rows());
        for (row, &g) in self.group_indices.iter().enumerate() {
            let passes = mask.is_valid(row) && mask.value(row);
            let kind = match (passes, self.passing[g]) {
                (true, _) => Some(true),
                (false, true) => Some(false),
                (false, false) => None,
            };
            self.passing[g] = passes;
            kinds.push(kind);
        }
        let mut start = 0;
        while start < kinds.len() {
            let kind = kinds[start];
            let mut end = start + 1;
            while end < kinds.len() && kinds[end] == kind {
                end += 1;
            }
            if let Some(upsert) = kind {
                let run = rows.slice(start, end - start);
                out.push(if upsert { run } else { mark_delete(run) });
            }
            start = end;
        }
        Ok(())
    }

    /// EMIT FINAL at end of input: one row per group.
    fn emit_all(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let GroupState::Final(accumulators) = &mut self.state else {
            return Ok(());
        };
        if self.group_exprs.is_empty() && self.keys.is_empty() {
            // SQL: a global aggregate over no rows still has one row (COUNT = 0, SUM = NULL).
            let empty = RecordBatch::new_empty(Arc::clone(&self.input_schema));
            for (a, acc) in accumulators.iter_mut().enumerate() {
                let values = self.arguments[a]
                    .iter()
                    .map(|e| evaluate(e, &empty))
                    .collect::<Result<Vec<_>>>()?;
                acc.update_batch(&values, &[], None, 1)?;
            }
            self.keys.ensure_global();
        }
        let num_groups = self.keys.len();
        if num_groups == 0 {
            return Ok(());
        }
        let mut columns = self.keys.all_keys()?;
        for acc in accumulators.iter_mut() {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        let rows = self.output_batch(columns, num_groups)?;
        let rows = match &self.having {
            Some(h) => filter_record_batch(&rows, &evaluate_predicate(h, &rows)?)?,
            None => rows,
        };
        if rows.num_rows() > 0 {
            out.push(rows);
        }
        Ok(())
    }
}

fn groups_accumulator(agg: &Arc<AggregateFunctionExpr>) -> Result<Box<dyn GroupsAccumulator>> {
    if agg.groups_accumulator_supported() {
        return Ok(agg.create_groups_accumulator()?);
    }
    let agg = Arc::clone(agg);
    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
        agg.create_accumulator()
    })))
}

impl Operator for GroupByAggregator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let key_columns = self
            .group_exprs
            .iter()
            .map(|e| evaluate(e, &batch))
            .collect::<Result<Vec<_>>>()?;
        let mut groups = std::mem::take(&mut self.group_indices);
        self.keys
            .intern(&key_columns, batch.num_rows(), &mut groups)?;
        self.group_indices = groups;
        match self.state {
            GroupState::Changes(_) => self.process_changes(&batch, key_columns, out),
            GroupState::Final(_) => {
                let (values, filters) = self.evaluate_arguments(&batch)?;
                let num_groups = self.keys.len();
                let GroupState::Final(accumulators) = &mut self.state else {
                    return Ok(());
                };
                for ((acc, values), filter) in accumulators.iter_mut().zip(&values).zip(&filters) {
                    acc.update_batch(values, &self.group_indices, filter.as_ref(), num_groups)?;
                }
                Ok(())
            }
        }
    }

    fn on_end_of_input(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.emit_all(out)
    }

    fn state_size(&self) -> usize {
        self.keys.len()
    }
}
