//! `LookupTable`: a table's rows indexed by their join key, built once and probed by every
//! batch of the stream side. Also `latest_per_key`, which reads a table's rows as an upsert
//! log: the last row of a key wins, and a delete removes it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array};
use arrow::compute::{cast, concat_batches, interleave_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{Result, VeloError};
use crate::exec::change::is_delete;
use crate::exec::operator::evaluate;
use crate::exec::processor::QueryProcessor;
use crate::exec::window::event_times;
use crate::sql::TableInput;

/// A table's rows, and which of them each key matches.
pub struct LookupTable {
    rows: RecordBatch,
    /// None when the join has no equality: every row matches every key.
    index: Option<KeyIndex>,
    nulls_equal: bool,
    /// Some row's key holds a NULL.
    has_null_key: bool,
    /// For a temporal join: when each row's version begins (ms); a key's rows are then in
    /// version order.
    versions: Option<Vec<i64>>,
}

/// Row-encoded keys, each with the table rows that hold it.
struct KeyIndex {
    converter: RowConverter,
    types: Vec<DataType>,
    /// Key → its group: group `g`'s rows are `by_key[starts[g]..starts[g + 1]]`.
    groups: HashMap<Box<[u8]>, u32, ahash::RandomState>,
    starts: Vec<u32>,
    by_key: Vec<u32>,
}

impl LookupTable {
    /// Indexes `batches` (rows of `schema`) by `keys`. A NULL key matches nothing unless
    /// `nulls_equal`. With `version` (when each row's version begins), a key's rows are kept
    /// in version order for `probe_as_of`.
    pub fn build(
        schema: SchemaRef,
        batches: &[RecordBatch],
        keys: &[Arc<dyn PhysicalExpr>],
        nulls_equal: bool,
        version: Option<&Arc<dyn PhysicalExpr>>,
    ) -> Result<Self> {
        let rows = concat_batches(&schema, batches)?;
        if u32::try_from(rows.num_rows()).is_err() {
            return Err(VeloError::Execution(format!(
                "a table of {} rows is more than a join can index",
                rows.num_rows()
            )));
        }
        let key_columns = keys
            .iter()
            .map(|k| evaluate(k, &rows))
            .collect::<Result<Vec<_>>>()?;
        let has_null_key = (0..rows.num_rows()).any(|r| key_columns.iter().any(|k| k.is_null(r)));
        let versions = match version {
            Some(v) => {
                let times = event_times(v, &rows)?;
                Some(
                    (0..times.len())
                        .map(|r| match times.is_null(r) {
                            true => i64::MIN,
                            false => times.value(r),
                        })
                        .collect::<Vec<i64>>(),
                )
            }
            None => None,
        };
        let index = match key_columns.is_empty() {
            true => None,
            false => Some(KeyIndex::build(
                &key_columns,
                nulls_equal,
                versions.as_deref(),
            )?),
        };
        Ok(LookupTable {
            rows,
            index,
            nulls_equal,
            has_null_key,
            versions,
        })
    }

    /// The table's rows.
    pub fn rows(&self) -> &RecordBatch {
        &self.rows
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.num_rows()
    }

    /// True for a table with no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.num_rows() == 0
    }

    /// True when some row's key holds a NULL.
    pub fn has_null_key(&self) -> bool {
        self.has_null_key
    }

    /// Every (stream row, table row) pair whose keys are equal, in stream row order; `keys`
    /// are the stream side's key columns over `num_rows` rows.
    pub fn probe(
        &self,
        keys: &[ArrayRef],
        num_rows: usize,
        stream: &mut Vec<u32>,
        table: &mut Vec<u32>,
    ) -> Result<()> {
        stream.clear();
        table.clear();
        let Some(index) = &self.index else {
            let all = self.rows.num_rows() as u32;
            for row in 0..num_rows as u32 {
                stream.extend(std::iter::repeat_n(row, all as usize));
                table.extend(0..all);
            }
            return Ok(());
        };
        let keys = index.cast_keys(keys)?;
        let encoded = index.converter.convert_columns(&keys)?;
        for (row, key) in encoded.iter().enumerate() {
            if !self.nulls_equal && keys.iter().any(|k| k.is_null(row)) {
                continue;
            }
            if let Some(&g) = index.groups.get(key.as_ref()) {
                let (from, to) = (index.starts[g as usize], index.starts[g as usize + 1]);
                stream.extend(std::iter::repeat_n(row as u32, (to - from) as usize));
                table.extend_from_slice(&index.by_key[from as usize..to as usize]);
            }
        }
        Ok(())
    }
}

impl LookupTable {
    /// The table of `table` from its source's rows (each row, or a key's latest one, already
    /// picked): the rows go through the table's side of the query, then are indexed by the
    /// join key.
    pub fn load(table: &TableInput, rows: RecordBatch) -> Result<Self> {
        let mut processor = QueryProcessor::new(table.plan.clone())?;
        let mut out = processor.process_batch(rows)?;
        out.extend(processor.end_of_input()?);
        LookupTable::build(
            Arc::clone(&table.plan.output_schema),
            &out,
            &table.keys,
            table.nulls_equal,
            table.version.as_ref(),
        )
    }

    /// Per stream row, the table row of an equal key whose version was valid at the row's
    /// time (the latest version begun at or before it): at most one pair per row, in stream
    /// row order. `times` are the stream rows' times (ms; NULL meets nothing).
    pub fn probe_as_of(
        &self,
        keys: &[ArrayRef],
        times: &Int64Array,
        stream: &mut Vec<u32>,
        table: &mut Vec<u32>,
    ) -> Result<()> {
        stream.clear();
        table.clear();
        let (Some(index), Some(versions)) = (&self.index, &self.versions) else {
            return Err(VeloError::Execution(
                "a temporal join needs a table indexed by key and version".into(),
            ));
        };
        let keys = index.cast_keys(keys)?;
        let encoded = index.converter.convert_columns(&keys)?;
        for (row, key) in encoded.iter().enumerate() {
            if times.is_null(row) || (!self.nulls_equal && keys.iter().any(|k| k.is_null(row))) {
                continue;
            }
            let Some(&g) = index.groups.get(key.as_ref()) else {
                continue;
            };
            let (from, to) = (index.starts[g as usize], index.starts[g as usize + 1]);
            let rows = &index.by_key[from as usize..to as usize];
            let valid = rows.partition_point(|&r| versions[r as usize] <= times.value(row));
            if valid > 0 {
                stream.push(row as u32);
                table.push(rows[valid - 1]);
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for LookupTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupTable")
            .field("rows", &self.rows.num_rows())
            .field("keyed", &self.index.is_some())
            .finish()
    }
}

impl KeyIndex {
    /// The stream's key columns as the index's types.
    fn cast_keys(&self, keys: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        keys.iter()
            .zip(&self.types)
            .map(|(k, t)| match k.data_type() == t {
                true => Ok(Arc::clone(k)),
                false => Ok(cast(k, t)?),
            })
            .collect()
    }

    /// Indexes rows by key (each key's rows in `versions` order when given, else row order).
    fn build(
        key_columns: &[ArrayRef],
        nulls_equal: bool,
        versions: Option<&[i64]>,
    ) -> Result<Self> {
        let types: Vec<DataType> = key_columns.iter().map(|k| k.data_type().clone()).collect();
        let converter = RowConverter::new(types.iter().cloned().map(SortField::new).collect())?;
        let encoded = converter.convert_columns(key_columns)?;
        let mut groups: HashMap<Box<[u8]>, u32, ahash::RandomState> = HashMap::default();
        // Each row's group (u32::MAX: a NULL key that matches nothing).
        let mut group_of = Vec::with_capacity(encoded.num_rows());
        let mut sizes: Vec<u32> = Vec::new();
        for (row, key) in encoded.iter().enumerate() {
            if !nulls_equal && key_columns.iter().any(|k| k.is_null(row)) {
                group_of.push(u32::MAX);
                continue;
            }
            let next = groups.len() as u32;
            let g = *groups.entry(key.as_ref().into()).or_insert(next);
            if g == next {
                sizes.push(0);
            }
            sizes[g as usize] += 1;
            group_of.push(g);
        }
        // A counting sort of the rows by group, keeping file order within a group.
        let mut starts = Vec::with_capacity(sizes.len() + 1);
        let mut at = 0u32;
        for size in &sizes {
            starts.push(at);
            at += size;
        }
        starts.push(at);
        let mut next = starts.clone();
        let mut by_key = vec![0u32; at as usize];
        for (row, g) in group_of.iter().enumerate() {
            if *g != u32::MAX {
                let slot = &mut next[*g as usize];
                by_key[*slot as usize] = row as u32;
                *slot += 1;
            }
        }
        if let Some(versions) = versions {
            for g in 0..sizes.len() {
                let (from, to) = (starts[g] as usize, starts[g + 1] as usize);
                by_key[from..to].sort_by_key(|&r| versions[r as usize]);
            }
        }
        Ok(KeyIndex {
            converter,
            types,
            groups,
            starts,
            by_key,
        })
    }
}

/// Reads `batches` as an upsert log keyed by the columns `key`: the latest row of each key,
/// in the order keys first appeared; a delete batch removes its keys. No key: every row.
pub fn latest_per_key(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    key: &[String],
) -> Result<RecordBatch> {
    let inserts: Vec<&RecordBatch> = batches.iter().filter(|b| !is_delete(b)).collect();
    if key.is_empty() {
        return Ok(concat_batches(schema, inserts)?);
    }
    let key_columns = |batch: &RecordBatch| -> Result<Vec<ArrayRef>> {
        key.iter()
            .map(|name| {
                let i = batch.schema().index_of(name).map_err(|_| {
                    VeloError::Execution(format!("the table's rows lack its key column '{name}'"))
                })?;
                Ok(Arc::clone(batch.column(i)))
            })
            .collect()
    };
    let Some(first) = batches.first() else {
        return Ok(RecordBatch::new_empty(Arc::clone(schema)));
    };
    let types: Vec<SortField> = key_columns(first)?
        .iter()
        .map(|c| SortField::new(c.data_type().clone()))
        .collect();
    let converter = RowConverter::new(types)?;
    let mut slot_of: HashMap<Box<[u8]>, usize, ahash::RandomState> = HashMap::default();
    // Per key, in first-seen order: the (insert batch, row) of its latest row.
    let mut latest: Vec<Option<(usize, usize)>> = Vec::new();
    let mut insert_index = 0;
    for batch in batches {
        let delete = is_delete(batch);
        let encoded = converter.convert_columns(&key_columns(batch)?)?;
        for (row, k) in encoded.iter().enumerate() {
            let slot = *slot_of.entry(k.as_ref().into()).or_insert_with(|| {
                latest.push(None);
                latest.len() - 1
            });
            latest[slot] = (!delete).then_some((insert_index, row));
        }
        if !delete {
            insert_index += 1;
        }
    }
    let picks: Vec<(usize, usize)> = latest.into_iter().flatten().collect();
    if picks.is_empty() {
        return Ok(RecordBatch::new_empty(Arc::clone(schema)));
    }
    Ok(interleave_record_batch(&inserts, &picks)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{Field, Int64Type, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn table(ids: Vec<Option<i64>>, names: Vec<&str>) -> (SchemaRef, RecordBatch) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
            ],
        )
        .expect("batch");
        (schema, batch)
    }

    #[test]
    fn a_probe_finds_every_row_of_a_key_in_stream_order() -> Result<()> {
        let (schema, rows) = table(
            vec![Some(1), Some(2), Some(1), None],
            vec!["a", "b", "c", "n"],
        );
        let key: Arc<dyn PhysicalExpr> = Arc::new(Column::new("id", 0));
        let lookup = LookupTable::build(schema, &[rows], &[key], false, None)?;
        assert!(lookup.has_null_key());
        let probe: ArrayRef = Arc::new(Int64Array::from(vec![Some(2), None, Some(1), Some(9)]));
        let (mut stream, mut table) = (Vec::new(), Vec::new());
        lookup.probe(&[probe], 4, &mut stream, &mut table)?;
        assert_eq!(stream, vec![0, 2, 2], "NULL and 9 match nothing");
        assert_eq!(table, vec![1, 0, 2], "key 1's rows in file order");
        Ok(())
    }

    #[test]
    fn the_latest_row_of_a_key_wins_and_a_delete_removes_it() -> Result<()> {
        let (schema, first) = table(vec![Some(1), Some(2), Some(3)], vec!["a", "b", "c"]);
        let (_, second) = table(vec![Some(1)], vec!["a2"]);
        let (_, gone) = table(vec![Some(2)], vec!["b"]);
        let gone = crate::exec::change::mark_delete(gone);
        let latest = latest_per_key(&schema, &[first, second, gone], &["id".to_string()])?;
        let ids: Vec<i64> = latest
            .column(0)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        let names: Vec<&str> = latest
            .column(1)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(ids, vec![1, 3]);
        assert_eq!(names, vec!["a2", "c"]);
        Ok(())
    }
}
