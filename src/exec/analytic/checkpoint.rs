//! Checkpoints of analytic state. A checkpoint holds one row per partition key: the key, then
//! each function's state under `_f{i}:` (counters and the last ORDER BY values; LAG's last
//! values; LEAD's waiting rows; an aggregate's state, or a bounded frame's rows).
//!
//! With LEAD, rows waiting to be emitted follow in the same batch, marked `_is_row`, each
//! with its partition key, its place in arrival order (`_seq`), how many LEAD values it still
//! misses and its values so far (`_row{c}`). A restore numbers them again in the order it
//! reads them: every key's rows come from one worker, so each key keeps its order.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::scalar::ScalarValue;

use std::collections::HashMap;

use arrow::array::new_null_array;
use arrow::compute::{concat_batches, filter_record_batch};

use super::{typed_array, AnalyticOperator, FunctionState, PartitionState, PendingRow};
use crate::error::{Result, VeloError};
use crate::exec::group_keys::GroupKeys;
use crate::exec::operator::evaluate;
use crate::exec::shard::KeyShard;
use crate::exec::snapshot::{column, owned_rows, state_batch, OperatorState};
use crate::sql::analytic::AnalyticKind;

/// Marks a waiting row (see the module doc); NULL in a partition's row.
const IS_ROW: &str = "_is_row";
/// A waiting row's place in its worker's arrival order.
const SEQ: &str = "_seq";
/// How many LEAD values a waiting row still misses.
const MISSING: &str = "_missing";

impl AnalyticOperator {
    /// The columns the operator reads (its output less one column per function).
    fn input_schema(&self) -> Schema {
        let width = self.schema.fields().len() - self.functions.len();
        Schema::new(self.schema.fields()[..width].to_vec())
    }

    /// Whether the operator's state fits a checkpoint: one PARTITION BY for every function
    /// (so one row per key holds them all).
    fn checkpointable(&self) -> Result<()> {
        let partition_by = |f: &FunctionState| -> Vec<String> {
            f.spec.partition_by.iter().map(|e| e.to_string()).collect()
        };
        let first = self.functions.first().map(partition_by);
        if self
            .functions
            .iter()
            .any(|f| Some(partition_by(f)) != first)
        {
            return Err(VeloError::Config(
                "OVER clauses with different PARTITION BY cannot be checkpointed yet: run \
                 this job without --state-dir"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The operator's checkpoint (see the module doc).
    pub(super) fn checkpoint_state(&mut self) -> Result<Option<OperatorState>> {
        self.checkpointable()?;
        let Some(keys) = self.functions.first().and_then(|f| f.keys.as_ref()) else {
            return Ok(None);
        };
        let num_partitions = self.functions[0].partitions.len();
        let mut columns = keys.all_keys()?;
        let mut fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| Field::new(format!("_key{i}"), c.data_type().clone(), true))
            .collect();
        let input = self.input_schema();
        for (f, function) in self.functions.iter_mut().enumerate() {
            for (name, c) in function.state_columns(&input)? {
                fields.push(Field::new(
                    format!("_f{f}:{name}"),
                    c.data_type().clone(),
                    true,
                ));
                columns.push(c);
            }
        }
        let partitions = state_batch(Arc::new(Schema::new(fields)), columns, num_partitions)?;
        let rows = match self.has_lead {
            true => self.with_waiting_rows(partitions)?,
            false => partitions,
        };
        Ok(Some(OperatorState {
            rows,
            scalars: Default::default(),
        }))
    }

    /// The partitions' state followed by the rows waiting to be emitted (see the module doc).
    fn with_waiting_rows(&self, partitions: RecordBatch) -> Result<RecordBatch> {
        let width = self.schema.fields().len();
        let waiting: Vec<(&u64, &PendingRow)> = self.pending.iter().collect();
        let n = waiting.len();
        let value_columns = (0..width)
            .map(|c| {
                typed_array(
                    waiting.iter().map(|(_, r)| r.values[c].clone()).collect(),
                    self.schema.field(c).data_type(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        // Each row's partition key, from its input columns.
        let input = Arc::new(self.input_schema());
        let inputs = state_batch(
            Arc::clone(&input),
            value_columns[..input.fields().len()].to_vec(),
            n,
        )?;
        let keys = match self.functions.first() {
            Some(f) => f
                .spec
                .partition_by
                .iter()
                .map(|e| evaluate(e, &inputs))
                .collect::<Result<Vec<_>>>()?,
            None => Vec::new(),
        };
        let mut row_fields = vec![
            Field::new(IS_ROW, DataType::Boolean, true),
            Field::new(SEQ, DataType::UInt64, true),
            Field::new(MISSING, DataType::UInt64, true),
        ];
        let mut row_columns: Vec<ArrayRef> = vec![
            Arc::new(BooleanArray::from(vec![true; n])),
            Arc::new(UInt64Array::from_iter_values(
                waiting.iter().map(|(s, _)| **s),
            )),
            Arc::new(UInt64Array::from_iter_values(
                waiting.iter().map(|(_, r)| r.missing as u64),
            )),
        ];
        for (c, column) in value_columns.into_iter().enumerate() {
            row_fields.push(Field::new(
                format!("_row{c}"),
                column.data_type().clone(),
                true,
            ));
            row_columns.push(column);
        }
        // One schema for both: each part's columns are NULL in the other's rows.
        let key_count = keys.len();
        let part_schema = partitions.schema();
        let mut fields: Vec<Field> = part_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(row_fields);
        let schema = Arc::new(Schema::new(fields));
        let parts_rows = partitions.num_rows();
        let mut part_columns = partitions.columns().to_vec();
        part_columns.extend(
            schema.fields()[part_schema.fields().len()..]
                .iter()
                .map(|f| new_null_array(f.data_type(), parts_rows)),
        );
        let mut waiting_columns = keys;
        waiting_columns.extend(
            part_schema.fields()[key_count..]
                .iter()
                .map(|f| new_null_array(f.data_type(), n)),
        );
        waiting_columns.extend(row_columns);
        let parts = state_batch(Arc::clone(&schema), part_columns, parts_rows)?;
        let rows = state_batch(Arc::clone(&schema), waiting_columns, n)?;
        Ok(concat_batches(&schema, &[parts, rows])?)
    }

    /// Loads the waiting rows of a checkpoint (`rows`, after the partitions were restored),
    /// numbered again from 0, and points each LEAD function's waiting lists at them.
    fn restore_waiting_rows(&mut self, rows: &RecordBatch, key_count: usize) -> Result<()> {
        let what = "OVER";
        let seqs: UInt64Array = column(rows, SEQ, what)?;
        let missing: UInt64Array = column(rows, MISSING, what)?;
        let width = self.schema.fields().len();
        let values = (0..width)
            .map(|c| named(rows, &format!("_row{c}")))
            .collect::<Result<Vec<_>>>()?;
        let keys: Vec<ArrayRef> = rows.columns()[..key_count].to_vec();
        let mut groups = Vec::new();
        let known = self.functions.first().map_or(0, |f| f.partitions.len());
        if let Some(k) = self.functions.first_mut().and_then(|f| f.keys.as_mut()) {
            k.intern(&keys, rows.num_rows(), &mut groups)?;
        }
        if groups.iter().any(|g| *g >= known) {
            return Err(VeloError::Execution(
                "a checkpoint of OVER state has a waiting row of a partition it does not hold"
                    .into(),
            ));
        }
        let mut renumbered: HashMap<(usize, u64), u64> = HashMap::new();
        self.pending.clear();
        for (row, g) in groups.iter().enumerate() {
            let seq = row as u64;
            renumbered.insert((*g, seqs.value(row)), seq);
            let row_values = values
                .iter()
                .map(|v| ScalarValue::try_from_array(v, row))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            self.pending.insert(
                seq,
                PendingRow {
                    values: row_values,
                    missing: missing.value(row) as usize,
                },
            );
        }
        self.next_seq = rows.num_rows() as u64;
        for function in &mut self.functions {
            for (g, partition) in function.partitions.iter_mut().enumerate() {
                if let PartitionState::Lead(waiting) = partition {
                    for seq in waiting.iter_mut() {
                        *seq = *renumbered.get(&(g, *seq)).ok_or_else(|| {
                            VeloError::Execution(
                                "a checkpoint of OVER state lost a row waiting for LEAD".into(),
                            )
                        })?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Loads the partitions of `states` that `shard` owns into this empty operator.
    pub(super) fn restore_state(
        &mut self,
        states: &[OperatorState],
        shard: &KeyShard,
    ) -> Result<()> {
        self.checkpointable()?;
        let Some(key_count) = self.functions.first().map(|f| f.spec.partition_by.len()) else {
            return Ok(());
        };
        let Some(rows) = owned_rows(states, shard, |r| r.columns()[..key_count].to_vec())? else {
            return Ok(());
        };
        let (partitions, waiting) = match rows.column_by_name(IS_ROW) {
            // Waiting rows are marked; the partitions' rows hold NULL there.
            Some(is_row) => {
                let flags = arrow::compute::is_not_null(is_row)?;
                let parts = filter_record_batch(&rows, &arrow::compute::not(&flags)?)?;
                (parts, Some(filter_record_batch(&rows, &flags)?))
            }
            None => (rows, None),
        };
        for (f, function) in self.functions.iter_mut().enumerate() {
            function.restore(&partitions, key_count, f)?;
        }
        if let Some(waiting) = waiting {
            self.restore_waiting_rows(&waiting, key_count)?;
        }
        Ok(())
    }
}

impl FunctionState {
    /// The type of expression `e` over the operator's input.
    fn type_of(
        e: &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        input: &Schema,
    ) -> Result<DataType> {
        Ok(e.data_type(input)?)
    }

    /// Every partition's state as named columns, in partition order.
    fn state_columns(&mut self, input: &Schema) -> Result<Vec<(String, ArrayRef)>> {
        let spec = &self.spec;
        let mut columns: Vec<(String, ArrayRef)> = Vec::new();
        match &spec.kind {
            AnalyticKind::RowNumber | AnalyticKind::Rank | AnalyticKind::DenseRank => {
                let counters = |pick: fn(u64, u64, u64) -> u64| -> ArrayRef {
                    Arc::new(UInt64Array::from_iter_values(self.partitions.iter().map(
                        |p| match p {
                            PartitionState::Rank {
                                rows, rank, dense, ..
                            } => pick(*rows, *rank, *dense),
                            _ => 0,
                        },
                    )))
                };
                columns.push(("rows".into(), counters(|r, _, _| r)));
                columns.push(("rank".into(), counters(|_, r, _| r)));
                columns.push(("dense".into(), counters(|_, _, d| d)));
                let has: BooleanArray = self
                    .partitions
                    .iter()
                    .map(|p| Some(p.last_order().is_some()))
                    .collect();
                columns.push(("has_order".into(), Arc::new(has)));
                for (j, e) in spec.order_by.iter().enumerate() {
                    let values = self
                        .partitions
                        .iter()
                        .map(|p| {
                            p.last_order()
                                .and_then(|o| o.get(j).cloned())
                                .unwrap_or(ScalarValue::Null)
                        })
                        .collect();
                    columns.push((
                        format!("order{j}"),
                        typed_array(values, &Self::type_of(e, input)?)?,
                    ));
                }
            }
            AnalyticKind::Lag { offset, .. } => {
                let len = UInt64Array::from_iter_values(
                    self.partitions
                        .iter()
                        .map(|p| p.lag_history().map_or(0, |h| h.len() as u64)),
                );
                columns.push(("len".into(), Arc::new(len)));
                let data_type = Self::type_of(&spec.args[0], input)?;
                for j in 0..*offset {
                    let values = self
                        .partitions
                        .iter()
                        .map(|p| {
                            p.lag_history()
                                .and_then(|h| h.get(j))
                                .cloned()
                                .unwrap_or(ScalarValue::Null)
                        })
                        .collect();
                    columns.push((format!("lag{j}"), typed_array(values, &data_type)?));
                }
            }
            AnalyticKind::Aggregate {
                function,
                preceding: None,
            } => {
                let mut states = Vec::with_capacity(self.partitions.len());
                for p in &mut self.partitions {
                    if let PartitionState::Aggregate { accumulator, .. } = p {
                        states.push(accumulator.state()?);
                    }
                }
                for (j, field) in function.state_fields()?.iter().enumerate() {
                    let values = states.iter().map(|s| s[j].clone()).collect();
                    columns.push((format!("acc{j}"), typed_array(values, field.data_type())?));
                }
            }
            AnalyticKind::Aggregate {
                preceding: Some(p), ..
            } => {
                let len = UInt64Array::from_iter_values(
                    self.partitions
                        .iter()
                        .map(|part| part.frame().map_or(0, |f| f.len() as u64)),
                );
                columns.push(("len".into(), Arc::new(len)));
                for (a, arg) in spec.args.iter().enumerate() {
                    let data_type = Self::type_of(arg, input)?;
                    for i in 0..=*p {
                        let values = self
                            .partitions
                            .iter()
                            .map(|part| match part.frame().and_then(|f| f.get(i)) {
                                Some(slice) => ScalarValue::try_from_array(&slice[a], 0),
                                None => Ok(ScalarValue::Null),
                            })
                            .collect::<datafusion::error::Result<Vec<_>>>()?;
                        columns.push((format!("frame{i}:{a}"), typed_array(values, &data_type)?));
                    }
                }
            }
            AnalyticKind::Lead { offset, .. } => {
                let len = UInt64Array::from_iter_values(
                    self.partitions
                        .iter()
                        .map(|p| p.lead_waiting().map_or(0, |w| w.len() as u64)),
                );
                columns.push(("len".into(), Arc::new(len)));
                for j in 0..*offset {
                    let seqs: UInt64Array = self
                        .partitions
                        .iter()
                        .map(|p| p.lead_waiting().and_then(|w| w.get(j)).copied())
                        .collect();
                    columns.push((format!("wait{j}"), Arc::new(seqs)));
                }
            }
        }
        Ok(columns)
    }

    /// Loads the partitions of `rows` (written by [`Self::state_columns`] as function `f`,
    /// after `key_count` key columns) into this function, which has seen nothing.
    fn restore(&mut self, rows: &RecordBatch, key_count: usize, f: usize) -> Result<()> {
        let keys: Vec<ArrayRef> = rows.columns()[..key_count].to_vec();
        let fields: Vec<Field> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| Field::new(format!("k{i}"), k.data_type().clone(), true))
            .collect();
        let mut interned = GroupKeys::new(&Arc::new(Schema::new(fields)))?;
        let mut groups = Vec::new();
        interned.intern(&keys, rows.num_rows(), &mut groups)?;
        if groups.iter().enumerate().any(|(row, g)| row != *g) {
            return Err(VeloError::Execution(
                "a checkpoint of OVER state holds a partition key twice".into(),
            ));
        }
        self.keys = Some(interned);
        let name = |n: &str| format!("_f{f}:{n}");
        let what = "OVER";
        self.partitions = Vec::with_capacity(rows.num_rows());
        match &self.spec.kind {
            AnalyticKind::RowNumber | AnalyticKind::Rank | AnalyticKind::DenseRank => {
                let counters: [UInt64Array; 3] = [
                    column(rows, &name("rows"), what)?,
                    column(rows, &name("rank"), what)?,
                    column(rows, &name("dense"), what)?,
                ];
                let has: BooleanArray = column(rows, &name("has_order"), what)?;
                let order = (0..self.spec.order_by.len())
                    .map(|j| named(rows, &name(&format!("order{j}"))))
                    .collect::<Result<Vec<_>>>()?;
                for row in 0..rows.num_rows() {
                    let last_order = match has.value(row) {
                        true => Some(
                            order
                                .iter()
                                .map(|o| ScalarValue::try_from_array(o, row))
                                .collect::<datafusion::error::Result<Vec<_>>>()?,
                        ),
                        false => None,
                    };
                    self.partitions.push(PartitionState::Rank {
                        rows: counters[0].value(row),
                        rank: counters[1].value(row),
                        dense: counters[2].value(row),
                        last_order,
                    });
                }
            }
            AnalyticKind::Lag { offset, .. } => {
                let len: UInt64Array = column(rows, &name("len"), what)?;
                let values = (0..*offset)
                    .map(|j| named(rows, &name(&format!("lag{j}"))))
                    .collect::<Result<Vec<_>>>()?;
                for row in 0..rows.num_rows() {
                    let history = values
                        .iter()
                        .take(len.value(row) as usize)
                        .map(|v| ScalarValue::try_from_array(v, row))
                        .collect::<datafusion::error::Result<VecDeque<_>>>()?;
                    self.partitions.push(PartitionState::Lag(history));
                }
            }
            AnalyticKind::Aggregate {
                function,
                preceding: None,
            } => {
                let states = (0..function.state_fields()?.len())
                    .map(|j| named(rows, &name(&format!("acc{j}"))))
                    .collect::<Result<Vec<_>>>()?;
                for row in 0..rows.num_rows() {
                    let mut accumulator = function.create_accumulator()?;
                    let state: Vec<ArrayRef> = states.iter().map(|s| s.slice(row, 1)).collect();
                    accumulator.merge_batch(&state)?;
                    self.partitions.push(PartitionState::Aggregate {
                        accumulator,
                        frame: VecDeque::new(),
                    });
                }
            }
            AnalyticKind::Aggregate {
                function,
                preceding: Some(p),
            } => {
                let len: UInt64Array = column(rows, &name("len"), what)?;
                let slots = (0..=*p)
                    .map(|i| {
                        (0..self.spec.args.len())
                            .map(|a| named(rows, &name(&format!("frame{i}:{a}"))))
                            .collect::<Result<Vec<_>>>()
                    })
                    .collect::<Result<Vec<_>>>()?;
                for row in 0..rows.num_rows() {
                    let mut accumulator = function.create_sliding_accumulator()?;
                    let mut frame = VecDeque::new();
                    for slot in slots.iter().take(len.value(row) as usize) {
                        let slice: Vec<ArrayRef> = slot.iter().map(|c| c.slice(row, 1)).collect();
                        accumulator.update_batch(&slice)?;
                        frame.push_back(slice);
                    }
                    self.partitions
                        .push(PartitionState::Aggregate { accumulator, frame });
                }
            }
            AnalyticKind::Lead { offset, .. } => {
                let len: UInt64Array = column(rows, &name("len"), what)?;
                let slots = (0..*offset)
                    .map(|j| column::<UInt64Array>(rows, &name(&format!("wait{j}")), what))
                    .collect::<Result<Vec<_>>>()?;
                for row in 0..rows.num_rows() {
                    // Sequence numbers of the checkpoint: the restore renumbers them.
                    let waiting: VecDeque<u64> = slots
                        .iter()
                        .take(len.value(row) as usize)
                        .map(|s| s.value(row))
                        .collect();
                    self.partitions.push(PartitionState::Lead(waiting));
                }
            }
        }
        Ok(())
    }
}

/// What a checkpoint reads out of one partition's state, for the function kind it has.
impl PartitionState {
    fn last_order(&self) -> Option<&Vec<ScalarValue>> {
        match self {
            PartitionState::Rank { last_order, .. } => last_order.as_ref(),
            _ => None,
        }
    }

    fn lag_history(&self) -> Option<&VecDeque<ScalarValue>> {
        match self {
            PartitionState::Lag(history) => Some(history),
            _ => None,
        }
    }

    fn frame(&self) -> Option<&VecDeque<Vec<ArrayRef>>> {
        match self {
            PartitionState::Aggregate { frame, .. } => Some(frame),
            _ => None,
        }
    }

    fn lead_waiting(&self) -> Option<&VecDeque<u64>> {
        match self {
            PartitionState::Lead(waiting) => Some(waiting),
            _ => None,
        }
    }
}

/// Column `name` of an OVER checkpoint, or an error saying it is missing.
fn named(rows: &RecordBatch, name: &str) -> Result<ArrayRef> {
    rows.column_by_name(name).cloned().ok_or_else(|| {
        VeloError::Execution(format!("a checkpoint of OVER state has no column '{name}'"))
    })
}
