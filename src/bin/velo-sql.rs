//! `velo-sql`: the long-running server. `velo-sql deploy-app --file app.sql` runs every job
//! of an app until SIGINT/SIGTERM, then drains and exits.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use velostream::server::{deploy_app, start_mock_kafka, stop_on_signal, AppOptions};
use velostream::VeloError;

/// Run velostream SQL apps continuously over Kafka and files.
#[derive(Parser, Debug)]
#[command(name = "velo-sql", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every job of an app until stopped (SIGINT/SIGTERM), then drain and exit.
    DeployApp {
        /// The app: a SQL file of CREATE STREAM/TABLE ... AS statements.
        #[arg(long)]
        file: PathBuf,
        /// Default `bootstrap.servers` for Kafka sources and sinks.
        #[arg(long)]
        brokers: Option<String>,
        /// Start librdkafka's mock cluster in-process, create the app's topics there and run
        /// against it (prints its bootstrap address on stderr).
        #[arg(long)]
        mock_kafka: bool,
        /// Partition workers per job (default: one per core).
        #[arg(long, default_value_t = 0)]
        partitions: usize,
        /// Batches per queue between reader, workers and sink.
        #[arg(long, default_value_t = 0)]
        queue_depth: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(args: Args) -> Result<ExitCode, VeloError> {
    let Command::DeployApp {
        file,
        brokers,
        mock_kafka,
        partitions,
        queue_depth,
    } = args.command;
    let sql = std::fs::read_to_string(&file)
        .map_err(|e| VeloError::Config(format!("cannot read {}: {e}", file.display())))?;
    let stop = stop_on_signal()?;
    let mock = if mock_kafka {
        let mock = start_mock_kafka(&sql)?;
        eprintln!("mock kafka bootstrap: {}", mock.bootstrap_servers());
        Some(mock)
    } else {
        None
    };
    let options = AppOptions {
        brokers: brokers.or_else(|| mock.as_ref().map(|m| m.bootstrap_servers().to_string())),
        partitions,
        queue_depth,
    };
    let outcomes = deploy_app(&sql, &options, stop)?;
    let mut failed = false;
    for (job, outcome) in &outcomes {
        match outcome {
            Ok(s) => eprintln!(
                "{job}: {} records in, {} out, {} errors, {:.3}s",
                s.records_in, s.records_out, s.errors, s.seconds
            ),
            Err(e) => {
                failed = true;
                eprintln!("{job}: failed: {e}");
            }
        }
    }
    drop(mock);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
