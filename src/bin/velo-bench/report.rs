//! Results: one `RunResult` per (scenario, mode, width), passed from the child process to the
//! parent as a JSON line, printed as tables and optionally written to a JSON file.

use serde_json::{json, Value};

use crate::BenchResult;

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub scenario: String,
    /// `engine` or `e2e`.
    pub mode: String,
    /// Workers the run used (1 when the query cannot be split).
    pub partitions: usize,
    /// Workers asked for.
    pub requested_partitions: usize,
    /// Input records.
    pub rows: u64,
    pub output_rows: u64,
    pub late_rows: u64,
    /// Timed wall seconds (generation excluded).
    pub seconds: f64,
    /// CPU seconds (user + system, all threads) the process spent in the timed part.
    pub cpu_s: f64,
    /// Seconds spent generating the in-memory input (engine mode).
    pub generate_s: f64,
    /// Per-batch latency (engine mode; the job runner does not report it).
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
    /// Resident memory before the timed part (input already generated), and the peak.
    pub base_rss_kb: u64,
    pub peak_rss_kb: u64,
    /// Why the query ran on one worker, when more were asked for.
    pub single_reason: Option<String>,
    /// The input file's format (e2e).
    pub format: Option<String>,
}

/// Cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A `/proc/self/status` memory line in kB (0 where /proc is absent).
pub fn memory_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) this process has used so far, all threads included.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

impl RunResult {
    /// Input records per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.rows as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Records per second per core used: the rate over min(workers, cores).
    pub fn rate_per_core(&self) -> f64 {
        self.rate() / self.partitions.clamp(1, cores()) as f64
    }

    /// Cores kept busy on average: CPU seconds over wall seconds.
    pub fn cores_busy(&self) -> f64 {
        if self.seconds > 0.0 {
            self.cpu_s / self.seconds
        } else {
            0.0
        }
    }

    /// The result as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "mode": self.mode,
            "partitions": self.partitions,
            "requested_partitions": self.requested_partitions,
            "rows": self.rows,
            "output_rows": self.output_rows,
            "late_rows": self.late_rows,
            "seconds": self.seconds,
            "cpu_s": self.cpu_s,
            "generate_s": self.generate_s,
            "records_per_s": self.rate(),
            "records_per_s_per_core": self.rate_per_core(),
            "latency_p50_us": self.latency_p50_us,
            "latency_p99_us": self.latency_p99_us,
            "base_rss_kb": self.base_rss_kb,
            "peak_rss_kb": self.peak_rss_kb,
            "single_reason": self.single_reason,
            "format": self.format,
        })
    }

    /// Reads a result written by `to_json`.
    pub fn from_json(v: &Value) -> BenchResult<RunResult> {
        let text = |k: &str| -> BenchResult<String> {
            Ok(v.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("result field '{k}' is missing"))?
                .to_string())
        };
        let int = |k: &str| -> BenchResult<u64> {
            Ok(v.get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("result field '{k}' is missing"))?)
        };
        let float = |k: &str| v.get(k).and_then(Value::as_f64);
        let opt_text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(RunResult {
            scenario: text("scenario")?,
            mode: text("mode")?,
            partitions: int("partitions")? as usize,
            requested_partitions: int("requested_partitions")? as usize,
            rows: int("rows")?,
            output_rows: int("output_rows")?,
            late_rows: int("late_rows")?,
            seconds: float("seconds").ok_or("result field 'seconds' is missing")?,
            cpu_s: float("cpu_s").unwrap_or(0.0),
            generate_s: float("generate_s").unwrap_or(0.0),
            latency_p50_us: float("latency_p50_us"),
            latency_p99_us: float("latency_p99_us"),
            base_rss_kb: int("base_rss_kb")?,
            peak_rss_kb: int("peak_rss_kb")?,
            single_reason: opt_text("single_reason"),
            format: opt_text("format"),
        })
    }
}

/// `12.3M`-style rate.
pub fn human_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}K", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn human_us(us: Option<f64>) -> String {
    match us {
        Some(us) if us >= 1000.0 => format!("{:.1}ms", us / 1000.0),
        Some(us) => format!("{us:.0}µs"),
        None => "-".into(),
    }
}

/// The results as a Markdown table.
pub fn results_table(results: &[RunResult]) -> String {
    let mut out = String::from(
        "| scenario | mode | partitions | rows | output rows | records/s | per core | cores busy | p50 batch | p99 batch | peak RSS (input) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let mode = match &r.format {
            Some(f) => format!("{} ({f})", r.mode),
            None => r.mode.clone(),
        };
        let parts = if r.partitions == r.requested_partitions {
            r.partitions.to_string()
        } else {
            format!("{} of {}", r.partitions, r.requested_partitions)
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} MB ({} MB) |\n",
            r.scenario,
            mode,
            parts,
            r.rows,
            r.output_rows,
            human_rate(r.rate()),
            human_rate(r.rate_per_core()),
            r.cores_busy(),
            human_us(r.latency_p50_us),
            human_us(r.latency_p99_us),
            r.peak_rss_kb / 1024,
            r.base_rss_kb / 1024,
        ));
    }
    out
}

/// Rates per width and the speedup over the narrowest width, per (scenario, mode).
pub fn scaling_table(results: &[RunResult], widths: &[usize]) -> String {
    let Some(&first) = widths.first() else {
        return String::new();
    };
    let mut out = String::from("| scenario | mode |");
    for w in widths {
        out.push_str(&format!(" {w} partition(s) |"));
    }
    for w in &widths[1..] {
        out.push_str(&format!(" speedup {w} vs {first} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(widths.len() * 2 - 1));
    out.push('\n');
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for r in results {
        let key = (r.scenario.as_str(), r.mode.as_str());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let at = |w: usize| {
            results.iter().find(|x| {
                (x.scenario.as_str(), x.mode.as_str()) == key && x.requested_partitions == w
            })
        };
        out.push_str(&format!("| {} | {} |", key.0, key.1));
        for &w in widths {
            let cell = match at(w) {
                Some(x) if x.partitions != w => {
                    format!(" {} (ran on {}) |", human_rate(x.rate()), x.partitions)
                }
                Some(x) => format!(" {} |", human_rate(x.rate())),
                None => " - |".into(),
            };
            out.push_str(&cell);
        }
        let base = at(first).map(RunResult::rate).filter(|r| *r > 0.0);
        for &w in &widths[1..] {
            match (base, at(w)) {
                (Some(b), Some(x)) => out.push_str(&format!(" {:.2}× |", x.rate() / b)),
                _ => out.push_str(" - |"),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() -> BenchResult<()> {
        let r = RunResult {
            scenario: "s".into(),
            mode: "engine".into(),
            partitions: 2,
            requested_partitions: 2,
            rows: 10,
            output_rows: 5,
            late_rows: 0,
            seconds: 0.5,
            cpu_s: 0.75,
            generate_s: 0.1,
            latency_p50_us: Some(3.0),
            latency_p99_us: None,
            base_rss_kb: 100,
            peak_rss_kb: 200,
            single_reason: None,
            format: Some("csv".into()),
        };
        assert_eq!(RunResult::from_json(&r.to_json())?, r);
        assert!(results_table(std::slice::from_ref(&r)).contains("| 1.50 |"));
        assert!(scaling_table(&[r], &[1, 2]).contains("| s | engine | - | 20 |"));
        Ok(())
    }

    #[test]
    fn cpu_seconds_counts_this_process_work() {
        use std::time::{Duration, Instant};
        let before = cpu_seconds();
        let started = Instant::now();
        let mut spins = 0u64;
        while cpu_seconds() - before < 0.005 && started.elapsed() < Duration::from_secs(10) {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        assert!(
            cpu_seconds() - before >= 0.005,
            "no CPU time after {spins} spins"
        );
    }
}
