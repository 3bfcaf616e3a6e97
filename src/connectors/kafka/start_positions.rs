//! `StartPositions`: where a restored job reads each partition from (its checkpoint's next
//! offsets), as a pure state machine that the Kafka source asks about every record.
//!
//! A seek alone is not enough. librdkafka takes one only once the partition is fetching, and
//! a rebalance that hands this member the same partitions again restarts their fetchers at
//! the group's committed offset, with no change in the assignment for the job to see (older
//! librdkafka could also fall back after a seek, librdkafka#2256). The committed offset may
//! be behind the checkpoint: records the restored state counts already. So a record before
//! its partition's start is dropped for as long as the run lasts, not only until the seek,
//! and its partition is sought again.

use std::collections::{BTreeMap, BTreeSet};

/// What to do with one record of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// A record at or after the start: read it.
    Take,
    /// Its partition's seek has not taken yet: drop it (the consumer may be anywhere).
    Wait,
    /// Before the start, after the seek took: the consumer went back. Drop it (the state
    /// holds it already); the partition is to be sought again.
    Behind,
}

/// Per partition, the first offset to read, and which partitions still need their seek.
#[derive(Debug, Clone, Default)]
pub struct StartPositions {
    /// Partition → the first offset to read (a checkpoint's next offset).
    starts: BTreeMap<i32, i64>,
    /// Partitions whose seek to their start has not taken yet: all their records are dropped
    /// (the consumer may be anywhere, even after the start).
    unsought: BTreeSet<i32>,
}

impl StartPositions {
    /// Starts at `positions` (partition → next offset); every partition still to be sought.
    pub fn new(positions: BTreeMap<i32, i64>) -> Self {
        StartPositions {
            unsought: positions.keys().copied().collect(),
            starts: positions,
        }
    }

    /// The seeks still to make, as (partition, offset).
    pub fn seeks(&self) -> Vec<(i32, i64)> {
        self.unsought
            .iter()
            .filter_map(|p| self.starts.get(p).map(|o| (*p, *o)))
            .collect()
    }

    /// Whether a seek is still to be made.
    pub fn seeking(&self) -> bool {
        !self.unsought.is_empty()
    }

    /// The seek of `partition` to its start took.
    pub fn sought(&mut self, partition: i32) {
        self.unsought.remove(&partition);
    }

    /// Whether to read the record at `offset` of `partition`. One from before the start
    /// after the seek took means the consumer went back: the partition is sought again, so
    /// the records between are not all read only to be dropped.
    pub fn admit(&mut self, partition: i32, offset: i64) -> Admit {
        if self.unsought.contains(&partition) {
            return Admit::Wait;
        }
        match self.starts.get(&partition) {
            Some(&start) if offset < start => {
                self.unsought.insert(partition);
                Admit::Behind
            }
            _ => Admit::Take,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn starts() -> StartPositions {
        StartPositions::new(BTreeMap::from([(0, 100), (1, 50)]))
    }

    #[test]
    fn every_partition_is_sought_first_and_its_records_wait_for_the_seek() {
        let mut s = starts();
        assert_eq!(s.seeks(), vec![(0, 100), (1, 50)]);
        // From the committed offset, before the seek: behind the start, or past it.
        assert_eq!(s.admit(0, 10), Admit::Wait);
        assert_eq!(s.admit(0, 150), Admit::Wait);
        s.sought(0);
        assert_eq!(s.seeks(), vec![(1, 50)]);
        assert_eq!(s.admit(0, 100), Admit::Take);
        assert_eq!(s.admit(1, 60), Admit::Wait, "partition 1 is not sought yet");
    }

    #[test]
    fn a_record_before_the_start_after_the_seek_is_dropped_and_the_partition_sought_again() {
        let mut s = starts();
        s.sought(0);
        s.sought(1);
        assert!(!s.seeking());
        assert_eq!(s.admit(0, 100), Admit::Take);
        // The fetcher went back to the group's committed offset.
        assert_eq!(s.admit(0, 40), Admit::Behind);
        assert_eq!(s.seeks(), vec![(0, 100)]);
        assert_eq!(s.admit(0, 41), Admit::Wait, "waiting for the new seek");
        s.sought(0);
        assert_eq!(s.admit(0, 99), Admit::Behind);
        s.sought(0);
        assert_eq!(s.admit(0, 100), Admit::Take);
        assert_eq!(s.admit(1, 50), Admit::Take);
    }

    #[test]
    fn a_partition_without_a_start_is_read_from_wherever_the_group_stands() {
        let mut s = starts();
        assert_eq!(s.admit(7, 0), Admit::Take);
        let mut none = StartPositions::default();
        assert!(!none.seeking());
        assert_eq!(none.admit(0, 0), Admit::Take);
    }
}
