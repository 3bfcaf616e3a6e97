//! `KeyEncoder`: a join key's values as comparable bytes, one `Row` per input row.

use arrow::array::{Array, ArrayRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, Rows, SortField};

use crate::error::{Result, VeloError};

/// Encodes key columns with a `RowConverter` made from the first batch's key types.
#[derive(Default)]
pub(super) struct KeyEncoder {
    converter: Option<RowConverter>,
}

impl KeyEncoder {
    /// Each row's key, and whether any of its columns is NULL (such a key meets nothing).
    pub(super) fn encode(
        &mut self,
        keys: &[ArrayRef],
        num_rows: usize,
    ) -> Result<(Rows, Vec<bool>)> {
        if self.converter.is_none() {
            let fields = keys
                .iter()
                .map(|k| SortField::new(k.data_type().clone()))
                .collect();
            self.converter = Some(RowConverter::new(fields)?);
        }
        let Some(converter) = &self.converter else {
            return Err(VeloError::Execution(
                "the join's key encoder is missing".into(),
            ));
        };
        let null_key = (0..num_rows)
            .map(|r| keys.iter().any(|k| k.is_null(r)))
            .collect();
        Ok((converter.convert_columns(keys)?, null_key))
    }

    /// The rows of `batch`'s columns at `columns`, as keys.
    pub(super) fn encode_columns(
        &mut self,
        batch: &RecordBatch,
        columns: &[usize],
    ) -> Result<Rows> {
        let keys: Vec<ArrayRef> = columns.iter().map(|&c| batch.column(c).clone()).collect();
        Ok(self.encode(&keys, batch.num_rows())?.0)
    }
}
