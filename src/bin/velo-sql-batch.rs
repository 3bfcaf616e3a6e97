//! `velo-sql-batch`: runs every job of a SQL file over its bounded inputs to completion.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use velostream::job::{plan_script, JobOptions};
use velostream::server::stop_on_signal;
use velostream::VeloError;

/// Run velostream SQL over files and exit.
#[derive(Parser, Debug)]
#[command(name = "velo-sql-batch", version, about)]
struct Args {
    /// The SQL file to run.
    file: Option<PathBuf>,
    /// SQL text to run instead of a file.
    #[arg(short = 'e', long = "execute")]
    execute: Option<String>,
    /// Bind a source name to a file: NAME=PATH (format from the extension).
    #[arg(long = "source", value_name = "NAME=PATH")]
    sources: Vec<String>,
    /// Where a plain SELECT writes (JSON lines; .csv for CSV). Default: stdout.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Partition workers per job (default: from the cores and the query's shape;
    /// `-- @num_partitions: N` in a statement overrides it).
    #[arg(long)]
    partitions: Option<usize>,
    /// Batches each queue between reader, workers and sink holds before the writer waits.
    #[arg(long, default_value_t = velostream::partition::DEFAULT_QUEUE_DEPTH)]
    queue_depth: usize,
    /// Never show a progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(args: Args) -> Result<(), VeloError> {
    let sql = match (&args.execute, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| VeloError::Config(format!("cannot read {}: {e}", path.display())))?,
        (None, None) => return Err(VeloError::Config("give a SQL file or -e 'SQL'".into())),
    };
    let mut source_paths = BTreeMap::new();
    for binding in &args.sources {
        let (name, path) = binding.split_once('=').ok_or_else(|| {
            VeloError::Config(format!("--source expects NAME=PATH, got '{binding}'"))
        })?;
        source_paths.insert(name.trim().to_lowercase(), path.trim().to_string());
    }
    if args.partitions == Some(0) || args.queue_depth == 0 {
        return Err(VeloError::Config(
            "--partitions and --queue-depth must be at least 1".into(),
        ));
    }
    let options = JobOptions {
        source_paths,
        output: args.output.clone(),
        partitions: args.partitions.unwrap_or(0),
        queue_depth: args.queue_depth,
        progress: !args.no_progress && std::io::stderr().is_terminal(),
        collect_output: false,
        // Ctrl-C stops a followed file (`watch`): what was read is flushed.
        stop: Some(stop_on_signal()?),
        ..Default::default()
    };
    let planned = plan_script(&sql, &options)?;
    for summary in planned.run(&options)? {
        for bad in &summary.bad_records {
            eprintln!("bad record at {}: {}", bad.location, bad.reason);
        }
        if summary.errors > summary.bad_records.len() as u64 {
            eprintln!(
                "... and {} more bad records",
                summary.errors - summary.bad_records.len() as u64
            );
        }
        let late = match summary.late_records {
            0 => String::new(),
            n => format!(", {n} late"),
        };
        eprintln!(
            "{}: {} records in, {} out, {} errors{late}, {} partitions{}, {:.3}s, {:.0} rec/s",
            summary.job,
            summary.records_in,
            summary.records_out,
            summary.errors,
            summary.partitions,
            summary.state_counts(),
            summary.seconds,
            summary.rate()
        );
    }
    Ok(())
}
