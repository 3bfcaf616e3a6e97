//! The state of one side of a join of two streams: its waiting rows per key in event-time
//! order, the batches they are in, and the order they leave in.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::compute::interleave_record_batch;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::{Result, VeloError};

/// Where a waiting row is: its batch and row, and whether it met a partner yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiting {
    pub(super) batch: u64,
    pub(super) row: u32,
    pub(super) matched: bool,
}

/// A waiting row's place in its key's order: (event time, arrival number).
pub(super) type At = (i64, u64);

/// A key's waiting rows in (event time, arrival number) order. Most keys hold one row, kept
/// inline (an eviction then touches no other memory), or a few that arrive in about time
/// order, so a sorted deque beats a tree: appends at the back, evictions at the front.
#[derive(Default)]
pub(super) enum KeyRows {
    #[default]
    Empty,
    One(At, Waiting),
    Many(VecDeque<(At, Waiting)>),
}

impl KeyRows {
    /// The bytes its rows take outside the slot.
    fn size(&self) -> usize {
        match self {
            KeyRows::Many(rows) => rows.capacity() * std::mem::size_of::<(At, Waiting)>(),
            _ => 0,
        }
    }
    pub(super) fn insert(&mut self, at: At, waiting: Waiting) {
        match self {
            KeyRows::Empty => *self = KeyRows::One(at, waiting),
            KeyRows::One(first, w) => {
                let mut rows = VecDeque::with_capacity(4);
                rows.push_back((*first, *w));
                let i = usize::from(*first < at);
                rows.insert(i, (at, waiting));
                *self = KeyRows::Many(rows);
            }
            KeyRows::Many(rows) => match rows.back() {
                Some((last, _)) if *last > at => {
                    let i = rows.partition_point(|(t, _)| *t < at);
                    rows.insert(i, (at, waiting));
                }
                _ => rows.push_back((at, waiting)),
            },
        }
    }

    /// The rows with times in `from..=to`.
    pub(super) fn range(&self, from: i64, to: i64) -> impl Iterator<Item = (&At, &Waiting)> {
        let (one, many) = match self {
            KeyRows::Empty => (None, None),
            KeyRows::One(at, w) => (Some((at, w)), None),
            KeyRows::Many(rows) => {
                let start = rows.partition_point(|((t, _), _)| *t < from);
                (None, Some(rows.range(start..).map(|(at, w)| (at, w))))
            }
        };
        one.filter(|((t, _), _)| *t >= from)
            .into_iter()
            .chain(many.into_iter().flatten())
            .take_while(move |((t, _), _)| *t <= to)
    }

    pub(super) fn position(rows: &VecDeque<(At, Waiting)>, at: &At) -> Option<usize> {
        let i = rows.partition_point(|(t, _)| t < at);
        rows.get(i).filter(|(t, _)| t == at).map(|_| i)
    }

    pub(super) fn get(&self, at: &At) -> Option<&Waiting> {
        match self {
            KeyRows::One(t, w) if t == at => Some(w),
            KeyRows::Many(rows) => Self::position(rows, at).map(|i| &rows[i].1),
            _ => None,
        }
    }

    pub(super) fn get_mut(&mut self, at: &At) -> Option<&mut Waiting> {
        match self {
            KeyRows::One(t, w) if t == at => Some(w),
            KeyRows::Many(rows) => Self::position(rows, at).map(|i| &mut rows[i].1),
            _ => None,
        }
    }

    pub(super) fn remove(&mut self, at: &At) -> Option<Waiting> {
        match self {
            KeyRows::One(t, w) if t == at => {
                let w = *w;
                *self = KeyRows::Empty;
                Some(w)
            }
            KeyRows::Many(rows) => {
                if rows.front().is_some_and(|(t, _)| t == at) {
                    return rows.pop_front().map(|(_, w)| w);
                }
                let i = Self::position(rows, at)?;
                rows.remove(i).map(|(_, w)| w)
            }
            _ => None,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        match self {
            KeyRows::Empty => true,
            KeyRows::One(..) => false,
            KeyRows::Many(rows) => rows.is_empty(),
        }
    }
}

/// The batches a side's waiting rows are in, by id (ids go up): each with how many of its rows
/// still wait. Rows leave in about arrival order, so the batches go from the front.
#[derive(Default)]
pub(super) struct Batches {
    pub(super) live: VecDeque<(RecordBatch, usize)>,
    /// The id of the front batch.
    pub(super) first: u64,
}

impl Batches {
    /// Keeps `batch`, of which `waiting` rows wait; returns its id.
    pub(super) fn push(&mut self, batch: RecordBatch, waiting: usize) -> u64 {
        self.live.push_back((batch, waiting));
        self.first + self.live.len() as u64 - 1
    }

    pub(super) fn get(&self, id: u64) -> Option<&RecordBatch> {
        let i = usize::try_from(id.checked_sub(self.first)?).ok()?;
        self.live.get(i).map(|(batch, _)| batch)
    }

    /// One row of batch `id` stopped waiting.
    pub(super) fn release_row(&mut self, id: u64) {
        let i = id
            .checked_sub(self.first)
            .and_then(|i| usize::try_from(i).ok());
        if let Some((_, waiting)) = i.and_then(|i| self.live.get_mut(i)) {
            *waiting = waiting.saturating_sub(1);
        }
    }

    /// The waiting rows `(batch id, row)`, in that order, as one batch of `schema`.
    pub(super) fn gather(&self, rows: &[(u64, u32)], schema: &SchemaRef) -> Result<RecordBatch> {
        if rows.is_empty() {
            return Ok(RecordBatch::new_empty(Arc::clone(schema)));
        }
        // The distinct batches in first-seen order, and each row as (index among them, row).
        let mut ids: Vec<u64> = Vec::new();
        let mut picks = Vec::with_capacity(rows.len());
        for (b, row) in rows {
            let i = match ids.iter().position(|x| x == b) {
                Some(i) => i,
                None => {
                    ids.push(*b);
                    ids.len() - 1
                }
            };
            picks.push((i, *row as usize));
        }
        let batches = ids
            .iter()
            .map(|b| {
                self.get(*b)
                    .ok_or_else(|| VeloError::Execution("a waiting row's batch is missing".into()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(interleave_record_batch(&batches, &picks)?)
    }

    /// Drops the front batches none of whose rows wait.
    pub(super) fn drop_done(&mut self) {
        while self.live.front().is_some_and(|(_, waiting)| *waiting == 0) {
            self.live.pop_front();
            self.first += 1;
        }
    }
}

/// One side's waiting rows.
#[derive(Default)]
pub(super) struct SideState {
    /// The batches the waiting rows are in.
    pub(super) batches: Batches,
    /// Each key with waiting rows, as its slot in `keys`, found by the key's hash. A slot is
    /// dropped by its number and stored hash, without hashing or comparing the key again.
    pub(super) slots: hashbrown::HashTable<u32>,
    /// Per slot: the key's waiting rows, the key and its hash. A freed slot keeps its buffers
    /// for the next new key, so a steady stream of keys allocates nothing.
    pub(super) keys: Vec<KeySlot>,
    /// Slots free for the next new key.
    pub(super) free: Vec<u32>,
    /// Every waiting row by (event time, arrival number), with its key's slot: eviction order.
    pub(super) by_time: BTreeMap<(i64, u64), u32>,
    pub(super) next_row: u64,
    pub(super) hasher: ahash::RandomState,
}

/// One key's waiting rows.
#[derive(Default)]
pub(super) struct KeySlot {
    pub(super) rows: KeyRows,
    pub(super) key: Vec<u8>,
    pub(super) hash: u64,
}

impl SideState {
    pub(super) fn len(&self) -> usize {
        self.by_time.len()
    }

    /// The bytes its waiting rows' batches, keys and indexes hold.
    pub(super) fn size(&self) -> usize {
        let batches: usize = self
            .batches
            .live
            .iter()
            .map(|(b, _)| b.get_array_memory_size())
            .sum();
        let keys: usize = self
            .keys
            .iter()
            .map(|k| std::mem::size_of::<KeySlot>() + k.key.capacity() + k.rows.size())
            .sum();
        batches + keys + self.by_time.len() * (std::mem::size_of::<((i64, u64), u32)>() + 8)
    }

    /// The waiting rows of `key`, if it has any.
    pub(super) fn rows_of(&self, key: &[u8]) -> Option<(u32, &KeyRows)> {
        let hash = self.hasher.hash_one(key);
        let slot = *self
            .slots
            .find(hash, |s| self.keys[*s as usize].key == key)?;
        Some((slot, &self.keys[slot as usize].rows))
    }

    /// The slot of `key`, taking a free one for a new key.
    pub(super) fn slot_for(&mut self, key: &[u8]) -> u32 {
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        if let Some(slot) = self.slots.find(hash, |s| keys[*s as usize].key == key) {
            return *slot;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.keys.push(KeySlot::default());
                (self.keys.len() - 1) as u32
            }
        };
        let entry = &mut self.keys[slot as usize];
        entry.key.clear();
        entry.key.extend_from_slice(key);
        entry.hash = hash;
        let keys = &self.keys;
        self.slots
            .insert_unique(hash, slot, |s| keys[*s as usize].hash);
        slot
    }

    /// Lets `slot` go once its key has no waiting rows.
    pub(super) fn release(&mut self, slot: u32) {
        let hash = self.keys[slot as usize].hash;
        if let Ok(entry) = self.slots.find_entry(hash, |s| *s == slot) {
            entry.remove();
        }
        self.free.push(slot);
    }
}
