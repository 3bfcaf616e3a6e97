//! Tumbling and sliding windows over event time.
//!
//! State is kept per *pane*: the window length divided by gcd(size, advance), so a record updates
//! exactly one pane. When the watermark passes a window's end, the window's panes are frozen to
//! state arrays and merged into a fresh table, which yields the window's rows; a pane is dropped
//! once its last window is past the allowed lateness. Tumbling windows are the one-pane case.
//! EMIT CHANGES keeps per-record accumulators per window and emits each updated row at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, StringArray, UInt32Array};
use arrow::compute::{filter_record_batch, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use super::aggregate::{
    aggregates_of, apply_having, emit_changes, output_batch, passing_of, with_passing,
};
use super::event_time::to_epoch_millis;
use super::group_table::{AggregateInputs, Aggregates, FrozenGroups, GroupTable};
use super::operator::{evaluate, Operator};
use super::shard::KeyShard;
use super::snapshot::{
    counter_for, max_scalar, owned_rows, stack_tables, unstack_tables, OperatorState,
};
use crate::error::Result;
use crate::sql::script::{EmitMode, WindowKind};
use crate::sql::window::{LateDataStrategy, WindowPlan};
use crate::sql::AggregatePlan;

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Start of the `width`-aligned interval holding `t` (epoch-aligned, also for negative times).
pub fn align(t: i64, width: i64) -> i64 {
    t.div_euclid(width) * width
}

/// Records that arrived after their windows closed: counted, and kept for the dead-letter sink
/// when the strategy asks for it.
#[derive(Default)]
pub struct LateRecords {
    pub count: u64,
    pub dead_letters: Vec<RecordBatch>,
}

impl LateRecords {
    /// Event times of a batch; rows without one are set aside as late.
    pub fn timed(
        &mut self,
        time_expr: &Arc<dyn PhysicalExpr>,
        batch: &RecordBatch,
        strategy: LateDataStrategy,
    ) -> Result<Int64Array> {
        let times = event_times(time_expr, batch)?;
        if times.null_count() > 0 {
            let no_time: BooleanArray = times.iter().map(|t| Some(t.is_none())).collect();
            self.collect(batch, &no_time, "the record has no event time", strategy)?;
        }
        Ok(times)
    }

    /// Takes the rows of `batch` where `late` is true (with `reason`) out of the stream.
    pub fn collect(
        &mut self,
        batch: &RecordBatch,
        late: &BooleanArray,
        reason: &str,
        strategy: LateDataStrategy,
    ) -> Result<()> {
        let n = late.true_count();
        if n == 0 {
            return Ok(());
        }
        self.count += n as u64;
        if strategy == LateDataStrategy::DeadLetter {
            let rows = filter_record_batch(batch, late)?;
            let mut fields: Vec<Field> = rows
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new("_late_reason", DataType::Utf8, false));
            let mut columns = rows.columns().to_vec();
            columns.push(Arc::new(StringArray::from(vec![reason; rows.num_rows()])));
            self.dead_letters.push(RecordBatch::try_new(
                Arc::new(Schema::new(fields)),
                columns,
            )?);
        }
        Ok(())
    }
}

/// A pane's state: open for updates, or frozen to arrays once complete.
enum Pane {
    Open(GroupTable),
    Frozen(FrozenGroups),
}

/// Shared layout of windowed output rows: user keys, window bounds, aggregates.
pub struct WindowOutput {
    user_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Output position of each user key.
    key_positions: Vec<usize>,
    start_key: usize,
    end_key: usize,
    group_count: usize,
    pub schema: SchemaRef,
    pub having: Option<Arc<dyn PhysicalExpr>>,
    pub aggregates: Aggregates,
}

impl WindowOutput {
    /// The layout of `plan`'s windowed output.
    pub fn new(plan: &AggregatePlan, window: &WindowPlan) -> Self {
        let key_positions: Vec<usize> = (0..plan.group_exprs.len())
            .filter(|&i| i != window.start_key && i != window.end_key)
            .collect();
        WindowOutput {
            user_keys: key_positions
                .iter()
                .map(|&i| Arc::clone(&plan.group_exprs[i]))
                .collect(),
            aggregates: aggregates_of(plan, &key_positions),
            key_positions,
            start_key: window.start_key,
            end_key: window.end_key,
            group_count: plan.group_exprs.len(),
            schema: Arc::clone(&plan.output_schema),
            having: plan.having.clone(),
        }
    }

    /// Evaluates the user keys over a batch.
    pub fn keys(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        self.user_keys.iter().map(|e| evaluate(e, batch)).collect()
    }

    /// Builds output rows from user key columns, window bounds and aggregate columns.
    pub fn rows(
        &self,
        keys: Vec<ArrayRef>,
        starts: ArrayRef,
        ends: ArrayRef,
        values: Vec<ArrayRef>,
        n: usize,
    ) -> Result<RecordBatch> {
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.group_count];
        for (pos, key) in self.key_positions.iter().zip(keys) {
            columns[*pos] = Some(key);
        }
        columns[self.start_key] = Some(starts);
        columns[self.end_key] = Some(ends);
        let mut all: Vec<ArrayRef> = columns.into_iter().flatten().collect();
        all.extend(values);
        output_batch(&self.schema, all, n)
    }
}

/// Event times of a batch in epoch ms.
pub fn event_times(time_expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<Int64Array> {
    to_epoch_millis(&evaluate(time_expr, batch)?, None)
}

/// TUMBLING and SLIDING windows, EMIT FINAL or EMIT CHANGES.
pub struct WindowAggregator {
    output: WindowOutput,
    time_expr: Arc<dyn PhysicalExpr>,
    size: i64,
    advance: i64,
    pane: i64,
    lateness: i64,
    strategy: LateDataStrategy,
    per_record: bool,
    /// EMIT FINAL: panes by start.
    panes: BTreeMap<i64, Pane>,
    /// EMIT CHANGES: per window start, its table and which groups last passed HAVING.
    windows: BTreeMap<i64, (GroupTable, Vec<bool>)>,
    watermark: i64,
    /// Windows ending at or before this have been emitted.
    emitted_until: i64,
    late: LateRecords,
}

impl WindowAggregator {
    /// Builds the operator for a tumbling or sliding window plan.
    pub fn new(plan: &AggregatePlan, window: &WindowPlan) -> Self {
        let (size, advance) = match window.kind {
            WindowKind::Tumbling { size_ms } => (size_ms, size_ms),
            WindowKind::Sliding {
                size_ms,
                advance_ms,
            } => (size_ms, advance_ms),
            WindowKind::Session { gap_ms } => (gap_ms, gap_ms),
        };
        WindowAggregator {
            output: WindowOutput::new(plan, window),
            time_expr: Arc::clone(&window.time_expr),
            size,
            advance,
            pane: gcd(size, advance),
            lateness: window.allowed_lateness_ms,
            strategy: window.late_strategy,
            per_record: plan.emit == EmitMode::Changes,
            panes: BTreeMap::new(),
            windows: BTreeMap::new(),
            watermark: i64::MIN,
            emitted_until: i64::MIN,
            late: LateRecords::default(),
        }
    }

    /// End of the last window that contains time `t`.
    fn last_end(&self, t: i64) -> i64 {
        align(t, self.advance).saturating_add(self.size)
    }

    /// Splits off late rows; returns the on-time rows and their event times.
    fn on_time(&mut self, batch: RecordBatch) -> Result<Option<(RecordBatch, Int64Array)>> {
        let times = self.late.timed(&self.time_expr, &batch, self.strategy)?;
        let watermark = self.watermark;
        // A window's end grows with time: when the earliest row is on time, every row is.
        let earliest = arrow::compute::min(&times);
        if times.null_count() == 0
            && earliest.is_none_or(|t| self.last_end(t).saturating_add(self.lateness) > watermark)
        {
            return Ok(Some((batch, times)));
        }
        let late: BooleanArray = times
            .iter()
            .map(|t| {
                Some(t.is_some_and(|t| self.last_end(t).saturating_add(self.lateness) <= watermark))
            })
            .collect();
        self.late.collect(
            &batch,
            &late,
            "its windows closed before it arrived",
            self.strategy,
        )?;
        if times.null_count() == 0 && late.true_count() == 0 {
            return Ok(Some((batch, times)));
        }
        let keep: BooleanArray = times
            .iter()
            .zip(late.iter())
            .map(|(t, late)| Some(t.is_some() && !late.unwrap_or(false)))
            .collect();
        let kept = filter_record_batch(&batch, &keep)?;
        if kept.num_rows() == 0 {
            return Ok(None);
        }
        let kept_times = arrow::compute::filter(&times, &keep)?;
        let kept_times = kept_times
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .unwrap_or_else(|| Int64Array::from(Vec::<i64>::new()));
        Ok(Some((kept, kept_times)))
    }

    fn update_panes(&mut self, batch: &RecordBatch, times: &Int64Array) -> Result<()> {
        let keys = self.output.keys(batch)?;
        let inputs = self.output.aggregates.inputs(batch)?;
        let mut by_pane: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let (Some(earliest), Some(latest)) =
            (arrow::compute::min(times), arrow::compute::max(times))
        else {
            return Ok(());
        };
        let single = align(earliest, self.pane) == align(latest, self.pane);
        if single {
            by_pane.insert(align(earliest, self.pane), Vec::new());
        } else {
            // Rows come mostly in time order: collect runs of one pane.
            let values = times.values();
            let mut start = 0;
            while start < values.len() {
                let pane = align(values[start], self.pane);
                let mut end = start + 1;
                while end < values.len() && align(values[end], self.pane) == pane {
                    end += 1;
                }
                by_pane
                    .entry(pane)
                    .or_default()
                    .extend(start as u32..end as u32);
                start = end;
            }
        }
        for (start, rows) in by_pane {
            let pane = match self.panes.remove(&start) {
                Some(Pane::Open(t)) => t,
                Some(Pane::Frozen(f)) => {
                    let mut t = GroupTable::new(&self.output.aggregates, false)?;
                    t.merge(&f)?;
                    t
                }
                None => GroupTable::new(&self.output.aggregates, false)?,
            };
            let mut pane = pane;
            if single {
                pane.update(&keys, batch.num_rows(), &inputs)?;
            } else {
                let idx = UInt32Array::from(rows);
                let k = keys
                    .iter()
                    .map(|c| Ok(take(c.as_ref(), &idx, None)?))
                    .collect::<Result<Vec<_>>>()?;
                pane.update(&k, idx.len(), &inputs.take(&idx)?)?;
            }
            self.panes.insert(start, Pane::Open(pane));
        }
        Ok(())
    }

    /// Window starts containing pane `p`.
    fn windows_of_pane(&self, p: i64) -> impl Iterator<Item = i64> + '_ {
        let last = align(p, self.advance);
        (0..)
            .map(move |k| last - k * self.advance)
            .take_while(move |ws| ws + self.size > p)
    }

    /// Rows of the window starting at `ws` (freezing its panes), or None if it has no rows.
    fn window_rows(&mut self, ws: i64) -> Result<Option<RecordBatch>> {
        let we = ws + self.size;
        let single_pane = self.pane == self.size && self.lateness == 0;
        let mut table = if single_pane {
            match self.panes.remove(&ws) {
                Some(Pane::Open(t)) => t,
                Some(Pane::Frozen(f)) => {
                    let mut t = GroupTable::new(&self.output.aggregates, false)?;
                    t.merge(&f)?;
                    t
                }
                None => return Ok(None),
            }
        } else {
            let mut table = GroupTable::new(&self.output.aggregates, false)?;
            let starts: Vec<i64> = self.panes.range(ws..we).map(|(p, _)| *p).collect();
            for p in starts {
                let frozen = match self.panes.remove(&p) {
                    Some(Pane::Open(mut t)) => t.freeze()?,
                    Some(Pane::Frozen(f)) => f,
                    None => continue,
                };
                table.merge(&frozen)?;
                self.panes.insert(p, Pane::Frozen(frozen));
            }
            table
        };
        let n = table.len();
        if n == 0 {
            return Ok(None);
        }
        let (keys, values) = table.evaluate_all()?;
        let starts: ArrayRef = Arc::new(Int64Array::from_value(ws, n));
        let ends: ArrayRef = Arc::new(Int64Array::from_value(we, n));
        let rows = self.output.rows(keys, starts, ends, values, n)?;
        let rows = apply_having(rows, self.output.having.as_ref())?;
        Ok((rows.num_rows() > 0).then_some(rows))
    }

    fn emit_closed(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut due = BTreeSet::new();
        for p in self.panes.keys() {
            for ws in self.windows_of_pane(*p) {
                let we = ws + self.size;
                if we > self.emitted_until && we <= watermark {
                    due.insert(ws);
                }
            }
        }
        for ws in due {
            if let Some(rows) = self.window_rows(ws)? {
                out.push(rows);
            }
        }
        self.emitted_until = self.emitted_until.max(watermark);
        let (advance, size, lateness) = (self.advance, self.size, self.lateness);
        self.panes
            .retain(|p, _| (align(*p, advance) + size).saturating_add(lateness) > watermark);
        Ok(())
    }

    fn update_windows(
        &mut self,
        batch: &RecordBatch,
        times: &Int64Array,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let keys = self.output.keys(batch)?;
        let inputs = self.output.aggregates.inputs(batch)?;
        // (row, window start) in input order; a run of one window start is updated together.
        let mut pairs: Vec<(u32, i64)> = Vec::with_capacity(batch.num_rows());
        for (i, t) in times.values().iter().enumerate() {
            let last = align(*t, self.advance);
            let mut ws = last - ((self.size - 1) / self.advance) * self.advance;
            while ws <= last {
                if ws + self.size > *t
                    && (ws + self.size).saturating_add(self.lateness) > self.watermark
                {
                    pairs.push((i as u32, ws));
                }
                ws += self.advance;
            }
        }
        let mut start = 0;
        while start < pairs.len() {
            let ws = pairs[start].1;
            let mut end = start + 1;
            while end < pairs.len() && pairs[end].1 == ws {
                end += 1;
            }
            let whole = end - start == batch.num_rows();
            let (k, inp, n) = if whole {
                (keys.clone(), None, batch.num_rows())
            } else {
                let idx = UInt32Array::from_iter_values(pairs[start..end].iter().map(|(r, _)| *r));
                let k = keys
                    .iter()
                    .map(|c| Ok(take(c.as_ref(), &idx, None)?))
                    .collect::<Result<Vec<_>>>()?;
                (k, Some(inputs.take(&idx)?), idx.len())
            };
            let inputs_ref: &AggregateInputs = inp.as_ref().unwrap_or(&inputs);
            if !self.windows.contains_key(&ws) {
                self.windows.insert(
                    ws,
                    (GroupTable::new(&self.output.aggregates, true)?, Vec::new()),
                );
            }
            if let Some((table, passing)) = self.windows.get_mut(&ws) {
                let values = table.update_per_record(&k, n, inputs_ref)?;
                let starts: ArrayRef = Arc::new(Int64Array::from_value(ws, n));
                let ends: ArrayRef = Arc::new(Int64Array::from_value(ws + self.size, n));
                let rows = self.output.rows(k, starts, ends, values, n)?;
                emit_changes(
                    rows,
                    self.output.having.as_ref(),
                    table.group_indices(),
                    passing,
                    out,
                )?;
            }
            start = end;
        }
        Ok(())
    }
}

impl Operator for WindowAggregator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let Some((batch, times)) = self.on_time(batch)? else {
            return Ok(());
        };
        if self.per_record {
            return self.update_windows(&batch, &times, out);
        }
        let before = self.emitted_until;
        self.update_panes(&batch, &times)?;
        // Rows within the allowed lateness for windows already emitted: emit those again.
        if self.lateness > 0 && before > i64::MIN {
            let mut again = BTreeSet::new();
            for t in times.values().iter() {
                for ws in self.windows_of_pane(align(*t, self.pane)) {
                    if ws + self.size <= before {
                        again.insert(ws);
                    }
                }
            }
            for ws in again {
                if let Some(rows) = self.window_rows(ws)? {
                    out.push(rows);
                }
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        if self.per_record {
            let (size, lateness) = (self.size, self.lateness);
            self.windows
                .retain(|ws, _| (ws + size).saturating_add(lateness) > watermark);
            return Ok(());
        }
        self.emit_closed(watermark, out)
    }

    fn state_size(&self) -> usize {
        let panes: usize = self
            .panes
            .values()
            .map(|p| match p {
                Pane::Open(t) => t.len(),
                Pane::Frozen(f) => f.num_groups,
            })
            .sum();
        panes + self.windows.values().map(|(t, _)| t.len()).sum::<usize>()
    }

    fn state_bytes(&self) -> usize {
        let panes: usize = self
            .panes
            .values()
            .map(|p| match p {
                Pane::Open(t) => t.size(),
                Pane::Frozen(f) => f.size(),
            })
            .sum();
        panes + self.windows.values().map(|(t, _)| t.size()).sum::<usize>()
    }

    fn open_windows(&self) -> usize {
        self.panes.len() + self.windows.len()
    }

    fn held_since(&self) -> Option<i64> {
        // EMIT FINAL holds panes until their last window closes; EMIT CHANGES emits at once.
        self.panes.keys().next().copied()
    }

    fn late_count(&self) -> u64 {
        self.late.count
    }

    fn take_dead_letters(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late.dead_letters)
    }

    fn snapshot(&mut self) -> Result<Option<OperatorState>> {
        let aggregates = &self.output.aggregates;
        let mut tables = Vec::new();
        for (start, pane) in self.panes.iter_mut() {
            let rows = match pane {
                Pane::Open(table) => table.snapshot(aggregates)?,
                Pane::Frozen(frozen) => {
                    let mut table = GroupTable::new(aggregates, false)?;
                    table.merge(frozen)?;
                    table.snapshot(aggregates)?
                }
            };
            tables.push((*start, rows));
        }
        for (start, (table, passing)) in self.windows.iter_mut() {
            let rows = table.snapshot(aggregates)?;
            tables.push((*start, with_passing(&rows, passing)?));
        }
        let column = if self.per_record { "_window" } else { "_pane" };
        let scalars = BTreeMap::from([
            ("watermark".to_string(), self.watermark),
            ("emitted_until".to_string(), self.emitted_until),
            ("late".to_string(), self.late.count as i64),
        ]);
        Ok(Some(match stack_tables(tables, column)? {
            Some(rows) => OperatorState { rows, scalars },
            None => OperatorState::scalars_only(scalars),
        }))
    }

    fn restore(&mut self, states: &[OperatorState], shard: &KeyShard) -> Result<()> {
        self.watermark = max_scalar(states, "watermark").unwrap_or(i64::MIN);
        self.emitted_until = max_scalar(states, "emitted_until").unwrap_or(i64::MIN);
        self.late.count = counter_for(states, shard, "late");
        let key_count = self.output.aggregates.key_schema.fields().len();
        let Some(rows) = owned_rows(states, shard, |r| r.columns()[..key_count].to_vec())? else {
            return Ok(());
        };
        let column = if self.per_record { "_window" } else { "_pane" };
        for (start, rows) in unstack_tables(&rows, column, "a window")? {
            let mut table = GroupTable::new(&self.output.aggregates, self.per_record)?;
            table.restore(&self.output.aggregates, &rows)?;
            if self.per_record {
                let passing = passing_of(&rows, "a window")?;
                self.windows.insert(start, (table, passing));
            } else {
                self.panes.insert(start, Pane::Open(table));
            }
        }
        Ok(())
    }
}
