//! Continuous GROUP BY without windows. State is one `GroupTable`, updated incrementally per
//! batch; rows are never buffered and rescanned.
//!
//! - EMIT FINAL keeps vectorized `GroupsAccumulator`s and emits every group at end of input.
//! - EMIT CHANGES keeps one `Accumulator` per (group, aggregate), because each input record must
//!   emit its group's row as of that record, and `Accumulator::evaluate` does not consume state.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatchOptions};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use super::change::mark_delete;
use super::group_table::{Aggregates, GroupTable};
use super::operator::{evaluate, evaluate_predicate, Operator};
use super::shard::KeyShard;
use super::snapshot::{column, owned_rows, with_column, OperatorState};
use crate::error::Result;
use crate::sql::script::EmitMode;
use crate::sql::AggregatePlan;

/// The aggregates of a plan, keyed by the first `key_count` fields of its output schema.
pub fn aggregates_of(plan: &AggregatePlan, key_fields: &[usize]) -> Aggregates {
    let key_schema = Arc::new(Schema::new(
        key_fields
            .iter()
            .map(|&i| plan.output_schema.field(i).as_ref().clone())
            .collect::<Vec<_>>(),
    ));
    Aggregates::new(plan.aggregates.clone(), plan.filters.clone(), key_schema)
}

/// Builds an output batch of `schema` from columns, casting where an accumulator's type differs.
pub fn output_batch(
    schema: &SchemaRef,
    columns: Vec<ArrayRef>,
    num_rows: usize,
) -> Result<RecordBatch> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            Ok(if c.data_type() == f.data_type() {
                c
            } else {
                arrow::compute::cast(&c, f.data_type())?
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(num_rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &options,
    )?)
}

/// Applies HAVING to per-record change rows: passing rows are upserts; a row that fails after
/// its group last passed is a delete; other failing rows emit nothing. Order is kept by
/// cutting the rows into runs of one kind.
pub fn emit_changes(
    rows: RecordBatch,
    having: Option<&Arc<dyn PhysicalExpr>>,
    groups: &[usize],
    passing: &mut Vec<bool>,
    out: &mut Vec<RecordBatch>,
) -> Result<()> {
    let Some(having) = having else {
        out.push(rows);
        return Ok(());
    };
    let mask = evaluate_predicate(having, &rows)?;
    let max_group = groups.iter().copied().max().map(|g| g + 1).unwrap_or(0);
    if passing.len() < max_group {
        passing.resize(max_group, false);
    }
    // Per row: Some(true) upsert, Some(false) delete, None nothing.
    let kinds: Vec<Option<bool>> = groups
        .iter()
        .enumerate()
        .map(|(row, &g)| {
            let passes = mask.is_valid(row) && mask.value(row);
            let kind = match (passes, passing[g]) {
                (true, _) => Some(true),
                (false, true) => Some(false),
                (false, false) => None,
            };
            passing[g] = passes;
            kind
        })
        .collect();
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

/// Applies HAVING to final rows.
pub fn apply_having(
    rows: RecordBatch,
    having: Option<&Arc<dyn PhysicalExpr>>,
) -> Result<RecordBatch> {
    match having {
        Some(h) => Ok(filter_record_batch(&rows, &evaluate_predicate(h, &rows)?)?),
        None => Ok(rows),
    }
}

/// A group table's snapshot with each group's HAVING state (`_passing`, EMIT CHANGES).
pub fn with_passing(rows: &RecordBatch, passing: &[bool]) -> Result<RecordBatch> {
    let column: arrow::array::BooleanArray = (0..rows.num_rows())
        .map(|g| Some(passing.get(g).copied().unwrap_or(false)))
        .collect();
    with_column(rows, "_passing", Arc::new(column))
}

/// The HAVING state of restored groups, in group order (see [`with_passing`]).
pub fn passing_of(rows: &RecordBatch, operator: &str) -> Result<Vec<bool>> {
    let passing: arrow::array::BooleanArray = column(rows, "_passing", operator)?;
    Ok(passing.iter().map(|p| p.unwrap_or(false)).collect())
}

/// The GROUP BY operator (no window).
pub struct GroupByAggregator {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggregates: Aggregates,
    having: Option<Arc<dyn PhysicalExpr>>,
    output_schema: SchemaRef,
    input_schema: SchemaRef,
    table: GroupTable,
    per_record: bool,
    /// EMIT CHANGES with HAVING: whether each group's last emitted row passed HAVING.
    passing: Vec<bool>,
}

impl GroupByAggregator {
    /// Builds the operator for `plan` over batches of `input_schema`.
    pub fn new(plan: &AggregatePlan, input_schema: SchemaRef) -> Result<Self> {
        let keys: Vec<usize> = (0..plan.group_exprs.len()).collect();
        let aggregates = aggregates_of(plan, &keys);
        let per_record = plan.emit == EmitMode::Changes;
        Ok(GroupByAggregator {
            table: GroupTable::new(&aggregates, per_record)?,
            group_exprs: plan.group_exprs.clone(),
            aggregates,
            having: plan.having.clone(),
            output_schema: Arc::clone(&plan.output_schema),
            input_schema,
            per_record,
            passing: Vec::new(),
        })
    }
}

impl Operator for GroupByAggregator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let key_columns = self
            .group_exprs
            .iter()
            .map(|e| evaluate(e, &batch))
            .collect::<Result<Vec<_>>>()?;
        let inputs = self.aggregates.inputs(&batch)?;
        let n = batch.num_rows();
        if !self.per_record {
            return self.table.update(&key_columns, n, &inputs);
        }
        let values = self.table.update_per_record(&key_columns, n, &inputs)?;
        let mut columns = key_columns;
        columns.extend(values);
        let rows = output_batch(&self.output_schema, columns, n)?;
        emit_changes(
            rows,
            self.having.as_ref(),
            self.table.group_indices(),
            &mut self.passing,
            out,
        )
    }

    fn on_end_of_input(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.per_record {
            return Ok(());
        }
        self.table
            .ensure_global_group(&self.aggregates, &self.input_schema)?;
        let n = self.table.len();
        if n == 0 {
            return Ok(());
        }
        let (mut columns, values) = self.table.evaluate_all()?;
        columns.extend(values);
        let rows = apply_having(
            output_batch(&self.output_schema, columns, n)?,
            self.having.as_ref(),
        )?;
        if rows.num_rows() > 0 {
            out.push(rows);
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.table.len()
    }

    fn snapshot(&mut self) -> Result<Option<OperatorState>> {
        let rows = self.table.snapshot(&self.aggregates)?;
        let rows = with_passing(&rows, &self.passing)?;
        Ok(Some(OperatorState {
            rows,
            scalars: Default::default(),
        }))
    }

    fn restore(&mut self, states: &[OperatorState], shard: &KeyShard) -> Result<()> {
        let key_count = self.group_exprs.len();
        let Some(rows) = owned_rows(states, shard, |r| r.columns()[..key_count].to_vec())? else {
            return Ok(());
        };
        self.table.restore(&self.aggregates, &rows)?;
        self.passing = passing_of(&rows, "GROUP BY")?;
        Ok(())
    }

    fn held_since(&self) -> Option<i64> {
        // EMIT FINAL without a window emits only at end of input: everything is held.
        (!self.per_record && !self.table.is_empty()).then_some(i64::MIN)
    }
}
