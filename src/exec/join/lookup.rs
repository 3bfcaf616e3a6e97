//! `LookupJoinOperator`: joins each stream batch with a table, by key. The table never
//! changes while the stream runs, so the operator keeps no state of its own and a batch's
//! output depends on that batch alone.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, UInt32Array};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::table::LookupTable;
use crate::error::Result;
use crate::exec::change::keep_kind;
use crate::exec::operator::{evaluate, evaluate_predicate, Operator};
use crate::exec::window::event_times;
use crate::sql::{LookupJoinPlan, LookupKind};

/// A stream–table join (INNER, LEFT, semi, anti or mark) against a loaded table.
pub struct LookupJoinOperator {
    plan: LookupJoinPlan,
    table: Arc<LookupTable>,
    /// The pairs of the batch being joined (reused between batches).
    stream_rows: Vec<u32>,
    table_rows: Vec<u32>,
}

impl LookupJoinOperator {
    /// The join of `plan` against `table`.
    pub fn new(plan: LookupJoinPlan, table: Arc<LookupTable>) -> Self {
        LookupJoinOperator {
            plan,
            table,
            stream_rows: Vec::new(),
            table_rows: Vec::new(),
        }
    }

    /// The stream rows and table rows at `stream` and `table` side by side, in the join's
    /// left-right order; a NULL table index gives a row of NULLs.
    fn side_by_side(
        &self,
        batch: &RecordBatch,
        stream: &UInt32Array,
        table: &UInt32Array,
    ) -> Result<Vec<ArrayRef>> {
        let take_all = |b: &RecordBatch, rows: &UInt32Array| -> Result<Vec<ArrayRef>> {
            b.columns()
                .iter()
                .map(|c| Ok(take(c.as_ref(), rows, None)?))
                .collect()
        };
        let stream_columns = take_all(batch, stream)?;
        let table_columns = take_all(self.table.rows(), table)?;
        Ok(match self.plan.stream_left {
            true => [stream_columns, table_columns].concat(),
            false => [table_columns, stream_columns].concat(),
        })
    }

    /// A schema for `columns` from the stream's and the table's fields, all nullable: the
    /// form the residual filter reads.
    fn pair_schema(&self, batch: &RecordBatch) -> SchemaRef {
        let fields = |s: &Schema| -> Vec<Field> {
            s.fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect()
        };
        let (stream, table) = (fields(&batch.schema()), fields(&self.table.rows().schema()));
        Arc::new(Schema::new(match self.plan.stream_left {
            true => [stream, table].concat(),
            false => [table, stream].concat(),
        }))
    }

    /// Keeps the pairs that pass the residual filter of ON.
    fn apply_filter(&mut self, batch: &RecordBatch) -> Result<()> {
        let Some(filter) = &self.plan.filter else {
            return Ok(());
        };
        if self.stream_rows.is_empty() {
            return Ok(());
        }
        let stream = UInt32Array::from(std::mem::take(&mut self.stream_rows));
        let table = UInt32Array::from(std::mem::take(&mut self.table_rows));
        let columns = self.side_by_side(batch, &stream, &table)?;
        let options = RecordBatchOptions::new().with_row_count(Some(stream.len()));
        let pairs = RecordBatch::try_new_with_options(self.pair_schema(batch), columns, &options)?;
        let mask = evaluate_predicate(filter, &pairs)?;
        for (i, pass) in mask.iter().enumerate() {
            if pass == Some(true) {
                self.stream_rows.push(stream.value(i));
                self.table_rows.push(table.value(i));
            }
        }
        Ok(())
    }

    /// Per stream row: does some table row match it (after the filter)?
    fn matched(&self, num_rows: usize) -> Vec<bool> {
        let mut matched = vec![false; num_rows];
        for &row in &self.stream_rows {
            matched[row as usize] = true;
        }
        matched
    }

    /// The output rows of an INNER or LEFT join: each pair, and for LEFT each unmatched
    /// stream row once with NULL table columns, in stream row order.
    fn joined_rows(&self, batch: &RecordBatch, outer: bool) -> Result<RecordBatch> {
        let (stream, table) = match outer {
            false => (
                UInt32Array::from(self.stream_rows.clone()),
                UInt32Array::from(self.table_rows.clone()),
            ),
            true => {
                let mut stream = Vec::with_capacity(self.stream_rows.len() + batch.num_rows());
                let mut table = Vec::with_capacity(stream.capacity());
                let mut pair = 0;
                for row in 0..batch.num_rows() as u32 {
                    let first = pair;
                    while pair < self.stream_rows.len() && self.stream_rows[pair] == row {
                        stream.push(row);
                        table.push(Some(self.table_rows[pair]));
                        pair += 1;
                    }
                    if pair == first {
                        stream.push(row);
                        table.push(None);
                    }
                }
                (UInt32Array::from(stream), UInt32Array::from(table))
            }
        };
        let columns = self.side_by_side(batch, &stream, &table)?;
        let options = RecordBatchOptions::new().with_row_count(Some(stream.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.plan.schema),
            columns,
            &options,
        )?)
    }

    /// NOT IN's answer for each stream row: true only where it is known that no table row is
    /// equal; a NULL on either side makes equality unknown, unless the table is empty.
    /// `keys` are the batch's key columns.
    fn not_in(&self, keys: &[ArrayRef], matched: &[bool]) -> BooleanArray {
        if self.table.is_empty() {
            return BooleanArray::from(vec![true; matched.len()]);
        }
        if self.table.has_null_key() {
            return BooleanArray::from(vec![false; matched.len()]);
        }
        matched
            .iter()
            .enumerate()
            .map(|(row, m)| Some(!m && !keys.iter().any(|k| k.is_null(row))))
            .collect()
    }
}

impl Operator for LookupJoinOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let keys = self
            .plan
            .stream_keys
            .iter()
            .map(|k| evaluate(k, &batch))
            .collect::<Result<Vec<_>>>()?;
        match &self.plan.as_of {
            Some(time) => {
                let times = event_times(time, &batch)?;
                self.table.probe_as_of(
                    &keys,
                    &times,
                    &mut self.stream_rows,
                    &mut self.table_rows,
                )?
            }
            None => self.table.probe(
                &keys,
                batch.num_rows(),
                &mut self.stream_rows,
                &mut self.table_rows,
            )?,
        }
        self.apply_filter(&batch)?;
        let output = match self.plan.kind {
            LookupKind::Inner if self.stream_rows.is_empty() => return Ok(()),
            LookupKind::Inner => self.joined_rows(&batch, false)?,
            LookupKind::Outer => self.joined_rows(&batch, true)?,
            LookupKind::Semi => {
                let mask = BooleanArray::from(self.matched(batch.num_rows()));
                filter_record_batch(&batch, &mask)?
            }
            LookupKind::Anti { null_aware } => {
                let matched = self.matched(batch.num_rows());
                let mask = match null_aware {
                    true => self.not_in(&keys, &matched),
                    false => matched.iter().map(|m| Some(!m)).collect(),
                };
                filter_record_batch(&batch, &mask)?
            }
            LookupKind::Mark => {
                let mark: ArrayRef = Arc::new(BooleanArray::from(self.matched(batch.num_rows())));
                let mut columns = batch.columns().to_vec();
                columns.push(mark);
                let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
                RecordBatch::try_new_with_options(Arc::clone(&self.plan.schema), columns, &options)?
            }
        };
        if output.num_rows() > 0 {
            out.push(keep_kind(&batch, output));
        }
        Ok(())
    }
}
