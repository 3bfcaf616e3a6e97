//! The `velo-sql apps ...` and `velo-sql jobs ...` commands: a blocking HTTP client of a
//! running server's API, printing readable tables or the API's JSON.

use serde_json::Value;

use crate::error::{Result, VeloError};
use crate::sql::source_text::SourceText;

/// A client of the server at `base` (`http://127.0.0.1:8080`).
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    pub fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// The answer's status and JSON body.
    fn call(&self, method: &str, path: &str, body: Option<String>) -> Result<(u16, Value)> {
        let url = format!("{}/api/v1{path}", self.base);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, Some(body)) => self.agent.post(&url).send(body),
            (_, None) => self.agent.post(&url).send_empty(),
        };
        let mut response = response.map_err(|e| {
            VeloError::Config(format!("cannot reach the server at {}: {e}", self.base))
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| VeloError::Execution(format!("reading the server's answer: {e}")))?;
        let value = serde_json::from_str(&text).map_err(|e| {
            VeloError::Execution(format!("the server's answer is not JSON ({e}): {text}"))
        })?;
        Ok((status, value))
    }

    /// The body of a 2xx answer; an error with the server's message otherwise.
    fn ok(&self, method: &str, path: &str, body: Option<String>) -> Result<Value> {
        let (status, value) = self.call(method, path, body)?;
        answered(method, path, status, value)
    }

    /// Deploys the app in `sql`; a bad statement comes back as the SQL error, with a caret
    /// under its line and column of `sql`.
    pub fn deploy(&self, sql: &str) -> Result<Value> {
        let (status, value) = self.call("POST", "/apps", Some(sql.to_string()))?;
        if status == 400 {
            let message = value["error"].as_str().unwrap_or("bad SQL").to_string();
            return Err(match (value["line"].as_u64(), value["column"].as_u64()) {
                (Some(line), Some(column)) => SourceText::new(sql).error(line, column, message),
                _ => VeloError::Config(message),
            });
        }
        answered("POST", "/apps", status, value)
    }

    pub fn delete_app(&self, name: &str) -> Result<Value> {
        self.ok("DELETE", &format!("/apps/{name}"), None)
    }

    pub fn jobs(&self) -> Result<Value> {
        self.ok("GET", "/jobs", None)
    }

    pub fn job(&self, name: &str) -> Result<Value> {
        self.ok("GET", &format!("/jobs/{name}"), None)
    }

    pub fn stop_job(&self, name: &str) -> Result<Value> {
        self.ok("POST", &format!("/jobs/{name}/stop"), None)
    }
}

/// `value` for a 2xx `status`; an error with the server's message otherwise.
fn answered(method: &str, path: &str, status: u16, value: Value) -> Result<Value> {
    match status {
        200..=299 => Ok(value),
        _ => Err(VeloError::Execution(format!(
            "{method} {path}: {status}: {}",
            value["error"].as_str().unwrap_or("no reason given")
        ))),
    }
}

/// Rows as a table with aligned columns under `header`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    for row in rows {
        out.push(line(row.iter().map(String::as_str).collect()));
    }
    out.join("\n") + "\n"
}

/// A JSON value as a table cell: numbers and strings as they are, null as `-`.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// `velo-sql jobs list`: one line per job.
pub fn jobs_table(jobs: &Value) -> String {
    let rows: Vec<Vec<String>> = jobs
        .as_array()
        .map(|jobs| {
            jobs.iter()
                .map(|j| {
                    vec![
                        cell(&j["name"]),
                        cell(&j["app"]),
                        cell(&j["status"]),
                        cell(&j["records_in"]),
                        cell(&j["records_out"]),
                        cell(&j["errors"]),
                        cell(&j["late"]),
                        cell(&j["rates"]["records_in_per_second"]),
                        cell(&j["state_keys"]),
                        cell(&j["partitions"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "NAME", "APP", "STATUS", "IN", "OUT", "ERRORS", "LATE", "IN/S", "STATE", "PARTS",
        ],
        &rows,
    )
}

/// `velo-sql jobs show`: the job's fields, then its input partitions and workers.
pub fn job_details(job: &Value) -> String {
    let fields = [
        "name",
        "app",
        "status",
        "error",
        "records_in",
        "records_out",
        "errors",
        "late",
        "partitions",
        "state_keys",
        "watermark",
    ];
    let mut out: Vec<Vec<String>> = fields
        .iter()
        .map(|f| vec![format!("{f}:"), cell(&job[*f])])
        .collect();
    out.push(vec![
        "rates:".into(),
        format!(
            "{} in/s, {} out/s (last 10 s)",
            cell(&job["rates"]["records_in_per_second"]),
            cell(&job["rates"]["records_out_per_second"])
        ),
    ]);
    out.push(vec!["checkpoint:".into(), cell(&job["checkpoint"])]);
    let mut text = table(&["FIELD", "VALUE"], &out);
    let inputs: Vec<Vec<String>> = job["inputs"]
        .as_array()
        .map(|inputs| {
            inputs
                .iter()
                .map(|i| {
                    vec![
                        cell(&i["source"]),
                        cell(&i["partition"]),
                        cell(&i["watermark"]),
                        cell(&i["lag_behind_newest_ms"]),
                        cell(&i["lag_behind_wall_ms"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !inputs.is_empty() {
        text.push('\n');
        text.push_str(&table(
            &[
                "SOURCE",
                "PARTITION",
                "WATERMARK",
                "LAG_NEWEST_MS",
                "LAG_WALL_MS",
            ],
            &inputs,
        ));
    }
    text
}
