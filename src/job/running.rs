//! Jobs running in the background: `PlannedScript::spawn` starts each job on its own thread
//! and hands back a `RunningJob` (its stop flag, live metrics and thread), so a server can
//! watch and stop each one while the others go on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{run_job, JobOptions, JobSummary, PlannedScript};
use crate::error::{Result, VeloError};
use crate::metrics::JobMetrics;
use crate::sql::PlannedQuery;

/// One job started by `PlannedScript::spawn`.
pub struct RunningJob {
    pub name: String,
    /// The job's plan (for a server to show).
    pub plan: PlannedQuery,
    /// Set to drain and stop this job alone: its sources stop, its sink flushes and its
    /// offsets are committed.
    pub stop: Arc<AtomicBool>,
    pub metrics: Arc<JobMetrics>,
    thread: Option<JoinHandle<Result<JobSummary>>>,
}

impl RunningJob {
    /// True once the job's thread has returned.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Asks the job to drain and stop.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits for the job's end: its summary, or why it failed. None when already taken.
    pub fn join(&mut self) -> Option<Result<JobSummary>> {
        let thread = self.thread.take()?;
        Some(match thread.join() {
            Ok(result) => result,
            Err(_) => Err(VeloError::Execution(format!(
                "job '{}' panicked",
                self.name
            ))),
        })
    }
}

impl PlannedScript {
    /// Starts every job at once, each on its own thread with its own stop flag, and returns
    /// at once. A job reads an earlier one's output from that one's Kafka topic (`serve`).
    pub fn spawn(self, options: &JobOptions) -> Result<Vec<RunningJob>> {
        let mut running: Vec<RunningJob> = Vec::with_capacity(self.jobs.len());
        for job in self.jobs {
            let name = job.plan.id.clone();
            let plan = job.plan.clone();
            tracing::info!(
                job = %name,
                source = %job.plan.source,
                input = %job.input.describe(),
                sink = ?job.sink,
                partitions = ?job.partitions.unwrap_or(options.partitions),
                "job started"
            );
            let stop = Arc::new(AtomicBool::new(false));
            let metrics = Arc::new(JobMetrics::default());
            let job_options = JobOptions {
                stop: Some(Arc::clone(&stop)),
                ..options.clone()
            };
            let job_metrics = Arc::clone(&metrics);
            let job_name = name.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("velo-job-{name}"))
                .spawn(move || {
                    let outputs = BTreeMap::new();
                    let result = run_job(job, &outputs, &job_options, &job_metrics)
                        .map(|(summary, _)| summary);
                    log_end(&job_name, &result);
                    result
                });
            let thread = match spawned {
                Ok(thread) => thread,
                Err(e) => {
                    // The jobs already started stop with the app: it starts whole or not at all.
                    for job in &mut running {
                        job.request_stop();
                        let _ = job.join();
                    }
                    return Err(VeloError::io("starting a job thread", e));
                }
            };
            running.push(RunningJob {
                name,
                plan,
                stop,
                metrics,
                thread: Some(thread),
            });
        }
        Ok(running)
    }

    /// Runs every job at once until its input ends or `options.stop` is set, which stops
    /// them all. A job that fails reports its error and stops alone.
    pub fn run_concurrently(self, options: &JobOptions) -> Vec<(String, Result<JobSummary>)> {
        let mut jobs = match self.spawn(options) {
            Ok(jobs) => jobs,
            Err(e) => return vec![("app".to_string(), Err(e))],
        };
        let stopping = || {
            options
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::SeqCst))
        };
        while !jobs.iter().all(RunningJob::is_finished) {
            if stopping() {
                jobs.iter().for_each(RunningJob::request_stop);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        jobs.iter_mut()
            .map(|job| {
                let result = job.join().unwrap_or_else(|| {
                    Err(VeloError::Execution(format!(
                        "job '{}' was joined twice",
                        job.name
                    )))
                });
                (job.name.clone(), result)
            })
            .collect()
    }
}

fn log_end(name: &str, result: &Result<JobSummary>) {
    match result {
        Ok(s) => tracing::info!(
            job = %name,
            records_in = s.records_in,
            records_out = s.records_out,
            errors = s.errors,
            late = s.late_records,
            state_keys = s.state_keys,
            expired_keys = s.expired_keys,
            seconds = s.seconds,
            "job stopped"
        ),
        Err(e) => tracing::error!(job = %name, error = %e, "job failed"),
    }
}
