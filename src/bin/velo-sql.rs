//! `velo-sql`: the long-running server. `velo-sql deploy-app --file app.sql` runs every job
//! of an app until SIGINT/SIGTERM, then drains and exits; `velo-sql server --http ADDR`
//! serves the REST API and deploys apps sent to it; `velo-sql apps ...` and `velo-sql jobs ...`
//! talk to such a server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use velostream::connectors::kafka::MockKafka;
use velostream::job::durable::{
    default_instance, DEFAULT_CHECKPOINT_INTERVAL, DEFAULT_LEASE_TIMEOUT,
};
use velostream::job::StateOptions;
use velostream::server::client::{job_details, jobs_table, Client};
use velostream::server::http::Server;
use velostream::server::{deploy_app, start_mock_kafka, stop_on_signal, AppOptions};
use velostream::sql::properties::parse_positive_duration;
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
        #[command(flatten)]
        run: RunFlags,
    },
    /// Serve the REST API, /metrics and /health with no apps, deploy apps over HTTP and run
    /// them until stopped (SIGINT/SIGTERM), then drain every job and exit.
    Server {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Deploy or delete apps on a running server.
    Apps {
        #[command(subcommand)]
        command: AppsCommand,
        #[command(flatten)]
        client: ClientFlags,
    },
    /// List, show or stop a running server's jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
        #[command(flatten)]
        client: ClientFlags,
    },
}

#[derive(Subcommand, Debug)]
enum AppsCommand {
    /// Deploy the app in FILE: every statement is planned first, and a bad one starts nothing.
    Deploy { file: PathBuf },
    /// Stop an app's jobs (drained and committed) and forget the app.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
enum JobsCommand {
    /// Every job: status, counts, rate, state.
    List,
    /// One job, with its input partitions' watermarks.
    Show { name: String },
    /// Drain and stop a job.
    Stop { name: String },
}

/// Where the server is, and how to print its answers.
#[derive(clap::Args, Debug)]
struct ClientFlags {
    /// The server's address.
    #[arg(long, default_value = "http://127.0.0.1:8080", global = true)]
    server: String,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// How jobs run, for `deploy-app` and `server` alike.
#[derive(clap::Args, Debug)]
struct RunFlags {
    /// Default `bootstrap.servers` for Kafka sources and sinks.
    #[arg(long)]
    brokers: Option<String>,
    /// Start librdkafka's mock cluster in-process, create each app's topics there and run
    /// against it (prints its bootstrap address on stderr).
    #[arg(long)]
    mock_kafka: bool,
    /// Partition workers per job (default: from the cores and the query's shape).
    #[arg(long, default_value_t = 0)]
    partitions: usize,
    /// Batches per queue between reader, workers and sink.
    #[arg(long, default_value_t = 0)]
    queue_depth: usize,
    /// Keep every Kafka job's state durable here: a directory, file:// URL, or (in a build
    /// with the s3/gcs features) s3:// or gs:// URL. Jobs restore from it on start.
    #[arg(long)]
    state_dir: Option<String>,
    /// Time between checkpoints, e.g. 10s or 500ms (a job's `-- @checkpoint_interval`
    /// overrides it).
    #[arg(long)]
    checkpoint_interval: Option<String>,
    /// Start with empty state even where a checkpoint exists (needed after a plan change).
    #[arg(long)]
    reset_state: bool,
    /// This instance's name in the job leases of --state-dir (default: host and process id).
    /// Give each instance its own, stable across restarts, so a restarted instance takes its
    /// jobs back at once.
    #[arg(long)]
    instance_id: Option<String>,
    /// How long a job's lease outlives its holder: a standby takes the job over that long
    /// after the holder stopped renewing (default 10s).
    #[arg(long)]
    lease_timeout: Option<String>,
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

/// A duration flag's value, or `default` when it is not given.
fn duration_flag(
    flag: &str,
    text: Option<&str>,
    default: std::time::Duration,
) -> Result<std::time::Duration, VeloError> {
    match text {
        Some(text) => parse_positive_duration(text).ok_or_else(|| {
            VeloError::Config(format!(
                "{flag} must be a positive duration such as 10s, got '{text}'"
            ))
        }),
        None => Ok(default),
    }
}

fn run(args: Args) -> Result<ExitCode, VeloError> {
    match args.command {
        Command::DeployApp { file, run } => deploy(&file, run),
        Command::Server { http, run } => serve(&http, run),
        Command::Apps { command, client } => apps(command, &client),
        Command::Jobs { command, client } => jobs(command, &client),
    }
}

/// Prints `value` as JSON, or as `readable` makes it.
fn print(
    flags: &ClientFlags,
    value: &serde_json::Value,
    readable: impl Fn(&serde_json::Value) -> String,
) {
    if flags.json {
        println!("{value}");
    } else {
        print!("{}", readable(value));
    }
}

fn apps(command: AppsCommand, flags: &ClientFlags) -> Result<ExitCode, VeloError> {
    let client = Client::new(&flags.server);
    match command {
        AppsCommand::Deploy { file } => {
            let sql = std::fs::read_to_string(&file)
                .map_err(|e| VeloError::Config(format!("cannot read {}: {e}", file.display())))?;
            let deployed = client.deploy(&sql)?;
            print(flags, &deployed, |d| {
                format!("deployed app {} with jobs {}\n", d["app"], d["jobs"])
            });
        }
        AppsCommand::Delete { name } => {
            let deleted = client.delete_app(&name)?;
            print(flags, &deleted, |_| format!("deleted app {name}\n"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn jobs(command: JobsCommand, flags: &ClientFlags) -> Result<ExitCode, VeloError> {
    let client = Client::new(&flags.server);
    match command {
        JobsCommand::List => print(flags, &client.jobs()?, jobs_table),
        JobsCommand::Show { name } => print(flags, &client.job(&name)?, job_details),
        JobsCommand::Stop { name } => print(flags, &client.stop_job(&name)?, job_details),
    }
    Ok(ExitCode::SUCCESS)
}

/// The app options the flags ask for, with the brokers of `mock` when there is one.
fn app_options(run: RunFlags, mock: Option<&MockKafka>) -> Result<AppOptions, VeloError> {
    let RunFlags {
        brokers,
        mock_kafka: _,
        partitions,
        queue_depth,
        state_dir,
        checkpoint_interval,
        reset_state,
        instance_id,
        lease_timeout,
    } = run;
    let lease_timeout = duration_flag(
        "--lease-timeout",
        lease_timeout.as_deref(),
        DEFAULT_LEASE_TIMEOUT,
    )?;
    let interval = duration_flag(
        "--checkpoint-interval",
        checkpoint_interval.as_deref(),
        DEFAULT_CHECKPOINT_INTERVAL,
    )?;
    let state_flags = checkpoint_interval.is_some() || reset_state || instance_id.is_some();
    if state_dir.is_none() && state_flags {
        return Err(VeloError::Config(
            "--checkpoint-interval, --reset-state and --instance-id need --state-dir".into(),
        ));
    }
    let state = state_dir.map(|location| StateOptions {
        interval,
        reset: reset_state,
        instance: instance_id.unwrap_or_else(default_instance),
        lease_timeout,
        ..StateOptions::at(&location)
    });
    Ok(AppOptions {
        brokers: brokers.or_else(|| mock.map(|m| m.bootstrap_servers().to_string())),
        partitions,
        queue_depth,
        state,
    })
}

/// `velo-sql server`: serves until SIGINT/SIGTERM, then drains every job.
fn serve(http: &str, run: RunFlags) -> Result<ExitCode, VeloError> {
    let stop = stop_on_signal()?;
    let mock = if run.mock_kafka {
        let mock = MockKafka::start(1)?;
        eprintln!("mock kafka bootstrap: {}", mock.bootstrap_servers());
        Some(mock)
    } else {
        None
    };
    let options = app_options(run, mock.as_ref())?;
    let server = Server::start(http, options, mock)?;
    eprintln!("serving on http://{}", server.addr);
    server.run_until(&stop)?;
    Ok(ExitCode::SUCCESS)
}

/// `velo-sql deploy-app`: runs one app's jobs until SIGINT/SIGTERM.
fn deploy(file: &std::path::Path, run: RunFlags) -> Result<ExitCode, VeloError> {
    let sql = std::fs::read_to_string(file)
        .map_err(|e| VeloError::Config(format!("cannot read {}: {e}", file.display())))?;
    let stop = stop_on_signal()?;
    let mock = if run.mock_kafka {
        let mock = start_mock_kafka(&sql)?;
        eprintln!("mock kafka bootstrap: {}", mock.bootstrap_servers());
        Some(mock)
    } else {
        None
    };
    let options = app_options(run, mock.as_ref())?;
    let outcomes = deploy_app(&sql, &options, stop)?;
    let mut failed = false;
    for (job, outcome) in &outcomes {
        match outcome {
            Ok(s) => {
                let checkpoints = s.checkpoints.as_ref().map_or(String::new(), |c| {
                    let restored = c.restore_duration.map_or(String::new(), |d| {
                        format!(", restored in {} ms", d.as_millis())
                    });
                    format!(
                        ", {} checkpoints (last: epoch {}, {} bytes, {} ms){restored}",
                        c.completed,
                        c.last_epoch.map_or("-".to_string(), |e| e.to_string()),
                        c.last_bytes,
                        c.last_duration.as_millis()
                    )
                });
                eprintln!(
                    "{job}: {} records in, {} out, {} errors{}, {:.3}s{checkpoints}",
                    s.records_in,
                    s.records_out,
                    s.errors,
                    s.state_counts(),
                    s.seconds
                )
            }
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
