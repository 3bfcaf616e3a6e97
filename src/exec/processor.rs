//! `QueryProcessor`: one deployed query — its operators and their state, owned outright.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::aggregate::GroupByAggregator;
use super::analytic::AnalyticOperator;
use super::input::InputAdapter;
use super::join::{ChangelogJoinOperator, IntervalJoinOperator, LookupJoinOperator, LookupTable};
use super::operator::{
    DistinctOperator, FilterOperator, LimitOperator, Operator, ProjectOperator, SortOperator,
};
use super::session::SessionAggregator;
use super::shard::KeyShard;
use super::snapshot::{OperatorState, RestoredStates};
use super::union::UnionOperator;
use super::watermark::EventClock;
use super::window::WindowAggregator;
use crate::error::{Result, VeloError};
use crate::sql::script::WindowKind;
use crate::sql::{MergeKind, PlanStage, PlannedQuery};

/// Runs one planned query over input batches; all state lives here, behind `&mut self`.
pub struct QueryProcessor {
    plan: PlannedQuery,
    operators: Vec<Box<dyn Operator>>,
    /// Each operator's stable name in checkpoints: its position and kind ("2-aggregate").
    names: Vec<String>,
    input: InputAdapter,
    /// Event-time tracking of windowed queries; None when the watermark is driven from
    /// outside (a partition worker, whose router owns the clock).
    clock: Option<EventClock>,
    /// Where the merge of several stream inputs is among `operators` (None: one input).
    merge_at: Option<usize>,
    /// Inputs 1, 2, ... of a merge: each with its own operators before the merge.
    lanes: Vec<Lane>,
    /// Each input's watermark (i64::MIN before any event time).
    input_watermarks: Vec<i64>,
    /// The last watermark handed to the operators after the merge (all of them, for a query
    /// over one input): the minimum over the inputs.
    watermark: i64,
}

/// A stream input of a merge besides input 0, with the operators that run on it alone.
struct Lane {
    input: InputAdapter,
    clock: Option<EventClock>,
    operators: Vec<Box<dyn Operator>>,
    names: Vec<String>,
}

/// The operators of `stages`, reading rows of `schema`.
fn build_operators(
    plan: &PlannedQuery,
    stages: &[PlanStage],
    mut schema: SchemaRef,
    tables: &[Arc<LookupTable>],
) -> Result<Vec<Box<dyn Operator>>> {
    let mut operators: Vec<Box<dyn Operator>> = Vec::with_capacity(stages.len());
    for stage in stages {
        let op: Box<dyn Operator> = match stage {
            PlanStage::Filter { predicate } => Box::new(FilterOperator::new(Arc::clone(predicate))),
            PlanStage::Project { exprs, schema: out } => {
                schema = Arc::clone(out);
                Box::new(ProjectOperator::new(exprs.clone(), Arc::clone(out)))
            }
            PlanStage::Aggregate(agg) => {
                let op: Box<dyn Operator> = match &agg.window {
                    Some(w) if matches!(w.kind, WindowKind::Session { .. }) => {
                        Box::new(SessionAggregator::new(agg, w)?)
                    }
                    Some(w) => Box::new(WindowAggregator::new(agg, w)),
                    None => Box::new(GroupByAggregator::new(agg, Arc::clone(&schema))?),
                };
                schema = Arc::clone(&agg.output_schema);
                op
            }
            PlanStage::Distinct => Box::new(DistinctOperator::new()),
            PlanStage::Sort { exprs } => Box::new(SortOperator::new(exprs.clone())),
            PlanStage::Limit { skip, fetch } => Box::new(LimitOperator::new(*skip, *fetch)),
            PlanStage::Analytic {
                functions,
                schema: out,
            } => {
                schema = Arc::clone(out);
                Box::new(AnalyticOperator::new(functions, Arc::clone(out)))
            }
            PlanStage::LookupJoin(join) => {
                let Some(table) = tables.get(join.table) else {
                    return Err(VeloError::Execution(format!(
                        "query '{}' joins a table that was not loaded",
                        plan.id
                    )));
                };
                schema = Arc::clone(&join.schema);
                Box::new(LookupJoinOperator::new(join.clone(), Arc::clone(table)))
            }
            PlanStage::Merge(merge) => {
                schema = Arc::clone(&merge.schema);
                match &merge.kind {
                    MergeKind::Union => Box::new(UnionOperator::new(Arc::clone(&merge.schema))),
                    MergeKind::IntervalJoin(join) => Box::new(IntervalJoinOperator::new(
                        join.clone(),
                        Arc::clone(&merge.schema),
                    )),
                    MergeKind::ChangelogJoin(join) => Box::new(ChangelogJoinOperator::new(
                        join.clone(),
                        Arc::clone(&merge.schema),
                    )),
                }
            }
        };
        operators.push(op);
    }
    Ok(operators)
}

/// Runs `batches` through `operators` in order; returns what the last one emits.
fn run_through(
    operators: &mut [Box<dyn Operator>],
    batches: Vec<RecordBatch>,
) -> Result<Vec<RecordBatch>> {
    let mut current = batches;
    for op in operators.iter_mut() {
        if current.is_empty() {
            break;
        }
        let mut next = Vec::with_capacity(current.len());
        for b in current {
            if b.num_rows() > 0 {
                op.process_batch(b, &mut next)?;
            }
        }
        current = next;
    }
    current.retain(|b| b.num_rows() > 0);
    Ok(current)
}

impl QueryProcessor {
    /// Builds the operators of a plan that joins no table.
    pub fn new(plan: PlannedQuery) -> Result<Self> {
        Self::with_tables(plan, &[])
    }

    /// Builds the operators of `plan`; `tables` holds the loaded rows of `plan.tables`.
    pub fn with_tables(plan: PlannedQuery, tables: &[Arc<LookupTable>]) -> Result<Self> {
        let names = plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| format!("{i}-{}", stage.kind()))
            .collect();
        let operators =
            build_operators(&plan, &plan.stages, Arc::clone(&plan.input_schema), tables)?;
        let merge_at = plan
            .stages
            .iter()
            .position(|s| matches!(s, PlanStage::Merge(_)));
        let lanes = plan
            .side_inputs()
            .iter()
            .enumerate()
            .map(|(k, side)| {
                Ok(Lane {
                    input: InputAdapter::new(Arc::clone(&side.input_schema), side.source.clone()),
                    clock: side.watermark.as_ref().map(EventClock::new),
                    operators: build_operators(
                        &plan,
                        &side.stages,
                        Arc::clone(&side.input_schema),
                        tables,
                    )?,
                    names: side
                        .stages
                        .iter()
                        .enumerate()
                        .map(|(i, stage)| format!("in{}-{i}-{}", k + 1, stage.kind()))
                        .collect(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let clock = plan.watermark.as_ref().map(EventClock::new);
        let input = InputAdapter::new(Arc::clone(&plan.input_schema), plan.source.clone());
        Ok(QueryProcessor {
            input_watermarks: vec![i64::MIN; lanes.len() + 1],
            plan,
            operators,
            names,
            input,
            clock,
            merge_at,
            lanes,
            watermark: i64::MIN,
        })
    }

    /// Stops tracking event time from the batches: only `advance_watermark` moves it. Used by
    /// partition workers, which see a share of the keys and so must not close windows on their
    /// own maximum.
    pub fn with_external_watermarks(mut self) -> Self {
        self.clock = None;
        for lane in &mut self.lanes {
            lane.clock = None;
        }
        self
    }

    /// Every operator with its checkpoint name, in the order of `all_operators`.
    fn named_operators_mut(&mut self) -> impl Iterator<Item = (&String, &mut Box<dyn Operator>)> {
        let lanes = self
            .lanes
            .iter_mut()
            .flat_map(|l| l.names.iter().zip(l.operators.iter_mut()));
        self.names
            .iter()
            .zip(self.operators.iter_mut())
            .chain(lanes)
    }

    /// Every operator: input 0's and the main ones, then each other input's.
    fn all_operators(&self) -> impl Iterator<Item = &Box<dyn Operator>> {
        self.operators
            .iter()
            .chain(self.lanes.iter().flat_map(|l| l.operators.iter()))
    }

    /// The planned query.
    pub fn plan(&self) -> &PlannedQuery {
        &self.plan
    }

    /// The columns input batches should carry.
    pub fn input_schema(&self) -> &SchemaRef {
        &self.plan.input_schema
    }

    /// Groups/rows held in state across all operators.
    pub fn state_size(&self) -> usize {
        self.all_operators().map(|o| o.state_size()).sum()
    }

    /// An estimate of the bytes every operator's state holds.
    pub fn state_bytes(&self) -> usize {
        self.all_operators().map(|o| o.state_bytes()).sum()
    }

    /// Windows (panes, sessions) held open.
    pub fn open_windows(&self) -> usize {
        self.all_operators().map(|o| o.open_windows()).sum()
    }

    /// Records dropped as later than the allowed lateness.
    pub fn late_records(&self) -> u64 {
        self.all_operators().map(|o| o.late_count()).sum()
    }

    /// Groups dropped by `'state.ttl'`, over all operators.
    pub fn expired_keys(&self) -> u64 {
        self.all_operators().map(|o| o.expired_count()).sum()
    }

    /// Late records to write to the dead-letter sink (each with a `_late_reason`).
    pub fn take_dead_letters(&mut self) -> Vec<RecordBatch> {
        let lanes = self.lanes.iter_mut().flat_map(|l| l.operators.iter_mut());
        self.operators
            .iter_mut()
            .chain(lanes)
            .flat_map(|o| o.take_dead_letters())
            .collect()
    }

    /// The earliest event time whose output is still held in open state (see
    /// `Operator::held_since`).
    pub fn held_since(&self) -> Option<i64> {
        self.all_operators().filter_map(|o| o.held_since()).min()
    }

    /// The state of every stateful operator, by operator name, for a checkpoint. Fails for
    /// an operator whose state cannot be checkpointed.
    pub fn snapshot(&mut self) -> Result<Vec<(String, OperatorState)>> {
        let mut states = Vec::new();
        for (name, op) in self.named_operators_mut() {
            if let Some(state) = op.snapshot()? {
                states.push((name.clone(), state));
            }
        }
        Ok(states)
    }

    /// Loads a checkpoint before any input: each operator takes the keys `shard` owns from
    /// every partition's state under its name.
    pub fn restore(&mut self, states: &RestoredStates, shard: &KeyShard) -> Result<()> {
        for (name, op) in self.named_operators_mut() {
            if let Some(states) = states.get(name) {
                op.restore(states, shard)?;
            }
        }
        Ok(())
    }

    /// The current watermark (i64::MIN before any event time).
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// Processes one batch of input 0 and returns what it emits.
    pub fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        self.process_batch_from(0, batch)
    }

    /// Processes one batch of input `input` and returns what it emits.
    pub fn process_batch_from(
        &mut self,
        input: usize,
        batch: RecordBatch,
    ) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let (batch, clock) = match input {
            0 => (self.input.adapt(batch)?, &mut self.clock),
            k => {
                let lane = self.lane(k)?;
                (lane.input.adapt(batch)?, &mut lane.clock)
            }
        };
        let observed = match clock {
            Some(clock) => clock.observe(&batch)?.0,
            None => None,
        };
        let mut out = match input {
            0 => self.run_from(0, vec![batch])?,
            k => self.run_lane(k, 0, vec![batch])?,
        };
        if let Some(wm) = observed {
            out.extend(self.advance_input_watermark(input, wm)?);
        }
        Ok(out)
    }

    /// Moves every input's event time to `watermark` (a source that knows more than the data
    /// can call this, e.g. on idle), releasing the windows it closes.
    pub fn advance_watermark(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        let mut released = Vec::new();
        for input in 0..self.input_watermarks.len() {
            released.extend(self.advance_input_watermark(input, watermark)?);
        }
        Ok(released)
    }

    /// Moves input `input`'s event time to `watermark`. Its own operators see that watermark;
    /// those after a merge see the minimum over the inputs, held back to the earliest row the
    /// merge still holds.
    pub fn advance_input_watermark(
        &mut self,
        input: usize,
        watermark: i64,
    ) -> Result<Vec<RecordBatch>> {
        let Some(current) = self.input_watermarks.get_mut(input) else {
            return Err(VeloError::Execution(format!(
                "query '{}' has no input {input}",
                self.plan.id
            )));
        };
        if watermark <= *current {
            return Ok(Vec::new());
        }
        *current = watermark;
        let Some(merge_at) = self.merge_at else {
            return self.watermark_from(0, watermark);
        };
        let mut released = match input {
            0 => self.watermark_range(0, merge_at, watermark)?,
            k => {
                let mut released = Vec::new();
                for j in 0..self.lane(k)?.operators.len() {
                    let mut out = Vec::new();
                    self.lane(k)?.operators[j].on_watermark(watermark, &mut out)?;
                    released.extend(self.run_lane(k, j + 1, out)?);
                }
                released
            }
        };
        let mut out = Vec::new();
        self.operators[merge_at].on_input_watermark(input, watermark, &mut out)?;
        released.extend(self.run_from(merge_at + 1, out)?);
        // Rows the merge still holds may come out later with their own times: the watermark
        // after it waits for them, so that none reaches a window there late.
        let held = self.operators[merge_at].held_since().unwrap_or(i64::MAX);
        let combined = self
            .input_watermarks
            .iter()
            .copied()
            .min()
            .unwrap_or(i64::MIN)
            .min(held);
        released.extend(self.watermark_from(merge_at, combined)?);
        Ok(released)
    }

    /// Hands `watermark` to the operators from `start` on (once it is past the last one).
    fn watermark_from(&mut self, start: usize, watermark: i64) -> Result<Vec<RecordBatch>> {
        if watermark <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = watermark;
        self.watermark_range(start, self.operators.len(), watermark)
    }

    /// Hands `watermark` to operators `start..end`, each one's output running on.
    fn watermark_range(
        &mut self,
        start: usize,
        end: usize,
        watermark: i64,
    ) -> Result<Vec<RecordBatch>> {
        let mut released = Vec::new();
        for i in start..end {
            let mut out = Vec::new();
            self.operators[i].on_watermark(watermark, &mut out)?;
            released.extend(self.run_from(i + 1, out)?);
        }
        Ok(released)
    }

    /// Bounded input ended: event time jumps to +infinity (every window closes), then every
    /// operator releases what it still holds, in pipeline order (each input's own first).
    pub fn end_of_input(&mut self) -> Result<Vec<RecordBatch>> {
        let mut released = self.advance_watermark(i64::MAX)?;
        for k in 1..=self.lanes.len() {
            for j in 0..self.lane(k)?.operators.len() {
                let mut out = Vec::new();
                self.lane(k)?.operators[j].on_end_of_input(&mut out)?;
                released.extend(self.run_lane(k, j + 1, out)?);
            }
        }
        for i in 0..self.operators.len() {
            let mut out = Vec::new();
            self.operators[i].on_end_of_input(&mut out)?;
            released.extend(self.run_from(i + 1, out)?);
        }
        Ok(released)
    }

    fn lane(&mut self, input: usize) -> Result<&mut Lane> {
        let id = &self.plan.id;
        input
            .checked_sub(1)
            .and_then(|k| self.lanes.get_mut(k))
            .ok_or_else(|| VeloError::Execution(format!("query '{id}' has no input {input}")))
    }

    /// Runs batches of input `input` (1, 2, ...) from its operator `start` on, into the
    /// merge and the operators after it.
    fn run_lane(
        &mut self,
        input: usize,
        start: usize,
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>> {
        let lane = self.lane(input)?;
        let at_merge = run_through(&mut lane.operators[start..], batches)?;
        let Some(merge_at) = self.merge_at else {
            return Ok(Vec::new());
        };
        let mut merged = Vec::new();
        for b in at_merge {
            self.operators[merge_at].process_input(input, b, &mut merged)?;
        }
        self.run_from(merge_at + 1, merged)
    }

    fn run_from(&mut self, start: usize, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let start = start.min(self.operators.len());
        run_through(&mut self.operators[start..], batches)
    }
}
