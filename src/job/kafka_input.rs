//! A job's Kafka input: polls the source into the pipeline, following each poll with a commit
//! barrier and, with durable state, a snapshot barrier once per checkpoint interval. When the
//! group takes partitions away, the pipeline stops and starts over: from the latest checkpoint
//! with durable state, otherwise empty from the committed offsets.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::Mutex;
use std::time::Duration;

use super::durable::{CheckpointTrigger, StateOptions};
use super::kafka::Barrier;
use super::output::{record_bad, DeadLetterFile, Deliveries};
use super::JobSummary;
use crate::checkpoint::lease::JobLease;
use crate::connectors::kafka::{KafkaSource, KafkaSourceConfig};
use crate::error::Result;
use crate::exec::input::now_millis;
use crate::partition::{run_partitioned, InputEvent, PartitionOptions, PartitionStats};
use crate::sql::PlannedQuery;

/// How long a Kafka poll waits for a first message before the job counts as idle.
const KAFKA_POLL_WAIT: Duration = Duration::from_millis(100);

/// What a Kafka job reads and how.
pub(super) struct KafkaInput<'a> {
    pub config: &'a KafkaSourceConfig,
    pub source: &'a mut KafkaSource,
    /// To the offset committer (None with durable state, which commits on checkpoints).
    pub barriers: Option<Sender<Barrier>>,
    /// Durable state, with the job's checkpoint interval.
    pub durable: Option<StateOptions>,
    /// The job's lease (with durable state): renewed while the job reads, given up when it
    /// stops.
    pub lease: Option<JobLease>,
    pub dead_letter: &'a Mutex<DeadLetterFile>,
}

/// Runs the job until `stopped` says so (or the pipeline fails).
pub(super) fn run_kafka(
    plan: &PlannedQuery,
    mut partitions: PartitionOptions,
    input: KafkaInput<'_>,
    deliveries: &mut Deliveries<'_>,
    summary: &mut JobSummary,
    stopped: &dyn Fn() -> bool,
) -> Result<PartitionStats> {
    let id = &plan.id;
    let KafkaInput {
        config,
        source,
        barriers,
        durable,
        mut lease,
        dead_letter,
    } = input;
    let mut barrier = 0u64;
    let mut late_records = 0;
    let mut expired_keys = 0;
    tracing::info!(job = %id, topic = %config.topic, "reading Kafka");
    loop {
        // With durable state, (re)start from the latest checkpoint: its state, and its
        // positions once the group assigns the partitions.
        let mut trigger: Option<CheckpointTrigger> = None;
        if let (Some(writer), Some(options)) = (deliveries.checkpoints.as_mut(), &durable) {
            let (resume, t) = writer.resume(
                plan,
                options.reset,
                options.interval,
                deliveries.output.sink.as_mut(),
            )?;
            if let Some(sink) = deliveries.output.sink.as_mut() {
                sink.begin_epochs(resume.epoch, resume.next_epoch)?;
            }
            partitions.restore = resume.states;
            // The checkpoint's positions are the truth, not the group's committed offsets.
            source.start_at(resume.positions);
            trigger = Some(t);
        }
        let mut final_snapshot_taken = false;
        // Events waiting to be handed out: a poll can yield an assignment change, a batch and
        // its barriers at once.
        let mut queued: VecDeque<InputEvent> = VecDeque::new();
        let mut revoked = Vec::new();
        let stats = run_partitioned(
            plan,
            &partitions,
            || {
                if let Some(event) = queued.pop_front() {
                    return Ok(Some(event));
                }
                if let Some(lease) = lease.as_mut() {
                    lease.renew(now_millis())?;
                }
                if stopped() {
                    // A last checkpoint, so that a restart resumes exactly here.
                    if let Some(t) = trigger.as_mut().filter(|_| !final_snapshot_taken) {
                        final_snapshot_taken = true;
                        return Ok(t.due(true).map(InputEvent::Snapshot));
                    }
                    return Ok(Some(InputEvent::Stop));
                }
                let polled = source.next_batch(KAFKA_POLL_WAIT)?;
                // After the poll: the group join that assigns partitions happens inside it, and
                // the clock must know every partition before a batch counts.
                if let Some(change) = source.assignment_if_changed()? {
                    if !change.revoked.is_empty() {
                        // The state of every key may hold records of a revoked partition:
                        // stop, and start over (below). The polled batch is read again.
                        revoked = change.revoked;
                        return Ok(Some(InputEvent::Stop));
                    }
                    tracing::info!(job = %id, partitions = ?change.assigned, "partitions assigned");
                    queued.push_back(InputEvent::Partitions(change.assigned));
                }
                // Every poll ends with a commit barrier; an idle one (no records, no offsets)
                // still lets the output side commit what is done.
                let next_offsets = match polled {
                    Some(polled) => {
                        summary.records_in += polled.batch.num_rows() as u64;
                        record_bad(summary, dead_letter, &config.name, polled.bad_records)?;
                        queued.push_back(InputEvent::PartitionedBatch {
                            batch: polled.batch,
                            runs: polled.runs,
                        });
                        polled.next_offsets
                    }
                    None => {
                        queued.push_back(InputEvent::Idle);
                        BTreeMap::new()
                    }
                };
                if let Some(t) = trigger.as_mut() {
                    t.advance(&next_offsets);
                }
                if let Some(barriers) = &barriers {
                    barrier += 1;
                    // The committer may have stopped with an error; the output side reports it.
                    let _ = barriers.send(Barrier {
                        id: barrier,
                        next_offsets,
                    });
                    queued.push_back(InputEvent::Checkpoint(barrier));
                }
                if let Some(epoch) = trigger.as_mut().and_then(|t| t.due(false)) {
                    queued.push_back(InputEvent::Snapshot(epoch));
                }
                Ok(queued.pop_front())
            },
            |d| deliveries.deliver(d),
        )?;
        late_records += stats.late_records;
        expired_keys += stats.expired_keys;
        if revoked.is_empty() {
            if let (Some(lease), Some(writer)) = (lease.as_mut(), deliveries.checkpoints.as_mut()) {
                // The last checkpoint is durable before a standby may take over.
                writer.finish(deliveries.output.sink.as_mut())?;
                lease.release()?;
            }
            return Ok(PartitionStats {
                late_records,
                expired_keys,
                ..stats
            });
        }
        // Commit what is done while the group may still accept it, then drop all state and
        // read the partitions kept again: state built from a revoked partition's records is
        // rebuilt by its new owner, and must not be emitted here too.
        tracing::info!(job = %id, ?revoked, "partitions revoked: starting over from the committed state");
        deliveries.output.flush()?;
        if let Some(c) = deliveries.committer.as_mut() {
            c.restart(deliveries.output.sink.as_mut())?;
        }
        source.rewind_to_committed()?;
    }
}
