//! Analytic functions over a stream: per partition key, rows are numbered, ranked, looked back
//! on (LAG), looked ahead on (LEAD: the row waits for its successor) or aggregated over a
//! bounded frame. Rows are taken in arrival order; state per partition is bounded by the frame.
//!
//! A checkpoint holds one row per partition key: the key, then each function's state under
//! `_f{i}:` (counters and the last ORDER BY values; LAG's last values; an aggregate's state,
//! or a bounded frame's rows). LEAD's waiting rows are not checkpointed yet.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::Accumulator;
use datafusion::scalar::ScalarValue;

use super::aggregate::output_batch;
use super::group_keys::GroupKeys;
use super::operator::{evaluate, Operator};
use super::shard::KeyShard;
use super::snapshot::{column, owned_rows, state_batch, OperatorState};
use crate::error::{Result, VeloError};
use crate::sql::analytic::{AnalyticFunction, AnalyticKind};

/// The state of one partition for one function.
enum PartitionState {
    Rank {
        rows: u64,
        rank: u64,
        dense: u64,
        last_order: Option<Vec<ScalarValue>>,
    },
    Lag(VecDeque<ScalarValue>),
    /// Sequence numbers of rows still waiting for their LEAD value.
    Lead(VecDeque<u64>),
    Aggregate {
        accumulator: Box<dyn Accumulator>,
        /// The frame's rows (argument slices), for retracting the oldest.
        frame: VecDeque<Vec<ArrayRef>>,
    },
}

struct FunctionState {
    spec: AnalyticFunction,
    /// Partition keys, created on the first batch (their types come from the data).
    keys: Option<GroupKeys>,
    partitions: Vec<PartitionState>,
}

impl FunctionState {
    fn new_partition(&self) -> Result<PartitionState> {
        Ok(match &self.spec.kind {
            AnalyticKind::RowNumber | AnalyticKind::Rank | AnalyticKind::DenseRank => {
                PartitionState::Rank {
                    rows: 0,
                    rank: 0,
                    dense: 0,
                    last_order: None,
                }
            }
            AnalyticKind::Lag { .. } => PartitionState::Lag(VecDeque::new()),
            AnalyticKind::Lead { .. } => PartitionState::Lead(VecDeque::new()),
            AnalyticKind::Aggregate {
                function,
                preceding,
            } => PartitionState::Aggregate {
                accumulator: match preceding {
                    Some(_) => function.create_sliding_accumulator()?,
                    None => function.create_accumulator()?,
                },
                frame: VecDeque::new(),
            },
        })
    }

    /// Partition index of each row.
    fn partitions_of(&mut self, batch: &RecordBatch) -> Result<Vec<usize>> {
        let keys = self
            .spec
            .partition_by
            .iter()
            .map(|e| evaluate(e, batch))
            .collect::<Result<Vec<_>>>()?;
        if self.keys.is_none() {
            let fields: Vec<Field> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| Field::new(format!("k{i}"), k.data_type().clone(), true))
                .collect();
            self.keys = Some(GroupKeys::new(&Arc::new(Schema::new(fields)))?);
        }
        let mut groups = Vec::new();
        let mut count = 0;
        if let Some(k) = self.keys.as_mut() {
            k.intern(&keys, batch.num_rows(), &mut groups)?;
            count = k.len();
        }
        while self.partitions.len() < count {
            let p = self.new_partition()?;
            self.partitions.push(p);
        }
        Ok(groups)
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
                let last = |p: &PartitionState| match p {
                    PartitionState::Rank { last_order, .. } => last_order.clone(),
                    _ => None,
                };
                let has: BooleanArray = self
                    .partitions
                    .iter()
                    .map(|p| Some(last(p).is_some()))
                    .collect();
                columns.push(("has_order".into(), Arc::new(has)));
                for (j, e) in spec.order_by.iter().enumerate() {
                    let values = self
                        .partitions
                        .iter()
                        .map(|p| {
                            last(p)
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
                let history = |p: &PartitionState| match p {
                    PartitionState::Lag(h) => h.clone(),
                    _ => VecDeque::new(),
                };
                let len = UInt64Array::from_iter_values(
                    self.partitions.iter().map(|p| history(p).len() as u64),
                );
                columns.push(("len".into(), Arc::new(len)));
                let data_type = Self::type_of(&spec.args[0], input)?;
                for j in 0..*offset {
                    let values = self
                        .partitions
                        .iter()
                        .map(|p| history(p).get(j).cloned().unwrap_or(ScalarValue::Null))
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
                let frame = |part: &PartitionState| match part {
                    PartitionState::Aggregate { frame, .. } => frame.clone(),
                    _ => VecDeque::new(),
                };
                let len = UInt64Array::from_iter_values(
                    self.partitions.iter().map(|part| frame(part).len() as u64),
                );
                columns.push(("len".into(), Arc::new(len)));
                for (a, arg) in spec.args.iter().enumerate() {
                    let data_type = Self::type_of(arg, input)?;
                    for i in 0..=*p {
                        let values = self
                            .partitions
                            .iter()
                            .map(|part| match frame(part).get(i) {
                                Some(slice) => ScalarValue::try_from_array(&slice[a], 0),
                                None => Ok(ScalarValue::Null),
                            })
                            .collect::<datafusion::error::Result<Vec<_>>>()?;
                        columns.push((format!("frame{i}:{a}"), typed_array(values, &data_type)?));
                    }
                }
            }
            AnalyticKind::Lead { .. } => {}
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
            AnalyticKind::Lead { .. } => {}
        }
        Ok(())
    }
}

/// Column `name` of an OVER checkpoint, or an error saying it is missing.
fn named(rows: &RecordBatch, name: &str) -> Result<ArrayRef> {
    rows.column_by_name(name).cloned().ok_or_else(|| {
        VeloError::Execution(format!("a checkpoint of OVER state has no column '{name}'"))
    })
}

/// An array of `data_type` from values where untyped NULLs (LAG's default) may appear.
fn typed_array(
    values: Vec<ScalarValue>,
    data_type: &arrow::datatypes::DataType,
) -> Result<ArrayRef> {
    if values.is_empty() {
        return Ok(arrow::array::new_empty_array(data_type));
    }
    let values = values
        .into_iter()
        .map(|v| {
            if v.data_type() == *data_type {
                Ok(v)
            } else if v.is_null() {
                Ok(ScalarValue::try_from(data_type)?)
            } else {
                Ok(v.cast_to(data_type)?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ScalarValue::iter_to_array(values)?)
}

/// A row waiting for LEAD values.
struct PendingRow {
    values: Vec<ScalarValue>,
    missing: usize,
}

/// The operator computing every analytic function of a query.
pub struct AnalyticOperator {
    functions: Vec<FunctionState>,
    schema: SchemaRef,
    has_lead: bool,
    next_seq: u64,
    /// Rows waiting for LEAD values, by arrival sequence.
    pending: BTreeMap<u64, PendingRow>,
}

impl AnalyticOperator {
    /// The operator for `functions`, producing `schema` (input columns, then one per function).
    pub fn new(functions: &[AnalyticFunction], schema: SchemaRef) -> Self {
        AnalyticOperator {
            has_lead: functions
                .iter()
                .any(|f| matches!(f.kind, AnalyticKind::Lead { .. })),
            functions: functions
                .iter()
                .map(|f| FunctionState {
                    spec: f.clone(),
                    keys: None,
                    partitions: Vec::new(),
                })
                .collect(),
            schema,
            next_seq: 0,
            pending: BTreeMap::new(),
        }
    }

    /// The columns the operator reads (its output less one column per function).
    fn input_schema(&self) -> Schema {
        let width = self.schema.fields().len() - self.functions.len();
        Schema::new(self.schema.fields()[..width].to_vec())
    }

    /// Whether the operator's state fits a checkpoint: no LEAD, and one PARTITION BY for
    /// every function (so one row per key holds them all).
    fn checkpointable(&self) -> Result<()> {
        if self.has_lead {
            return Err(VeloError::Config(
                "LEAD cannot be checkpointed yet (its rows wait for their successors): run \
                 this job without --state-dir"
                    .into(),
            ));
        }
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

    /// Emits, in arrival order, the pending rows that have all their values.
    fn release_ready(&mut self, all: bool, out: &mut Vec<RecordBatch>) -> Result<()> {
        let ready: Vec<u64> = self
            .pending
            .iter()
            .take_while(|(_, r)| all || r.missing == 0)
            .map(|(s, _)| *s)
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let rows: Vec<PendingRow> = ready
            .iter()
            .filter_map(|s| self.pending.remove(s))
            .collect();
        let columns = (0..self.schema.fields().len())
            .map(|c| {
                typed_array(
                    rows.iter().map(|r| r.values[c].clone()).collect(),
                    self.schema.field(c).data_type(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        out.push(output_batch(&self.schema, columns, rows.len())?);
        Ok(())
    }
}

impl Operator for AnalyticOperator {
    fn snapshot(&mut self) -> Result<Option<OperatorState>> {
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
        let rows = state_batch(Arc::new(Schema::new(fields)), columns, num_partitions)?;
        Ok(Some(OperatorState {
            rows,
            scalars: Default::default(),
        }))
    }

    fn restore(&mut self, states: &[OperatorState], shard: &KeyShard) -> Result<()> {
        self.checkpointable()?;
        let Some(key_count) = self.functions.first().map(|f| f.spec.partition_by.len()) else {
            return Ok(());
        };
        let Some(rows) = owned_rows(states, shard, |r| r.columns()[..key_count].to_vec())? else {
            return Ok(());
        };
        for (f, function) in self.functions.iter_mut().enumerate() {
            function.restore(&rows, key_count, f)?;
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let n = batch.num_rows();
        let first_seq = self.next_seq;
        self.next_seq += n as u64;
        let mut results: Vec<Vec<ScalarValue>> = Vec::with_capacity(self.functions.len());
        // For LEAD: (function, row that waits, row whose value it gets).
        let mut lead_links: Vec<(usize, u64, usize)> = Vec::new();
        for (f, state) in self.functions.iter_mut().enumerate() {
            let groups = state.partitions_of(&batch)?;
            let args = state
                .spec
                .args
                .iter()
                .map(|e| evaluate(e, &batch))
                .collect::<Result<Vec<_>>>()?;
            let order = state
                .spec
                .order_by
                .iter()
                .map(|e| evaluate(e, &batch))
                .collect::<Result<Vec<_>>>()?;
            let mut values = Vec::with_capacity(n);
            for (row, &g) in groups.iter().enumerate() {
                let value = match (&state.spec.kind, &mut state.partitions[g]) {
                    (
                        kind,
                        PartitionState::Rank {
                            rows,
                            rank,
                            dense,
                            last_order,
                        },
                    ) => {
                        *rows += 1;
                        let current = order
                            .iter()
                            .map(|o| ScalarValue::try_from_array(o, row))
                            .collect::<datafusion::error::Result<Vec<_>>>()?;
                        if last_order.as_ref() != Some(&current) {
                            *rank = *rows;
                            *dense += 1;
                            *last_order = Some(current);
                        }
                        ScalarValue::UInt64(Some(match kind {
                            AnalyticKind::Rank => *rank,
                            AnalyticKind::DenseRank => *dense,
                            _ => *rows,
                        }))
                    }
                    (AnalyticKind::Lag { offset, default }, PartitionState::Lag(history)) => {
                        let v = if *offset == 0 {
                            ScalarValue::try_from_array(&args[0], row)?
                        } else if history.len() >= *offset {
                            history[history.len() - offset].clone()
                        } else {
                            default.clone()
                        };
                        history.push_back(ScalarValue::try_from_array(&args[0], row)?);
                        while history.len() > *offset {
                            history.pop_front();
                        }
                        v
                    }
                    (AnalyticKind::Lead { offset, .. }, PartitionState::Lead(waiting)) => {
                        let seq = first_seq + row as u64;
                        waiting.push_back(seq);
                        if waiting.len() > *offset {
                            if let Some(earlier) = waiting.pop_front() {
                                lead_links.push((f, earlier, row));
                            }
                        }
                        ScalarValue::Null
                    }
                    (
                        AnalyticKind::Aggregate { preceding, .. },
                        PartitionState::Aggregate { accumulator, frame },
                    ) => {
                        let slice: Vec<ArrayRef> = args.iter().map(|a| a.slice(row, 1)).collect();
                        accumulator.update_batch(&slice)?;
                        if let Some(p) = preceding {
                            frame.push_back(slice);
                            if frame.len() > p + 1 {
                                if let Some(old) = frame.pop_front() {
                                    accumulator.retract_batch(&old)?;
                                }
                            }
                        }
                        accumulator.evaluate()?
                    }
                    _ => ScalarValue::Null,
                };
                values.push(value);
            }
            // LEAD links need the argument values of this batch.
            if matches!(state.spec.kind, AnalyticKind::Lead { .. }) {
                let links: Vec<(u64, ScalarValue)> = lead_links
                    .iter()
                    .filter(|(lf, _, _)| *lf == f)
                    .map(|(_, seq, row)| Ok((*seq, ScalarValue::try_from_array(&args[0], *row)?)))
                    .collect::<Result<Vec<_>>>()?;
                results.push(values);
                for (seq, v) in links {
                    if seq >= first_seq {
                        results[f][(seq - first_seq) as usize] = v;
                    } else if let Some(p) = self.pending.get_mut(&seq) {
                        let column = batch.num_columns() + f;
                        p.values[column] = v;
                        p.missing -= 1;
                    }
                }
                continue;
            }
            results.push(values);
        }
        if !self.has_lead {
            let width = batch.num_columns();
            let mut columns = batch.columns().to_vec();
            for (f, values) in results.into_iter().enumerate() {
                columns.push(typed_array(
                    values,
                    self.schema.field(width + f).data_type(),
                )?);
            }
            out.push(output_batch(&self.schema, columns, n)?);
            return Ok(());
        }
        // Rows whose LEAD values are known now or later wait in arrival order.
        for (row, seq) in (first_seq..first_seq + n as u64).enumerate() {
            let mut values = batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, row))
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            let mut missing = 0;
            for (f, state) in self.functions.iter().enumerate() {
                let v = results[f][row].clone();
                if let AnalyticKind::Lead { .. } = state.spec.kind {
                    let resolved = lead_links.iter().any(|(lf, s, _)| *lf == f && *s == seq);
                    if !resolved {
                        missing += 1;
                    }
                }
                values.push(v);
            }
            self.pending.insert(seq, PendingRow { values, missing });
        }
        self.release_ready(false, out)
    }

    fn on_end_of_input(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        // Rows still waiting get LEAD's default.
        let width = self.schema.fields().len() - self.functions.len();
        for row in self.pending.values_mut() {
            for (f, state) in self.functions.iter().enumerate() {
                if let AnalyticKind::Lead { default, .. } = &state.spec.kind {
                    if row.missing > 0 && row.values[width + f].is_null() {
                        row.values[width + f] = default.clone();
                    }
                }
            }
            row.missing = 0;
        }
        self.release_ready(true, out)
    }

    fn state_size(&self) -> usize {
        self.functions
            .iter()
            .map(|f| f.partitions.len())
            .sum::<usize>()
            + self.pending.len()
    }
}
