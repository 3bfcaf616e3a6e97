//! The operator contract and the stateless operators (filter, project, sort) plus the small
//! stateful ones (distinct, limit). Each hook returns its output by pushing onto `out`.

use std::collections::HashSet;
use std::sync::Arc;

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, BinaryArray, BooleanArray};
use arrow::compute::{filter_record_batch, lexsort_to_indices, take_record_batch, SortColumn};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::change::keep_kind;
use super::shard::KeyShard;
use super::snapshot::{column, counter_for, owned_rows, state_batch, OperatorState};
use crate::error::{Result, VeloError};

/// One step of a query pipeline. Hooks other than `process_batch` default to doing nothing.
pub trait Operator: Send {
    /// Handles one input batch (of input 0, for a merge of several inputs).
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()>;

    /// Handles a batch of input `input` (1, 2, ...): only a merge of several stream inputs
    /// receives these.
    fn process_input(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.process_batch(batch, out)
    }

    /// Input `input`'s own watermark advanced (a merge tracks each of its inputs'); the
    /// watermark of the merge's output, the minimum, comes to `on_watermark`.
    fn on_input_watermark(
        &mut self,
        _input: usize,
        _watermark: i64,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        Ok(())
    }

    /// The bounded input has ended: release whatever is held (EMIT FINAL groups).
    fn on_end_of_input(&mut self, _out: &mut Vec<RecordBatch>) -> Result<()> {
        Ok(())
    }

    /// Event time advanced to `watermark`: close and emit what it completes.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Vec<RecordBatch>) -> Result<()> {
        Ok(())
    }

    /// Number of groups held in state (0 for stateless operators).
    fn state_size(&self) -> usize {
        0
    }

    /// Number of windows (or panes, or sessions) held open.
    /// An estimate of the bytes its state holds (keys, accumulators, waiting rows).
    fn state_bytes(&self) -> usize {
        0
    }

    fn open_windows(&self) -> usize {
        0
    }

    /// Records dropped as too late so far.
    fn late_count(&self) -> u64 {
        0
    }

    /// Groups dropped for being idle longer than `'state.ttl'`.
    fn expired_count(&self) -> u64 {
        0
    }

    /// Late records kept for the dead-letter sink (with a `_late_reason` column), taken once.
    fn take_dead_letters(&mut self) -> Vec<RecordBatch> {
        Vec::new()
    }

    /// The operator's state for a checkpoint (None: it keeps none). The operator goes on
    /// unchanged.
    fn snapshot(&mut self) -> Result<Option<OperatorState>> {
        Ok(None)
    }

    /// Loads checkpointed state before any input: `states` holds this operator's snapshot
    /// from every partition of the checkpointed run; it keeps the keys `shard` owns.
    fn restore(&mut self, _states: &[OperatorState], _shard: &KeyShard) -> Result<()> {
        Ok(())
    }

    /// The earliest event time of a record whose output is still held back in open state
    /// (None: every record seen has produced its output). A source may commit a record's
    /// offset only once its event time is before this.
    fn held_since(&self) -> Option<i64> {
        None
    }
}

/// Evaluates a physical expression to an array of the batch's length.
pub fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef> {
    Ok(expr.evaluate(batch)?.into_array(batch.num_rows())?)
}

/// Evaluates a predicate to a boolean mask (NULL counts as false when filtering).
pub fn evaluate_predicate(
    expr: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> Result<BooleanArray> {
    let array = evaluate(expr, batch)?;
    array
        .as_any()
        .downcast_ref::<BooleanArray>()
        .cloned()
        .ok_or_else(|| {
            VeloError::Execution(format!(
                "predicate returned {}, not BOOLEAN",
                array.data_type()
            ))
        })
}

/// WHERE: keeps rows whose predicate is true.
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOperator {
    /// A filter on `predicate`.
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        FilterOperator { predicate }
    }
}

impl Operator for FilterOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mask = evaluate_predicate(&self.predicate, &batch)?;
        let filtered = filter_record_batch(&batch, &mask)?;
        if filtered.num_rows() > 0 {
            out.push(filtered);
        }
        Ok(())
    }
}

/// The SELECT list: computes output columns.
pub struct ProjectOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectOperator {
    /// A projection producing `schema` from `exprs`.
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        ProjectOperator { exprs, schema }
    }
}

impl Operator for ProjectOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let columns = self
            .exprs
            .iter()
            .map(|e| evaluate(e, &batch))
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let projected =
            RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?;
        out.push(keep_kind(&batch, projected));
        Ok(())
    }
}

/// ORDER BY: orders each emitted batch (for EMIT FINAL, the whole result).
pub struct SortOperator {
    exprs: Vec<PhysicalSortExpr>,
}

impl SortOperator {
    /// A sort on `exprs`.
    pub fn new(exprs: Vec<PhysicalSortExpr>) -> Self {
        SortOperator { exprs }
    }
}

impl Operator for SortOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let columns = self
            .exprs
            .iter()
            .map(|s| {
                Ok(SortColumn {
                    values: evaluate(&s.expr, &batch)?,
                    options: Some(s.options),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let indices = lexsort_to_indices(&columns, None)?;
        out.push(keep_kind(&batch, take_record_batch(&batch, &indices)?));
        Ok(())
    }
}

/// SELECT DISTINCT: emits each distinct row the first time it is seen.
pub struct DistinctOperator {
    converter: Option<RowConverter>,
    seen: HashSet<Box<[u8]>, ahash::RandomState>,
}

impl DistinctOperator {
    /// An empty distinct set.
    pub fn new() -> Self {
        DistinctOperator {
            converter: None,
            seen: HashSet::default(),
        }
    }
}

impl Default for DistinctOperator {
    fn default() -> Self {
        Self::new()
    }
}

impl Operator for DistinctOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.converter.is_none() {
            let fields = batch
                .schema()
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            self.converter = Some(RowConverter::new(fields)?);
        }
        let Some(converter) = &self.converter else {
            return Ok(());
        };
        let rows = converter.convert_columns(batch.columns())?;
        let mask: BooleanArray = rows
            .iter()
            .map(|r| Some(self.seen.insert(r.as_ref().into())))
            .collect();
        let kept = filter_record_batch(&batch, &mask)?;
        if kept.num_rows() > 0 {
            out.push(kept);
        }
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.seen.len()
    }

    fn state_bytes(&self) -> usize {
        self.seen.iter().map(|r| r.len() + 16).sum()
    }

    fn snapshot(&mut self) -> Result<Option<OperatorState>> {
        let rows: BinaryArray = self.seen.iter().map(|r| Some(r.as_ref())).collect();
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("_row", arrow::datatypes::DataType::Binary, false),
        ]));
        let n = rows.len();
        Ok(Some(OperatorState {
            rows: state_batch(schema, vec![Arc::new(rows)], n)?,
            scalars: BTreeMap::new(),
        }))
    }

    fn restore(&mut self, states: &[OperatorState], shard: &KeyShard) -> Result<()> {
        // DISTINCT runs on one partition: its rows are unkeyed.
        let Some(rows) = owned_rows(states, shard, |_| Vec::new())? else {
            return Ok(());
        };
        let seen: BinaryArray = column(&rows, "_row", "DISTINCT")?;
        self.seen.extend(seen.iter().flatten().map(Box::from));
        Ok(())
    }
}

/// LIMIT/OFFSET over the stream: skips then passes rows, then nothing more.
pub struct LimitOperator {
    to_skip: usize,
    remaining: Option<usize>,
}

impl LimitOperator {
    /// Skip `skip` rows, then pass at most `fetch` (all when None).
    pub fn new(skip: usize, fetch: Option<usize>) -> Self {
        LimitOperator {
            to_skip: skip,
            remaining: fetch,
        }
    }
}

impl Operator for LimitOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut batch = batch;
        if self.to_skip > 0 {
            let skip = self.to_skip.min(batch.num_rows());
            self.to_skip -= skip;
            batch = batch.slice(skip, batch.num_rows() - skip);
        }
        let take = match self.remaining {
            Some(r) => {
                let t = r.min(batch.num_rows());
                self.remaining = Some(r - t);
                t
            }
            None => batch.num_rows(),
        };
        if take > 0 {
            out.push(batch.slice(0, take));
        }
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Option<OperatorState>> {
        let mut scalars = BTreeMap::from([("to_skip".to_string(), self.to_skip as i64)]);
        if let Some(r) = self.remaining {
            scalars.insert("remaining".to_string(), r as i64);
        }
        Ok(Some(OperatorState::scalars_only(scalars)))
    }

    fn restore(&mut self, states: &[OperatorState], shard: &KeyShard) -> Result<()> {
        // LIMIT runs on one partition; its counters are the first shard's.
        if states.is_empty() || !shard.takes_unkeyed() {
            return Ok(());
        }
        self.to_skip = counter_for(states, shard, "to_skip") as usize;
        if self.remaining.is_some() {
            self.remaining = Some(counter_for(states, shard, "remaining") as usize);
        }
        Ok(())
    }
}
