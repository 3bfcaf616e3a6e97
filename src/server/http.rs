//! The server's HTTP side: the web console at `/`, the REST API under `/api/v1`, `/metrics`,
//! `/health` and `/ready`, served by axum on a small runtime of its own. The engine stays synchronous: a handler that
//! waits for jobs (a stop, a delete) runs on the runtime's blocking pool.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::{
    ApiError, App, AppDetail, DeployRequest, Deployed, Health, Invalid, Job, PlannedJob, Ready,
    Samples, SqlError, Validation,
};
use super::exporter::render;
use super::registry::{DeployError, Registry};
use super::AppOptions;
use crate::connectors::kafka::MockKafka;
use crate::error::{Result, VeloError};
use crate::job::plan_script;

/// How far back a job's rates look.
const RATE_WINDOW: Duration = Duration::from_secs(10);

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

/// Every route: the console's assets, then the documented ones, whose OpenAPI document is
/// built from the same `#[utoipa::path]` attributes and served at `/api/v1/openapi.json`.
fn routes(shared: Arc<ServerState>) -> Router {
    let (router, api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(list_apps, deploy))
        .routes(routes!(show_app, delete_app))
        .routes(routes!(list_jobs))
        .routes(routes!(show_job))
        .routes(routes!(stop_job))
        .routes(routes!(validate))
        .split_for_parts();
    let api = Arc::new(api);
    router
        .route("/", get(|| async { Html(CONSOLE_HTML) }))
        .route(
            "/console.js",
            get(|| async { asset("text/javascript", CONSOLE_JS) }),
        )
        .route(
            "/console.css",
            get(|| async { asset("text/css", CONSOLE_CSS) }),
        )
        .route(
            "/api/v1/openapi.json",
            get(move || async move { Json(Arc::clone(&api)) }),
        )
        .fallback(|uri: axum::http::Uri| async move {
            error(
                StatusCode::NOT_FOUND,
                format!("no such path: {}", uri.path()),
            )
        })
        .with_state(shared)
}

/// The document's header; the paths come from the routes.
#[derive(OpenApi)]
#[openapi(info(
    title = "velostream",
    description = "Deploy SQL apps, and watch and steer their jobs."
))]
struct ApiDoc;

/// The web console, embedded in the binary.
const CONSOLE_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// A handler's view of the server's state.
type Ctx = State<Arc<ServerState>>;

/// An error answer: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ApiError {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

fn no_job(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no job named '{name}'"))
}

fn no_app(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no app named '{name}'"))
}

/// The documented example of an app: a count per symbol of a Kafka topic.
const EXAMPLE_APP: &str = "CREATE STREAM ticks (symbol VARCHAR, ts BIGINT) WITH (\
    'ticks.type' = 'kafka_source', 'ticks.topic.name' = 'ticks', 'ticks.group.id' = 'example');\n\
    CREATE STREAM tick_counts AS SELECT symbol, COUNT(*) AS n FROM ticks GROUP BY symbol \
    EMIT CHANGES WITH ('tick_counts.type' = 'stdout');";

/// A request body as text.
fn text(body: Bytes) -> std::result::Result<String, String> {
    String::from_utf8(body.to_vec()).map_err(|e| format!("the body is not UTF-8 text: {e}"))
}

/// A deploy's 400: the SQL error.
fn bad_sql(error: SqlError) -> Response {
    (StatusCode::BAD_REQUEST, Json(error)).into_response()
}

/// The server is up.
#[utoipa::path(get, path = "/health", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Ready while no job has failed.
#[utoipa::path(get, path = "/ready", responses(
    (status = 200, body = Ready),
    (status = 503, description = "a job failed", body = Ready),
))]
async fn ready(State(s): Ctx) -> Response {
    match s.registry.ready() {
        true => Json(Ready {
            ready: true,
            reason: None,
        })
        .into_response(),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Ready {
                ready: false,
                reason: Some("a job failed".into()),
            }),
        )
            .into_response(),
    }
}

/// Every job's metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
))]
async fn metrics(State(s): Ctx) -> Response {
    match s.registry.with_jobs(render) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
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
    let request: DeployRequest = serde_json::from_str(body).map_err(|e| {
        format!("the body must be {{\"sql\": the app's SQL text, \"name\": optional}}: {e}")
    })?;
    Ok((request.name, request.sql))
}

/// Plans every statement of the app and starts its jobs; a bad statement starts nothing.
#[utoipa::path(post, path = "/api/v1/apps",
    request_body(description = "the app's SQL, or {\"name\", \"sql\"}", content(
        (String = "text/plain", example = json!(EXAMPLE_APP)),
        (DeployRequest = "application/json", example = json!({"name": "example", "sql": EXAMPLE_APP})),
    )),
    responses(
        (status = 201, description = "deployed", body = Deployed),
        (status = 400, description = "a statement is wrong: where, and which", body = SqlError),
        (status = 409, description = "the app or one of its jobs exists", body = ApiError),
    ))]
async fn deploy(State(s): Ctx, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = text(body).and_then(|body| deploy_body(&headers, &body));
    let (name, sql) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return bad_sql(SqlError::unplaced(message)),
    };
    let deployed = tokio::task::spawn_blocking(move || {
        let result = s.registry.deploy(name, &sql);
        (result, sql)
    })
    .await;
    let (result, sql) = match deployed {
        Ok(done) => done,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match result {
        Ok(app) => (
            StatusCode::CREATED,
            Json(Deployed {
                app: app.name,
                jobs: app.jobs,
            }),
        )
            .into_response(),
        Err(DeployError::Invalid(e)) => bad_sql(SqlError::of(&sql, &e)),
        Err(DeployError::Exists(name)) => error(
            StatusCode::CONFLICT,
            format!("an app named '{name}' is deployed already: delete it first"),
        ),
        Err(DeployError::JobExists(name)) => error(
            StatusCode::CONFLICT,
            format!("a job named '{name}' runs in another app"),
        ),
    }
}

/// Every deployed app.
#[utoipa::path(get, path = "/api/v1/apps", responses((status = 200, body = Vec<App>)))]
async fn list_apps(State(s): Ctx) -> Json<Vec<App>> {
    let apps = s
        .registry
        .apps()
        .into_iter()
        .map(|a| App {
            name: a.name,
            jobs: a.jobs,
        })
        .collect();
    Json(apps)
}

/// An app: its SQL and its jobs.
#[utoipa::path(get, path = "/api/v1/apps/{name}",
    params(("name" = String, Path, description = "the app's name")),
    responses((status = 200, body = AppDetail), (status = 404, body = ApiError)))]
async fn show_app(State(s): Ctx, Path(name): Path<String>) -> Response {
    let Some(app) = s.registry.app(&name) else {
        return no_app(&name);
    };
    let samples = lock(&s.samples).clone();
    let jobs = s.registry.with_jobs(|jobs| {
        jobs.iter()
            .filter(|j| j.app == name)
            .map(|j| Job::of(j, &samples))
            .collect()
    });
    Json(AppDetail {
        name: app.name,
        sql: app.sql,
        jobs,
    })
    .into_response()
}

/// Stops the app's jobs (they drain and commit) and removes it.
#[utoipa::path(delete, path = "/api/v1/apps/{name}",
    params(("name" = String, Path, description = "the app's name")),
    responses((status = 200, body = App), (status = 404, body = ApiError)))]
async fn delete_app(State(s): Ctx, Path(name): Path<String>) -> Response {
    let Some(app) = s.registry.app(&name) else {
        return no_app(&name);
    };
    let deleted = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || s.registry.delete_app(&name)).await
    };
    match deleted {
        Ok(true) => Json(App {
            name: app.name,
            jobs: app.jobs,
        })
        .into_response(),
        Ok(false) => no_app(&name),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Every job, running or done.
#[utoipa::path(get, path = "/api/v1/jobs", responses((status = 200, body = Vec<Job>)))]
async fn list_jobs(State(s): Ctx) -> Json<Vec<Job>> {
    let samples = lock(&s.samples).clone();
    let jobs = s
        .registry
        .with_jobs(|jobs| jobs.iter().map(|j| Job::of(j, &samples)).collect());
    Json(jobs)
}

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{name}",
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, body = Job), (status = 404, body = ApiError)))]
async fn show_job(State(s): Ctx, Path(name): Path<String>) -> Response {
    let samples = lock(&s.samples).clone();
    let job = s.registry.with_jobs(|jobs| {
        jobs.iter()
            .find(|j| j.name() == name)
            .map(|j| Job::of(j, &samples))
    });
    match job {
        Some(job) => Json(job).into_response(),
        None => no_job(&name),
    }
}

/// Stops a job gracefully: its sources stop, its sinks flush and its offsets are committed.
#[utoipa::path(post, path = "/api/v1/jobs/{name}/stop",
    params(("name" = String, Path, description = "the job's name")),
    responses((status = 200, description = "the stopped job", body = Job), (status = 404, body = ApiError)))]
async fn stop_job(State(s): Ctx, Path(name): Path<String>) -> Response {
    let shared = Arc::clone(&s);
    let job = name.clone();
    let stopped = tokio::task::spawn_blocking(move || shared.registry.stop_job(&job)).await;
    match stopped {
        Ok(true) => show_job(State(s), Path(name)).await,
        Ok(false) => no_job(&name),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Plans the SQL without running it: the errors, or each job's operators with their state
/// and what bounds it.
#[utoipa::path(post, path = "/api/v1/sql/validate",
    request_body(content = String, content_type = "text/plain", description = "the app's SQL",
        example = json!(EXAMPLE_APP)),
    responses(
        (status = 200, description = "the plan", body = Validation),
        (status = 400, description = "where the SQL is wrong", body = Invalid),
    ))]
async fn validate(State(s): Ctx, body: Bytes) -> Response {
    let invalid = |error| {
        let answer = Invalid {
            valid: false,
            error,
        };
        (StatusCode::BAD_REQUEST, Json(answer)).into_response()
    };
    let body = match text(body) {
        Ok(body) => body,
        Err(message) => return invalid(SqlError::unplaced(message)),
    };
    let options = s.registry.job_options();
    match plan_script(&body, &options) {
        Ok(planned) => Json(Validation {
            valid: true,
            jobs: planned.queries().map(PlannedJob::of).collect(),
        })
        .into_response(),
        Err(e) => invalid(SqlError::of(&body, &e)),
    }
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
