//! Maps group-key values to dense group indices: the key table of every GROUP BY.
//!
//! Interning uses DataFusion's `GroupValues`, which has specialised tables for one string or
//! primitive column and for several columns (a string key is interned as a string view, whose
//! table is the faster); the key of each group is also kept in Arrow's row format, appended
//! only when a batch brings new groups, so keys can be read back (all of them, or chosen
//! groups) without giving them up.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray, StringViewArray};
use arrow::buffer::ScalarBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use crate::error::{Result, VeloError};

/// The keyed part of a key table: the interner and the stored keys.
struct Keyed {
    /// The key columns' types, as stored.
    schema: SchemaRef,
    /// The types the interner reads them as ([`interned_schema`]).
    interned: SchemaRef,
    values: Box<dyn GroupValues>,
    converter: RowConverter,
    keys: Rows,
}

/// Interns group keys (any number of columns, NULL a value like any other) to indices 0..n.
pub struct GroupKeys {
    /// None for a global aggregate (no GROUP BY): every row is group 0.
    keyed: Option<Keyed>,
    global_seen: bool,
}

impl GroupKeys {
    /// A key table for keys of the given schema (empty schema = one global group).
    pub fn new(key_schema: &SchemaRef) -> Result<Self> {
        if key_schema.fields().is_empty() {
            return Ok(GroupKeys {
                keyed: None,
                global_seen: false,
            });
        }
        let converter = RowConverter::new(
            key_schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        let keys = converter.empty_rows(0, 0);
        let interned = interned_schema(key_schema);
        Ok(GroupKeys {
            keyed: Some(Keyed {
                schema: key_schema.clone(),
                values: new_group_values(interned.clone(), &GroupOrdering::None)?,
                interned,
                converter,
                keys,
            }),
            global_seen: false,
        })
    }

    /// Number of groups seen so far.
    pub fn len(&self) -> usize {
        match &self.keyed {
            None => usize::from(self.global_seen),
            Some(k) => k.values.len(),
        }
    }

    /// The bytes the interned keys hold.
    pub fn size(&self) -> usize {
        self.keyed
            .as_ref()
            .map_or(0, |k| k.values.size() + k.keys.size())
    }

    /// True when no group has been seen.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `groups` with the group index of each row of `key_columns` (`num_rows` rows),
    /// adding new groups as they appear.
    pub fn intern(
        &mut self,
        key_columns: &[ArrayRef],
        num_rows: usize,
        groups: &mut Vec<usize>,
    ) -> Result<()> {
        groups.clear();
        let Some(k) = &mut self.keyed else {
            self.global_seen |= num_rows > 0;
            groups.resize(num_rows, 0);
            return Ok(());
        };
        // The interner and the stored keys read columns as their schemas' types; a differing
        // column is cast, not misread.
        let interned = cast_to(key_columns, &k.interned)?;
        let before = k.values.len();
        k.values.intern(&interned, groups)?;
        if k.values.len() > before {
            let stored = cast_to(key_columns, &k.schema)?;
            k.store_new_keys(&stored, groups, before)?;
        }
        Ok(())
    }

    /// The key columns of every group, in group-index order.
    pub fn all_keys(&self) -> Result<Vec<ArrayRef>> {
        match &self.keyed {
            Some(k) => Ok(k.converter.convert_rows(k.keys.iter())?),
            None => Ok(Vec::new()),
        }
    }

    /// The key columns of the given groups, in that order.
    pub fn keys_of(&self, groups: &[usize]) -> Result<Vec<ArrayRef>> {
        match &self.keyed {
            Some(k) => Ok(k
                .converter
                .convert_rows(groups.iter().map(|&g| k.keys.row(g)))?),
            None => Ok(Vec::new()),
        }
    }

    /// Marks the global group as present even without rows (a global aggregate always has a row).
    pub fn ensure_global(&mut self) {
        if self.keyed.is_none() {
            self.global_seen = true;
        }
    }
}

/// The types an interner reads `key_schema`'s columns as: a string column (not a large one)
/// as a string view, whose table (DataFusion's `ArrowBytesViewMap`) compares a value of up to
/// 12 bytes as one 16-byte view, where the string table calls `memcmp` for a value of over 8.
fn interned_schema(key_schema: &SchemaRef) -> SchemaRef {
    let fields = key_schema.fields().iter().map(|f| match f.data_type() {
        DataType::Utf8 => Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View)),
        _ => Arc::clone(f),
    });
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}

/// `columns` as `schema`'s types, cast where one differs.
fn cast_to(columns: &[ArrayRef], schema: &SchemaRef) -> Result<Vec<ArrayRef>> {
    columns
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| match (c.data_type(), f.data_type()) {
            (from, to) if from == to => Ok(Arc::clone(c)),
            (DataType::Utf8, DataType::Utf8View) => match string_views(c.as_string::<i32>()) {
                Some(views) => Ok(Arc::new(views) as ArrayRef),
                None => Ok(cast(c, f.data_type())?),
            },
            (_, to) => Ok(cast(c, to)?),
        })
        .collect()
}

/// `strings` as string views of its own buffer, no bytes copied; None when the buffer is
/// too large for a view's offset. Arrow's conversion calls a function per value, which costs
/// more than the view: a value of up to 12 bytes is masked out of a 16-byte load.
fn string_views(strings: &StringArray) -> Option<StringViewArray> {
    let data = strings.value_data();
    u32::try_from(data.len()).ok()?;
    let views: Vec<u128> = strings
        .value_offsets()
        .windows(2)
        .map(|w| {
            let (start, end) = (w[0] as usize, w[1] as usize);
            let len = end - start;
            if len > 12 {
                let prefix = data[start..start + 4]
                    .try_into()
                    .map_or(0, u32::from_le_bytes);
                // Buffer 0 (the only one), from `start`.
                return len as u128 | (prefix as u128) << 32 | (start as u128) << 96;
            }
            let bytes = match data.get(start..start + 16) {
                Some(window) => window.try_into().map_or(0, u128::from_le_bytes),
                None => {
                    let mut bytes = [0u8; 16];
                    bytes[..len].copy_from_slice(&data[start..end]);
                    u128::from_le_bytes(bytes)
                }
            };
            let inline = bytes & ((1u128 << (8 * len)) - 1);
            len as u128 | inline << 32
        })
        .collect();
    // SAFETY: each view is its value's length, then either the value (up to 12 bytes, zero
    // padded) or its first 4 bytes, buffer 0 and its offset there: the layout views have.
    // The values are those of a valid string array, so UTF-8, and lie within the buffer.
    Some(unsafe {
        StringViewArray::new_unchecked(
            ScalarBuffer::from(views),
            vec![strings.values().clone()],
            strings.nulls().cloned(),
        )
    })
}

impl Keyed {
    /// Stores the keys of the groups numbered `first_new..` (new in this batch), in order.
    fn store_new_keys(
        &mut self,
        columns: &[ArrayRef],
        groups: &[usize],
        first_new: usize,
    ) -> Result<()> {
        // Each new group's first row (interners number new groups in no promised order).
        let mut first_rows = vec![u32::MAX; self.values.len() - first_new];
        for (row, &g) in groups.iter().enumerate() {
            if let Some(first) = g.checked_sub(first_new).and_then(|i| first_rows.get_mut(i)) {
                if *first == u32::MAX {
                    *first = row as u32;
                }
            }
        }
        if first_rows.contains(&u32::MAX) {
            return Err(VeloError::Execution(
                "the group key table numbered a group that no row has".into(),
            ));
        }
        let rows = arrow::array::UInt32Array::from(first_rows);
        let new_keys = columns
            .iter()
            .map(|c| Ok(arrow::compute::take(c.as_ref(), &rows, None)?))
            .collect::<Result<Vec<_>>>()?;
        self.converter.append(&mut self.keys, &new_keys)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn table(fields: Vec<(&str, DataType)>) -> GroupKeys {
        let schema = Schema::new(
            fields
                .into_iter()
                .map(|(n, t)| Field::new(n, t, true))
                .collect::<Vec<_>>(),
        );
        GroupKeys::new(&Arc::new(schema)).expect("key table")
    }

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    fn intern(keys: &mut GroupKeys, columns: &[ArrayRef]) -> Vec<usize> {
        let mut groups = Vec::new();
        keys.intern(columns, columns[0].len(), &mut groups)
            .expect("intern");
        groups
    }

    proptest::proptest! {
        #[test]
        fn string_views_are_arrows_views(
            values in proptest::collection::vec(
                proptest::option::of("[a-zé]{0,20}"), 0..40),
            from in 0usize..5,
        ) {
            let array = StringArray::from(values.clone());
            // A sliced array's offsets do not start at 0.
            let sliced = array.slice(from.min(values.len()), values.len() - from.min(values.len()));
            for strings in [&array, &sliced] {
                let mine = string_views(strings).expect("views");
                let arrows = StringViewArray::from(strings);
                proptest::prop_assert_eq!(&mine, &arrows);
                // Equal views, not only equal values: the interner compares views.
                for (i, (a, b)) in mine.views().iter().zip(arrows.views()).enumerate() {
                    if strings.is_valid(i) {
                        proptest::prop_assert_eq!(a, b);
                    }
                }
            }
        }
    }

    #[test]
    fn one_string_column_with_nulls_keeps_its_keys_across_batches() {
        let mut keys = table(vec![("s", DataType::Utf8)]);
        let first = intern(
            &mut keys,
            &[strings(&[Some("a"), None, Some("a"), Some("b")])],
        );
        assert_eq!(first, vec![0, 1, 0, 2]);
        let second = intern(
            &mut keys,
            &[strings(&[Some("c"), Some("b"), None, Some("d")])],
        );
        assert_eq!(second, vec![3, 2, 1, 4]);
        assert_eq!(keys.len(), 5);
        let all = keys.all_keys().expect("keys");
        assert_eq!(
            all[0].as_ref(),
            &StringArray::from(vec![Some("a"), None, Some("b"), Some("c"), Some("d")])
                as &dyn Array
        );
        // Reading keys gives nothing up: interning goes on with the same numbers.
        assert_eq!(
            intern(&mut keys, &[strings(&[Some("d"), Some("a")])]),
            vec![4, 0]
        );
        let chosen = keys.keys_of(&[4, 1, 0]).expect("keys of");
        assert_eq!(
            chosen[0].as_ref(),
            &StringArray::from(vec![Some("d"), None, Some("a")]) as &dyn Array
        );
    }

    #[test]
    fn several_columns_are_one_key() {
        let mut keys = table(vec![("s", DataType::Utf8), ("n", DataType::Int64)]);
        let s = strings(&[Some("a"), Some("a"), Some("b"), Some("a"), None, None]);
        let n: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(1),
            Some(2),
            Some(1),
            Some(1),
            None,
            None,
        ]));
        assert_eq!(intern(&mut keys, &[s, n]), vec![0, 1, 2, 0, 3, 3]);
        let all = keys.all_keys().expect("keys");
        assert_eq!(
            all[1].as_ref(),
            &Int64Array::from(vec![Some(1), Some(2), Some(1), None]) as &dyn Array
        );
    }

    #[test]
    fn a_column_of_another_type_is_cast_to_the_key_type() {
        let mut keys = table(vec![("n", DataType::Int64)]);
        assert_eq!(
            intern(&mut keys, &[Arc::new(Int64Array::from(vec![7, 8]))]),
            vec![0, 1]
        );
        let narrow: ArrayRef = Arc::new(Int32Array::from(vec![8, 9, 7]));
        assert_eq!(intern(&mut keys, &[narrow]), vec![1, 2, 0]);
    }

    #[test]
    fn no_key_columns_is_one_global_group() {
        let mut keys = table(vec![]);
        assert!(keys.is_empty());
        let mut groups = Vec::new();
        keys.intern(&[], 3, &mut groups).expect("intern");
        assert_eq!(groups, vec![0, 0, 0]);
        assert_eq!(keys.len(), 1);
    }
}
