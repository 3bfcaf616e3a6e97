//! `GroupTable`: the keys and accumulators of a set of groups — the state unit of every
//! aggregation (one per GROUP BY, one per window or pane, merged for sliding windows).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{Accumulator, EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};

use super::group_keys::GroupKeys;
use super::operator::{evaluate, evaluate_predicate};
use super::running::ChangeAccumulator;
use super::snapshot::state_batch;
use crate::error::{Result, VeloError};

/// The aggregate functions of a query, shared by all its group tables.
pub struct Aggregates {
    functions: Vec<Arc<AggregateFunctionExpr>>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Schema of the group keys.
    pub key_schema: SchemaRef,
}

/// Evaluated aggregate inputs of a batch: argument arrays and FILTER masks per aggregate.
pub struct AggregateInputs {
    pub values: Vec<Vec<ArrayRef>>,
    pub filters: Vec<Option<BooleanArray>>,
}

impl AggregateInputs {
    /// The inputs of the given rows only.
    pub fn take(&self, indices: &arrow::array::UInt32Array) -> Result<AggregateInputs> {
        let values = self
            .values
            .iter()
            .map(|vs| {
                vs.iter()
                    .map(|v| Ok(arrow::compute::take(v.as_ref(), indices, None)?))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let filters = self
            .filters
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| -> Result<BooleanArray> {
                        let taken = arrow::compute::take(f, indices, None)?;
                        Ok(taken
                            .as_any()
                            .downcast_ref::<BooleanArray>()
                            .cloned()
                            .unwrap_or_else(|| BooleanArray::from(vec![false; indices.len()])))
                    })
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AggregateInputs { values, filters })
    }
}

impl Aggregates {
    /// The aggregates with their argument and FILTER expressions.
    pub fn new(
        functions: Vec<Arc<AggregateFunctionExpr>>,
        filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
        key_schema: SchemaRef,
    ) -> Self {
        Aggregates {
            arguments: functions.iter().map(|a| a.expressions()).collect(),
            functions,
            filters,
            key_schema,
        }
    }

    /// Number of aggregate functions.
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// True when there are no aggregate functions (e.g. `SELECT DISTINCT`-like GROUP BY).
    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    /// Evaluates every aggregate's arguments and filter over `batch`.
    pub fn inputs(&self, batch: &RecordBatch) -> Result<AggregateInputs> {
        let values = self
            .arguments
            .iter()
            .map(|args| {
                args.iter()
                    .map(|e| evaluate(e, batch))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let filters = self
            .filters
            .iter()
            .map(|f| f.as_ref().map(|f| evaluate_predicate(f, batch)).transpose())
            .collect::<Result<Vec<_>>>()?;
        Ok(AggregateInputs { values, filters })
    }

    fn groups_accumulators(&self) -> Result<Vec<Box<dyn GroupsAccumulator>>> {
        self.functions
            .iter()
            .map(|agg| -> Result<Box<dyn GroupsAccumulator>> {
                if agg.groups_accumulator_supported() {
                    return Ok(agg.create_groups_accumulator()?);
                }
                let agg = Arc::clone(agg);
                Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                    agg.create_accumulator()
                })))
            })
            .collect()
    }

    /// Fresh EMIT CHANGES state, one per aggregate.
    fn change_accumulators(&self) -> Vec<ChangeAccumulator> {
        self.functions.iter().map(ChangeAccumulator::new).collect()
    }

    /// Fresh per-record accumulators, one per aggregate.
    pub fn row_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        self.functions
            .iter()
            .map(|a| Ok(a.create_accumulator()?))
            .collect()
    }

    /// Empty argument arrays (for giving a global aggregate its one row over no input).
    fn empty_inputs(&self, input_schema: &SchemaRef) -> Result<AggregateInputs> {
        self.inputs(&RecordBatch::new_empty(Arc::clone(input_schema)))
    }
}

/// The frozen state of a group table: key columns and each aggregate's state columns.
/// Merging it into another table adds its groups there (sliding windows combine panes this way).
#[derive(Debug, Clone)]
pub struct FrozenGroups {
    pub keys: Vec<ArrayRef>,
    pub states: Vec<Vec<ArrayRef>>,
    pub num_groups: usize,
}

impl FrozenGroups {
    /// The bytes its arrays hold.
    pub fn size(&self) -> usize {
        self.keys
            .iter()
            .chain(self.states.iter().flatten())
            .map(|a| a.get_array_memory_size())
            .sum()
    }
}

/// How a table keeps its accumulators.
enum Accumulators {
    /// Vectorized, for results emitted when the group closes (EMIT FINAL).
    Vectorized(Vec<Box<dyn GroupsAccumulator>>),
    /// Per aggregate, every group's value readable after every record (EMIT CHANGES).
    Changes(Vec<ChangeAccumulator>),
}

/// Keys and accumulators of a set of groups.
pub struct GroupTable {
    keys: GroupKeys,
    accumulators: Accumulators,
    group_indices: Vec<usize>,
}

impl GroupTable {
    /// An empty table; `per_record` keeps per-group accumulators readable after each record.
    pub fn new(aggregates: &Aggregates, per_record: bool) -> Result<Self> {
        Ok(GroupTable {
            keys: GroupKeys::new(&aggregates.key_schema)?,
            accumulators: if per_record {
                Accumulators::Changes(aggregates.change_accumulators())
            } else {
                Accumulators::Vectorized(aggregates.groups_accumulators()?)
            },
            group_indices: Vec::new(),
        })
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The bytes its keys and accumulators hold.
    pub fn size(&self) -> usize {
        let accumulators: usize = match &self.accumulators {
            Accumulators::Vectorized(accs) => accs.iter().map(|a| a.size()).sum(),
            Accumulators::Changes(accs) => accs.iter().map(ChangeAccumulator::size).sum(),
        };
        self.keys.size() + accumulators + std::mem::size_of_val(self.group_indices.as_slice())
    }

    /// True when the table has no group.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Group index of each row of the last update.
    pub fn group_indices(&self) -> &[usize] {
        &self.group_indices
    }

    /// Adds rows.
    pub fn update(
        &mut self,
        key_columns: &[ArrayRef],
        num_rows: usize,
        inputs: &AggregateInputs,
    ) -> Result<()> {
        self.keys
            .intern(key_columns, num_rows, &mut self.group_indices)?;
        let num_groups = self.keys.len();
        match &mut self.accumulators {
            Accumulators::Vectorized(accs) => {
                for ((acc, values), filter) in
                    accs.iter_mut().zip(&inputs.values).zip(&inputs.filters)
                {
                    acc.update_batch(values, &self.group_indices, filter.as_ref(), num_groups)?;
                }
                Ok(())
            }
            Accumulators::Changes(_) => {
                self.update_per_record(key_columns, num_rows, inputs)?;
                Ok(())
            }
        }
    }

    /// Adds rows and returns, per aggregate, its value after each row (EMIT CHANGES tables
    /// only; the rows' groups are in `group_indices`).
    pub fn update_per_record(
        &mut self,
        key_columns: &[ArrayRef],
        num_rows: usize,
        inputs: &AggregateInputs,
    ) -> Result<Vec<ArrayRef>> {
        self.keys
            .intern(key_columns, num_rows, &mut self.group_indices)?;
        let num_groups = self.keys.len();
        let Accumulators::Changes(accs) = &mut self.accumulators else {
            return Ok(Vec::new());
        };
        accs.iter_mut()
            .zip(&inputs.values)
            .zip(&inputs.filters)
            .map(|((acc, values), filter)| {
                acc.update(&self.group_indices, num_groups, values, filter.as_ref())
            })
            .collect()
    }

    /// Gives a keyless (global) table its single group even with no rows, as SQL requires.
    pub fn ensure_global_group(
        &mut self,
        aggregates: &Aggregates,
        input_schema: &SchemaRef,
    ) -> Result<()> {
        if !aggregates.key_schema.fields().is_empty() || !self.keys.is_empty() {
            return Ok(());
        }
        if let Accumulators::Vectorized(accs) = &mut self.accumulators {
            let inputs = aggregates.empty_inputs(input_schema)?;
            // An (empty) filter makes the accumulators track which groups saw a value: without
            // one, a batch without NULLs counts every group as seen, and MAX of nothing would
            // be its starting value rather than NULL.
            let none = arrow::array::BooleanArray::from(Vec::<bool>::new());
            for (acc, values) in accs.iter_mut().zip(&inputs.values) {
                acc.update_batch(values, &[], Some(&none), 1)?;
            }
        }
        self.keys.ensure_global();
        Ok(())
    }

    /// Every group's key columns and aggregate results. A vectorized table is left empty of
    /// results; an EMIT CHANGES table goes on as before.
    pub fn evaluate_all(&mut self) -> Result<(Vec<ArrayRef>, Vec<ArrayRef>)> {
        let keys = self.keys.all_keys()?;
        let num_groups = self.keys.len();
        let values = match &mut self.accumulators {
            Accumulators::Vectorized(accs) => accs
                .iter_mut()
                .map(|a| Ok(a.evaluate(EmitTo::All)?))
                .collect::<Result<Vec<_>>>()?,
            Accumulators::Changes(accs) => accs
                .iter_mut()
                .map(|a| a.evaluate(num_groups))
                .collect::<Result<Vec<_>>>()?,
        };
        Ok((keys, values))
    }

    /// Takes the table's state out as arrays (vectorized tables only).
    pub fn freeze(&mut self) -> Result<FrozenGroups> {
        let keys = self.keys.all_keys()?;
        let num_groups = self.keys.len();
        let states = match &mut self.accumulators {
            Accumulators::Vectorized(accs) => accs
                .iter_mut()
                .map(|a| Ok(a.state(EmitTo::All)?))
                .collect::<Result<Vec<_>>>()?,
            Accumulators::Changes(_) => Vec::new(),
        };
        Ok(FrozenGroups {
            keys,
            states,
            num_groups,
        })
    }

    /// The table's state as one batch: the key columns, then every aggregate's state
    /// columns, named `_agg{i}:{form}:{j}`. The table goes on as before.
    pub fn snapshot(&mut self, aggregates: &Aggregates) -> Result<RecordBatch> {
        let num_groups = self.keys.len();
        let mut fields: Vec<Field> = aggregates
            .key_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let mut columns = self.keys.all_keys()?;
        let mut add = |i: usize, form: &str, states: Vec<ArrayRef>| {
            for (j, state) in states.into_iter().enumerate() {
                fields.push(Field::new(
                    format!("_agg{i}:{form}:{j}"),
                    state.data_type().clone(),
                    true,
                ));
                columns.push(state);
            }
        };
        if let Accumulators::Changes(accs) = &mut self.accumulators {
            for (i, acc) in accs.iter_mut().enumerate() {
                let (form, states) = acc.state(num_groups)?;
                add(i, form, states);
            }
        } else {
            // Reading a GroupsAccumulator's state takes it out: rebuild the table from it.
            let frozen = self.freeze()?;
            for (i, states) in frozen.states.iter().enumerate() {
                add(i, "groups", states.clone());
            }
            let mut fresh = GroupTable::new(aggregates, false)?;
            fresh.merge(&frozen)?;
            *self = fresh;
        }
        state_batch(Arc::new(Schema::new(fields)), columns, num_groups)
    }

    /// Loads groups from rows written by [`Self::snapshot`] into this empty table.
    pub fn restore(&mut self, aggregates: &Aggregates, rows: &RecordBatch) -> Result<()> {
        let key_count = aggregates.key_schema.fields().len();
        let keys: Vec<ArrayRef> = rows.columns().iter().take(key_count).cloned().collect();
        // Per aggregate: its form and state columns, in order.
        let mut states: Vec<(String, Vec<ArrayRef>)> =
            vec![(String::new(), Vec::new()); aggregates.len()];
        for (field, column) in rows.schema().fields().iter().zip(rows.columns()) {
            let Some(rest) = field.name().strip_prefix("_agg") else {
                continue;
            };
            let mut parts = rest.splitn(3, ':');
            let (Some(i), Some(form)) = (
                parts.next().and_then(|i| i.parse::<usize>().ok()),
                parts.next(),
            ) else {
                continue;
            };
            let slot = states.get_mut(i).ok_or_else(|| {
                VeloError::Execution(format!(
                    "checkpointed state names aggregate {i}, but the query has {}",
                    aggregates.len()
                ))
            })?;
            slot.0 = form.to_string();
            slot.1.push(Arc::clone(column));
        }
        let num_groups = rows.num_rows();
        match &mut self.accumulators {
            Accumulators::Vectorized(_) => self.merge(&FrozenGroups {
                keys,
                states: states.into_iter().map(|(_, s)| s).collect(),
                num_groups,
            }),
            Accumulators::Changes(accs) => {
                self.keys
                    .intern(&keys, num_groups, &mut self.group_indices)?;
                if self.keys.len() != num_groups {
                    return Err(VeloError::Execution(
                        "checkpointed groups were restored into a table that had groups".into(),
                    ));
                }
                for (acc, (form, columns)) in accs.iter_mut().zip(states) {
                    acc.restore(&form, &columns)?;
                }
                Ok(())
            }
        }
    }

    /// Adds the groups of a frozen table (same key columns), merging accumulator states.
    pub fn merge(&mut self, frozen: &FrozenGroups) -> Result<()> {
        if frozen.num_groups == 0 {
            return Ok(());
        }
        self.keys
            .intern(&frozen.keys, frozen.num_groups, &mut self.group_indices)?;
        let num_groups = self.keys.len();
        if let Accumulators::Vectorized(accs) = &mut self.accumulators {
            for (acc, state) in accs.iter_mut().zip(&frozen.states) {
                acc.merge_batch(state, &self.group_indices, num_groups)?;
            }
        }
        Ok(())
    }
}
