//! `velo-bench`: velostream's benchmark tool. `generate` writes deterministic input files;
//! `run` measures the scenarios (engine only and end to end, at several partition counts),
//! each in its own child process so peak memory is per scenario; `entry-points` compares the
//! engine's batch, per-record and async entry points. See docs/benchmarks.md.

mod checkpoints;
mod entry_points;
mod generators;
mod kafka;
mod nexmark;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::process::{Command as Process, ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

use generators::{Format, Stream};
use report::RunResult;
use scenarios::{Workload, SCENARIOS};

/// Errors of the tool: anything displayable, reported once in `main`.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Prefix of the line a child process reports its result on.
const RESULT_PREFIX: &str = "VELO_BENCH_RESULT ";

/// Benchmark tooling for velostream.
#[derive(Parser, Debug)]
#[command(name = "velo-bench", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

/// Input size and shape, shared by the subcommands that generate data.
#[derive(clap::Args, Debug, Clone)]
struct WorkloadArgs {
    /// Input records per run.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Distinct symbols in the trades stream.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Rows per in-memory batch.
    #[arg(long, default_value_t = 8192)]
    batch_size: usize,
    /// Engine mode: read the input as a topic of this many partitions keyed by the query's
    /// key, fed to the workers directly (0: one stream, split by key hash).
    #[arg(long, default_value_t = 0)]
    keyed_source: usize,
}

impl WorkloadArgs {
    fn workload(&self) -> Workload {
        Workload {
            rows: self.rows,
            keys: self.keys,
            seed: self.seed,
            batch_size: self.batch_size,
            keyed_source: self.keyed_source,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a deterministic input file (trades: symbol, price, quantity, ts; Nexmark bids; or
    /// 1BRC's measurements: station;temperature).
    Generate {
        /// Number of rows.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Number of distinct symbols (trades).
        #[arg(long, default_value_t = 1000)]
        keys: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Which stream.
        #[arg(long, value_enum, default_value_t = StreamArg::Trades)]
        stream: StreamArg,
        /// Output file.
        #[arg(long)]
        output: PathBuf,
    },
    /// Run scenarios and print records/s, per-core rate, latency, peak memory and scaling.
    Run {
        /// A scenario to run (repeatable; default: all). `velo-bench list` names them.
        #[arg(long = "scenario")]
        scenarios: Vec<String>,
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Engine only (in-memory batches), end to end (file → job → file), or both.
        #[arg(long, value_enum, default_value_t = Mode::Engine)]
        mode: Mode,
        /// Partition counts to run each scenario at, e.g. `1,2,4`.
        #[arg(long, value_delimiter = ',', default_value = "1")]
        partitions: Vec<usize>,
        /// Input file format of end-to-end runs.
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        /// Where end-to-end runs put their files (default: a temporary folder, removed after).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// Runs of each (scenario, mode, width); the fastest is reported (a shared machine's
        /// noise only ever slows a run down).
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Also compare the engine's entry points.
        #[arg(long)]
        entry_points: bool,
        /// Records the per-record entry points get (they are much slower).
        #[arg(long, default_value_t = 200_000)]
        record_rows: u64,
        /// Write every result to this JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Compare the engine's entry points on one GROUP BY ... EMIT CHANGES query.
    EntryPoints {
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Records the per-record entry points get (they are much slower).
        #[arg(long, default_value_t = 200_000)]
        record_rows: u64,
        /// Write the results to this JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// List the scenarios and their SQL.
    List,
    /// Write generated records to a Kafka topic as JSON (a feed for `velo-sql deploy-app`).
    Produce {
        /// `bootstrap.servers` (e.g. the address `--mock-kafka` prints).
        #[arg(long)]
        brokers: String,
        /// Topic to write.
        #[arg(long)]
        topic: String,
        /// Which stream.
        #[arg(long, value_enum, default_value_t = StreamArg::Trades)]
        stream: StreamArg,
        #[command(flatten)]
        workload: WorkloadArgs,
    },
    /// Measure a job end to end through a mock Kafka cluster: a 4-partition input topic,
    /// the job, an output topic.
    Kafka {
        /// The job: `filter` or `tumbling`.
        #[arg(long, default_value = "filter")]
        job: String,
        /// Partition workers of the job.
        #[arg(long, default_value_t = 1)]
        partitions: usize,
        /// The source's `decode.threads` (default: its own, one per core).
        #[arg(long)]
        decode_threads: Option<usize>,
        #[command(flatten)]
        workload: WorkloadArgs,
    },
    /// What durable state costs: GROUP BY EMIT CHANGES with and without a checkpoint every
    /// interval (through the checkpoint store, to a temporary directory), then the restore.
    Checkpoints {
        #[command(flatten)]
        workload: WorkloadArgs,
        /// Partition workers.
        #[arg(long, default_value_t = 1)]
        partitions: usize,
        /// Time between checkpoints, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Runs of each kind, taking turns; the fastest of each is reported.
        #[arg(long, default_value_t = 2)]
        repeat: usize,
    },
    /// One run in a fresh process (started by `run`; prints its result as a JSON line).
    #[command(hide = true)]
    Child {
        #[arg(long)]
        scenario: String,
        #[command(flatten)]
        workload: WorkloadArgs,
        #[arg(long, value_enum)]
        mode: Mode,
        #[arg(long)]
        partitions: usize,
        #[arg(long, value_enum, default_value_t = Format::Csv)]
        format: Format,
        #[arg(long)]
        workdir: Option<PathBuf>,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Engine,
    E2e,
    Both,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum StreamArg {
    Trades,
    Bid,
    /// The One Billion Row Challenge's `station;temperature` lines (no header).
    Measurements,
}

impl From<StreamArg> for Stream {
    fn from(s: StreamArg) -> Self {
        match s {
            StreamArg::Trades => Stream::Trades,
            StreamArg::Bid => Stream::Bid,
            StreamArg::Measurements => Stream::Measurements,
        }
    }
}

/// Runs one scenario in a child process (a fresh address space, so peaks do not accumulate)
/// and reads back its result.
fn run_child(
    scenario: &str,
    workload: &WorkloadArgs,
    mode: Mode,
    partitions: usize,
    format: Format,
    workdir: &Path,
) -> BenchResult<RunResult> {
    let exe = std::env::current_exe()?;
    let mode_arg = if mode == Mode::E2e { "e2e" } else { "engine" };
    let output = Process::new(exe)
        .arg("child")
        .args(["--scenario", scenario, "--mode", mode_arg])
        .args(["--partitions", &partitions.to_string()])
        .args(["--rows", &workload.rows.to_string()])
        .args(["--keys", &workload.keys.to_string()])
        .args(["--seed", &workload.seed.to_string()])
        .args(["--batch-size", &workload.batch_size.to_string()])
        .args(["--keyed-source", &workload.keyed_source.to_string()])
        .args(["--format", format.extension()])
        .arg("--workdir")
        .arg(workdir)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "{scenario} ({mode_arg}, {partitions}) failed: {}",
            output.status
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .ok_or_else(|| format!("{scenario}: the child reported no result"))?;
    RunResult::from_json(&serde_json::from_str(line)?)
}

/// What `run` measures and where it reports.
struct RunPlan<'a> {
    names: &'a [String],
    workload: &'a WorkloadArgs,
    mode: Mode,
    widths: &'a [usize],
    format: Format,
    workdir: Option<&'a Path>,
    repeat: usize,
    entry_points: bool,
    record_rows: u64,
    json: Option<&'a Path>,
}

fn run(plan: RunPlan) -> BenchResult<()> {
    let RunPlan {
        names,
        workload,
        mode,
        widths,
        format,
        workdir,
        repeat,
        entry_points,
        record_rows,
        json,
    } = plan;
    let selected = if names.is_empty() {
        SCENARIOS.iter().collect::<Vec<_>>()
    } else {
        names
            .iter()
            .map(|n| scenarios::find(n))
            .collect::<BenchResult<Vec<_>>>()?
    };
    if widths.contains(&0) {
        return Err("--partitions takes positive counts".into());
    }
    let modes: &[Mode] = match mode {
        Mode::Both => &[Mode::Engine, Mode::E2e],
        Mode::Engine => &[Mode::Engine],
        Mode::E2e => &[Mode::E2e],
    };
    let temporary = workdir.is_none();
    let dir = match workdir {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("velo-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    if modes.contains(&Mode::E2e) {
        let mut streams: Vec<(Stream, u64)> = selected
            .iter()
            .flat_map(|s| scenarios::inputs_of(s, workload.rows))
            .collect();
        streams.sort_by_key(|(s, rows)| (s.source_name(), *rows));
        streams.dedup();
        for (stream, rows) in streams {
            let path = scenarios::input_path(&dir, stream, rows, format);
            eprintln!("generating {}", path.display());
            generators::write_file(stream, rows, workload.keys, format, workload.seed, &path)?;
        }
    }
    let mut results = Vec::new();
    let outcome = (|| -> BenchResult<()> {
        for scenario in &selected {
            for &m in modes {
                for &w in widths {
                    let mut best: Option<RunResult> = None;
                    for attempt in 1..=repeat.max(1) {
                        eprintln!(
                            "running {} ({m:?}, {w} partition(s)), run {attempt}",
                            scenario.name
                        );
                        let r = run_child(scenario.name, workload, m, w, format, &dir)?;
                        eprintln!(
                            "  {} records/s, {} output rows, {:.2}s",
                            report::human_rate(r.rate()),
                            r.output_rows,
                            r.seconds
                        );
                        if best.as_ref().is_none_or(|b| r.rate() > b.rate()) {
                            best = Some(r);
                        }
                    }
                    results.extend(best);
                }
            }
        }
        Ok(())
    })();
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome?;
    let cores = report::cores();
    println!(
        "\n{} rows per run, {} keys, batches of {}, {cores} cores, best of {} run(s); peak RSS includes the in-memory input (in brackets: RSS before the timed part)\n",
        workload.rows, workload.keys, workload.batch_size, repeat.max(1)
    );
    println!("{}", report::results_table(&results));
    if widths.len() > 1 {
        println!("{}", report::scaling_table(&results, widths));
    }
    let entries = if entry_points {
        let e = entry_points::compare(&workload.workload(), record_rows)?;
        print_entry_points(&e, record_rows);
        e
    } else {
        Vec::new()
    };
    if let Some(path) = json {
        let doc = serde_json::json!({
            "cores": cores,
            "rows": workload.rows,
            "keys": workload.keys,
            "batch_size": workload.batch_size,
            "repeat": repeat.max(1),
            "results": results.iter().map(RunResult::to_json).collect::<Vec<_>>(),
            "entry_points": entries.iter().map(entry_points::EntryResult::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}

fn print_entry_points(results: &[entry_points::EntryResult], record_rows: u64) {
    println!(
        "Entry points on `{}` (per-record paths run the first {record_rows} rows):\n",
        entry_points::QUERY
    );
    println!("{}", entry_points::table(results));
}

fn dispatch(args: Args) -> BenchResult<()> {
    match args.command {
        Command::Generate {
            rows,
            keys,
            format,
            seed,
            stream,
            output,
        } => generators::write_file(stream.into(), rows, keys, format, seed, &output),
        Command::Produce {
            brokers,
            topic,
            stream,
            workload,
        } => kafka::produce(
            &brokers,
            &topic,
            stream.into(),
            (workload.rows, workload.keys, workload.seed),
            None,
        )
        .map(|n| eprintln!("{n} records written to {topic}")),
        Command::Kafka {
            job,
            partitions,
            decode_threads,
            workload,
        } => kafka::measure(
            &job,
            (workload.rows, workload.keys, workload.seed),
            partitions,
            decode_threads,
        ),
        Command::Run {
            scenarios,
            workload,
            mode,
            partitions,
            format,
            workdir,
            repeat,
            entry_points,
            record_rows,
            json,
        } => run(RunPlan {
            names: &scenarios,
            workload: &workload,
            mode,
            widths: &partitions,
            format,
            workdir: workdir.as_deref(),
            repeat,
            entry_points,
            record_rows,
            json: json.as_deref(),
        }),
        Command::EntryPoints {
            workload,
            record_rows,
            json,
        } => {
            let results = entry_points::compare(&workload.workload(), record_rows)?;
            print_entry_points(&results, record_rows);
            if let Some(path) = json {
                let doc: Vec<_> = results
                    .iter()
                    .map(entry_points::EntryResult::to_json)
                    .collect();
                std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
            }
            Ok(())
        }
        Command::Checkpoints {
            workload,
            partitions,
            interval_ms,
            repeat,
        } => checkpoints::compare(
            workload.rows,
            workload.keys,
            workload.seed,
            workload.batch_size,
            partitions,
            std::time::Duration::from_millis(interval_ms),
            repeat,
        ),
        Command::List => {
            for s in SCENARIOS {
                println!(
                    "{:<18} {}",
                    s.name,
                    s.sql.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
            Ok(())
        }
        Command::Child {
            scenario,
            workload,
            mode,
            partitions,
            format,
            workdir,
        } => {
            let scenario = scenarios::find(&scenario)?;
            let result = match mode {
                Mode::E2e => {
                    let dir = workdir.ok_or("an end-to-end run needs --workdir")?;
                    scenarios::run_e2e(scenario, workload.rows, partitions, &dir, format)?
                }
                _ => scenarios::run_engine(scenario, &workload.workload(), partitions)?,
            };
            println!("{RESULT_PREFIX}{}", result.to_json());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match dispatch(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
