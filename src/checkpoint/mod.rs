//! Durable state: a job's checkpoints in a state store, and reading the latest good one back.
//!
//! Layout, under the store's root:
//! `<job>/chk-<epoch:010>/<operator>/part-<partition>.arrow` (one per operator and partition
//! worker, see `exec::snapshot`) and `<job>/chk-<epoch:010>/_manifest.json`, written last. A
//! checkpoint without a valid manifest, or whose files do not match the manifest's sizes and
//! checksums, does not count: the one before it is used. The newest `KEEP` checkpoints are
//! kept; a file is deleted only when no kept manifest lists it.

pub mod lease;
pub mod manifest;
pub mod store;
pub mod writer;

use std::collections::{BTreeMap, BTreeSet};

pub use manifest::{Manifest, SourcePosition, StateFile};
pub use store::StateStore;

use crate::error::{Result, VeloError};
use crate::exec::snapshot::{OperatorState, PartitionStates, RestoredStates};

/// Complete checkpoints kept per job.
pub const KEEP: usize = 3;

/// A checkpoint read back: its manifest and every operator's state from every partition.
pub struct Restored {
    pub manifest: Manifest,
    /// By operator name, each partition's state (the event clock under `CLOCK_STATE`).
    pub operators: RestoredStates,
}

/// What a job writes with each checkpoint besides its state.
pub struct CheckpointInfo<'a> {
    pub epoch: u64,
    pub plan: &'a [String],
    /// Where each Kafka input stood, in input order.
    pub sources: Vec<SourcePosition>,
    /// The last epoch whose output the sink has committed: its checkpoint is kept even when
    /// newer ones are, for a restore to fall back on.
    pub output_committed: Option<u64>,
}

/// The checkpoints of one job.
pub struct Checkpoints {
    store: StateStore,
    job: String,
}

impl Checkpoints {
    /// The checkpoints of `job` in `store`.
    pub fn new(store: StateStore, job: &str) -> Self {
        Checkpoints {
            store,
            job: job.to_string(),
        }
    }

    /// The store's location, for messages.
    pub fn location(&self) -> &str {
        self.store.url()
    }

    fn dir(&self, epoch: u64) -> String {
        format!("{}/chk-{epoch:010}", self.job)
    }

    fn manifest_path(&self, epoch: u64) -> String {
        format!("{}/_manifest.json", self.dir(epoch))
    }

    /// Every epoch with files in the store, oldest first, and whether it has a manifest
    /// (valid or not).
    fn epochs_stored(&self) -> Result<BTreeMap<u64, bool>> {
        let mut epochs = BTreeMap::new();
        for path in self.store.list(&self.job)? {
            let Some((epoch, file)) = path
                .strip_prefix(&format!("{}/chk-", self.job))
                .and_then(|rest| rest.split_once('/'))
            else {
                continue;
            };
            if let Ok(epoch) = epoch.parse::<u64>() {
                *epochs.entry(epoch).or_insert(false) |= file == "_manifest.json";
            }
        }
        Ok(epochs)
    }

    /// The epochs that have a manifest, oldest first.
    fn epochs(&self) -> Result<Vec<u64>> {
        Ok(self
            .epochs_stored()?
            .into_iter()
            .filter_map(|(epoch, manifest)| manifest.then_some(epoch))
            .collect())
    }

    /// The epoch a new run's first checkpoint should take: after every one in the store,
    /// complete or not, so no file of an earlier run is ever written over.
    pub fn next_epoch(&self) -> Result<u64> {
        Ok(self.epochs_stored()?.keys().last().map_or(1, |e| e + 1))
    }

    /// Writes a checkpoint: every partition's state files (Arrow IPC), then the manifest;
    /// then deletes what no kept checkpoint uses. Returns the manifest.
    pub fn write(
        &self,
        info: CheckpointInfo<'_>,
        partitions: Vec<PartitionStates>,
    ) -> Result<Manifest> {
        let width = partitions.len();
        let mut files = Vec::new();
        for (partition, states) in partitions.into_iter().enumerate() {
            for (operator, state) in states {
                let bytes = state.encode()?;
                let path = format!("{}/{operator}/part-{partition}.arrow", self.dir(info.epoch));
                files.push(StateFile {
                    operator,
                    partition,
                    path: path.clone(),
                    bytes: bytes.len() as u64,
                    checksum: manifest::checksum(&bytes),
                });
                self.store.put(&path, bytes)?;
            }
        }
        let manifest = Manifest {
            job: self.job.clone(),
            epoch: info.epoch,
            created_ms: chrono::Utc::now().timestamp_millis(),
            partitions: width,
            plan: info.plan.to_vec(),
            fingerprint: manifest::fingerprint(info.plan),
            sources: info.sources,
            output_committed: info.output_committed,
            files,
        };
        self.store
            .put(&self.manifest_path(info.epoch), manifest.encode())?;
        self.collect_garbage(info.output_committed)?;
        Ok(manifest)
    }

    /// The newest checkpoint whose manifest and files are all intact (None: there is none).
    /// A damaged one is logged and skipped.
    pub fn load_latest(&self) -> Result<Option<Restored>> {
        self.load_latest_through(None)
    }

    /// As [`Self::load_latest`], among the checkpoints up to epoch `newest` (None: all).
    pub fn load_latest_through(&self, newest: Option<u64>) -> Result<Option<Restored>> {
        let epochs = self.epochs()?;
        for epoch in epochs
            .into_iter()
            .rev()
            .filter(|e| newest.is_none_or(|n| *e <= n))
        {
            match self.load(epoch) {
                Ok(restored) => return Ok(Some(restored)),
                Err(e) => tracing::warn!(
                    job = %self.job,
                    epoch,
                    error = %e,
                    "checkpoint unusable; trying the one before"
                ),
            }
        }
        Ok(None)
    }

    fn load(&self, epoch: u64) -> Result<Restored> {
        let path = self.manifest_path(epoch);
        let bytes = self
            .store
            .get(&path)?
            .ok_or_else(|| VeloError::Execution(format!("{path} is gone")))?;
        let manifest = Manifest::decode(&bytes)?;
        let mut operators = RestoredStates::new();
        for file in &manifest.files {
            let bytes = self
                .store
                .get(&file.path)?
                .ok_or_else(|| VeloError::Execution(format!("{} is missing", file.path)))?;
            if bytes.len() as u64 != file.bytes || manifest::checksum(&bytes) != file.checksum {
                return Err(VeloError::Execution(format!(
                    "{} does not match its checksum",
                    file.path
                )));
            }
            let state = OperatorState::decode(&bytes)
                .map_err(|e| VeloError::Execution(format!("{}: {e}", file.path)))?;
            operators
                .entry(file.operator.clone())
                .or_default()
                .push(state);
        }
        Ok(Restored {
            manifest,
            operators,
        })
    }

    /// The newest checkpoint after epoch `epoch` whose manifest says the output of an epoch
    /// after `epoch` was committed (None: there is none): proof that a sink's record of
    /// its commits is behind the checkpoints.
    pub fn committed_past(&self, epoch: Option<u64>) -> Result<Option<Manifest>> {
        for e in self.epochs()?.into_iter().rev() {
            if epoch.is_some_and(|n| e <= n) {
                break;
            }
            let Some(Ok(manifest)) = self
                .store
                .get(&self.manifest_path(e))?
                .map(|b| Manifest::decode(&b))
            else {
                continue;
            };
            if manifest.output_committed > epoch {
                return Ok(Some(manifest));
            }
        }
        Ok(None)
    }

    /// Deletes every file of the job that neither one of the newest [`KEEP`] manifests nor
    /// that of epoch `committed` lists.
    fn collect_garbage(&self, committed: Option<u64>) -> Result<()> {
        let epochs = self.epochs()?;
        let mut kept: Vec<u64> = epochs.iter().rev().take(KEEP).copied().collect();
        if let Some(c) = committed.filter(|c| epochs.contains(c) && !kept.contains(c)) {
            kept.push(c);
        }
        let Some(&newest) = kept.first() else {
            return Ok(());
        };
        let mut used: BTreeSet<String> = BTreeSet::new();
        for epoch in &kept {
            used.insert(self.manifest_path(*epoch));
            // A kept manifest that cannot be read protects the files of its own directory.
            match self
                .store
                .get(&self.manifest_path(*epoch))?
                .map(|b| Manifest::decode(&b))
            {
                Some(Ok(m)) => used.extend(m.files.into_iter().map(|f| f.path)),
                _ => {
                    used.insert(format!("{}/", self.dir(*epoch)));
                }
            }
        }
        let newest_dir = self.dir(newest);
        for path in self.store.list(&self.job)? {
            let protected = used.contains(&path)
                || used.iter().any(|u| u.ends_with('/') && path.starts_with(u.as_str()))
                // Files of a checkpoint after the newest are being written.
                || path.as_str() > newest_dir.as_str() && !path.starts_with(&newest_dir);
            if !protected {
                self.store.delete(&path)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn state(n: i64) -> OperatorState {
        OperatorState::scalars_only(BTreeMap::from([("n".to_string(), n)]))
    }

    fn write(checkpoints: &Checkpoints, epoch: u64, plan: &[String]) {
        checkpoints
            .write(
                CheckpointInfo {
                    epoch,
                    plan,
                    sources: vec![SourcePosition::Kafka {
                        topic: "t".into(),
                        offsets: BTreeMap::from([(0, epoch as i64 * 10)]),
                    }],
                    output_committed: epoch.checked_sub(1).filter(|e| *e > 0),
                },
                vec![
                    vec![("1-aggregate".into(), state(epoch as i64))],
                    vec![("1-aggregate".into(), state(100 + epoch as i64))],
                ],
            )
            .expect("write");
    }

    fn open(dir: &std::path::Path) -> Checkpoints {
        Checkpoints::new(
            StateStore::open(dir.to_str().expect("path")).expect("store"),
            "job",
        )
    }

    #[test]
    fn the_newest_three_are_kept_and_nothing_else_remains() {
        let dir = tempfile::tempdir().expect("dir");
        let checkpoints = open(dir.path());
        let plan = vec!["p".to_string()];
        assert!(checkpoints.load_latest().expect("load").is_none());
        assert_eq!(checkpoints.next_epoch().expect("next"), 1);
        for epoch in 1..=5 {
            write(&checkpoints, epoch, &plan);
        }
        assert_eq!(checkpoints.epochs().expect("epochs"), vec![3, 4, 5]);
        let files = checkpoints.store.list("job").expect("list");
        assert_eq!(
            files.len(),
            3 * 3,
            "two state files and a manifest each: {files:?}"
        );
        let latest = checkpoints
            .load_latest()
            .expect("load")
            .expect("a checkpoint");
        assert_eq!(latest.manifest.epoch, 5);
        let values: Vec<i64> = latest.operators["1-aggregate"]
            .iter()
            .filter_map(|s| s.scalar("n"))
            .collect();
        assert_eq!(values, vec![5, 105]);
        assert_eq!(checkpoints.next_epoch().expect("next"), 6);
    }

    #[test]
    fn a_corrupt_or_partial_latest_checkpoint_falls_back_to_the_one_before() {
        let dir = tempfile::tempdir().expect("dir");
        let checkpoints = open(dir.path());
        let plan = vec!["p".to_string()];
        for epoch in 1..=3 {
            write(&checkpoints, epoch, &plan);
        }
        // Flip a byte of a state file of the newest checkpoint.
        let file = dir
            .path()
            .join("job/chk-0000000003/1-aggregate/part-1.arrow");
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&file, bytes).expect("write");
        let latest = checkpoints
            .load_latest()
            .expect("load")
            .expect("a checkpoint");
        assert_eq!(latest.manifest.epoch, 2);
        // A torn manifest of 2 as well: back to 1.
        std::fs::write(
            dir.path().join("job/chk-0000000002/_manifest.json"),
            b"{\"manif",
        )
        .expect("write");
        let latest = checkpoints
            .load_latest()
            .expect("load")
            .expect("a checkpoint");
        assert_eq!(latest.manifest.epoch, 1);
        assert_eq!(
            latest.manifest.sources,
            vec![SourcePosition::Kafka {
                topic: "t".into(),
                offsets: BTreeMap::from([(0, 10)])
            }]
        );
    }

    #[test]
    fn the_checkpoint_whose_output_was_committed_outlives_newer_uncommitted_ones() {
        let dir = tempfile::tempdir().expect("dir");
        let checkpoints = open(dir.path());
        let plan = vec!["p".to_string()];
        // Epoch 2's output was the last committed; four later checkpoints were taken and each
        // crashed before its transaction committed.
        for epoch in 1..=6 {
            let info = CheckpointInfo {
                epoch,
                plan: &plan,
                sources: Vec::new(),
                output_committed: Some(epoch.saturating_sub(1).min(2)).filter(|e| *e > 0),
            };
            checkpoints
                .write(
                    info,
                    vec![vec![("1-aggregate".into(), state(epoch as i64))]],
                )
                .expect("write");
        }
        assert_eq!(checkpoints.epochs().expect("epochs"), vec![2, 4, 5, 6]);
        let restored = checkpoints
            .load_latest_through(Some(2))
            .expect("load")
            .expect("checkpoint 2");
        assert_eq!(restored.manifest.epoch, 2);
        assert!(checkpoints.committed_past(Some(2)).expect("read").is_none());
        // A sink that says nothing was ever committed contradicts checkpoint 6.
        let contradiction = checkpoints.committed_past(None).expect("read");
        assert_eq!(contradiction.map(|m| m.epoch), Some(6));
    }
}
