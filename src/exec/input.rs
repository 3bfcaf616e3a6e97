//! `InputAdapter`: shapes incoming batches to a query's input schema. It runs once per input
//! batch, before any routing, so system columns that are filled in here (`_offset`,
//! `_timestamp`) are the same whichever partition a row lands on.

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, Int32Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::event_time::constant_millis;
use crate::error::Result;
use crate::sql::window::WINDOW_END;

/// Casts and fills incoming batches into a query's input schema.
#[derive(Debug, Clone)]
pub struct InputAdapter {
    schema: SchemaRef,
    source: String,
    /// Records seen, used as `_offset` when the input carries none.
    records_in: i64,
    /// `_partition` and `_topic` filled in for inputs without them: the same values in every
    /// batch, so made once (for the largest batch so far) and handed out as slices.
    partition_zeros: Option<ArrayRef>,
    topic_names: Option<ArrayRef>,
}

/// The first `n` rows of `cache`, (re)made by `make` when it holds fewer.
fn constant_column(
    cache: &mut Option<ArrayRef>,
    n: usize,
    make: impl FnOnce(usize) -> ArrayRef,
) -> ArrayRef {
    match cache {
        Some(column) if column.len() >= n => column.slice(0, n),
        _ => Arc::clone(cache.insert(make(n))),
    }
}

/// Wall-clock milliseconds since the epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl InputAdapter {
    /// An adapter into `schema` for rows of `source`.
    pub fn new(schema: SchemaRef, source: impl Into<String>) -> Self {
        InputAdapter {
            schema,
            source: source.into(),
            records_in: 0,
            partition_zeros: None,
            topic_names: None,
        }
    }

    /// The schema batches come out in.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Columns by name (cast when the type differs), NULL for absent data columns, and
    /// defaults for absent system columns.
    pub fn adapt(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let first_offset = self.records_in;
        self.records_in += n as i64;
        let target = &self.schema;
        if batch.schema().fields() == target.fields() {
            return Ok(batch);
        }
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
                        Ok(i) => cast(batch.column(i), &DataType::Int64)?,
                        Err(_) => constant_millis(now, n),
                    },
                    "_offset" => Arc::new(Int64Array::from_iter_values(
                        (0..n as i64).map(|i| first_offset + i),
                    )),
                    "_partition" => constant_column(&mut self.partition_zeros, n, |n| {
                        Arc::new(Int32Array::from_value(0, n))
                    }),
                    "_topic" => constant_column(&mut self.topic_names, n, |n| {
                        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                            self.source.as_str(),
                            n,
                        )))
                    }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Field, Int32Type, Schema};

    #[test]
    fn system_columns_are_filled_for_every_batch_size() -> Result<()> {
        let target = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("_partition", DataType::Int32, true),
            Field::new("_topic", DataType::Utf8, true),
            Field::new("_offset", DataType::Int64, true),
        ]));
        let mut adapter = InputAdapter::new(target, "trades");
        let input = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let mut offset = 0;
        // Growing, then shrinking: the cached constants are remade, then sliced.
        for n in [3usize, 5, 2, 0, 5] {
            let batch = RecordBatch::try_new(
                Arc::clone(&input),
                vec![Arc::new(Int64Array::from_iter_values(0..n as i64))],
            )?;
            let out = adapter.adapt(batch)?;
            assert_eq!(out.num_rows(), n);
            let partitions = out.column(1).as_primitive::<Int32Type>();
            assert_eq!(partitions.len(), n);
            assert!(partitions.values().iter().all(|p| *p == 0));
            assert_eq!(partitions.null_count(), 0);
            let topics = out.column(2).as_string::<i32>();
            assert_eq!(topics.len(), n);
            assert!(topics.iter().all(|t| t == Some("trades")));
            let offsets: Vec<i64> = out
                .column(3)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec();
            assert_eq!(offsets, (offset..offset + n as i64).collect::<Vec<_>>());
            offset += n as i64;
        }
        Ok(())
    }
}
