//! Durable state for a Kafka job: aligned checkpoints on the pipeline's barriers, and the
//! restore that starts a job where its latest checkpoint left off.
//!
//! The reading side (`CheckpointTrigger`) tracks where the source stands and, once per
//! interval, sends a snapshot barrier after a batch along with those positions. The barrier
//! passes every worker, each hands over its state, and the output side (`CheckpointWriter`)
//! receives it after every output of the input before it. It flushes the sink (so that output
//! is acknowledged) and gives the checkpoint to the checkpoint thread, which writes the state
//! files and the manifest. Once that is durable, the output side publishes an exactly-once
//! sink's rows and commits the positions to the consumer group, for monitoring tools only: a
//! restore reads positions from the manifest. A crash at any point leaves the previous
//! checkpoint intact, and the records after it are read again (at-least-once output; state
//! counts each record once).

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;

use crate::checkpoint::lease::{Acquired, JobLease};
use crate::checkpoint::manifest::plan_change;
use crate::checkpoint::writer::{CheckpointThread, Pending, Written};
use crate::checkpoint::{Checkpoints, SourcePosition, StateStore};
use crate::connectors::kafka::KafkaSource;
use crate::connectors::{CommittedOutput, Sink};
use crate::error::{Result, VeloError};
use crate::exec::input::now_millis;
use crate::exec::processor::QueryProcessor;
use crate::exec::snapshot::{PartitionStates, RestoredStates};
use crate::sql::PlannedQuery;

/// How often a job checkpoints when neither `--checkpoint-interval` nor the statement's
/// `-- @checkpoint_interval` says.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// Where a job's Kafka inputs stand: per input (in the job's order of its Kafka inputs), per
/// partition, the next offset to read.
pub type Positions = Vec<BTreeMap<i32, i64>>;

/// A checkpoint the reading side asked for: its epoch and where the sources stood.
type DuePositions = (u64, Positions);

/// Durable-state settings of a run (`--state-dir`, `--checkpoint-interval`, `--reset-state`).
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// A directory, `file://` URL, or (with the features) `s3://` / `gs://` URL.
    pub location: String,
    /// Time between checkpoints (a statement's `-- @checkpoint_interval` overrides it).
    pub interval: Duration,
    /// Ignore existing checkpoints (after a plan change) instead of refusing to start.
    pub reset: bool,
    /// This instance's name in job leases (`--instance-id`): a restarted instance of the
    /// same name takes its lease back at once.
    pub instance: String,
    /// A lease not renewed for this long goes to a standby (`--lease-timeout`).
    pub lease_timeout: Duration,
}

impl StateOptions {
    /// Settings for `location` with the default interval and lease timeout, and an instance
    /// name of this host and process.
    pub fn at(location: &str) -> Self {
        StateOptions {
            location: location.to_string(),
            interval: DEFAULT_CHECKPOINT_INTERVAL,
            reset: false,
            instance: default_instance(),
            lease_timeout: DEFAULT_LEASE_TIMEOUT,
        }
    }
}

/// How long a job's lease outlives its holder's last renewal unless `--lease-timeout` says.
pub const DEFAULT_LEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// This host and process, as an instance name.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    format!("{host}-{}", std::process::id())
}

/// Waits until this instance holds job `job`'s lease (None: `stopped` said stop first).
pub fn take_lease(
    job: &str,
    options: &StateOptions,
    stopped: &dyn Fn() -> bool,
) -> Result<Option<JobLease>> {
    let store = StateStore::open(&options.location)?;
    let mut lease = JobLease::new(store, job, &options.instance, options.lease_timeout);
    let mut announced = false;
    loop {
        match lease.try_acquire(now_millis())? {
            Acquired::Held => {
                tracing::info!(job, instance = %options.instance, lease = %lease.location(), "holding the job's lease");
                return Ok(Some(lease));
            }
            Acquired::HeldBy(holder) => {
                if !announced {
                    announced = true;
                    tracing::info!(
                        job,
                        holder = %holder.owner,
                        lease = %lease.location(),
                        "standby: another instance runs this job; waiting for its lease"
                    );
                }
            }
        }
        if stopped() {
            return Ok(None);
        }
        std::thread::sleep(
            (options.lease_timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1)),
        );
    }
}

/// What a checkpointing job starts from.
pub struct Resume {
    /// The state to load (None: no checkpoint, start empty).
    pub states: Option<Arc<RestoredStates>>,
    /// Where to read each Kafka input from, per partition (empty: the group's committed
    /// offsets).
    pub positions: Positions,
    /// The checkpoint restored (None: none).
    pub epoch: Option<u64>,
    /// The epoch of the next checkpoint.
    pub next_epoch: u64,
}

/// Checkpoint counts and sizes, for the job's summary.
#[derive(Debug, Clone, Default)]
pub struct CheckpointStats {
    pub completed: u64,
    pub last_epoch: Option<u64>,
    pub last_bytes: u64,
    pub last_duration: Duration,
    /// Time to read and check the checkpoint the job started from.
    pub restore_duration: Option<Duration>,
}

/// Opens a job's checkpoints and checks its plan can be checkpointed at all.
pub fn open(plan: &PlannedQuery, options: &StateOptions) -> Result<Checkpoints> {
    // A stateful operator without snapshot support says so here, before anything runs.
    QueryProcessor::new(plan.clone())?
        .snapshot()
        .map_err(|e| VeloError::Config(format!("job '{}': {e}", plan.id)))?;
    Ok(Checkpoints::new(
        StateStore::open(&options.location)?,
        &plan.id,
    ))
}

/// The reading side: where the source stands, and when the next checkpoint is due.
pub struct CheckpointTrigger {
    interval: Duration,
    last: Instant,
    next_epoch: u64,
    /// Per Kafka input and partition, the next offset after every record handed to the
    /// pipeline.
    positions: Positions,
    to_writer: Sender<DuePositions>,
}

impl CheckpointTrigger {
    /// A trigger that numbers checkpoints from `next_epoch`, and its writer's receiving end.
    pub fn new(
        interval: Duration,
        next_epoch: u64,
        positions: Positions,
    ) -> (Self, Receiver<DuePositions>) {
        let (to_writer, from_trigger) = channel();
        let trigger = CheckpointTrigger {
            interval,
            last: Instant::now(),
            next_epoch,
            positions,
            to_writer,
        };
        (trigger, from_trigger)
    }

    /// Records that Kafka input `input`'s records before `next_offsets` were handed to the
    /// pipeline.
    pub fn advance(&mut self, input: usize, next_offsets: &BTreeMap<i32, i64>) {
        if self.positions.len() <= input {
            self.positions.resize(input + 1, BTreeMap::new());
        }
        for (partition, offset) in next_offsets {
            let at = self.positions[input].entry(*partition).or_insert(*offset);
            *at = (*at).max(*offset);
        }
    }

    /// The epoch of a checkpoint to take now, if one is due (or `force`d); its positions go
    /// to the writer.
    pub fn due(&mut self, force: bool) -> Option<u64> {
        if !force && self.last.elapsed() < self.interval {
            return None;
        }
        self.last = Instant::now();
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        // The writer may have stopped with an error; the output side reports it.
        let _ = self.to_writer.send((epoch, self.positions.clone()));
        Some(epoch)
    }
}

/// The output side: has each checkpoint written once its barrier has passed every worker,
/// and acts on it once it is durable.
pub struct CheckpointWriter {
    checkpoints: Arc<Checkpoints>,
    thread: CheckpointThread,
    /// Each Kafka input's topic and consumer, in the job's order of its Kafka inputs.
    inputs: Vec<(String, Arc<BaseConsumer>)>,
    from_trigger: Receiver<DuePositions>,
    /// Positions of checkpoints asked for and not yet handed to the thread.
    pending: BTreeMap<u64, Positions>,
    /// The positions last committed to the groups (only changes are committed: a consumer
    /// still joining the group has its commits refused).
    committed: Positions,
    /// The last epoch whose output the sink committed (or that the job restored).
    output_committed: Option<u64>,
    pub stats: CheckpointStats,
}

impl CheckpointWriter {
    /// A writer for the job's checkpoints of `plan`, committing the offsets of `inputs` (each
    /// Kafka input's topic and consumer); it takes positions from a trigger once it
    /// [`Self::resume`]s.
    pub fn new(
        checkpoints: Checkpoints,
        plan: &PlannedQuery,
        inputs: Vec<(String, Arc<BaseConsumer>)>,
    ) -> Result<Self> {
        let checkpoints = Arc::new(checkpoints);
        let thread = CheckpointThread::start(Arc::clone(&checkpoints), plan.state_shape())?;
        Ok(CheckpointWriter {
            checkpoints,
            thread,
            inputs,
            from_trigger: channel().1,
            pending: BTreeMap::new(),
            committed: Vec::new(),
            output_committed: None,
            stats: CheckpointStats::default(),
        })
    }

    /// Starts (or starts over) from the latest good checkpoint, refusing one taken with
    /// another plan unless `reset` (which ignores only earlier runs' checkpoints); returns
    /// what to start from and the trigger of the checkpoints to come, numbered after every
    /// one in the store.
    pub fn resume(
        &mut self,
        plan: &PlannedQuery,
        reset: bool,
        interval: Duration,
        mut sink: Option<&mut Box<dyn Sink>>,
    ) -> Result<(Resume, CheckpointTrigger)> {
        // Checkpoints still being written count: the latest may be one of them.
        self.finish(sink.as_deref_mut())?;
        let committed = match sink {
            Some(sink) => sink.recover()?,
            None => CommittedOutput::Untracked,
        };
        // --reset-state ignores the checkpoints of earlier runs, not this run's own.
        let reset = reset && self.stats.completed == 0;
        let mut resume = self.read_latest(plan, reset, committed)?;
        self.output_committed = resume.epoch;
        let next_epoch = self.checkpoints.next_epoch()?;
        resume.next_epoch = next_epoch;
        let (trigger, from_trigger) =
            CheckpointTrigger::new(interval, next_epoch, resume.positions.clone());
        self.from_trigger = from_trigger;
        self.pending.clear();
        self.committed = resume.positions.clone();
        Ok((resume, trigger))
    }

    /// The latest good checkpoint whose output `committed` covers.
    fn read_latest(
        &mut self,
        plan: &PlannedQuery,
        reset: bool,
        committed: CommittedOutput,
    ) -> Result<Resume> {
        let checkpoints = &self.checkpoints;
        let started = Instant::now();
        let empty = Resume {
            states: None,
            positions: Vec::new(),
            epoch: None,
            next_epoch: 0,
        };
        if reset {
            tracing::warn!(job = %plan.id, location = checkpoints.location(), "--reset-state: existing checkpoints are ignored");
            return Ok(empty);
        }
        let restored = match committed {
            CommittedOutput::Untracked => checkpoints.load_latest()?,
            CommittedOutput::Through(through) => {
                if let Some(m) = checkpoints.committed_past(through)? {
                    return Err(VeloError::Execution(format!(
                        "job '{}': its sink says its output is committed through epoch {through:?},                          but checkpoint {} in {} was taken after epoch {:?} had been committed:                          the broker lost the sink's commit marker (librdkafka's mock cluster drops                          transactional offset commits; exactly-once Kafka output needs a real                          broker). Restart with --reset-state to start over",
                        plan.id,
                        m.epoch,
                        checkpoints.location(),
                        m.output_committed
                    )));
                }
                match through {
                    Some(epoch) => checkpoints.load_latest_through(Some(epoch))?,
                    None => None,
                }
            }
        };
        let Some(restored) = restored else {
            tracing::info!(job = %plan.id, location = checkpoints.location(), ?committed, "no checkpoint to restore: starting with empty state");
            return Ok(empty);
        };
        let manifest = &restored.manifest;
        if let Some(change) = plan_change(&manifest.plan, &plan.state_shape()) {
            return Err(VeloError::Config(format!(
                "job '{}' changed since its checkpoint {} in {}: {change}. Its state does not fit \
                 the new plan; restart with --reset-state to drop it",
                plan.id,
                manifest.epoch,
                checkpoints.location()
            )));
        }
        let then: Vec<&str> = manifest
            .sources
            .iter()
            .map(|SourcePosition::Kafka { topic, .. }| topic.as_str())
            .collect();
        let now: Vec<&str> = self.inputs.iter().map(|(t, _)| t.as_str()).collect();
        if !then.is_empty() && then != now {
            return Err(VeloError::Config(format!(
                "job '{}' checkpointed its reading of {then:?} and now reads {now:?}: restart \
                 with --reset-state to drop its state",
                plan.id
            )));
        }
        let positions: Positions = manifest
            .sources
            .iter()
            .map(|SourcePosition::Kafka { offsets, .. }| offsets.clone())
            .collect();
        self.stats.restore_duration = Some(started.elapsed());
        self.stats.last_epoch = Some(manifest.epoch);
        tracing::info!(
            job = %plan.id,
            epoch = manifest.epoch,
            partitions_then = manifest.partitions,
            ?committed,
            ?positions,
            ms = started.elapsed().as_millis() as u64,
            "restored state from checkpoint"
        );
        Ok(Resume {
            states: Some(Arc::new(restored.operators)),
            positions,
            epoch: Some(manifest.epoch),
            next_epoch: 0,
        })
    }

    /// The barrier of `epoch` came out of every worker with their states: make the output
    /// before it durable, close an exactly-once sink's epoch, and hand the checkpoint to the
    /// writer thread; act on the checkpoints written meanwhile.
    pub fn on_snapshot(
        &mut self,
        epoch: u64,
        partitions: Vec<PartitionStates>,
        mut sink: Option<&mut Box<dyn Sink>>,
    ) -> Result<()> {
        let since = Instant::now();
        // The checkpoint before this one is durable and its output committed first: an
        // exactly-once Kafka sink has one transaction open at a time.
        self.finish(sink.as_deref_mut())?;
        self.pending.extend(self.from_trigger.try_iter());
        let positions = self.pending.remove(&epoch).ok_or_else(|| {
            VeloError::Execution(format!("checkpoint {epoch} has no source positions"))
        })?;
        self.pending.retain(|e, _| *e > epoch);
        if let Some(sink) = sink.as_deref_mut() {
            sink.flush()?;
            sink.seal_epoch(epoch)?;
        }
        self.thread.submit(Pending {
            epoch,
            sources: self
                .inputs
                .iter()
                .enumerate()
                .map(|(k, (topic, _))| SourcePosition::Kafka {
                    topic: topic.clone(),
                    offsets: positions.get(k).cloned().unwrap_or_default(),
                })
                .collect(),
            output_committed: self.output_committed,
            partitions,
            since,
        })?;
        self.poll(sink)
    }

    /// Acts on the checkpoints written since the last call.
    pub fn poll(&mut self, sink: Option<&mut Box<dyn Sink>>) -> Result<()> {
        let written = self.thread.completed()?;
        self.on_written(written, sink)
    }

    /// Waits for every checkpoint handed to the writer and acts on them (the job stops, or
    /// starts over).
    pub fn finish(&mut self, sink: Option<&mut Box<dyn Sink>>) -> Result<()> {
        let written = self.thread.drain()?;
        self.on_written(written, sink)
    }

    /// Each checkpoint is durable: publish an exactly-once sink's rows before it, then commit
    /// its positions to the group.
    fn on_written(
        &mut self,
        written: Vec<Written>,
        mut sink: Option<&mut Box<dyn Sink>>,
    ) -> Result<()> {
        for w in written {
            let epoch = w.manifest.epoch;
            if let Some(sink) = sink.as_deref_mut() {
                sink.commit_epoch(epoch)?;
            }
            self.output_committed = Some(epoch);
            for (k, SourcePosition::Kafka { offsets, .. }) in w.manifest.sources.iter().enumerate()
            {
                if self.committed.len() <= k {
                    self.committed.resize(k + 1, BTreeMap::new());
                }
                if let Some((topic, consumer)) = self.inputs.get(k) {
                    if *offsets != self.committed[k] {
                        KafkaSource::commit(consumer, topic, offsets)?;
                        self.committed[k] = offsets.clone();
                    }
                }
            }
            self.stats.completed += 1;
            self.stats.last_epoch = Some(epoch);
            self.stats.last_bytes = w.bytes;
            self.stats.last_duration = w.duration;
            tracing::debug!(
                epoch,
                bytes = w.bytes,
                ms = w.duration.as_millis() as u64,
                "checkpoint written"
            );
        }
        Ok(())
    }
}
