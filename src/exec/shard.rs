//! Which partition a key belongs to: the hash the router splits input by, and the same hash
//! applied to the keys of restored state, so a checkpoint taken at one width restores at any
//! other (each worker keeps the keys that its input will bring it).

use arrow::array::{ArrayRef, BooleanArray};
use datafusion::common::hash_utils::{create_hashes, RandomState};

use crate::error::Result;

/// A fixed seed (DataFusion's hash state is a fixed-seed foldhash): a key lands on the same
/// partition in every process, so checkpoints and the input routed after a restore agree, and
/// runs are reproducible.
const SEED: u64 = 0x7665_6c6f;

/// The routing hash of each row of `keys` (one or more key columns), into `hashes`.
pub fn hash_keys(keys: &[ArrayRef], num_rows: usize, hashes: &mut Vec<u64>) -> Result<()> {
    hashes.clear();
    hashes.resize(num_rows, 0);
    let state = RandomState::with_seed(SEED);
    create_hashes(keys, &state, hashes)?;
    Ok(())
}

/// The partition (of `partitions`) a hash maps to. Multiply-shift maps the hash onto
/// 0..partitions without a division.
pub fn partition_of(hash: u64, partitions: usize) -> u32 {
    ((hash as u128 * partitions as u128) >> 64) as u32
}

/// One partition's share of keyed state: partition `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyShard {
    pub index: usize,
    pub count: usize,
}

impl KeyShard {
    /// Every key (a query on one partition).
    pub fn whole() -> Self {
        KeyShard { index: 0, count: 1 }
    }

    /// Whether this shard takes the state no key owns (counters, keyless groups): the first.
    pub fn takes_unkeyed(&self) -> bool {
        self.index == 0
    }

    /// Which rows of `keys` this shard owns (`keys` empty: unkeyed rows, owned by the first).
    pub fn owned(&self, keys: &[ArrayRef], num_rows: usize) -> Result<BooleanArray> {
        if self.count <= 1 {
            return Ok(BooleanArray::from(vec![true; num_rows]));
        }
        if keys.is_empty() {
            return Ok(BooleanArray::from(vec![self.takes_unkeyed(); num_rows]));
        }
        let mut hashes = Vec::new();
        hash_keys(keys, num_rows, &mut hashes)?;
        Ok(hashes
            .iter()
            .map(|h| Some(partition_of(*h, self.count) as usize == self.index))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::StringArray;

    use super::*;

    #[test]
    fn shards_of_any_width_split_the_keys_without_overlap() {
        let keys: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..500).map(|i| format!("k{i}")),
        ));
        for count in [1, 2, 3, 4, 7] {
            let mut owners = vec![0; 500];
            for index in 0..count {
                let owned = KeyShard { index, count }
                    .owned(&[Arc::clone(&keys)], 500)
                    .expect("owned");
                for (row, owner) in owners.iter_mut().enumerate() {
                    if owned.value(row) {
                        *owner += 1;
                    }
                }
            }
            assert!(owners.iter().all(|o| *o == 1), "width {count}");
        }
        let unkeyed = KeyShard { index: 1, count: 2 }
            .owned(&[], 3)
            .expect("owned");
        assert_eq!(
            unkeyed.true_count(),
            0,
            "the first shard takes unkeyed state"
        );
        assert_eq!(unkeyed.len(), 3);
    }

    #[test]
    fn the_hash_is_the_same_in_every_process() {
        let keys: ArrayRef = Arc::new(StringArray::from(vec!["AAPL", "MSFT"]));
        let mut hashes = Vec::new();
        hash_keys(&[keys], 2, &mut hashes).expect("hash");
        // Fixed values: routing must not depend on per-process random seeds, or a restored
        // key would wait on another worker than the one its input goes to.
        assert_eq!(hashes, vec![3208905471263169659, 11164992323623607120]);
    }
}
