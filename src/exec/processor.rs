//! `QueryProcessor`: one deployed query — its operators and their state, owned outright.

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, Int32Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::aggregate::GroupByAggregator;
use super::analytic::AnalyticOperator;
use super::event_time::constant_millis;
use super::operator::{
    DistinctOperator, FilterOperator, LimitOperator, Operator, ProjectOperator, SortOperator,
};
use super::session::SessionAggregator;
use super::watermark::WatermarkTracker;
use super::window::{event_times, WindowAggregator};
use crate::error::Result;
use crate::sql::script::WindowKind;
use crate::sql::window::{WatermarkPlan, WINDOW_END};
use crate::sql::{PlanStage, PlannedQuery};

/// Runs one planned query over input batches; all state lives here, behind `&mut self`.
pub struct QueryProcessor {
    plan: PlannedQuery,
    operators: Vec<Box<dyn Operator>>,
    /// Records seen, used as `_offset` when the input carries none.
    records_in: i64,
    /// Event-time tracking of windowed queries.
    watermarks: Option<(WatermarkTracker, WatermarkPlan)>,
    /// The last watermark handed to the operators.
    watermark: i64,
}

impl QueryProcessor {
    /// Builds the operators of `plan`.
    pub fn new(plan: PlannedQuery) -> Result<Self> {
        let mut operators: Vec<Box<dyn Operator>> = Vec::new();
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
            };
            operators.push(op);
        }
        let watermarks = plan.watermark.as_ref().map(|w| {
            (
                WatermarkTracker::new(w.max_out_of_orderness_ms, w.idle_timeout_ms),
                w.clone(),
            )
        });
        Ok(QueryProcessor {
            plan,
            operators,
            records_in: 0,
            watermarks,
            watermark: i64::MIN,
        })
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

    /// Late records to write to the dead-letter sink (each with a `_late_reason`).
    pub fn take_dead_letters(&mut self) -> Vec<RecordBatch> {
        self.operators
            .iter_mut()
            .flat_map(|o| o.take_dead_letters())
            .collect()
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
        let batch = self.adapt_input(batch)?;
        self.records_in += batch.num_rows() as i64;
        let observed = match &mut self.watermarks {
            Some((tracker, plan)) => {
                let times = event_times(&plan.time_expr, &batch)?;
                let partitions = plan.partition_column.and_then(|i| {
                    batch
                        .column(i)
                        .as_any()
                        .downcast_ref::<Int32Array>()
                        .cloned()
                });
                tracker.observe(&times, partitions.as_ref());
                tracker.watermark()
            }
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

    /// Shapes an incoming batch to the input schema: columns by name (cast when the type
    /// differs), NULL for absent data columns, and defaults for absent system columns.
    fn adapt_input(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let target = &self.plan.input_schema;
        if batch.schema().fields() == target.fields() {
            return Ok(batch);
        }
        let n = batch.num_rows();
        let now = now_millis();
        let incoming = batch.schema();
        let columns = target
            .fields()
            .iter()
            .map(|f| {
                if let Ok(i) = incoming.index_of(f.name()) {
                    let col = batch.column(i);
                    return Ok(if col.data_type() == f.data_type() {
                        Arc::clone(col)
                    } else {
                        cast(col, f.data_type())?
                    });
                }
                let col: ArrayRef = match f.name().as_str() {
                    "_timestamp" => constant_millis(now, n),
                    // Windowed rows (an upstream query's output) carry their window end as event time.
                    "_event_time" => match incoming
                        .index_of(WINDOW_END)
                        .or_else(|_| incoming.index_of("_timestamp"))
                    {
                        Ok(i) => cast(batch.column(i), &arrow::datatypes::DataType::Int64)?,
                        Err(_) => constant_millis(now, n),
                    },
                    "_offset" => Arc::new(Int64Array::from_iter_values(
                        (0..n as i64).map(|i| self.records_in + i),
                    )),
                    "_partition" => Arc::new(Int32Array::from_value(0, n)),
                    "_topic" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                        self.plan.source.as_str(),
                        n,
                    ))),
                    _ => new_null_array(f.data_type(), n),
                };
                Ok(col)
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(target),
            columns,
            &options,
        )?)
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
