//! The run loop of a job over its stream inputs (`StreamInputs`): it feeds the pipeline until
//! the inputs end or the job is asked to stop. With durable state it starts from the latest
//! checkpoint and sends a snapshot barrier once per checkpoint interval. When a Kafka input's
//! group takes partitions away, the pipeline stops and starts over: from the latest checkpoint
//! with durable state, otherwise empty from the committed offsets.

use std::sync::Mutex;

use super::durable::{CheckpointTrigger, StateOptions};
use super::output::{DeadLetterFile, Deliveries};
use super::stream_inputs::{Revoked, StreamInputs};
use super::JobSummary;
use crate::checkpoint::lease::JobLease;
use crate::error::Result;
use crate::exec::input::now_millis;
use crate::partition::{run_partitioned, InputEvent, PartitionOptions, PartitionStats};
use crate::sql::PlannedQuery;

/// How a job over streams runs besides its inputs.
pub(super) struct StreamRun<'a> {
    /// Durable state, with the job's checkpoint interval.
    pub durable: Option<StateOptions>,
    /// The job's lease (with durable state): renewed while the job reads, given up when it
    /// stops.
    pub lease: Option<JobLease>,
    pub dead_letter: &'a Mutex<DeadLetterFile>,
}

/// Runs the job until its inputs end or `stopped` says so (or the pipeline fails).
pub(super) fn run_streams(
    plan: &PlannedQuery,
    mut partitions: PartitionOptions,
    inputs: &mut StreamInputs<'_>,
    run: StreamRun<'_>,
    deliveries: &mut Deliveries<'_>,
    summary: &mut JobSummary,
    stopped: &dyn Fn() -> bool,
) -> Result<PartitionStats> {
    let id = &plan.id;
    let StreamRun {
        durable,
        mut lease,
        dead_letter,
    } = run;
    let mut late_records = 0;
    let mut expired_keys = 0;
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
            for kafka in inputs.kafka_mut() {
                let at = resume.positions.get(kafka.slot).cloned();
                kafka.source.start_at(at.unwrap_or_default());
            }
            trigger = Some(t);
        }
        let mut final_snapshot_taken = false;
        let mut revoked: Option<Revoked> = None;
        let metrics = &partitions.metrics;
        let stats = run_partitioned(
            plan,
            &partitions,
            || {
                // A poll's events all go in before a stop: its positions count them.
                if let Some(event) = inputs.take_queued() {
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
                let event = inputs.next(summary, dead_letter, trigger.as_mut(), &mut revoked)?;
                metrics.set_input_counts(summary.records_in, summary.errors);
                if revoked.is_some() {
                    return Ok(Some(InputEvent::Stop));
                }
                // A checkpoint, when one is due, after the event that completes a poll.
                if let Some(epoch) = trigger.as_mut().and_then(|t| t.due(false)) {
                    inputs.queue(InputEvent::Snapshot(epoch));
                }
                Ok(event)
            },
            |d| deliveries.deliver(d),
        )?;
        late_records += stats.late_records;
        expired_keys += stats.expired_keys;
        let Some(revoked) = revoked else {
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
        };
        // Commit what is done while the group may still accept it, then drop all state and
        // read again: state built from a revoked partition's records is rebuilt by its new
        // owner, and must not be emitted here too.
        tracing::info!(job = %id, source = %revoked.source, partitions = ?revoked.partitions, "partitions revoked: starting over from the committed state");
        deliveries.output.flush()?;
        for c in &mut deliveries.committers {
            c.restart(deliveries.output.sink.as_mut())?;
        }
        inputs.restart()?;
        if durable.is_none() {
            for kafka in inputs.kafka_mut() {
                kafka.source.rewind_to_committed()?;
            }
        }
    }
}
