//! The checkpoint writer thread: encodes and stores each checkpoint off the pipeline, so the
//! workers and the sink go on while it is written. At most one checkpoint waits for the
//! thread; a second waits to be handed over (backpressure, not a growing queue).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{CheckpointInfo, Checkpoints, Manifest, SourcePosition};
use crate::error::{Result, VeloError};
use crate::exec::snapshot::PartitionStates;

/// A checkpoint to write: its barrier's epoch, where the source stood, every partition's
/// state.
pub struct Pending {
    pub epoch: u64,
    /// Where each Kafka input stood, in input order.
    pub sources: Vec<SourcePosition>,
    /// The last epoch whose output the sink has committed.
    pub output_committed: Option<u64>,
    pub partitions: Vec<PartitionStates>,
    /// When its barrier entered the pipeline (or was delivered), for the duration reported.
    pub since: Instant,
}

/// A checkpoint written: its manifest, bytes stored and time from `Pending::since`.
pub struct Written {
    pub manifest: Manifest,
    pub bytes: u64,
    pub duration: Duration,
}

/// Writes checkpoints of one job on a thread of its own.
pub struct CheckpointThread {
    to_thread: Option<SyncSender<Pending>>,
    from_thread: Receiver<Result<Written>>,
    handle: Option<JoinHandle<()>>,
    in_flight: usize,
}

impl CheckpointThread {
    /// Starts the thread writing into `checkpoints`, for a plan of state shape `plan`.
    pub fn start(checkpoints: Arc<Checkpoints>, plan: Vec<String>) -> Result<Self> {
        let (to_thread, jobs) = sync_channel::<Pending>(1);
        let (results, from_thread) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("velo-checkpoint".into())
            .spawn(move || {
                for pending in jobs {
                    let info = CheckpointInfo {
                        epoch: pending.epoch,
                        plan: &plan,
                        sources: pending.sources,
                        output_committed: pending.output_committed,
                    };
                    let written = checkpoints.write(info, pending.partitions).map(|manifest| {
                        let bytes = manifest.files.iter().map(|f| f.bytes).sum();
                        Written {
                            manifest,
                            bytes,
                            duration: pending.since.elapsed(),
                        }
                    });
                    if results.send(written).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| VeloError::io("starting the checkpoint writer", e))?;
        Ok(CheckpointThread {
            to_thread: Some(to_thread),
            from_thread,
            handle: Some(handle),
            in_flight: 0,
        })
    }

    /// Hands a checkpoint to the thread; waits while another one is waiting.
    pub fn submit(&mut self, pending: Pending) -> Result<()> {
        let sent = self.to_thread.as_ref().map(|t| t.send(pending));
        match sent {
            Some(Ok(())) => {
                self.in_flight += 1;
                Ok(())
            }
            _ => Err(VeloError::Execution("the checkpoint writer stopped".into())),
        }
    }

    /// The checkpoints written since the last call, oldest first; an error if one failed.
    pub fn completed(&mut self) -> Result<Vec<Written>> {
        let mut written = Vec::new();
        for result in self.from_thread.try_iter() {
            self.in_flight -= 1;
            written.push(result?);
        }
        Ok(written)
    }

    /// Waits until every checkpoint handed over is written; returns those not yet reported.
    pub fn drain(&mut self) -> Result<Vec<Written>> {
        let mut written = self.completed()?;
        while self.in_flight > 0 {
            let result = self
                .from_thread
                .recv()
                .map_err(|_| VeloError::Execution("the checkpoint writer stopped".into()))?;
            self.in_flight -= 1;
            written.push(result?);
        }
        Ok(written)
    }
}

impl Drop for CheckpointThread {
    fn drop(&mut self) {
        self.to_thread = None;
        if let Some(handle) = self.handle.take() {
            // A writer that panicked has nothing more to report.
            let _ = handle.join();
        }
    }
}
