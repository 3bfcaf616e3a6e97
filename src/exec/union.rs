//! `UnionOperator`: UNION ALL of a query's stream inputs. Every input's rows pass through,
//! relabelled (and cast, where a branch computed another type) to the union's columns.

use std::sync::Arc;

use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use super::change::keep_kind;
use super::operator::Operator;
use crate::error::Result;

/// The merge of a UNION ALL.
pub struct UnionOperator {
    schema: SchemaRef,
}

impl UnionOperator {
    /// A union emitting rows of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        UnionOperator { schema }
    }

    fn relabel(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| match c.data_type() == f.data_type() {
                true => Ok(Arc::clone(c)),
                false => Ok(cast(c, f.data_type())?),
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let out = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?;
        Ok(keep_kind(&batch, out))
    }
}

impl Operator for UnionOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        out.push(self.relabel(batch)?);
        Ok(())
    }
}
