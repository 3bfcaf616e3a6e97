//! SESSION windows: per group key, records less than `gap` apart share a session
//! `[first, last + gap)`; a record that bridges two sessions merges them. A session closes when
//! the watermark passes its end.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int64Array, UInt32Array};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::aggregate::{apply_having, emit_changes, passing_of};
use super::change::mark_delete;
use super::group_keys::GroupKeys;
use super::operator::Operator;
use super::shard::KeyShard;
use super::snapshot::{column, counter_for, max_scalar, owned_rows, state_batch, OperatorState};
use super::window::{LateRecords, WindowOutput};
use crate::error::Result;
use crate::sql::script::{EmitMode, WindowKind};
use crate::sql::window::{LateDataStrategy, WindowPlan};
use crate::sql::AggregatePlan;

struct Session {
    start: i64,
    last: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
}

/// One output row before it becomes part of a batch.
struct PendingRow {
    group: usize,
    start: i64,
    end: i64,
    values: Vec<ScalarValue>,
    delete: bool,
}

/// The SESSION window operator.
pub struct SessionAggregator {
    output: WindowOutput,
    time_expr: Arc<dyn PhysicalExpr>,
    gap: i64,
    strategy: LateDataStrategy,
    per_record: bool,
    keys: GroupKeys,
    /// Per group, its open sessions sorted by start.
    sessions: Vec<Vec<Session>>,
    /// (end, group, start) of every open session, to close them in event-time order.
    closing: BTreeSet<(i64, usize, i64)>,
    watermark: i64,
    late: LateRecords,
    /// EMIT CHANGES with HAVING: per group, whether its last row passed.
    passing: Vec<bool>,
}

impl SessionAggregator {
    /// Builds the operator for a session window plan.
    pub fn new(plan: &AggregatePlan, window: &WindowPlan) -> Result<Self> {
        let gap = match window.kind {
            WindowKind::Session { gap_ms } => gap_ms,
            WindowKind::Tumbling { size_ms } | WindowKind::Sliding { size_ms, .. } => size_ms,
        };
        let output = WindowOutput::new(plan, window);
        Ok(SessionAggregator {
            keys: GroupKeys::new(&output.aggregates.key_schema)?,
            output,
            time_expr: Arc::clone(&window.time_expr),
            gap,
            strategy: window.late_strategy,
            per_record: plan.emit == EmitMode::Changes,
            sessions: Vec::new(),
            closing: BTreeSet::new(),
            watermark: i64::MIN,
            late: LateRecords::default(),
            passing: Vec::new(),
        })
    }

    fn evaluate(accumulators: &mut [Box<dyn Accumulator>]) -> Result<Vec<ScalarValue>> {
        accumulators.iter_mut().map(|a| Ok(a.evaluate()?)).collect()
    }

    /// Merges the run of rows `run` (times `first..=last`, sorted) into group `g`'s sessions.
    /// Returns false when the rows are late (their session would already be closed).
    #[allow(clippy::too_many_arguments)]
    fn merge_run(
        &mut self,
        g: usize,
        first: i64,
        last: i64,
        run: &[u32],
        values: &[Vec<ArrayRef>],
        filters: &[Option<BooleanArray>],
        pending: &mut Vec<PendingRow>,
    ) -> Result<bool> {
        let gap = self.gap;
        let sessions = &mut self.sessions[g];
        let overlapping: Vec<usize> = sessions
            .iter()
            .enumerate()
            .filter(|(_, s)| first < s.last + gap && last > s.start - gap)
            .map(|(i, _)| i)
            .collect();
        if overlapping.is_empty() && last.saturating_add(gap) <= self.watermark {
            return Ok(false);
        }
        let mut merged: Option<Session> = None;
        for &i in overlapping.iter().rev() {
            let mut s = sessions.remove(i);
            self.closing.remove(&(s.last + gap, g, s.start));
            if self.per_record {
                pending.push(PendingRow {
                    group: g,
                    start: s.start,
                    end: s.last + gap,
                    values: Self::evaluate(&mut s.accumulators)?,
                    delete: true,
                });
            }
            merged = Some(match merged {
                None => s,
                Some(mut m) => {
                    for (acc, other) in m.accumulators.iter_mut().zip(s.accumulators.iter_mut()) {
                        let state = other
                            .state()?
                            .into_iter()
                            .map(|v| Ok(v.to_array()?))
                            .collect::<Result<Vec<ArrayRef>>>()?;
                        acc.merge_batch(&state)?;
                    }
                    m.start = m.start.min(s.start);
                    m.last = m.last.max(s.last);
                    m
                }
            });
        }
        let mut session = match merged {
            Some(s) => s,
            None => Session {
                start: first,
                last,
                accumulators: self.output.aggregates.row_accumulators()?,
            },
        };
        session.start = session.start.min(first);
        session.last = session.last.max(last);
        let idx = UInt32Array::from(run.to_vec());
        for (a, acc) in session.accumulators.iter_mut().enumerate() {
            let mut rows = idx.clone();
            if let Some(f) = &filters[a] {
                let selected: Vec<u32> = run
                    .iter()
                    .copied()
                    .filter(|&r| f.is_valid(r as usize) && f.value(r as usize))
                    .collect();
                rows = UInt32Array::from(selected);
            }
            let args = values[a]
                .iter()
                .map(|v| Ok(take(v.as_ref(), &rows, None)?))
                .collect::<Result<Vec<_>>>()?;
            acc.update_batch(&args)?;
        }
        if self.per_record {
            // The merged session replaces the sessions deleted above.
            if let Some(last_delete) = pending.last() {
                if last_delete.delete
                    && last_delete.start == session.start
                    && last_delete.end == session.last + gap
                {
                    pending.pop();
                }
            }
            pending.push(PendingRow {
                group: g,
                start: session.start,
                end: session.last + gap,
                values: Self::evaluate(&mut session.accumulators)?,
                delete: false,
            });
        }
        self.closing.insert((session.last + gap, g, session.start));
        let at = self.sessions[g].partition_point(|s| s.start < session.start);
        self.sessions[g].insert(at, session);
        Ok(true)
    }

    /// Turns pending rows into batches, cut into runs of one kind to keep their order.
    fn flush_rows(&mut self, rows: Vec<PendingRow>, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut start = 0;
        while start < rows.len() {
            let delete = rows[start].delete;
            let mut end = start + 1;
            while end < rows.len() && rows[end].delete == delete {
                end += 1;
            }
            let run = &rows[start..end];
            let groups: Vec<usize> = run.iter().map(|r| r.group).collect();
            let keys = self.keys.keys_of(&groups)?;
            let starts: ArrayRef =
                Arc::new(Int64Array::from_iter_values(run.iter().map(|r| r.start)));
            let ends: ArrayRef = Arc::new(Int64Array::from_iter_values(run.iter().map(|r| r.end)));
            let values = (0..self.output.aggregates.len())
                .map(|a| {
                    Ok(ScalarValue::iter_to_array(
                        run.iter().map(|r| r.values[a].clone()),
                    )?)
                })
                .collect::<Result<Vec<_>>>()?;
            let batch = self.output.rows(keys, starts, ends, values, run.len())?;
            if delete {
                out.push(mark_delete(batch));
            } else if self.per_record {
                emit_changes(
                    batch,
                    self.output.having.as_ref(),
                    &groups,
                    &mut self.passing,
                    out,
                )?;
            } else {
                let batch = apply_having(batch, self.output.having.as_ref())?;
                if batch.num_rows() > 0 {
                    out.push(batch);
                }
            }
            start = end;
        }
        Ok(())
    }
}

impl Operator for SessionAggregator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let times = self.late.timed(&self.time_expr, &batch, self.strategy)?;
        let keys = self.output.keys(&batch)?;
        let mut groups = Vec::new();
        self.keys.intern(&keys, batch.num_rows(), &mut groups)?;
        while self.sessions.len() < self.keys.len() {
            self.sessions.push(Vec::new());
        }
        let inputs = self.output.aggregates.inputs(&batch)?;
        let mut order: Vec<u32> = (0..batch.num_rows() as u32)
            .filter(|&i| times.is_valid(i as usize))
            .collect();
        order.sort_by_key(|&i| (groups[i as usize], times.value(i as usize)));
        let mut late = vec![false; batch.num_rows()];
        let mut pending = Vec::new();
        let mut i = 0;
        while i < order.len() {
            let g = groups[order[i] as usize];
            let first = times.value(order[i] as usize);
            let mut last = first;
            let mut j = i + 1;
            while j < order.len()
                && groups[order[j] as usize] == g
                && times.value(order[j] as usize) - last < self.gap
            {
                last = times.value(order[j] as usize);
                j += 1;
            }
            let run = &order[i..j];
            if !self.merge_run(
                g,
                first,
                last,
                run,
                &inputs.values,
                &inputs.filters,
                &mut pending,
            )? {
                for &r in run {
                    late[r as usize] = true;
                }
            }
            i = j;
        }
        let late = BooleanArray::from(late);
        self.late.collect(
            &batch,
            &late,
            "its session closed before it arrived",
            self.strategy,
        )?;
        self.flush_rows(pending, out)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        let mut closed = Vec::new();
        while let Some(&(end, g, start)) = self.closing.first() {
            if end > watermark {
                break;
            }
            self.closing.pop_first();
            let Some(pos) = self.sessions[g].iter().position(|s| s.start == start) else {
                continue;
            };
            let mut s = self.sessions[g].remove(pos);
            if !self.per_record {
                closed.push(PendingRow {
                    group: g,
                    start,
                    end,
                    values: Self::evaluate(&mut s.accumulators)?,
                    delete: false,
                });
            }
        }
        self.flush_rows(closed, out)
    }

    fn state_size(&self) -> usize {
        self.closing.len()
    }

    fn state_bytes(&self) -> usize {
        // Each open session: its accumulators, and its entry in `closing`.
        let sessions: usize = self
            .sessions
            .iter()
            .flatten()
            .map(|s| {
                std::mem::size_of::<Session>()
                    + s.accumulators.iter().map(|a| a.size()).sum::<usize>()
            })
            .sum();
        self.keys.size() + sessions + self.closing.len() * std::mem::size_of::<(i64, usize, i64)>()
    }

    fn open_windows(&self) -> usize {
        self.closing.len()
    }

    fn held_since(&self) -> Option<i64> {
        if self.per_record {
            return None;
        }
        self.closing.iter().map(|(_, _, start)| *start).min()
    }

    fn late_count(&self) -> u64 {
        self.late.count
    }

    fn take_dead_letters(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late.dead_letters)
    }

    /// One row per open session: the group's keys, `_start`, `_last`, `_passing` and each
    /// aggregate's accumulator state (`_agg{i}:{j}`).
    fn snapshot(&mut self) -> Result<Option<OperatorState>> {
        let mut groups = Vec::new();
        let (mut starts, mut lasts, mut passing) = (Vec::new(), Vec::new(), Vec::new());
        let mut states: Vec<Vec<Vec<ScalarValue>>> = Vec::new();
        for (g, sessions) in self.sessions.iter_mut().enumerate() {
            for session in sessions.iter_mut() {
                groups.push(g);
                starts.push(session.start);
                lasts.push(session.last);
                passing.push(self.passing.get(g).copied().unwrap_or(false));
                states.push(
                    session
                        .accumulators
                        .iter_mut()
                        .map(|a| Ok(a.state()?))
                        .collect::<Result<Vec<_>>>()?,
                );
            }
        }
        let scalars = BTreeMap::from([
            ("watermark".to_string(), self.watermark),
            ("late".to_string(), self.late.count as i64),
        ]);
        if groups.is_empty() {
            return Ok(Some(OperatorState::scalars_only(scalars)));
        }
        let mut fields: Vec<Field> = self
            .output
            .aggregates
            .key_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = self.keys.keys_of(&groups)?;
        for (name, values) in [("_start", starts), ("_last", lasts)] {
            fields.push(Field::new(name, DataType::Int64, false));
            columns.push(Arc::new(Int64Array::from(values)));
        }
        fields.push(Field::new("_passing", DataType::Boolean, false));
        columns.push(Arc::new(BooleanArray::from(passing)));
        let state_counts: Vec<usize> = states[0].iter().map(Vec::len).collect();
        for (i, count) in state_counts.iter().enumerate() {
            for j in 0..*count {
                let array = ScalarValue::iter_to_array(states.iter().map(|s| s[i][j].clone()))?;
                fields.push(Field::new(
                    format!("_agg{i}:{j}"),
                    array.data_type().clone(),
                    true,
                ));
                columns.push(array);
            }
        }
        let rows = state_batch(Arc::new(Schema::new(fields)), columns, groups.len())?;
        Ok(Some(OperatorState { rows, scalars }))
    }

    fn restore(&mut self, states: &[OperatorState], shard: &KeyShard) -> Result<()> {
        self.watermark = max_scalar(states, "watermark").unwrap_or(i64::MIN);
        self.late.count = counter_for(states, shard, "late");
        let key_count = self.output.aggregates.key_schema.fields().len();
        let Some(rows) = owned_rows(states, shard, |r| r.columns()[..key_count].to_vec())? else {
            return Ok(());
        };
        let keys: Vec<ArrayRef> = rows.columns()[..key_count].to_vec();
        let mut groups = Vec::new();
        self.keys.intern(&keys, rows.num_rows(), &mut groups)?;
        let starts: Int64Array = column(&rows, "_start", "a session window")?;
        let lasts: Int64Array = column(&rows, "_last", "a session window")?;
        let passing = passing_of(&rows, "a session window")?;
        let state_columns: Vec<(usize, ArrayRef)> = rows
            .schema()
            .fields()
            .iter()
            .zip(rows.columns())
            .filter_map(|(f, c)| {
                let i = f
                    .name()
                    .strip_prefix("_agg")?
                    .split(':')
                    .next()?
                    .parse()
                    .ok()?;
                Some((i, Arc::clone(c)))
            })
            .collect();
        self.sessions.resize_with(self.keys.len(), Vec::new);
        self.passing.resize(self.keys.len(), false);
        for (row, &g) in groups.iter().enumerate() {
            let mut accumulators = self.output.aggregates.row_accumulators()?;
            for (i, acc) in accumulators.iter_mut().enumerate() {
                let slice: Vec<ArrayRef> = state_columns
                    .iter()
                    .filter(|(a, _)| *a == i)
                    .map(|(_, c)| c.slice(row, 1))
                    .collect();
                acc.merge_batch(&slice)?;
            }
            let (start, last) = (starts.value(row), lasts.value(row));
            self.closing
                .insert((last.saturating_add(self.gap), g, start));
            self.passing[g] = passing[row];
            self.sessions[g].push(Session {
                start,
                last,
                accumulators,
            });
        }
        for sessions in &mut self.sessions {
            sessions.sort_by_key(|s| s.start);
        }
        Ok(())
    }
}
