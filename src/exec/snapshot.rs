//! Operator state as data: what `Operator::snapshot` returns and `Operator::restore` reads.
//!
//! An operator's state in one partition is one Arrow batch of rows (groups, panes,
//! accumulator states, each row carrying its key) plus a few named integers (watermark,
//! counters). It is stored as an Arrow IPC file, LZ4-compressed, with the integers in the
//! schema metadata: IPC round-trips every Arrow type an accumulator state can have, and the
//! arrow-ipc crate is already part of the build. LZ4 rather than zstd: a checkpoint of 1M
//! groups encodes several times faster for files 1.8× larger (docs/benchmarks.md).

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use arrow::ipc::CompressionType;

use super::shard::KeyShard;
use crate::error::{Result, VeloError};

/// The name the event clock's state is stored under, beside the operators'.
pub const CLOCK_STATE: &str = "clock";

/// The name stream input `input`'s event clock is stored under: `CLOCK_STATE` for input 0
/// (as checkpoints of one input have it), `clock-in1`, ... for the others.
pub fn clock_state(input: usize) -> String {
    match input {
        0 => CLOCK_STATE.to_string(),
        k => format!("{CLOCK_STATE}-in{k}"),
    }
}

/// One partition's state: (operator name, state) per stateful operator.
pub type PartitionStates = Vec<(String, OperatorState)>;

/// A checkpoint's state read back: by operator name, every partition's state.
pub type RestoredStates = BTreeMap<String, Vec<OperatorState>>;

/// One operator's state in one partition.
#[derive(Debug, Clone)]
pub struct OperatorState {
    /// Rows of state; the operator decides their columns.
    pub rows: RecordBatch,
    /// Named integers: watermarks, counters, cursors.
    pub scalars: BTreeMap<String, i64>,
}

impl OperatorState {
    /// State with no rows.
    pub fn scalars_only(scalars: BTreeMap<String, i64>) -> Self {
        OperatorState {
            rows: RecordBatch::new_empty(Arc::new(Schema::empty())),
            scalars,
        }
    }

    /// The named integer, if it was stored.
    pub fn scalar(&self, name: &str) -> Option<i64> {
        self.scalars.get(name).copied()
    }

    /// Encodes the state as an Arrow IPC file (LZ4).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let metadata: std::collections::HashMap<String, String> = self
            .scalars
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect();
        let schema = Arc::new(self.rows.schema().as_ref().clone().with_metadata(metadata));
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .map_err(state_error)?;
        let mut bytes = Vec::new();
        {
            let mut writer = FileWriter::try_new_with_options(&mut bytes, &schema, options)
                .map_err(state_error)?;
            if self.rows.num_columns() > 0 {
                let rows = self.rows.clone().with_schema(Arc::clone(&schema))?;
                writer.write(&rows).map_err(state_error)?;
            }
            writer.finish().map_err(state_error)?;
        }
        Ok(bytes)
    }

    /// Decodes a state written by [`Self::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let reader = FileReader::try_new(Cursor::new(bytes), None).map_err(state_error)?;
        let schema = reader.schema();
        let scalars = schema
            .metadata()
            .iter()
            .map(|(k, v)| {
                v.parse::<i64>().map(|v| (k.clone(), v)).map_err(|_| {
                    VeloError::Execution(format!("state value '{k}' is not a number: '{v}'"))
                })
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        let plain: SchemaRef = Arc::new(Schema::new(schema.fields().clone()));
        let batches = reader
            .map(|b| {
                let b = b.map_err(state_error)?;
                state_batch(Arc::clone(&plain), b.columns().to_vec(), b.num_rows())
            })
            .collect::<Result<Vec<_>>>()?;
        let rows = concat_batches(&plain, &batches)?;
        Ok(OperatorState { rows, scalars })
    }
}

fn state_error(e: arrow::error::ArrowError) -> VeloError {
    VeloError::Execution(format!("operator state encoding: {e}"))
}

/// The rows of every partition's state that `shard` owns, as one batch; `key_columns` picks
/// the key columns out of the rows (none: unkeyed, owned by the first shard). None when no
/// state has rows.
pub fn owned_rows(
    states: &[OperatorState],
    shard: &KeyShard,
    key_columns: impl Fn(&RecordBatch) -> Vec<ArrayRef>,
) -> Result<Option<RecordBatch>> {
    let mut kept = Vec::new();
    for state in states.iter().filter(|s| s.rows.num_columns() > 0) {
        let keys = key_columns(&state.rows);
        let mask: BooleanArray = shard.owned(&keys, state.rows.num_rows())?;
        let rows = filter_record_batch(&state.rows, &mask)?;
        if rows.num_rows() > 0 {
            kept.push(rows);
        }
    }
    let Some(first) = kept.first() else {
        return Ok(None);
    };
    Ok(Some(concat_batches(&first.schema(), &kept)?))
}

/// The largest value of a scalar over every partition's state (a watermark: every
/// partition saw the same one).
pub fn max_scalar(states: &[OperatorState], name: &str) -> Option<i64> {
    states.iter().filter_map(|s| s.scalar(name)).max()
}

/// A counter for this shard: the first takes the sum over every partition's state, the
/// others start at zero, so the job-wide total is unchanged at any width.
pub fn counter_for(states: &[OperatorState], shard: &KeyShard, name: &str) -> u64 {
    if !shard.takes_unkeyed() {
        return 0;
    }
    states
        .iter()
        .filter_map(|s| s.scalar(name))
        .map(|v| v.max(0) as u64)
        .sum()
}

/// A batch of `schema` from columns (a state table being written).
pub fn state_batch(
    schema: SchemaRef,
    columns: Vec<ArrayRef>,
    num_rows: usize,
) -> Result<RecordBatch> {
    let options = RecordBatchOptions::new().with_row_count(Some(num_rows));
    Ok(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?)
}

/// Column `name` of a state batch as array type `A`, or an error naming the operator whose
/// state lacks it or holds another type there.
pub fn column<A: Array + Clone + 'static>(
    rows: &RecordBatch,
    name: &str,
    operator: &str,
) -> Result<A> {
    let column = rows.column_by_name(name).ok_or_else(|| {
        VeloError::Execution(format!(
            "the checkpointed state of {operator} has no column '{name}'"
        ))
    })?;
    column.as_any().downcast_ref::<A>().cloned().ok_or_else(|| {
        VeloError::Execution(format!(
            "the checkpointed state of {operator} holds {} in '{name}'",
            column.data_type()
        ))
    })
}

/// `rows` with one more column (`name`, nullable) appended.
pub fn with_column(rows: &RecordBatch, name: &str, column: ArrayRef) -> Result<RecordBatch> {
    let mut fields: Vec<arrow::datatypes::Field> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(arrow::datatypes::Field::new(
        name,
        column.data_type().clone(),
        true,
    ));
    let mut columns = rows.columns().to_vec();
    columns.push(column);
    state_batch(Arc::new(Schema::new(fields)), columns, rows.num_rows())
}

/// The tables of a state keyed by a time (pane or window start), as one batch with that time
/// in column `name`; None when there are no tables.
pub fn stack_tables(tables: Vec<(i64, RecordBatch)>, name: &str) -> Result<Option<RecordBatch>> {
    let stacked = tables
        .into_iter()
        .map(|(time, rows)| {
            let times = arrow::array::Int64Array::from_value(time, rows.num_rows());
            with_column(&rows, name, Arc::new(times))
        })
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = stacked.first() else {
        return Ok(None);
    };
    Ok(Some(concat_batches(&first.schema(), &stacked)?))
}

/// The inverse of [`stack_tables`]: the rows of each time in column `name`, in time order.
pub fn unstack_tables(
    rows: &RecordBatch,
    name: &str,
    operator: &str,
) -> Result<Vec<(i64, RecordBatch)>> {
    let times: arrow::array::Int64Array = column(rows, name, operator)?;
    let mut by_time: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (row, t) in times.values().iter().enumerate() {
        by_time.entry(*t).or_default().push(row as u32);
    }
    by_time
        .into_iter()
        .map(|(t, rows_of)| {
            let indices = arrow::array::UInt32Array::from(rows_of);
            Ok((t, arrow::compute::take_record_batch(rows, &indices)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    use super::*;

    fn state(keys: &[&str], counts: &[i64], late: i64) -> OperatorState {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]));
        let rows = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(counts.to_vec())),
            ],
        )
        .expect("batch");
        OperatorState {
            rows,
            scalars: BTreeMap::from([("late".to_string(), late), ("wm".to_string(), -5)]),
        }
    }

    #[test]
    fn state_round_trips_through_ipc_with_its_scalars() {
        let original = state(&["a", "b"], &[3, 4], 2);
        let decoded = OperatorState::decode(&original.encode().expect("encode")).expect("decode");
        assert_eq!(decoded.rows, original.rows);
        assert_eq!(decoded.scalars, original.scalars);
        let empty = OperatorState::scalars_only(BTreeMap::from([("n".to_string(), 9)]));
        let decoded = OperatorState::decode(&empty.encode().expect("encode")).expect("decode");
        assert_eq!(decoded.rows.num_columns(), 0);
        assert_eq!(decoded.scalar("n"), Some(9));
    }

    #[test]
    fn each_shard_takes_its_keys_from_every_partition_and_the_first_takes_counters() {
        let states = vec![
            state(&["a", "b", "c"], &[1, 2, 3], 2),
            state(&["d", "e"], &[4, 5], 3),
        ];
        let mut total = 0;
        let mut late = 0;
        for index in 0..3 {
            let shard = KeyShard { index, count: 3 };
            if let Some(rows) =
                owned_rows(&states, &shard, |r| vec![Arc::clone(r.column(0))]).expect("owned")
            {
                total += rows.num_rows();
            }
            late += counter_for(&states, &shard, "late");
        }
        assert_eq!(total, 5, "every key restored exactly once");
        assert_eq!(late, 5, "counters summed once");
        assert_eq!(max_scalar(&states, "wm"), Some(-5));
        let garbage = OperatorState::decode(b"not arrow");
        assert!(garbage.is_err());
    }
}
