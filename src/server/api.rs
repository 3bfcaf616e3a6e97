//! The REST API's bodies, as typed values: each answer is built from one of these, and the
//! OpenAPI document's schemas are derived from the same types, so the two cannot drift.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::registry::{JobEntry, JobStatus};
use crate::error::VeloError;
use crate::exec::input::now_millis;
use crate::sql::script::parse_script;
use crate::sql::PlannedQuery;

/// Per job: (when, records in, records out), a sample a second over the rate window.
pub(super) type Samples = BTreeMap<String, VecDeque<(Instant, u64, u64)>>;

/// A job: its status, counters, rates, event time per input partition, state and plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct Job {
    pub name: String,
    pub app: String,
    pub status: Status,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub records_in: u64,
    pub records_out: u64,
    /// Bad records (sent to the dead-letter file, if one is set).
    pub errors: u64,
    /// Records behind the watermark by more than the allowed lateness.
    pub late: u64,
    pub rates: Rates,
    /// Partition workers.
    pub partitions: u64,
    /// Keys held in state, over every worker.
    pub state_keys: u64,
    /// An estimate of the bytes state holds, over every worker.
    pub state_bytes: u64,
    /// The job's watermark (epoch ms), once it has event time.
    pub watermark: Option<i64>,
    pub inputs: Vec<InputPartition>,
    /// Per Kafka input partition, the records between the job's position and its end.
    pub kafka_lag: Vec<KafkaLag>,
    pub workers: Vec<Worker>,
    pub checkpoint: Option<Checkpoint>,
    /// The latest bad and late records, oldest first, as the dead-letter file has them.
    #[schema(value_type = Vec<Object>)]
    pub dead_letters: Vec<Value>,
    /// The inputs' source names, the main input first (an operator's `input` indexes them).
    pub sources: Vec<String>,
    /// The plan, input by input: the main input's stages, then each side input's.
    pub operators: Vec<Operator>,
}

/// Where a job is in its life.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Stopped,
    Finished,
    Failed,
}

/// Records per second over the last 10 s.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rates {
    pub records_in_per_second: f64,
    pub records_out_per_second: f64,
}

/// One input partition's event time.
#[derive(Debug, Serialize, ToSchema)]
pub struct InputPartition {
    /// The source's name.
    pub source: Option<String>,
    pub partition: i32,
    /// Its watermark (epoch ms).
    pub watermark: i64,
    /// The newest event time read from it (epoch ms).
    pub newest_event: i64,
    /// How far its watermark is behind the newest event of any partition.
    pub lag_behind_newest_ms: Option<i64>,
    /// How far its watermark is behind wall-clock time.
    pub lag_behind_wall_ms: i64,
}

/// One Kafka input partition's consumer lag.
#[derive(Debug, Serialize, ToSchema)]
pub struct KafkaLag {
    pub source: Option<String>,
    pub topic: String,
    pub partition: i32,
    /// Records between the position read from and the partition's end.
    pub records: i64,
}

/// One partition worker's state.
#[derive(Debug, Serialize, ToSchema)]
pub struct Worker {
    pub partition: usize,
    pub state_keys: u64,
    /// An estimate of the bytes its state holds.
    pub state_bytes: u64,
    pub late: u64,
}

/// The last completed checkpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct Checkpoint {
    pub id: u64,
    /// When it completed (epoch ms).
    pub at: i64,
    pub seconds: f64,
    pub bytes: u64,
}

/// One operator of a plan, with its state and what bounds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Operator {
    /// 0 for the main input, 1.. for side inputs (the other side of a join).
    pub input: usize,
    pub source: String,
    /// Its place in its input's chain and its kind, as `2-window`.
    pub operator: String,
    pub detail: String,
    pub state: Option<String>,
    pub bounded_by: Option<String>,
}

/// A deployed app and its jobs' names.
#[derive(Debug, Serialize, ToSchema)]
pub struct App {
    pub name: String,
    pub jobs: Vec<String>,
}

/// A deployed app with its SQL and its jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppDetail {
    pub name: String,
    pub sql: String,
    pub jobs: Vec<Job>,
}

/// What a deploy started.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deployed {
    pub app: String,
    pub jobs: Vec<String>,
}

/// A deploy as JSON: the app's SQL and, optionally, its name.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeployRequest {
    pub name: Option<String>,
    pub sql: String,
}

/// A request that could not be served.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    pub error: String,
}

/// A SQL error: where it is, and the name of the statement there.
#[derive(Debug, Serialize, ToSchema)]
pub struct SqlError {
    pub error: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub statement: Option<String>,
}

/// A validation's answer when the SQL plans: each job's operators.
#[derive(Debug, Serialize, ToSchema)]
pub struct Validation {
    /// Always true here.
    pub valid: bool,
    pub jobs: Vec<PlannedJob>,
}

/// A validation's answer when the SQL is wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invalid {
    /// Always false here.
    pub valid: bool,
    #[serde(flatten)]
    pub error: SqlError,
}

/// A job as planned, before it runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlannedJob {
    pub name: String,
    pub source: String,
    /// The inputs' source names, the main input first (an operator's `input` indexes them).
    pub sources: Vec<String>,
    pub operators: Vec<Operator>,
}

/// `/health`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// `/ready`'s answer: false once a job has failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl SqlError {
    /// `e` as the API shows it: the statement is the name of the one at the error's line,
    /// where the script parses that far.
    pub fn of(sql: &str, e: &VeloError) -> SqlError {
        match e {
            VeloError::Sql {
                line,
                column,
                message,
                ..
            } => SqlError {
                error: message.clone(),
                line: Some(*line),
                column: Some(*column),
                statement: statement_at(sql, *line),
            },
            other => SqlError::unplaced(other.to_string()),
        }
    }

    /// An error at no place in the SQL (a body that is not text, say).
    pub fn unplaced(error: String) -> SqlError {
        SqlError {
            error,
            line: None,
            column: None,
            statement: None,
        }
    }
}

/// The name of the statement that holds `line`, if the script parses. Comments right above
/// a statement (its `-- @` annotations) belong to it.
fn statement_at(sql: &str, line: u64) -> Option<String> {
    let script = parse_script(sql).ok()?;
    let lines: Vec<&str> = sql.lines().collect();
    let comment_or_blank = |l: u64| {
        let text = lines.get((l as usize).checked_sub(1)?)?.trim();
        Some(text.is_empty() || text.starts_with("--"))
    };
    let below = script.statements.iter().find(|s| s.position.0 >= line);
    let annotated =
        below.filter(|s| (line..s.position.0).all(|l| comment_or_blank(l) == Some(true)));
    annotated
        .or_else(|| {
            script
                .statements
                .iter()
                .rev()
                .find(|s| s.position.0 <= line)
        })
        .and_then(|s| s.name().map(str::to_string))
}

impl PlannedJob {
    pub fn of(q: &PlannedQuery) -> PlannedJob {
        PlannedJob {
            name: q.id.clone(),
            source: q.source.clone(),
            sources: sources(q),
            operators: operators(q),
        }
    }
}

/// A query's inputs' source names, the main input first.
pub(super) fn sources(q: &PlannedQuery) -> Vec<String> {
    std::iter::once(q.source.clone())
        .chain(q.side_inputs().iter().map(|s| s.source.clone()))
        .collect()
}

/// A query's operators, input by input (the main input first, then each side input).
fn operators(q: &PlannedQuery) -> Vec<Operator> {
    let lanes = std::iter::once((q.source.as_str(), &q.stages)).chain(
        q.side_inputs()
            .iter()
            .map(|i| (i.source.as_str(), &i.stages)),
    );
    let mut operators = Vec::new();
    for (input, (source, stages)) in lanes.enumerate() {
        for (i, stage) in stages.iter().enumerate() {
            let (state, bounded_by) = match stage.state_bound() {
                Some((state, bound)) => (Some(state.to_string()), Some(bound)),
                None => (None, None),
            };
            operators.push(Operator {
                input,
                source: source.to_string(),
                operator: format!("{i}-{}", stage.kind()),
                detail: stage.describe(),
                state,
                bounded_by,
            });
        }
    }
    operators
}

impl Job {
    /// `job` now, with its rates from `samples`.
    pub(super) fn of(job: &JobEntry, samples: &Samples) -> Job {
        let m = job.metrics();
        let (rate_in, rate_out) = samples.get(job.name()).map_or((0.0, 0.0), rates);
        let now = now_millis();
        let times = m.times();
        let newest = times.values().map(|t| t.newest_ms).max();
        let sources = sources(job.plan());
        let inputs = times
            .iter()
            .map(|((input, partition), t)| InputPartition {
                source: sources.get(*input).cloned(),
                partition: *partition,
                watermark: t.watermark_ms,
                newest_event: t.newest_ms,
                lag_behind_newest_ms: newest.map(|n| n.saturating_sub(t.watermark_ms)),
                lag_behind_wall_ms: now.saturating_sub(t.watermark_ms),
            })
            .collect();
        let kafka_lag = m
            .kafka_lag()
            .into_iter()
            .map(|((input, partition), (topic, records))| KafkaLag {
                source: sources.get(input).cloned(),
                topic,
                partition,
                records,
            })
            .collect();
        let workers = m
            .worker_values()
            .into_iter()
            .enumerate()
            .map(|(partition, w)| Worker {
                partition,
                state_keys: w.state_keys,
                state_bytes: w.state_bytes,
                late: w.late,
            })
            .collect();
        let watermark = m.watermark_ms.load(Ordering::Relaxed);
        let (status, error) = match &job.status {
            JobStatus::Running => (Status::Running, None),
            JobStatus::Stopped => (Status::Stopped, None),
            JobStatus::Finished => (Status::Finished, None),
            JobStatus::Failed(e) => (Status::Failed, Some(e.clone())),
        };
        Job {
            name: job.name().to_string(),
            app: job.app.clone(),
            status,
            error,
            records_in: m.records_in.load(Ordering::Relaxed),
            records_out: m.records_out.load(Ordering::Relaxed),
            errors: m.errors.load(Ordering::Relaxed),
            late: m.late(),
            rates: Rates {
                records_in_per_second: rate_in,
                records_out_per_second: rate_out,
            },
            partitions: m.partitions.load(Ordering::Relaxed),
            state_keys: m.state_keys(),
            state_bytes: m.state_bytes(),
            watermark: (watermark > i64::MIN).then_some(watermark),
            inputs,
            kafka_lag,
            workers,
            checkpoint: m.last_checkpoint().map(|c| Checkpoint {
                id: c.id,
                at: c.at_ms,
                seconds: c.seconds,
                bytes: c.bytes,
            }),
            dead_letters: m.dead_letters(),
            operators: operators(job.plan()),
            sources,
        }
    }
}

/// Records in and out per second over the samples.
fn rates(samples: &VecDeque<(Instant, u64, u64)>) -> (f64, f64) {
    let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
        return (0.0, 0.0);
    };
    let seconds = last.0.duration_since(first.0).as_secs_f64();
    if seconds <= 0.0 {
        return (0.0, 0.0);
    }
    (
        last.1.saturating_sub(first.1) as f64 / seconds,
        last.2.saturating_sub(first.2) as f64 / seconds,
    )
}
