//! Maps group-key values to dense group indices: the key table of every GROUP BY.

use std::collections::HashMap;

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::row::{RowConverter, Rows, SortField};

use crate::error::Result;

/// Interns group keys (any number of columns, NULL a value like any other) to indices 0..n.
pub struct GroupKeys {
    /// None for a global aggregate (no GROUP BY): every row is group 0.
    converter: Option<RowConverter>,
    index: HashMap<Box<[u8]>, usize, ahash::RandomState>,
    keys: Option<Rows>,
    global_seen: bool,
}

impl GroupKeys {
    /// A key table for keys of the given schema (empty schema = one global group).
    pub fn new(key_schema: &SchemaRef) -> Result<Self> {
        if key_schema.fields().is_empty() {
            return Ok(GroupKeys {
                converter: None,
                index: HashMap::default(),
                keys: None,
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
        Ok(GroupKeys {
            converter: Some(converter),
            index: HashMap::default(),
            keys: Some(keys),
            global_seen: false,
        })
    }

    /// Number of groups seen so far.
    pub fn len(&self) -> usize {
        match self.converter {
            None => usize::from(self.global_seen),
            Some(_) => self.index.len(),
        }
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
        let (Some(converter), Some(keys)) = (&self.converter, &mut self.keys) else {
            self.global_seen |= num_rows > 0;
            groups.resize(num_rows, 0);
            return Ok(());
        };
        let rows = converter.convert_columns(key_columns)?;
        groups.reserve(num_rows);
        for row in rows.iter() {
            let bytes = row.as_ref();
            let g = match self.index.get(bytes) {
                Some(&g) => g,
                None => {
                    let g = self.index.len();
                    self.index.insert(bytes.into(), g);
                    keys.push(row);
                    g
                }
            };
            groups.push(g);
        }
        Ok(())
    }

    /// The key columns of every group, in group-index order.
    pub fn all_keys(&self) -> Result<Vec<ArrayRef>> {
        match (&self.converter, &self.keys) {
            (Some(c), Some(keys)) => Ok(c.convert_rows(keys.iter())?),
            _ => Ok(Vec::new()),
        }
    }

    /// The key columns of the given groups, in that order.
    pub fn keys_of(&self, groups: &[usize]) -> Result<Vec<ArrayRef>> {
        match (&self.converter, &self.keys) {
            (Some(c), Some(keys)) => Ok(c.convert_rows(groups.iter().map(|&g| keys.row(g)))?),
            _ => Ok(Vec::new()),
        }
    }

    /// Marks the global group as present even without rows (a global aggregate always has a row).
    pub fn ensure_global(&mut self) {
        if self.converter.is_none() {
            self.global_seen = true;
        }
    }
}
