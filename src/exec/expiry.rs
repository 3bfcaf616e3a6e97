//! `'state.ttl'` for a GROUP BY: when each group was last updated, and which groups have been
//! idle for the TTL. On event time (the default) a group's last update is the latest event
//! time of its records, and it is idle once the watermark is a TTL past that; on processing
//! time both are the wall clock. Idle groups are looked for each time the clock has moved by
//! an eighth of the TTL, so a group goes between 1 and 1⅛ TTLs after its last update;
//! removing them rebuilds the group table, which is why sweeps are spaced rather than run on
//! every batch.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, Int64Array};
use arrow::record_batch::RecordBatch;

use super::snapshot::with_column;
use crate::error::Result;
use crate::sql::{StateTtl, TtlClock};

/// The snapshot column holding each group's last update (NULL: before any watermark).
const SEEN_COLUMN: &str = "_seen";

/// When the rows of an update happened.
#[derive(Debug, Clone, Copy)]
pub enum UpdateTimes<'a> {
    /// Each row's event time.
    Each(&'a Int64Array),
    /// All at this (wall-clock) time.
    All(i64),
}

/// Last updates of a table's groups, in group order.
#[derive(Debug)]
pub struct Expiry {
    ttl: StateTtl,
    /// Per group, the time of its last update (None: unknown, a NULL event time).
    last_seen: Vec<Option<i64>>,
    /// The clock at the last sweep.
    last_sweep: Option<i64>,
    /// Groups dropped so far.
    pub expired: u64,
}

impl Expiry {
    /// No group yet.
    pub fn new(ttl: StateTtl) -> Self {
        Expiry {
            ttl,
            last_seen: Vec::new(),
            last_sweep: None,
            expired: 0,
        }
    }

    /// Which clock the TTL runs on.
    pub fn clock(&self) -> TtlClock {
        self.ttl.clock
    }

    /// The rows of one update went to `groups` (of `num_groups`), at `times`.
    pub fn touch(&mut self, groups: &[usize], num_groups: usize, times: UpdateTimes<'_>) {
        self.last_seen.resize(num_groups, None);
        for (row, &g) in groups.iter().enumerate() {
            let t = match times {
                UpdateTimes::Each(times) => times.is_valid(row).then(|| times.value(row)),
                UpdateTimes::All(now) => Some(now),
            };
            if let Some(t) = t {
                let seen = &mut self.last_seen[g];
                *seen = Some(seen.map_or(t, |s| s.max(t)));
            }
        }
    }

    /// At clock `now`: if a sweep is due and some group has been idle for the TTL, which
    /// groups to keep. Groups of unknown time count from now.
    pub fn sweep(&mut self, now: i64) -> Option<BooleanArray> {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_sub(last) < self.ttl.sweep_every_ms())
        {
            return None;
        }
        self.last_sweep = Some(now);
        let mut any_expired = false;
        let keep: BooleanArray = self
            .last_seen
            .iter_mut()
            .map(|seen| {
                let at = *seen.get_or_insert(now);
                let keep = now.saturating_sub(at) < self.ttl.ttl_ms;
                any_expired |= !keep;
                Some(keep)
            })
            .collect();
        any_expired.then_some(keep)
    }

    /// Keeps the groups `keep` marks, renumbered in order as the rebuilt table numbers them.
    pub fn retain(&mut self, keep: &BooleanArray) {
        let before = self.last_seen.len();
        let mut row = 0;
        self.last_seen.retain(|_| {
            row += 1;
            keep.value(row - 1)
        });
        self.expired += (before - self.last_seen.len()) as u64;
    }

    /// A table snapshot with each group's last update.
    pub fn with_seen(&self, rows: &RecordBatch) -> Result<RecordBatch> {
        let seen: Int64Array = (0..rows.num_rows())
            .map(|g| self.last_seen.get(g).copied().flatten())
            .collect();
        with_column(rows, SEEN_COLUMN, Arc::new(seen))
    }

    /// Takes the last updates of restored groups (in group order); a snapshot taken without a
    /// TTL counts its groups as updated when the clock starts.
    pub fn restore(&mut self, rows: &RecordBatch) {
        let seen = rows
            .column_by_name(SEEN_COLUMN)
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>());
        self.last_seen = match seen {
            Some(seen) => seen.iter().collect(),
            None => vec![None; rows.num_rows()],
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiry(ttl_ms: i64) -> Expiry {
        Expiry::new(StateTtl {
            ttl_ms,
            clock: TtlClock::Event,
        })
    }

    fn kept(mask: Option<BooleanArray>) -> Option<Vec<bool>> {
        mask.map(|m| m.iter().map(|v| v.unwrap_or(false)).collect())
    }

    #[test]
    fn a_group_idle_for_the_ttl_is_dropped_at_the_next_sweep() {
        let mut e = expiry(800);
        e.touch(&[0, 1], 2, UpdateTimes::All(1_000));
        assert_eq!(kept(e.sweep(1_000)), None, "nothing idle yet");
        e.touch(&[1], 2, UpdateTimes::All(1_500));
        assert_eq!(kept(e.sweep(1_050)), None, "a sweep every 100 ms only");
        assert_eq!(kept(e.sweep(1_799)), None, "group 0 idle 799 ms");
        assert_eq!(kept(e.sweep(1_900)), Some(vec![false, true]));
        e.retain(&BooleanArray::from(vec![false, true]));
        assert_eq!(e.expired, 1);
        assert_eq!(e.last_seen, vec![Some(1_500)]);
    }

    #[test]
    fn a_group_is_as_recent_as_its_latest_event_and_unknown_times_count_from_the_sweep() {
        let mut e = expiry(100);
        let times = Int64Array::from(vec![Some(900), Some(500), None]);
        e.touch(&[0, 0, 1], 2, UpdateTimes::Each(&times));
        assert_eq!(e.last_seen, vec![Some(900), None]);
        assert_eq!(kept(e.sweep(5_000)), Some(vec![false, true]));
        e.retain(&BooleanArray::from(vec![false, true]));
        assert_eq!(
            kept(e.sweep(5_100)),
            Some(vec![false]),
            "group 1 counted from 5000"
        );
    }

    #[test]
    fn last_updates_survive_a_snapshot() {
        let mut e = expiry(100);
        e.touch(&[0, 1], 2, UpdateTimes::All(7));
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("k", arrow::datatypes::DataType::Int64, false),
        ]));
        let rows = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2]))])
            .expect("rows");
        let snapshot = e.with_seen(&rows).expect("snapshot");
        let mut restored = expiry(100);
        restored.restore(&snapshot);
        assert_eq!(restored.last_seen, vec![Some(7), Some(7)]);
        restored.restore(&rows);
        assert_eq!(restored.last_seen, vec![None, None]);
    }
}
