//! Analytic functions over a stream: per partition key, rows are numbered, ranked, looked back
//! on (LAG), looked ahead on (LEAD: the row waits for its successor) or aggregated over a
//! bounded frame. Rows are taken in arrival order; state per partition is bounded by the frame.
//!
//! Checkpoints of this state are in `checkpoint`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::Accumulator;
use datafusion::scalar::ScalarValue;

mod checkpoint;

use super::aggregate::output_batch;
use super::group_keys::GroupKeys;
use super::operator::{evaluate, Operator};
use super::shard::KeyShard;
use super::snapshot::OperatorState;
use crate::error::Result;
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
        self.checkpoint_state()
    }

    fn restore(&mut self, states: &[OperatorState], shard: &KeyShard) -> Result<()> {
        self.restore_state(states, shard)
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

    fn state_bytes(&self) -> usize {
        // Keys, and a fixed estimate per partition and per row waiting for LEAD.
        self.functions
            .iter()
            .map(|f| {
                f.keys.as_ref().map_or(0, GroupKeys::size)
                    + f.partitions.len() * std::mem::size_of::<PartitionState>()
            })
            .sum::<usize>()
            + self.pending.len() * std::mem::size_of::<PendingRow>()
    }
}
