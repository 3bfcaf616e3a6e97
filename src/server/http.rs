//! The server's HTTP side: the web console at `/`, the REST API under `/api/v1`, `/metrics`,
//! `/health` and `/ready`, served by axum on a small runtime of its own. The engine stays synchronous: a handler that
//! waits for jobs (a stop, a delete) runs on the runtime's blocking pool.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::exporter::{render, source_names};
use super::registry::{DeployError, JobEntry, JobStatus, Registry};
use super::AppOptions;
use crate::connectors::kafka::MockKafka;
use crate::error::{Result, VeloError};
use crate::exec::input::now_millis;
use crate::job::plan_script;
use crate::sql::script::parse_script;
use crate::sql::PlannedQuery;

/// How far back a job's rates look.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Per job: (when, records in, records out), a sample a second over `RATE_WINDOW`.
type Samples = BTreeMap<String, VecDeque<(Instant, u64, u64)>>;

/// What every handler shares: the apps and jobs, and the samples the rates come from.
struct ServerState {
    registry: Registry,
    samples: Mutex<Samples>,
}

/// A running server: its address and how to stop it.
pub struct Server {
    pub addr: SocketAddr,
    shared: Arc<ServerState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Server {
    /// Binds `addr` (port 0: any free port) and serves on a thread of its own, with no apps.
    /// With `mock`, each app's topics are created there as it deploys.
    pub fn start(addr: &str, options: AppOptions, mock: Option<MockKafka>) -> Result<Server> {
        let listener = std::net::TcpListener::bind(addr)
            .map_err(|e| VeloError::io(format!("listening on {addr}"), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| VeloError::io("setting up the listener", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| VeloError::io("reading the listener's address", e))?;
        let shared = Arc::new(ServerState {
            registry: Registry::new(options, mock),
            samples: Mutex::new(Samples::new()),
        });
        let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
        let app = routes(Arc::clone(&shared));
        let sampled = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("velo-http".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| VeloError::io("starting the HTTP runtime", e))?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(|e| VeloError::io("serving HTTP", e))?;
                    tokio::spawn(sample_rates(sampled));
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = on_shutdown.await;
                        })
                        .await
                        .map_err(|e| VeloError::io("serving HTTP", e))
                })
            })
            .map_err(|e| VeloError::io("starting the HTTP thread", e))?;
        tracing::info!(%addr, "serving HTTP");
        Ok(Server {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// Runs until `stop` is set, then drains every job and stops serving.
    pub fn run_until(mut self, stop: &AtomicBool) -> Result<()> {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.shutdown()
    }

    /// Drains every job (sources stop, sinks flush, offsets are committed), then stops
    /// serving.
    pub fn shutdown(&mut self) -> Result<()> {
        self.shared.registry.shutdown();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(VeloError::Execution("the HTTP thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn routes(shared: Arc<ServerState>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(CONSOLE_HTML) }))
        .route(
            "/console.js",
            get(|| async { asset("text/javascript", CONSOLE_JS) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css", CONSOLE_CSS) }),
        )
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/apps", get(list_apps).post(deploy))
        .route("/api/v1/apps/{name}", get(show_app).delete(delete_app))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{name}", get(show_job))
        .route("/api/v1/jobs/{name}/stop", post(stop_job))
        .route("/api/v1/sql/validate", post(validate))
        .with_state(shared)
}

/// The web console, embedded in the binary.
const CONSOLE_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A handler's view of the server's state.
type Ctx = State<Arc<ServerState>>;

async fn ready(State(s): Ctx) -> Response {
    match s.registry.ready() {
        true => Json(json!({"ready": true})).into_response(),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": "a job failed"})),
        )
            .into_response(),
    }
}

async fn metrics(State(s): Ctx) -> Response {
    match s.registry.with_jobs(render) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

/// A SQL error as `{"error", "line", "column", "statement"}`: the statement is the name of
/// the one at that line, where the script parses that far.
fn sql_error(sql: &str, e: &VeloError) -> Value {
    match e {
        VeloError::Sql {
            line,
            column,
            message,
            ..
        } => json!({
            "error": message,
            "line": line,
            "column": column,
            "statement": statement_at(sql, *line),
        }),
        other => {
            json!({"error": other.to_string(), "line": null, "column": null, "statement": null})
        }
    }
}

/// The name of the statement that holds `line`, if the script parses.
fn statement_at(sql: &str, line: u64) -> Option<String> {
    let script = parse_script(sql).ok()?;
    script
        .statements
        .iter()
        .rev()
        .find(|s| s.position.0 <= line)
        .and_then(|s| s.name().map(str::to_string))
}

/// The SQL and the app name of a deploy's body: SQL text, or `{"name", "sql"}` as JSON.
fn deploy_body(
    headers: &HeaderMap,
    body: &str,
) -> std::result::Result<(Option<String>, String), String> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Ok((None, body.to_string()));
    }
    let value: Value =
        serde_json::from_str(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let Some(sql) = value.get("sql").and_then(Value::as_str) else {
        return Err("the body needs \"sql\": the app's SQL text".to_string());
    };
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok((name, sql.to_string()))
}

async fn deploy(State(s): Ctx, headers: HeaderMap, body: String) -> Response {
    let (name, sql) = match deploy_body(&headers, &body) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let deployed = tokio::task::spawn_blocking(move || {
        let result = s.registry.deploy(name, &sql);
        (result, sql)
    })
    .await;
    let (result, sql) = match deployed {
        Ok(done) => done,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match result {
        Ok(app) => (
            StatusCode::CREATED,
            Json(json!({"app": app.name, "jobs": app.jobs})),
        )
            .into_response(),
        Err(DeployError::Invalid(e)) => {
            (StatusCode::BAD_REQUEST, Json(sql_error(&sql, &e))).into_response()
        }
        Err(DeployError::Exists(name)) => error(
            StatusCode::CONFLICT,
            &format!("an app named '{name}' is deployed already: delete it first"),
        ),
        Err(DeployError::JobExists(name)) => error(
            StatusCode::CONFLICT,
            &format!("a job named '{name}' runs in another app"),
        ),
    }
}

async fn list_apps(State(s): Ctx) -> Json<Value> {
    let apps: Vec<Value> = s
        .registry
        .apps()
        .into_iter()
        .map(|a| json!({"name": a.name, "jobs": a.jobs}))
        .collect();
    Json(Value::Array(apps))
}

async fn show_app(State(s): Ctx, Path(name): Path<String>) -> Response {
    let Some(app) = s.registry.app(&name) else {
        return error(StatusCode::NOT_FOUND, &format!("no app named '{name}'"));
    };
    let samples = lock(&s.samples).clone();
    let jobs = s.registry.with_jobs(|jobs| {
        jobs.iter()
            .filter(|j| j.app == name)
            .map(|j| job_json(j, &samples))
            .collect::<Vec<_>>()
    });
    Json(json!({"name": app.name, "sql": app.sql, "jobs": jobs})).into_response()
}

async fn delete_app(State(s): Ctx, Path(name): Path<String>) -> Response {
    let deleted = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || s.registry.delete_app(&name)).await
    };
    match deleted {
        Ok(true) => Json(json!({"deleted": name})).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no app named '{name}'")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn list_jobs(State(s): Ctx) -> Json<Value> {
    let samples = lock(&s.samples).clone();
    let jobs = s
        .registry
        .with_jobs(|jobs| jobs.iter().map(|j| job_json(j, &samples)).collect());
    Json(Value::Array(jobs))
}

async fn show_job(State(s): Ctx, Path(name): Path<String>) -> Response {
    let samples = lock(&s.samples).clone();
    let job = s.registry.with_jobs(|jobs| {
        jobs.iter()
            .find(|j| j.name() == name)
            .map(|j| job_json(j, &samples))
    });
    match job {
        Some(job) => Json(job).into_response(),
        None => error(StatusCode::NOT_FOUND, &format!("no job named '{name}'")),
    }
}

async fn stop_job(State(s): Ctx, Path(name): Path<String>) -> Response {
    let shared = Arc::clone(&s);
    let job = name.clone();
    let stopped = tokio::task::spawn_blocking(move || shared.registry.stop_job(&job)).await;
    match stopped {
        Ok(true) => show_job(State(s), Path(name)).await,
        Ok(false) => error(StatusCode::NOT_FOUND, &format!("no job named '{name}'")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// Plans the SQL without running it: the errors, or each job's operators with their state
/// and what bounds it.
async fn validate(State(s): Ctx, body: String) -> Response {
    let options = s.registry.job_options();
    let planned = match plan_script(&body, &options) {
        Ok(planned) => planned,
        Err(e) => {
            let mut answer = sql_error(&body, &e);
            answer["valid"] = json!(false);
            return (StatusCode::BAD_REQUEST, Json(answer)).into_response();
        }
    };
    let jobs: Vec<Value> = planned
        .queries()
        .map(|q| json!({"name": q.id, "source": q.source, "operators": operators_json(q)}))
        .collect();
    Json(json!({"valid": true, "jobs": jobs})).into_response()
}

/// A query's operators, input by input (the main input first, then each side input), with
/// their state and what bounds it.
fn operators_json(q: &PlannedQuery) -> Vec<Value> {
    let lanes = std::iter::once((q.source.as_str(), &q.stages)).chain(
        q.side_inputs()
            .iter()
            .map(|i| (i.source.as_str(), &i.stages)),
    );
    let mut operators = Vec::new();
    for (input, (source, stages)) in lanes.enumerate() {
        for (i, stage) in stages.iter().enumerate() {
            let (state, bounded_by) = match stage.state_bound() {
                Some((state, bound)) => (json!(state), json!(bound)),
                None => (Value::Null, Value::Null),
            };
            operators.push(json!({
                "input": input, "source": source, "operator": format!("{i}-{}", stage.kind()),
                "detail": stage.describe(), "state": state, "bounded_by": bounded_by,
            }));
        }
    }
    operators
}

/// A job as the API shows it.
fn job_json(job: &JobEntry, samples: &Samples) -> Value {
    let m = job.metrics();
    let (records_in, records_out) = (m.records_in.load(ORDER), m.records_out.load(ORDER));
    let (rate_in, rate_out) = samples.get(job.name()).map_or((0.0, 0.0), rates);
    let now = now_millis();
    let times = m.times();
    let newest = times.values().map(|t| t.newest_ms).max();
    let sources = source_names(job);
    let inputs: Vec<Value> = times
        .iter()
        .map(|((input, partition), t)| {
            json!({
                "source": sources.get(*input), "partition": partition,
                "watermark": t.watermark_ms, "newest_event": t.newest_ms,
                "lag_behind_newest_ms": newest.map(|n| n.saturating_sub(t.watermark_ms)),
                "lag_behind_wall_ms": now.saturating_sub(t.watermark_ms),
            })
        })
        .collect();
    let workers: Vec<Value> = m
        .worker_values()
        .into_iter()
        .enumerate()
        .map(|(p, (keys, late))| json!({"partition": p, "state_keys": keys, "late": late}))
        .collect();
    let watermark = m.watermark_ms.load(ORDER);
    let checkpoint = m
        .last_checkpoint()
        .map(|c| json!({"id": c.id, "at": c.at_ms, "seconds": c.seconds, "bytes": c.bytes}));
    json!({
        "name": job.name(),
        "app": job.app,
        "status": job.status.name(),
        "error": match &job.status { JobStatus::Failed(e) => json!(e), _ => Value::Null },
        "records_in": records_in,
        "records_out": records_out,
        "errors": m.errors.load(ORDER),
        "late": m.late(),
        "rates": {"records_in_per_second": rate_in, "records_out_per_second": rate_out},
        "partitions": m.partitions.load(ORDER),
        "state_keys": m.state_keys(),
        "watermark": (watermark > i64::MIN).then_some(watermark),
        "inputs": inputs,
        "workers": workers,
        "checkpoint": checkpoint,
        "dead_letters": m.dead_letters(),
        "operators": operators_json(job.plan()),
    })
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

/// Samples every job's counts once a second, keeping `RATE_WINDOW` of them.
async fn sample_rates(shared: Arc<ServerState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = Instant::now();
        let counts: Vec<(String, u64, u64)> = shared.registry.with_jobs(|jobs| {
            jobs.iter()
                .map(|j| {
                    let m = j.metrics();
                    (
                        j.name().to_string(),
                        m.records_in.load(ORDER),
                        m.records_out.load(ORDER),
                    )
                })
                .collect()
        });
        let mut samples = lock(&shared.samples);
        samples.retain(|name, _| counts.iter().any(|(n, ..)| n == name));
        for (name, records_in, records_out) in counts {
            let job = samples.entry(name).or_default();
            job.push_back((now, records_in, records_out));
            while job
                .front()
                .is_some_and(|(t, ..)| now.duration_since(*t) > RATE_WINDOW)
            {
                job.pop_front();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

const ORDER: Ordering = Ordering::Relaxed;
