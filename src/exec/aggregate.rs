//! Continuous GROUP BY without windows. State is one `GroupTable`, updated incrementally per
//! batch; rows are never buffered and rescanned.
//!
//! - EMIT FINAL keeps vectorized `GroupsAccumulator`s and emits every group at end of input.
//! - EMIT CHANGES keeps one `Accumulator` per (group, aggregate), because each input record must
//!   emit its group's row as of that record, and `Accumulator::evaluate` does not consume state.
//! - With `'state.ttl'`, a group idle for the TTL is dropped (see `expiry`): EMIT FINAL emits
//!   its final row then, EMIT CHANGES a delete of its key.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatchOptions};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use super::change::mark_delete;
use super::expiry::{Expiry, UpdateTimes};
use super::group_table::{Aggregates, GroupTable};
use super::input::now_millis;
use super::operator::{evaluate, evaluate_predicate, Operator};
use super::shard::KeyShard;
use super::snapshot::{column, owned_rows, with_column, OperatorState};
use crate::error::Result;
use crate::sql::script::EmitMode;
use crate::sql::{AggregatePlan, TtlClock};

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
    /// `'state.ttl'`: each group's last update.
    expiry: Option<Expiry>,
    /// Each input row's event time, for a TTL on event time.
    time_expr: Option<Arc<dyn PhysicalExpr>>,
    /// The key that is the input's event time: a group closes once the watermark passes it.
    closes_on: Option<usize>,
    /// The times of the open groups (with `closes_on`).
    open_times: BTreeSet<i64>,
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
            expiry: plan.ttl.map(Expiry::new),
            time_expr: plan.time_expr.clone(),
            closes_on: plan.closes_on,
            open_times: BTreeSet::new(),
        })
    }

    /// Keeps the groups `keep` marks; returns the snapshot rows of the others.
    fn split_off(&mut self, keep: &BooleanArray) -> Result<RecordBatch> {
        let rows = with_passing(&self.table.snapshot(&self.aggregates)?, &self.passing)?;
        let kept = filter_record_batch(&rows, keep)?;
        let gone = filter_record_batch(&rows, &arrow::compute::not(keep)?)?;
        self.table = GroupTable::new(&self.aggregates, self.per_record)?;
        self.table.restore(&self.aggregates, &kept)?;
        self.passing = passing_of(&kept, "GROUP BY")?;
        Ok(gone)
    }

    /// The output rows (final values) of the groups whose snapshot rows are `gone`.
    fn final_rows(&self, gone: &RecordBatch) -> Result<RecordBatch> {
        let mut done = GroupTable::new(&self.aggregates, self.per_record)?;
        done.restore(&self.aggregates, gone)?;
        let (mut columns, values) = done.evaluate_all()?;
        columns.extend(values);
        output_batch(&self.output_schema, columns, gone.num_rows())
    }

    /// Notes the times of a batch's groups (their key `at`) as open.
    fn track_times(&mut self, keys: &[ArrayRef], at: usize) -> Result<()> {
        let Some(key) = keys.get(at) else {
            return Ok(());
        };
        let times = arrow::compute::cast(key, &DataType::Int64)?;
        self.open_times
            .extend(times.as_primitive::<Int64Type>().iter().flatten());
        Ok(())
    }

    /// Emits (EMIT FINAL) and drops the groups whose time is before `watermark`: no row of
    /// theirs is still to come.
    fn close(&mut self, at: usize, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.open_times.first().is_none_or(|t| *t >= watermark) {
            return Ok(());
        }
        self.open_times = self.open_times.split_off(&watermark);
        let rows = self.table.snapshot(&self.aggregates)?;
        let times = arrow::compute::cast(rows.column(at), &DataType::Int64)?;
        let keep: BooleanArray = times
            .as_primitive::<Int64Type>()
            .iter()
            .map(|t| Some(t.is_none_or(|t| t >= watermark)))
            .collect();
        let gone = self.split_off(&keep)?;
        if let Some(expiry) = self.expiry.as_mut() {
            expiry.retain(&keep);
        }
        if !self.per_record {
            let rows = apply_having(self.final_rows(&gone)?, self.having.as_ref())?;
            if rows.num_rows() > 0 {
                out.push(rows);
            }
        }
        Ok(())
    }

    /// Records when the last update's groups were seen (`batch` is its input); on
    /// processing time, drops the idle groups if a sweep is due.
    fn track_idle(&mut self, batch: &RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let Some(mut expiry) = self.expiry.take() else {
            return Ok(());
        };
        let result = self.touch_and_sweep(&mut expiry, batch, out);
        self.expiry = Some(expiry);
        result
    }

    fn touch_and_sweep(
        &mut self,
        expiry: &mut Expiry,
        batch: &RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let (groups, n) = (self.table.group_indices(), self.table.len());
        match (expiry.clock(), &self.time_expr) {
            (TtlClock::Event, Some(time)) => {
                let times = arrow::compute::cast(&evaluate(time, batch)?, &DataType::Int64)?;
                let times = times.as_primitive::<Int64Type>();
                expiry.touch(groups, n, UpdateTimes::Each(times));
                Ok(())
            }
            (TtlClock::Event, None) => Err(crate::error::VeloError::Execution(
                "a state.ttl on event time has no event time column".into(),
            )),
            (TtlClock::Processing, _) => {
                let now = now_millis();
                expiry.touch(groups, n, UpdateTimes::All(now));
                self.expire(expiry, now, out)
            }
        }
    }

    /// Drops the groups idle for the TTL at clock `now`: EMIT FINAL emits their rows, EMIT
    /// CHANGES deletes their keys. The table is rebuilt from a snapshot of the groups kept.
    fn expire(&mut self, expiry: &mut Expiry, now: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        let Some(keep) = expiry.sweep(now) else {
            return Ok(());
        };
        let gone = self.split_off(&keep)?;
        expiry.retain(&keep);
        let rows = self.final_rows(&gone)?;
        let rows = match (self.per_record, &self.having) {
            (false, having) => apply_having(rows, having.as_ref())?,
            // A key whose last row failed HAVING was already deleted downstream.
            (true, Some(_)) => {
                let emitted: BooleanArray = passing_of(&gone, "GROUP BY")?
                    .into_iter()
                    .map(Some)
                    .collect();
                mark_delete(filter_record_batch(&rows, &emitted)?)
            }
            (true, None) => mark_delete(rows),
        };
        tracing::debug!(
            expired = gone.num_rows(),
            kept = self.table.len(),
            "state.ttl dropped idle groups"
        );
        if rows.num_rows() > 0 {
            out.push(rows);
        }
        Ok(())
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
        if let Some(at) = self.closes_on {
            self.track_times(&key_columns, at)?;
        }
        if !self.per_record {
            self.table.update(&key_columns, n, &inputs)?;
            return self.track_idle(&batch, out);
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
        )?;
        self.track_idle(&batch, out)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        if let Some(at) = self.closes_on {
            self.close(at, watermark, out)?;
        }
        // The end of a bounded input moves the watermark to the end of time: the stream
        // ended, its keys did not go idle.
        if watermark == i64::MAX {
            return Ok(());
        }
        let Some(mut expiry) = self.expiry.take() else {
            return Ok(());
        };
        let now = match expiry.clock() {
            TtlClock::Event => watermark,
            TtlClock::Processing => now_millis(),
        };
        let result = self.expire(&mut expiry, now, out);
        self.expiry = Some(expiry);
        result
    }

    fn expired_count(&self) -> u64 {
        self.expiry.as_ref().map_or(0, |e| e.expired)
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

    fn state_bytes(&self) -> usize {
        self.table.size()
    }

    fn snapshot(&mut self) -> Result<Option<OperatorState>> {
        let rows = self.table.snapshot(&self.aggregates)?;
        let mut rows = with_passing(&rows, &self.passing)?;
        if let Some(expiry) = &self.expiry {
            rows = expiry.with_seen(&rows)?;
        }
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
        if let Some(expiry) = self.expiry.as_mut() {
            expiry.restore(&rows);
        }
        if let Some(at) = self.closes_on {
            self.track_times(&rows.columns()[..key_count], at)?;
        }
        Ok(())
    }

    fn held_since(&self) -> Option<i64> {
        if self.closes_on.is_some() {
            return self
                .open_times
                .first()
                .copied()
                .filter(|_| !self.per_record);
        }
        // EMIT FINAL without a window emits only at end of input: everything is held.
        (!self.per_record && !self.table.is_empty()).then_some(i64::MIN)
    }
}
