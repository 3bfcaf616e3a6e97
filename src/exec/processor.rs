//! `QueryProcessor`: one deployed query — its operators and their state, owned outright.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::aggregate::GroupByAggregator;
use super::analytic::AnalyticOperator;
use super::input::InputAdapter;
use super::join::{LookupJoinOperator, LookupTable};
use super::operator::{
    DistinctOperator, FilterOperator, LimitOperator, Operator, ProjectOperator, SortOperator,
};
use super::session::SessionAggregator;
use super::shard::KeyShard;
use super::snapshot::{OperatorState, RestoredStates};
use super::watermark::EventClock;
use super::window::WindowAggregator;
use crate::error::{Result, VeloError};
use crate::sql::script::WindowKind;
use crate::sql::{PlanStage, PlannedQuery};

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
    /// The last watermark handed to the operators.
    watermark: i64,
}

impl QueryProcessor {
    /// Builds the operators of a plan that joins no table.
    pub fn new(plan: PlannedQuery) -> Result<Self> {
        Self::with_tables(plan, &[])
    }

    /// Builds the operators of `plan`; `tables` holds the loaded rows of `plan.tables`.
    pub fn with_tables(plan: PlannedQuery, tables: &[Arc<LookupTable>]) -> Result<Self> {
        let mut operators: Vec<Box<dyn Operator>> = Vec::new();
        let names = plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, stage)| format!("{i}-{}", stage.kind()))
            .collect();
        let mut schema = Arc::clone(&plan.input_schema);
        for stage in &plan.stages {
            let op: Box<dyn Operator> = match stage {
                PlanStage::Filter { predicate } => {
                    Box::new(FilterOperator::new(Arc::clone(predicate)))
                }
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
            };
            operators.push(op);
        }
        let clock = plan.watermark.as_ref().map(EventClock::new);
        let input = InputAdapter::new(Arc::clone(&plan.input_schema), plan.source.clone());
        Ok(QueryProcessor {
            plan,
            operators,
            names,
            input,
            clock,
            watermark: i64::MIN,
        })
    }

    /// Stops tracking event time from the batches: only `advance_watermark` moves it. Used by
    /// partition workers, which see a share of the keys and so must not close windows on their
    /// own maximum.
    pub fn with_external_watermarks(mut self) -> Self {
        self.clock = None;
        self
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
        self.operators.iter().map(|o| o.state_size()).sum()
    }

    /// Windows (panes, sessions) held open.
    pub fn open_windows(&self) -> usize {
        self.operators.iter().map(|o| o.open_windows()).sum()
    }

    /// Records dropped as later than the allowed lateness.
    pub fn late_records(&self) -> u64 {
        self.operators.iter().map(|o| o.late_count()).sum()
    }

    /// Groups dropped by `'state.ttl'`, over all operators.
    pub fn expired_keys(&self) -> u64 {
        self.operators.iter().map(|o| o.expired_count()).sum()
    }

    /// Late records to write to the dead-letter sink (each with a `_late_reason`).
    pub fn take_dead_letters(&mut self) -> Vec<RecordBatch> {
        self.operators
            .iter_mut()
            .flat_map(|o| o.take_dead_letters())
            .collect()
    }

    /// The earliest event time whose output is still held in open state (see
    /// `Operator::held_since`).
    pub fn held_since(&self) -> Option<i64> {
        self.operators.iter().filter_map(|o| o.held_since()).min()
    }

    /// The state of every stateful operator, by operator name, for a checkpoint. Fails for
    /// an operator whose state cannot be checkpointed.
    pub fn snapshot(&mut self) -> Result<Vec<(String, OperatorState)>> {
        let mut states = Vec::new();
        for (name, op) in self.names.iter().zip(self.operators.iter_mut()) {
            if let Some(state) = op.snapshot()? {
                states.push((name.clone(), state));
            }
        }
        Ok(states)
    }

    /// Loads a checkpoint before any input: each operator takes the keys `shard` owns from
    /// every partition's state under its name.
    pub fn restore(&mut self, states: &RestoredStates, shard: &KeyShard) -> Result<()> {
        for (name, op) in self.names.iter().zip(self.operators.iter_mut()) {
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

    /// Processes one input batch and returns what it emits.
    pub fn process_batch(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let batch = self.input.adapt(batch)?;
        let observed = match &mut self.clock {
            Some(clock) => clock.observe(&batch)?.0,
            None => None,
        };
        let mut out = self.run_from(0, vec![batch])?;
        if let Some(wm) = observed.filter(|wm| *wm > self.watermark) {
            out.extend(self.advance_watermark(wm)?);
        }
        Ok(out)
    }

    /// Moves event time to `watermark` (a source that knows more than the data can call this,
    /// e.g. on idle), releasing the windows it closes.
    pub fn advance_watermark(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        if watermark <= self.watermark {
            return Ok(Vec::new());
        }
        self.watermark = watermark;
        let mut released = Vec::new();
        for i in 0..self.operators.len() {
            let mut out = Vec::new();
            self.operators[i].on_watermark(watermark, &mut out)?;
            released.extend(self.run_from(i + 1, out)?);
        }
        Ok(released)
    }

    /// Bounded input ended: event time jumps to +infinity (every window closes), then every
    /// operator releases what it still holds, in pipeline order.
    pub fn end_of_input(&mut self) -> Result<Vec<RecordBatch>> {
        let mut released = self.advance_watermark(i64::MAX)?;
        for i in 0..self.operators.len() {
            let mut out = Vec::new();
            self.operators[i].on_end_of_input(&mut out)?;
            released.extend(self.run_from(i + 1, out)?);
        }
        Ok(released)
    }

    fn run_from(&mut self, start: usize, batches: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let mut current = batches;
        for op in self.operators.iter_mut().skip(start) {
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
}
