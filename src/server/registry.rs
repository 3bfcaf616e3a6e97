//! The server's apps and their running jobs. Deploying plans every statement first, so a bad
//! one starts nothing; each job then runs on its own threads with its own stop flag. Only
//! the HTTP side takes the registry's lock, never a job.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::connectors::kafka::{KafkaDefaults, MockKafka};
use crate::error::{Result, VeloError};
use crate::job::{plan_script, JobOptions, JobSummary, RunningJob};
use crate::metrics::JobMetrics;
use crate::server::{app_topics, AppOptions};
use crate::sql::PlannedQuery;

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus {
    Running,
    /// Stopped on request (a stop, a delete or the server's shutdown), drained and committed.
    Stopped,
    /// Its bounded input ended.
    Finished,
    Failed(String),
}

impl JobStatus {
    /// The status's name in the API.
    pub fn name(&self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Stopped => "stopped",
            JobStatus::Finished => "finished",
            JobStatus::Failed(_) => "failed",
        }
    }
}

/// One job of an app, running or done.
pub struct JobEntry {
    pub app: String,
    pub running: RunningJob,
    /// Its summary once its thread has returned.
    pub summary: Option<JobSummary>,
    pub status: JobStatus,
    stop_requested: bool,
}

impl JobEntry {
    /// Takes the job's outcome once its thread has returned.
    fn reap(&mut self) {
        if self.status != JobStatus::Running || !self.running.is_finished() {
            return;
        }
        self.status = match self.running.join() {
            Some(Ok(summary)) => {
                self.summary = Some(summary);
                match self.stop_requested {
                    true => JobStatus::Stopped,
                    false => JobStatus::Finished,
                }
            }
            Some(Err(e)) => JobStatus::Failed(e.to_string()),
            None => return,
        };
    }

    fn request_stop(&mut self) {
        self.stop_requested = true;
        self.running.request_stop();
    }

    pub fn metrics(&self) -> &Arc<JobMetrics> {
        &self.running.metrics
    }

    pub fn plan(&self) -> &PlannedQuery {
        &self.running.plan
    }

    pub fn name(&self) -> &str {
        &self.running.name
    }
}

/// A deployed app: its SQL and its jobs' names.
#[derive(Debug, Clone)]
pub struct App {
    pub name: String,
    pub sql: String,
    pub jobs: Vec<String>,
}

/// Why a deploy was refused.
#[derive(Debug)]
pub enum DeployError {
    /// An app of that name runs already.
    Exists(String),
    /// A job of the app has the name of another app's job.
    JobExists(String),
    /// A statement does not plan.
    Invalid(VeloError),
}

#[derive(Default)]
struct State {
    apps: BTreeMap<String, App>,
    jobs: BTreeMap<String, JobEntry>,
    deployed: usize,
    /// Topics created on the mock cluster.
    topics: BTreeSet<String>,
}

/// Every app the server runs.
pub struct Registry {
    options: AppOptions,
    /// A mock cluster where each app's topics are created as it deploys.
    mock: Option<MockKafka>,
    state: Mutex<State>,
}

impl Registry {
    /// An empty registry whose jobs run with `options`.
    pub fn new(options: AppOptions, mock: Option<MockKafka>) -> Self {
        Registry {
            options,
            mock,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The options every job runs with.
    pub fn job_options(&self) -> JobOptions {
        JobOptions {
            partitions: self.options.partitions,
            queue_depth: self.options.queue_depth,
            kafka: KafkaDefaults {
                brokers: self.options.brokers.clone(),
            },
            serve: true,
            state: self.options.state.clone(),
            ..Default::default()
        }
    }

    /// Plans `sql` and starts its jobs as app `name` (None: `app-N`). Nothing starts when a
    /// statement is wrong or a name is taken.
    pub fn deploy(&self, name: Option<String>, sql: &str) -> Result<App, DeployError> {
        let options = self.job_options();
        let planned = plan_script(sql, &options).map_err(DeployError::Invalid)?;
        let mut state = self.lock();
        let name = name.unwrap_or_else(|| format!("app-{}", state.deployed + 1));
        if state.apps.contains_key(&name) {
            return Err(DeployError::Exists(name));
        }
        let names: Vec<String> = planned.queries().map(|q| q.id.clone()).collect();
        if let Some(taken) = names.iter().find(|n| state.jobs.contains_key(*n)) {
            return Err(DeployError::JobExists(taken.clone()));
        }
        if let Some(mock) = &self.mock {
            for (topic, partitions) in app_topics(sql).map_err(DeployError::Invalid)? {
                if state.topics.insert(topic.clone()) {
                    mock.create_topic(&topic, partitions)
                        .map_err(DeployError::Invalid)?;
                }
            }
        }
        let running = planned.spawn(&options).map_err(DeployError::Invalid)?;
        for job in running {
            let entry = JobEntry {
                app: name.clone(),
                running: job,
                summary: None,
                status: JobStatus::Running,
                stop_requested: false,
            };
            state.jobs.insert(entry.name().to_string(), entry);
        }
        let app = App {
            name: name.clone(),
            sql: sql.to_string(),
            jobs: names,
        };
        state.deployed += 1;
        state.apps.insert(name, app.clone());
        Ok(app)
    }

    /// Every app, by name.
    pub fn apps(&self) -> Vec<App> {
        self.lock().apps.values().cloned().collect()
    }

    pub fn app(&self, name: &str) -> Option<App> {
        self.lock().apps.get(name).cloned()
    }

    /// Runs `f` over every job (with its outcome taken if it ended), in name order.
    pub fn with_jobs<T>(&self, f: impl FnOnce(&[&JobEntry]) -> T) -> T {
        let mut state = self.lock();
        state.jobs.values_mut().for_each(JobEntry::reap);
        let jobs: Vec<&JobEntry> = state.jobs.values().collect();
        f(&jobs)
    }

    /// Asks job `name` to drain and stop; waits for it. False when there is no such job.
    pub fn stop_job(&self, name: &str) -> bool {
        if !self.request_stop(|job| job.name() == name) {
            return false;
        }
        self.wait_for(|job| job.name() == name);
        true
    }

    /// Stops app `name`'s jobs, waits for them and forgets the app. False when there is none.
    pub fn delete_app(&self, name: &str) -> bool {
        if !self.lock().apps.contains_key(name) {
            return false;
        }
        self.request_stop(|job| job.app == name);
        self.wait_for(|job| job.app == name);
        let mut state = self.lock();
        state.apps.remove(name);
        state.jobs.retain(|_, job| job.app != name);
        true
    }

    /// Stops every job and waits for them all (the server's shutdown).
    pub fn shutdown(&self) {
        self.request_stop(|_| true);
        self.wait_for(|_| true);
    }

    /// True when every job that was asked to run is running or has ended cleanly.
    pub fn ready(&self) -> bool {
        self.with_jobs(|jobs| {
            jobs.iter()
                .all(|j| !matches!(j.status, JobStatus::Failed(_)))
        })
    }

    fn request_stop(&self, which: impl Fn(&JobEntry) -> bool) -> bool {
        let mut state = self.lock();
        let mut any = false;
        for job in state.jobs.values_mut().filter(|j| which(j)) {
            job.request_stop();
            any = true;
        }
        any
    }

    /// Waits, without holding the lock, until the jobs `which` picks have ended.
    fn wait_for(&self, which: impl Fn(&JobEntry) -> bool) {
        loop {
            let done = {
                let mut state = self.lock();
                state.jobs.values_mut().for_each(JobEntry::reap);
                state
                    .jobs
                    .values()
                    .filter(|j| which(j))
                    .all(|j| j.status != JobStatus::Running)
            };
            if done {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
