//! The checkpoint layout of a join of two streams' state: one batch of both sides' rows, each
//! row with a few columns of its own (`_side` first) and then the left's columns and the
//! right's, NULL for the other side's.

use std::sync::Arc;

use std::collections::BTreeMap;

use arrow::array::{new_null_array, ArrayRef, Int8Array};
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;
use crate::exec::operator::evaluate;
use crate::exec::shard::KeyShard;
use crate::exec::snapshot::{column, counter_for, max_scalar, state_batch, OperatorState};

/// The join's checkpoint: both sides' rows (as `side_state_rows` makes them), each side's
/// watermark as last heard, and the late count.
pub(super) fn join_state(
    sides: [RecordBatch; 2],
    watermarks: [i64; 2],
    late: u64,
) -> Result<OperatorState> {
    let rows = concat_batches(&sides[0].schema(), &sides)?;
    let scalars = BTreeMap::from([
        ("watermark_left".to_string(), watermarks[0]),
        ("watermark_right".to_string(), watermarks[1]),
        ("late".to_string(), late as i64),
    ]);
    Ok(OperatorState { rows, scalars })
}

/// The watermarks and the late count of the checkpoints `states`, as `shard` restores them:
/// every partition heard the same watermarks.
pub(super) fn restored_clocks(states: &[OperatorState], shard: &KeyShard) -> ([i64; 2], u64) {
    let watermarks = [
        max_scalar(states, "watermark_left").unwrap_or(i64::MIN),
        max_scalar(states, "watermark_right").unwrap_or(i64::MIN),
    ];
    (watermarks, counter_for(states, shard, "late"))
}

/// `side`'s checkpoint rows in `states` whose join keys (`keys`) `shard` owns: per checkpoint,
/// (the checkpoint rows, the same rows as the side's own columns).
pub(super) fn owned_side_rows(
    states: &[OperatorState],
    side: usize,
    extra: usize,
    schemas: &[SchemaRef; 2],
    keys: &[std::sync::Arc<dyn PhysicalExpr>],
    shard: &KeyShard,
    what: &str,
) -> Result<Vec<(RecordBatch, RecordBatch)>> {
    let mut found = Vec::new();
    for state in states.iter().filter(|s| s.rows.num_rows() > 0) {
        let Some((rows, own)) = side_of_state(&state.rows, side, extra, schemas, what)? else {
            continue;
        };
        let key_values = keys
            .iter()
            .map(|k| evaluate(k, &own))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let owned = shard.owned(&key_values, own.num_rows())?;
        found.push((
            filter_record_batch(&rows, &owned)?,
            filter_record_batch(&own, &owned)?,
        ));
    }
    Ok(found)
}

/// `side`'s rows `own` as checkpoint rows, after `_side` and the `extra` columns.
pub(super) fn side_state_rows(
    side: usize,
    extra: Vec<(Field, ArrayRef)>,
    own: &RecordBatch,
    schemas: &[SchemaRef; 2],
) -> Result<RecordBatch> {
    let n = own.num_rows();
    let mut fields = vec![Field::new("_side", DataType::Int8, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int8Array::from_value(side as i8, n))];
    for (field, values) in extra {
        fields.push(field);
        columns.push(values);
    }
    for (s, schema) in schemas.iter().enumerate() {
        for (i, f) in schema.fields().iter().enumerate() {
            fields.push(Field::new(format!("{s}.{i}"), f.data_type().clone(), true));
            columns.push(match s == side {
                true => Arc::clone(own.column(i)),
                false => new_null_array(f.data_type(), n),
            });
        }
    }
    state_batch(Arc::new(Schema::new(fields)), columns, n)
}

/// `side`'s checkpoint rows from `rows`, `extra` columns after `_side`: (the checkpoint rows,
/// the same rows as the side's own columns). None when the side has none.
fn side_of_state(
    rows: &RecordBatch,
    side: usize,
    extra: usize,
    schemas: &[SchemaRef; 2],
    what: &str,
) -> Result<Option<(RecordBatch, RecordBatch)>> {
    let sides: Int8Array = column(rows, "_side", what)?;
    let mask = arrow::compute::kernels::cmp::eq(&sides, &Int8Array::new_scalar(side as i8))?;
    let rows = filter_record_batch(rows, &mask)?;
    if rows.num_rows() == 0 {
        return Ok(None);
    }
    let widths = [schemas[0].fields().len(), schemas[1].fields().len()];
    let start = 1 + extra + if side == 0 { 0 } else { widths[0] };
    let own = RecordBatch::try_new_with_options(
        Arc::clone(&schemas[side]),
        rows.columns()[start..start + widths[side]].to_vec(),
        &RecordBatchOptions::new().with_row_count(Some(rows.num_rows())),
    )?;
    Ok(Some((rows, own)))
}
