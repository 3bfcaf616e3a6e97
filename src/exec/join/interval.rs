//! `IntervalJoinOperator`: joins two streams on a key and a time bound,
//! `lower <= right.time - left.time <= upper`. Each side's rows wait in state, per key in
//! event-time order, until the other side's watermark passes the last time a partner could
//! have; a probe scans only the range of times the bound allows. An outer side's row that met
//! no partner comes out NULL-padded at that moment, not later.

use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, Int64Array, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{Result, VeloError};
use crate::exec::operator::{evaluate, evaluate_predicate, Operator};
use crate::exec::shard::KeyShard;
use crate::exec::snapshot::{column, OperatorState};
use crate::exec::window::{event_times, LateRecords};

use super::key_encoder::KeyEncoder;
use super::side_state::{SideState, Waiting};
use super::state_rows::{join_state, owned_side_rows, restored_clocks, side_state_rows};
use crate::sql::{IntervalJoinPlan, JoinSides};

/// A batch's rows that go on: `(input row, other side's (batch, row))` pairs.
struct Pairs {
    rows: Vec<u32>,
    partners: Vec<(u64, u32)>,
    /// The partner's key slot and time, to mark it matched once the pair passes the filter.
    partner_at: Vec<(usize, u32, (i64, u64))>,
}

/// The interval join of input 0 (left) with input 1 (right).
pub struct IntervalJoinOperator {
    plan: IntervalJoinPlan,
    schema: SchemaRef,
    sides: [SideState; 2],
    /// Each side's watermark as last heard.
    watermarks: [i64; 2],
    /// Each side's key encoder.
    encoders: [KeyEncoder; 2],
    late: LateRecords,
    /// The most rows held at once.
    peak_rows: usize,
}

impl IntervalJoinOperator {
    /// The join of `plan`, emitting rows of `schema`.
    pub fn new(plan: IntervalJoinPlan, schema: SchemaRef) -> Self {
        IntervalJoinOperator {
            plan,
            schema,
            sides: Default::default(),
            watermarks: [i64::MIN; 2],
            encoders: Default::default(),
            late: LateRecords::default(),
            peak_rows: 0,
        }
    }

    /// The most rows both sides held at once so far.
    pub fn peak_rows(&self) -> usize {
        self.peak_rows
    }

    /// With `'state.ttl'`: rows with times before this are dropped (the earlier watermark
    /// less the TTL); without it, nothing expires.
    fn expired_before(&self) -> i64 {
        match self.plan.ttl_ms {
            Some(ttl) => self.watermarks[0]
                .min(self.watermarks[1])
                .saturating_sub(ttl),
            None => i64::MIN,
        }
    }

    /// The range of the other side's times a row of `side` at `time` may meet.
    fn partner_range(&self, side: usize, time: i64) -> (i64, i64) {
        let (lower, upper) = (self.plan.lower_ms, self.plan.upper_ms);
        match side {
            0 => (time.saturating_add(lower), time.saturating_add(upper)),
            _ => (time.saturating_sub(upper), time.saturating_sub(lower)),
        }
    }

    fn encode(
        &mut self,
        side: usize,
        batch: &RecordBatch,
    ) -> Result<(arrow::row::Rows, Vec<bool>)> {
        let keys = self.plan.keys[side]
            .iter()
            .map(|k| evaluate(k, batch))
            .collect::<Result<Vec<ArrayRef>>>()?;
        self.encoders[side].encode(&keys, batch.num_rows())
    }

    /// The rows of `side`'s `batch` side by side with their partners, in left-right order.
    fn joined(&self, side: usize, batch: &RecordBatch, pairs: &Pairs) -> Result<Vec<ArrayRef>> {
        let own = take_record_batch(batch, &UInt32Array::from(pairs.rows.clone()))?;
        let partners = self.sides[1 - side]
            .batches
            .gather(&pairs.partners, &self.plan.side_schemas[1 - side])?;
        let (left, right) = match side {
            0 => (own, partners),
            _ => (partners, own),
        };
        Ok([left.columns(), right.columns()].concat())
    }

    /// A semi join's output: each left row the moment it first meets a partner, whether it
    /// arrived now (`side` 0, `matched`) or waited (`first_met`, when a right row arrived).
    fn emit_first_met(
        &self,
        side: usize,
        batch: &RecordBatch,
        matched: &[bool],
        first_met: &[(u64, u32)],
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let rows = match side {
            0 => {
                let rows: Vec<u32> = (0..batch.num_rows())
                    .filter(|&r| matched[r])
                    .map(|r| r as u32)
                    .collect();
                take_record_batch(batch, &UInt32Array::from(rows))?
            }
            _ if first_met.is_empty() => return Ok(()),
            _ => self.sides[0]
                .batches
                .gather(first_met, &self.plan.side_schemas[0])?,
        };
        if rows.num_rows() > 0 {
            out.push(self.output(rows.columns().to_vec(), rows.num_rows())?);
        }
        Ok(())
    }

    /// `rows` of a side with the other side's columns NULL, as output rows.
    fn padded(&self, side: usize, rows: RecordBatch) -> Result<RecordBatch> {
        let n = rows.num_rows();
        if self.plan.sides.left_only() {
            return self.output(rows.columns().to_vec(), n);
        }
        let nulls: Vec<ArrayRef> = self.plan.side_schemas[1 - side]
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), n))
            .collect();
        let columns = match side {
            0 => [rows.columns().to_vec(), nulls].concat(),
            _ => [nulls, rows.columns().to_vec()].concat(),
        };
        self.output(columns, n)
    }

    fn output(&self, columns: Vec<ArrayRef>, n: usize) -> Result<RecordBatch> {
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }

    /// The pass mask of the ON filter over joined columns (all pass without a filter).
    fn passing(&self, columns: &[ArrayRef], n: usize) -> Result<Vec<bool>> {
        let Some(filter) = &self.plan.filter else {
            return Ok(vec![true; n]);
        };
        let fields: Vec<Field> = self
            .plan
            .side_schemas
            .iter()
            .flat_map(|s| {
                s.fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let pairs = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns.to_vec(),
            &options,
        )?;
        Ok(evaluate_predicate(filter, &pairs)?
            .iter()
            .map(|p| p == Some(true))
            .collect())
    }

    /// Joins a batch of `side` with the other side's waiting rows, then keeps its rows that
    /// may still meet partners to come.
    fn process_side(
        &mut self,
        side: usize,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let times: Int64Array = event_times(&self.plan.times[side], &batch)?;
        let (keys, null_key) = self.encode(side, &batch)?;
        let own_watermark = self.watermarks[side];
        let other_watermark = self.watermarks[1 - side];
        let expired_before = self.expired_before();
        let mut pairs = Pairs {
            rows: Vec::new(),
            partners: Vec::new(),
            partner_at: Vec::new(),
        };
        // Per row: kept (its time), or not (None: late, timeless or past every partner).
        let mut keep: Vec<Option<i64>> = Vec::with_capacity(batch.num_rows());
        let mut late = vec![false; batch.num_rows()];
        for (row, &null) in null_key.iter().enumerate() {
            if times.is_null(row) {
                keep.push(None);
                continue;
            }
            let time = times.value(row);
            if time < own_watermark && self.plan.ttl_ms.is_none() || time < expired_before {
                late[row] = true;
                keep.push(None);
                continue;
            }
            let (from, to) = self.partner_range(side, time);
            if !null {
                let key = keys.row(row);
                if let Some((slot, waiting)) = self.sides[1 - side].rows_of(key.as_ref()) {
                    for (at, w) in waiting.range(from, to) {
                        pairs.rows.push(row as u32);
                        pairs.partners.push((w.batch, w.row));
                        pairs.partner_at.push((row, slot, *at));
                    }
                }
            }
            // Partners to come have times from the other side's watermark on.
            let waits = !null && to >= other_watermark;
            keep.push(waits.then_some(time));
        }
        if late.iter().any(|l| *l) {
            let reason = match self.plan.ttl_ms {
                Some(_) => "the record is older than the join's 'state.ttl'",
                None => "the record is behind its side's watermark",
            };
            let mask = arrow::array::BooleanArray::from(late.clone());
            self.late
                .collect(&batch, &mask, reason, self.plan.late_strategy)?;
        }
        let n = pairs.rows.len();
        let columns = self.joined(side, &batch, &pairs)?;
        let pass = self.passing(&columns, n)?;
        let mut matched = vec![false; batch.num_rows()];
        // The waiting partners met for the first time now (a semi join's left rows to emit).
        let mut first_met: Vec<(u64, u32)> = Vec::new();
        let semi = self.plan.sides == JoinSides::Semi;
        for (i, ok) in pass.iter().enumerate() {
            if !ok {
                continue;
            }
            let (row, slot, at) = pairs.partner_at[i];
            matched[row] = true;
            if let Some(w) = self.sides[1 - side].keys[slot as usize].rows.get_mut(&at) {
                if semi && !w.matched {
                    first_met.push((w.batch, w.row));
                }
                w.matched = true;
            }
        }
        if semi {
            self.emit_first_met(side, &batch, &matched, &first_met, out)?;
        } else if pass.iter().any(|p| *p) && !self.plan.sides.left_only() {
            let mask = arrow::array::BooleanArray::from(pass);
            let columns = columns
                .iter()
                .map(|c| Ok(arrow::compute::filter(c.as_ref(), &mask)?))
                .collect::<Result<Vec<_>>>()?;
            let rows = columns.first().map_or(0, |c| c.len());
            out.push(self.output(columns, rows)?);
        }
        // Rows that never wait and met no one: an outer side's come out now.
        if self.plan.sides.keeps(side) {
            let lone: Vec<u32> = (0..batch.num_rows())
                .filter(|&r| keep[r].is_none() && !matched[r] && !late[r])
                .map(|r| r as u32)
                .collect();
            if !lone.is_empty() {
                let rows = take_record_batch(&batch, &UInt32Array::from(lone))?;
                out.push(self.padded(side, rows)?);
            }
        }
        self.store(side, batch, &keys, &keep, &matched);
        Ok(())
    }

    /// Keeps the rows of `batch` that `keep` marks, under their keys and times.
    fn store(
        &mut self,
        side: usize,
        batch: RecordBatch,
        keys: &arrow::row::Rows,
        keep: &[Option<i64>],
        matched: &[bool],
    ) {
        let count = keep.iter().filter(|k| k.is_some()).count();
        if count == 0 {
            return;
        }
        let state = &mut self.sides[side];
        let id = state.batches.push(batch, count);
        for (row, time) in keep.iter().enumerate() {
            let Some(time) = time else { continue };
            let seq = state.next_row;
            state.next_row += 1;
            let slot = state.slot_for(keys.row(row).as_ref());
            state.keys[slot as usize].rows.insert(
                (*time, seq),
                Waiting {
                    batch: id,
                    row: row as u32,
                    matched: matched[row],
                },
            );
            state.by_time.insert((*time, seq), slot);
        }
        let held = self.sides[0].len() + self.sides[1].len();
        self.peak_rows = self.peak_rows.max(held);
    }

    /// Drops `side`'s rows with times before `before`: nothing to come can meet them. An
    /// outer side's unmatched ones come out NULL-padded.
    fn evict(&mut self, side: usize, before: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        let state = &mut self.sides[side];
        let mut lone: Vec<(u64, u32)> = Vec::new();
        while let Some(entry) = state.by_time.first_entry() {
            if entry.key().0 >= before {
                break;
            }
            let (at, slot) = entry.remove_entry();
            let waiting = &mut state.keys[slot as usize].rows;
            if let Some(w) = waiting.remove(&at) {
                if !w.matched {
                    lone.push((w.batch, w.row));
                }
                state.batches.release_row(w.batch);
            }
            if waiting.is_empty() {
                state.release(slot);
            }
        }
        if !self.plan.sides.keeps(side) || lone.is_empty() {
            self.sides[side].batches.drop_done();
            return Ok(());
        }
        let rows = state.batches.gather(&lone, &self.plan.side_schemas[side])?;
        out.push(self.padded(side, rows)?);
        self.sides[side].batches.drop_done();
        Ok(())
    }
}

impl Operator for IntervalJoinOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.process_side(0, batch, out)
    }

    fn process_input(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        match input {
            0 | 1 => self.process_side(input, batch, out),
            other => Err(VeloError::Execution(format!(
                "a join of two streams has no input {other}"
            ))),
        }
    }

    fn on_input_watermark(
        &mut self,
        input: usize,
        watermark: i64,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        if input > 1 || watermark <= self.watermarks[input] {
            return Ok(());
        }
        self.watermarks[input] = watermark;
        // The other side's rows whose partners would all have come before this watermark.
        let (lower, upper) = (self.plan.lower_ms, self.plan.upper_ms);
        match input {
            // Left rows to come are at `watermark` or later; a right row at t meets left rows
            // up to t - lower.
            0 => self.evict(1, watermark.saturating_add(lower), out)?,
            // A left row at t meets right rows up to t + upper.
            _ => self.evict(0, watermark.saturating_sub(upper), out)?,
        }
        // Rows past 'state.ttl' go whatever the bounds allow.
        let expired = self.expired_before();
        if expired > i64::MIN {
            self.evict(0, expired, out)?;
            self.evict(1, expired, out)?;
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.sides[0].len() + self.sides[1].len()
    }

    fn state_bytes(&self) -> usize {
        self.sides[0].size() + self.sides[1].size()
    }

    fn late_count(&self) -> u64 {
        self.late.count
    }

    fn take_dead_letters(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late.dead_letters)
    }

    fn held_since(&self) -> Option<i64> {
        self.sides
            .iter()
            .filter_map(|s| s.by_time.first_key_value().map(|((t, _), _)| *t))
            .min()
    }

    fn snapshot(&mut self) -> Result<Option<OperatorState>> {
        let sides = [self.waiting_rows(0)?, self.waiting_rows(1)?];
        join_state(sides, self.watermarks, self.late.count).map(Some)
    }

    fn restore(&mut self, states: &[OperatorState], shard: &KeyShard) -> Result<()> {
        (self.watermarks, self.late.count) = restored_clocks(states, shard);
        for side in 0..2 {
            let schemas = &self.plan.side_schemas;
            let keys = &self.plan.keys[side];
            for (rows, own) in owned_side_rows(
                states,
                side,
                STATE_COLUMNS,
                schemas,
                keys,
                shard,
                JOIN_STATE,
            )? {
                let times: Int64Array = column(&rows, "_time", JOIN_STATE)?;
                let matched: BooleanArray = column(&rows, "_matched", JOIN_STATE)?;
                let (encoded, _) = self.encode(side, &own)?;
                let keep: Vec<Option<i64>> = times.values().iter().map(|t| Some(*t)).collect();
                let matched: Vec<bool> = (0..matched.len()).map(|i| matched.value(i)).collect();
                self.store(side, own, &encoded, &keep, &matched);
            }
        }
        Ok(())
    }
}

/// The join's name in checkpoint errors.
const JOIN_STATE: &str = "the join of two streams";
/// The columns between `_side` and the sides' own in the join's checkpointed rows.
const STATE_COLUMNS: usize = 2;

impl IntervalJoinOperator {
    /// `side`'s waiting rows in time order, as checkpoint rows: `_side`, `_time`, `_matched`,
    /// then the left's columns and the right's (NULL for the other side's rows).
    fn waiting_rows(&self, side: usize) -> Result<RecordBatch> {
        let state = &self.sides[side];
        let mut at = Vec::with_capacity(state.len());
        let mut times = Vec::with_capacity(state.len());
        let mut matched = Vec::with_capacity(state.len());
        for (&(time, seq), &slot) in &state.by_time {
            let Some(w) = state.keys[slot as usize].rows.get(&(time, seq)) else {
                return Err(VeloError::Execution(
                    "a waiting row of the join is missing from its key".into(),
                ));
            };
            at.push((w.batch, w.row));
            times.push(time);
            matched.push(w.matched);
        }
        let own = state.batches.gather(&at, &self.plan.side_schemas[side])?;
        let extra: Vec<(Field, ArrayRef)> = vec![
            (
                Field::new("_time", DataType::Int64, false),
                Arc::new(Int64Array::from(times)),
            ),
            (
                Field::new("_matched", DataType::Boolean, false),
                Arc::new(BooleanArray::from(matched)),
            ),
        ];
        side_state_rows(side, extra, &own, &self.plan.side_schemas)
    }
}
