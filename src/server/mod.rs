//! The long-running server behind `velo-sql`: deploys an app (a SQL file of several jobs)
//! and runs every job concurrently until it is told to stop, then drains: sources stop,
//! sinks flush, offsets are committed. `velo-sql server` does the same for apps deployed
//! over HTTP (`http`), and shows each job's live metrics.

mod api;
pub mod client;
mod exporter;
pub mod http;
pub mod registry;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::connectors::kafka::{topic_of, KafkaDefaults, MockKafka};
use crate::error::{Result, VeloError};
use crate::job::{plan_script, JobOptions, JobSummary, StateOptions};
use crate::sql::script::parse_script;

/// Partitions of the topics a mock cluster creates when `'<name>.partitions'` does not say.
pub const MOCK_TOPIC_PARTITIONS: i32 = 4;

/// How an app is deployed.
#[derive(Debug, Clone, Default)]
pub struct AppOptions {
    /// `--brokers`: the default `bootstrap.servers`.
    pub brokers: Option<String>,
    /// Partition workers per job (0: one per core).
    pub partitions: usize,
    /// Batches per queue between stages (0: the default).
    pub queue_depth: usize,
    /// Durable state (`--state-dir`); None keeps state in memory only.
    pub state: Option<StateOptions>,
}

/// Every Kafka topic an app names (sources, sinks, dead-letter topics), with the partitions
/// its `'<name>.partitions'` key asks for.
pub fn app_topics(sql: &str) -> Result<Vec<(String, i32)>> {
    let script = parse_script(sql)?;
    let mut topics = BTreeSet::new();
    for stmt in &script.statements {
        let mut props = stmt.properties.clone();
        props.load_config_files()?;
        let props = &props;
        for (key, value) in props.iter() {
            let Some(name) = key.strip_suffix(".type") else {
                continue;
            };
            if value != "kafka_source" && value != "kafka_sink" {
                continue;
            }
            let partitions = match props.scoped(name, "partitions") {
                Some(p) => p.parse().map_err(|_| {
                    VeloError::Config(format!("'{name}.partitions' must be a number, got '{p}'"))
                })?,
                None => MOCK_TOPIC_PARTITIONS,
            };
            topics.insert((topic_of(name, props), partitions));
            if let Some(dlq) = props.scoped(name, "dlq.topic") {
                topics.insert((dlq, 1));
            }
        }
    }
    Ok(topics.into_iter().collect())
}

/// Starts a mock cluster holding every topic the app names.
pub fn start_mock_kafka(sql: &str) -> Result<MockKafka> {
    let mock = MockKafka::start(1)?;
    for (topic, partitions) in app_topics(sql)? {
        mock.create_topic(&topic, partitions)?;
    }
    Ok(mock)
}

/// A flag SIGINT and SIGTERM set: the way to ask running jobs to drain and stop.
pub fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(|e| VeloError::io("installing the signal handler", e))?;
    }
    Ok(stop)
}

/// Plans every job of the app (nothing runs if any statement is wrong), then runs them all
/// until `stop` is set. Returns each job's outcome.
pub fn deploy_app(
    sql: &str,
    options: &AppOptions,
    stop: Arc<AtomicBool>,
) -> Result<Vec<(String, Result<JobSummary>)>> {
    let job_options = JobOptions {
        partitions: options.partitions,
        queue_depth: options.queue_depth,
        kafka: KafkaDefaults {
            brokers: options.brokers.clone(),
        },
        stop: Some(stop),
        serve: true,
        state: options.state.clone(),
        ..Default::default()
    };
    let planned = plan_script(sql, &job_options)?;
    if options.state.is_none() {
        tracing::warn!(
            "no --state-dir: state is kept in memory only, so a crash or rebalance rebuilds it \
             from the committed offsets (windows hold their offsets back; running aggregates \
             restart from zero)"
        );
    }
    Ok(planned.run_concurrently(&job_options))
}
