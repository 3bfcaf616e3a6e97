//! Runs a script's jobs over bounded (or followed) inputs: source → engine → sink.
//! Every statement is planned before anything runs, so a bad later statement stops nothing
//! half-way.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::record_batch::RecordBatch;

use self::durable::{CheckpointStats, CheckpointWriter};
use self::inputs::{resolve_input, Declared, JobInput, Upstream};
use self::kafka::{Barrier, OffsetCommitter};
use self::keys::{check_statement_keys, Names};
use self::output::{lock, progress_bar, record_bad, DeadLetterFile, Deliveries, JobOutput};
use self::stream_inputs::{KafkaReader, StreamInputs};
use self::streams::{run_streams, StreamRun};
use self::tables::{load_tables, table_inputs, TableSource};
use crate::connectors::avro::AvroFormat;
use crate::connectors::file_source::pool::ParallelReader;
use crate::connectors::file_source::FileSource;
use crate::connectors::kafka::{KafkaDefaults, KafkaSource};
use crate::connectors::{open_sink, BadRecord, SinkConfig};
use crate::error::{Result, VeloError};
use crate::metrics::declared::DeclaredMetric;
use crate::metrics::JobMetrics;
use crate::partition::{
    default_partitions, run_partitioned, InputEvent, PartitionOptions, PartitionRun,
    DEFAULT_QUEUE_DEPTH,
};
use crate::sql::key_spec::Keys;
use crate::sql::metric_annotations::plan_metrics;
use crate::sql::script::{parse_script, Statement, StatementKind};
use crate::sql::window::LATE_DATA_DLQ_PATH;
use crate::sql::{PlannedQuery, QueryPlanner};
use arrow::datatypes::SchemaRef;

pub mod durable;
mod inputs;
mod kafka;
mod keys;
mod output;
mod running;
mod stream_inputs;
mod streams;
mod tables;

pub use durable::StateOptions;
pub use running::RunningJob;

/// Options of a batch run (the CLI's flags).
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// `--source NAME=PATH` bindings.
    pub source_paths: BTreeMap<String, String>,
    /// `--output PATH` for plain SELECTs (stdout when None).
    pub output: Option<PathBuf>,
    /// `--partitions N`: partition workers per job (0: one per core). A statement's
    /// `-- @num_partitions: N` annotation overrides it.
    pub partitions: usize,
    /// Batches each queue between stages holds (0: the default).
    pub queue_depth: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Keep every job's output in memory (returned by `run`); plain SELECTs then write nowhere.
    pub collect_output: bool,
    /// Kafka defaults (`--brokers`).
    pub kafka: KafkaDefaults,
    /// Set to stop unbounded jobs (Kafka, followed files): they commit what is done and end.
    pub stop: Option<Arc<AtomicBool>>,
    /// The jobs run as a long-lived app (velo-sql): a statement reads an earlier one's output
    /// from that one's Kafka topic rather than from memory.
    pub serve: bool,
    /// Durable state (`--state-dir`): Kafka jobs checkpoint there and restore from it.
    pub state: Option<StateOptions>,
}

/// What one job did.
#[derive(Debug, Clone, Default)]
pub struct JobSummary {
    pub job: String,
    pub records_in: u64,
    pub records_out: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Up to the first 100 bad records, for reporting.
    pub bad_records: Vec<BadRecord>,
    /// Records dropped for arriving after their window closed (plus allowed lateness).
    pub late_records: u64,
    /// Groups dropped for being idle longer than `'state.ttl'`.
    pub expired_keys: u64,
    /// Groups held in state when the job ended.
    pub state_keys: u64,
    /// Partition workers the job ran on.
    pub partitions: usize,
    /// The source's partitions fed the workers directly (see `'<src>.key.field'`).
    pub direct: bool,
    /// The output batches, when the options asked to collect them.
    pub output: Option<Vec<RecordBatch>>,
    /// Checkpoints taken (jobs with durable state).
    pub checkpoints: Option<CheckpointStats>,
}

impl JobSummary {
    /// The state part of a summary line: keys held and keys expired, where there are any.
    pub fn state_counts(&self) -> String {
        let mut text = String::new();
        if self.state_keys > 0 {
            text.push_str(&format!(", {} state keys", self.state_keys));
        }
        if self.expired_keys > 0 {
            text.push_str(&format!(", {} expired by state.ttl", self.expired_keys));
        }
        text
    }

    /// Input records per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.records_in as f64 / self.seconds
        } else {
            0.0
        }
    }
}

struct PlannedJob {
    plan: PlannedQuery,
    input: JobInput,
    /// Where each of `plan.tables` comes from.
    tables: Vec<TableSource>,
    /// Where each of the plan's other stream inputs (`plan.side_inputs()`) comes from.
    side_inputs: Vec<JobInput>,
    /// None when the output is only collected.
    sink: Option<SinkConfig>,
    /// Keep the output in memory for later statements.
    retain_output: bool,
    /// The statement's `-- @num_partitions` annotation.
    partitions: Option<usize>,
    /// The statement's `-- @checkpoint_interval` annotation.
    checkpoint_interval: Option<std::time::Duration>,
    /// The metrics its `-- @metric` annotations declare, computed from its output rows.
    metrics: Vec<DeclaredMetric>,
}

/// A script with every job planned, ready to run.
pub struct PlannedScript {
    jobs: Vec<PlannedJob>,
}

/// Parses and plans every statement of `sql`; nothing runs yet.
pub fn plan_script(sql: &str, options: &JobOptions) -> Result<PlannedScript> {
    let mut script = parse_script(sql)?;
    for i in 0..script.statements.len() {
        if let Err(e) = script.statements[i].properties.load_config_files() {
            return Err(at_statement(&script, &script.statements[i], e));
        }
    }
    let mut planner = QueryPlanner::new();
    let mut declared: BTreeMap<String, Declared> = BTreeMap::new();
    let mut upstream: BTreeMap<String, Upstream> = BTreeMap::new();
    let mut jobs: Vec<PlannedJob> = Vec::new();
    let mut generated = 0;
    for stmt in &script.statements {
        if let StatementKind::CreateSource {
            name,
            columns,
            table,
        } = &stmt.kind
        {
            check_statement_keys(
                &script,
                stmt,
                Names::Declaration(name),
                &declared,
                &upstream,
            )?;
            let schema = (!columns.is_empty()).then(|| {
                std::sync::Arc::new(arrow::datatypes::Schema::new(
                    columns
                        .iter()
                        .map(|c| arrow::datatypes::Field::new(&c.name, c.data_type.clone(), true))
                        .collect::<Vec<_>>(),
                ))
            });
            let declaration = Declared {
                schema,
                properties: stmt.properties.clone(),
                table: table.clone(),
            };
            declared.insert(name.clone(), declaration);
            continue;
        }
        let sources = planner.referenced_sources(stmt, &script.source)?;
        if sources.is_empty() {
            return Err(script.source.error(
                stmt.position.0,
                stmt.position.1,
                "the query reads no source (FROM is missing)",
            ));
        }
        let id = match stmt.name() {
            Some(n) => n.to_string(),
            None => {
                generated += 1;
                format!("query_{generated}")
            }
        };
        let names = Names::Query {
            sink: &id,
            sources: &sources,
        };
        check_statement_keys(&script, stmt, names, &declared, &upstream)?;
        // Keys on the sources' declarations (watermarks, event time) apply to its queries too.
        let mut stmt = stmt.clone();
        let mut inputs = BTreeMap::new();
        for source in &sources {
            let input = resolve_input(source, &stmt, &declared, &upstream, options, &mut planner)
                .map_err(|e| at_statement(&script, &stmt, e))?;
            inputs.insert(source.clone(), input);
        }
        for source in &sources {
            if let Some(d) = declared.get(source) {
                stmt.properties.merge_missing(&d.properties);
            }
        }
        let plan = planner.plan(&stmt, &script.source, &id)?;
        for input in inputs.values() {
            if let JobInput::Upstream(name) = input {
                if let Some(j) = jobs.iter_mut().find(|j| j.plan.id == *name) {
                    j.retain_output = true;
                }
            }
        }
        let tables = table_inputs(&plan, &inputs, &declared, &upstream)
            .map_err(|e| at_statement(&script, &stmt, e))?;
        let side_inputs = plan
            .side_inputs()
            .iter()
            .map(|side| {
                inputs.get(&side.source).cloned().ok_or_else(|| {
                    VeloError::Execution(format!("the input '{}' was not resolved", side.source))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let Some(input) = inputs.remove(&plan.source) else {
            return Err(VeloError::Execution(format!(
                "'{id}' reads '{}', which was not resolved",
                plan.source
            )));
        };
        // Each job is its own consumer group, and each of its inputs: two jobs (or a join's
        // two sides) over one topic both see every record, while instances of the same app
        // share the work.
        let input = in_own_group(input, &id);
        let side_inputs: Vec<JobInput> = side_inputs
            .into_iter()
            .enumerate()
            .map(|(k, side)| in_own_group(side, &format!("{id}-in{}", k + 1)))
            .collect();
        let streams = || std::iter::once(&input).chain(&side_inputs);
        let reads_kafka = streams().any(|i| matches!(i, JobInput::Kafka(_)));
        if let (true, Some(_), Some(other)) = (
            reads_kafka,
            &options.state,
            streams().find(|i| !matches!(i, JobInput::Kafka(_))),
        ) {
            let message = format!(
                "durable state (--state-dir) covers Kafka inputs only, and '{id}' also reads \
                 the {}: read every stream from Kafka, or run without --state-dir",
                other.describe()
            );
            return Err(at_statement(&script, &stmt, VeloError::Config(message)));
        }
        let sink = match (&stmt.kind, &options.output) {
            (StatementKind::Select, _) if options.collect_output => None,
            (StatementKind::Select, Some(path)) => Some(SinkConfig::File {
                path: path.clone(),
                csv: path.extension().is_some_and(|e| e == "csv"),
                delimiter: b',',
                exactly_once: false,
            }),
            _ => Some(
                SinkConfig::from_properties(&id, &stmt.properties, &options.kafka)
                    .map_err(|e| at_statement(&script, &stmt, e))?,
            ),
        };
        // A Kafka sink keys its messages by the GROUP BY columns unless `key.field` says, and
        // writes Avro with the schema of the result columns unless a schema file says.
        let sink = match sink {
            Some(SinkConfig::Kafka {
                name,
                topic,
                client,
                mut key_fields,
                mut avro,
                transactional_id,
            }) => {
                if key_fields.is_empty() {
                    key_fields = plan.key_columns.clone();
                }
                if let Some(format) = avro.as_mut().filter(|f| f.schema_json.is_empty()) {
                    format.schema_json = AvroFormat::derived(&plan.output_schema)
                        .map_err(|e| at_statement(&script, &stmt, e))?
                        .schema_json;
                }
                Some(SinkConfig::Kafka {
                    name,
                    topic,
                    client,
                    key_fields,
                    avro,
                    transactional_id,
                })
            }
            other => other,
        };
        let table = match &stmt.kind {
            StatementKind::CreateTableAs { .. } => Some(plan.key_columns.clone()),
            _ => None,
        };
        if matches!(
            stmt.kind,
            StatementKind::CreateStreamAs { .. } | StatementKind::CreateTableAs { .. }
        ) {
            let output = Upstream {
                schema: plan.output_schema.clone(),
                sink: sink.clone(),
                table,
            };
            upstream.insert(id.clone(), output);
        }
        let partitions = match stmt.annotations.get("num_partitions") {
            Some(n) => Some(n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                script.source.error(
                    stmt.position.0,
                    stmt.position.1,
                    format!("@num_partitions must be a positive whole number, got '{n}'"),
                )
            })?),
            None => None,
        };
        let checkpoint_interval = match stmt.annotations.get("checkpoint_interval") {
            Some(text) => Some(
                crate::sql::properties::parse_positive_duration(text).ok_or_else(|| {
                    script.source.error(
                        stmt.position.0,
                        stmt.position.1,
                        format!(
                            "@checkpoint_interval must be a positive duration such as 1s, \
                                 got '{text}'"
                        ),
                    )
                })?,
            ),
            None => None,
        };
        // Checkpoints publish its rows, and only Kafka jobs with durable state take them.
        let exactly_once = sink.as_ref().is_some_and(SinkConfig::exactly_once);
        if exactly_once && !(reads_kafka && options.state.is_some()) {
            return Err(script.source.error(
                stmt.position.0,
                stmt.position.1,
                format!(
                    "'{id}' has an exactly_once sink, which publishes its rows on checkpoints: \
                     it needs a Kafka source and velo-sql --state-dir"
                ),
            ));
        }
        let metrics = plan_metrics(&stmt, &plan.output_schema, &planner, &script.source)?;
        jobs.push(PlannedJob {
            metrics,
            plan,
            input,
            tables,
            side_inputs,
            sink,
            retain_output: options.collect_output,
            partitions,
            checkpoint_interval,
        });
    }
    Ok(PlannedScript { jobs })
}

/// `input` in a consumer group of its own, named after the group id it asks for and `name`.
fn in_own_group(input: JobInput, name: &str) -> JobInput {
    match input {
        JobInput::Kafka(mut config) => {
            let base = config
                .client
                .get("group.id")
                .unwrap_or("velostream")
                .to_string();
            config.client.set("group.id", format!("{base}-{name}"));
            JobInput::Kafka(config)
        }
        other => other,
    }
}

fn at_statement(script: &crate::sql::Script, stmt: &Statement, e: VeloError) -> VeloError {
    match e {
        VeloError::Config(msg) => script.source.error(stmt.position.0, stmt.position.1, msg),
        other => other,
    }
}

impl PlannedScript {
    /// The planned queries, in order.
    pub fn queries(&self) -> impl Iterator<Item = &PlannedQuery> {
        self.jobs.iter().map(|j| &j.plan)
    }

    /// Runs every job to completion, in order.
    pub fn run(self, options: &JobOptions) -> Result<Vec<JobSummary>> {
        let mut outputs: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        let mut summaries = Vec::new();
        for job in self.jobs {
            let id = job.plan.id.clone();
            let metrics = Arc::new(JobMetrics::default());
            let (mut summary, retained) = run_job(job, &outputs, options, &metrics)?;
            if let Some(batches) = retained {
                if options.collect_output {
                    summary.output = Some(batches.clone());
                }
                outputs.insert(id, batches);
            }
            summaries.push(summary);
        }
        Ok(summaries)
    }
}

fn run_job(
    mut job: PlannedJob,
    outputs: &BTreeMap<String, Vec<RecordBatch>>,
    options: &JobOptions,
    metrics: &Arc<JobMetrics>,
) -> Result<(JobSummary, Option<Vec<RecordBatch>>)> {
    let started = Instant::now();
    let plan = job.plan;
    let id = plan.id.clone();
    let stop = options.stop.clone();
    let stopped = move || stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
    // Durable state covers Kafka jobs; a file job reads its files again from the start.
    let streams: Vec<&JobInput> = std::iter::once(&job.input)
        .chain(&job.side_inputs)
        .collect();
    let reads_kafka = streams.iter().any(|i| matches!(i, JobInput::Kafka(_)));
    let durable = match (reads_kafka, &options.state) {
        (true, Some(state)) => Some(StateOptions {
            interval: job.checkpoint_interval.unwrap_or(state.interval),
            ..state.clone()
        }),
        _ => None,
    };
    // One instance at a time runs a job with durable state: wait for its lease before
    // opening the sink or joining the consumer group.
    let lease = match &durable {
        Some(state) => match durable::take_lease(&id, state, &stopped)? {
            Some(lease) => Some(lease),
            None => {
                let summary = JobSummary {
                    job: id.clone(),
                    ..Default::default()
                };
                return Ok((summary, None));
            }
        },
        None => None,
    };
    let mut dead_letter = DeadLetterFile::new(Arc::clone(metrics));
    if let Some(p) = Keys::job(&plan.properties).text(&LATE_DATA_DLQ_PATH) {
        dead_letter.open(std::path::Path::new(&p))?;
    }
    let output = JobOutput {
        sink: job.sink.as_ref().map(open_sink).transpose()?,
        retained: job.retain_output.then(Vec::new),
        records_out: 0,
    };
    let mut summary = JobSummary {
        job: id.clone(),
        ..Default::default()
    };
    let mut partitions = PartitionOptions {
        partitions: match job.partitions.unwrap_or(options.partitions) {
            0 => default_partitions(&plan),
            n => n,
        },
        source_key: match &job.input {
            JobInput::Kafka(config) => config.key_fields.clone(),
            JobInput::File(config) => config.key_fields.clone(),
            JobInput::Upstream(_) => Vec::new(),
        },
        queue_depth: match options.queue_depth {
            0 => DEFAULT_QUEUE_DEPTH,
            n => n,
        },
        restore: None,
        tables: Vec::new(),
        metrics: Arc::clone(metrics),
        encoder: output.sink.as_ref().and_then(|s| s.encoder()),
    };
    // Bad records are found on the reading side, late ones on the output side; the
    // dead-letter file serves both, off the hot path.
    let dead_letter = Mutex::new(dead_letter);
    // Every table is whole before the first stream record is read.
    partitions.tables = load_tables(&plan, &job.tables, outputs, &mut summary, &dead_letter)?;
    let mut declared = std::mem::take(&mut job.metrics);
    let collectors = metrics.declare(declared.iter().map(DeclaredMetric::collector).collect());
    for (metric, collector) in declared.iter_mut().zip(collectors) {
        metric.count_into(collector.clone());
    }
    let mut deliveries = Deliveries {
        job: id.clone(),
        declared,
        output,
        dead_letter: &dead_letter,
        committers: Vec::new(),
        checkpoints: None,
        metrics: Arc::clone(metrics),
        checkpoints_published: 0,
    };
    let stats = match &job.input {
        JobInput::File(config) if job.side_inputs.is_empty() => run_file(
            &plan,
            &partitions,
            config,
            options,
            &mut summary,
            &dead_letter,
            &mut deliveries,
            &stopped,
        )?,
        _ => {
            let schemas = std::iter::once(&plan.input_schema)
                .chain(plan.side_inputs().iter().map(|s| &s.input_schema));
            let kafka = open_kafka(&plan, &streams, durable.as_ref(), &mut deliveries)?;
            let readable: Vec<(&JobInput, SchemaRef)> =
                streams.iter().copied().zip(schemas.cloned()).collect();
            let times: Vec<_> = std::iter::once(&plan.watermark)
                .chain(plan.side_inputs().iter().map(|s| &s.watermark))
                .map(|w| w.as_ref().map(|w| Arc::clone(&w.time_expr)))
                .collect();
            let mut inputs = StreamInputs::open(&readable, &times, outputs, kafka, &dead_letter)?;
            let run = StreamRun {
                durable,
                lease,
                dead_letter: &dead_letter,
            };
            run_streams(
                &plan,
                partitions,
                &mut inputs,
                run,
                &mut deliveries,
                &mut summary,
                &stopped,
            )?
        }
    };
    let Deliveries {
        mut output,
        mut committers,
        mut checkpoints,
        ..
    } = deliveries;
    if let Some(w) = checkpoints.as_mut() {
        // The last checkpoint is durable before the job reports done.
        w.finish(output.sink.as_mut())?;
    }
    output.flush()?;
    for c in &mut committers {
        c.commit(output.sink.as_mut())?;
    }
    lock(&dead_letter).flush()?;
    summary.checkpoints = checkpoints.map(|w| w.stats);
    summary.records_out = output.records_out;
    summary.late_records = stats.late_records;
    summary.expired_keys = stats.expired_keys;
    summary.state_keys = stats.state_keys;
    summary.partitions = stats.partitions;
    summary.direct = stats.direct;
    if stats.direct {
        tracing::info!(job = %id, "the source's partitions fed the workers directly");
    }
    if let Some(reason) = stats.single_reason {
        tracing::info!(job = %id, reason, "the query runs on one partition");
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok((summary, output.retained))
}

/// Runs a job over one file source (or a directory of files), read by parallel readers in
/// file order: the files being read are the watermark's input partitions.
#[allow(clippy::too_many_arguments)]
fn run_file(
    plan: &PlannedQuery,
    partitions: &PartitionOptions,
    config: &crate::connectors::file_source::FileSourceConfig,
    options: &JobOptions,
    summary: &mut JobSummary,
    dead_letter: &Mutex<DeadLetterFile>,
    deliveries: &mut Deliveries<'_>,
    stopped: &dyn Fn() -> bool,
) -> Result<crate::partition::PartitionStats> {
    let mut source = FileSource::open(config.clone())?;
    source.set_projection(&plan.input_schema);
    let progress = progress_bar(options.progress, source.total_bytes());
    if let Some(p) = &config.dead_letter_path {
        lock(dead_letter).open(p)?;
    }
    // A followed file is the last one: read the files one after another then.
    let readers = if config.watch { 1 } else { config.readers };
    let stats = std::thread::scope(|scope| {
        let mut readers = ParallelReader::start(scope, source, readers)?;
        let mut queued: VecDeque<InputEvent> = VecDeque::new();
        run_partitioned(
            plan,
            partitions,
            || {
                if let Some(event) = queued.pop_front() {
                    return Ok(Some(event));
                }
                if stopped() {
                    return Ok(Some(InputEvent::Stop));
                }
                let Some((chunk, files)) = readers.next_batch()? else {
                    return Ok(None);
                };
                summary.records_in += chunk.batch.num_rows() as u64;
                record_bad(summary, dead_letter, &config.name, chunk.bad_records)?;
                partitions
                    .metrics
                    .set_input_counts(summary.records_in, summary.errors);
                if let Some(p) = &progress {
                    p.inc(chunk.bytes);
                    p.set_message(format!("{} rows", summary.records_in));
                }
                if let Some(files) = files {
                    queued.push_back(InputEvent::Partitions {
                        input: 0,
                        ids: files,
                    });
                }
                queued.push_back(if chunk.batch.num_rows() == 0 {
                    // A followed file is idle: make what was written so far visible.
                    InputEvent::Idle
                } else {
                    let rows = chunk.batch.num_rows();
                    InputEvent::PartitionedBatch {
                        input: 0,
                        batch: chunk.batch,
                        runs: vec![PartitionRun {
                            partition: chunk.file as i32,
                            rows,
                        }],
                    }
                });
                Ok(queued.pop_front())
            },
            |d| deliveries.deliver(d),
        )
    })?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    Ok(stats)
}

/// Opens each Kafka input of `streams` (in input order), with its committer (without durable
/// state) or the job's checkpoint writer (with it) in `deliveries`.
fn open_kafka(
    plan: &PlannedQuery,
    streams: &[&JobInput],
    durable: Option<&StateOptions>,
    deliveries: &mut Deliveries<'_>,
) -> Result<Vec<KafkaReader>> {
    let schemas = std::iter::once(&plan.input_schema)
        .chain(plan.side_inputs().iter().map(|s| &s.input_schema));
    let mut kafka = Vec::new();
    let mut consumers = Vec::new();
    for (index, (input, schema)) in streams.iter().zip(schemas).enumerate() {
        let JobInput::Kafka(config) = input else {
            continue;
        };
        let mut source = KafkaSource::open(config.clone())?;
        source.set_projection(schema);
        consumers.push((config.topic.clone(), source.consumer()));
        // Without durable state, each input commits its offsets as its barriers complete;
        // with it, checkpoints commit them.
        let barriers = match durable {
            Some(_) => None,
            None => {
                let (to_committer, barrier_rx) = std::sync::mpsc::channel::<Barrier>();
                deliveries.committers.push(OffsetCommitter::new(
                    source.consumer(),
                    &config.topic,
                    barrier_rx,
                    config.commit_interval,
                ));
                Some(to_committer)
            }
        };
        tracing::info!(job = %plan.id, topic = %config.topic, "reading Kafka");
        kafka.push(KafkaReader {
            name: config.name.clone(),
            source,
            slot: kafka.len(),
            barriers,
            input: index,
            metrics: Arc::clone(&deliveries.metrics),
            lag_published: None,
        });
    }
    if let Some(state) = durable {
        deliveries.checkpoints = Some(CheckpointWriter::new(
            durable::open(plan, state)?,
            plan,
            consumers,
        )?);
    }
    Ok(kafka)
}
