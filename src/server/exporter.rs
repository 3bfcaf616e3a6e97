//! `/metrics`: every job's live metrics as Prometheus metric families, written in the text
//! format by the prometheus crate's encoder. Values are read from the jobs' atomics at scrape
//! time; nothing on a job's path changes for a scrape.

use prometheus::core::Metric as _;
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::Encoder as _;

use super::registry::JobEntry;
use crate::error::{Result, VeloError};
use crate::exec::input::now_millis;

/// One metric family being filled.
struct Family(MetricFamily);

impl Family {
    fn new(name: &str, help: &str, kind: MetricType) -> Self {
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        Family(family)
    }

    fn add(&mut self, labels: &[(&str, String)], value: f64) {
        let mut metric = Metric::from_label(label_pairs(labels));
        match self.0.get_field_type() {
            MetricType::COUNTER => {
                let mut counter = Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            }
            _ => {
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
        }
        self.0.mut_metric().push(metric);
    }

    fn add_metric(&mut self, labels: &[(&str, String)], mut metric: Metric) {
        metric.set_label(label_pairs(labels));
        self.0.mut_metric().push(metric);
    }
}

fn label_pairs(labels: &[(&str, String)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.clone());
            pair
        })
        .collect()
}

/// The metric families of `jobs`.
pub fn families(jobs: &[&JobEntry]) -> Vec<MetricFamily> {
    use MetricType::{COUNTER, GAUGE, HISTOGRAM};
    let mut records_in = Family::new(
        "velostream_job_records_in_total",
        "Records read from the job's sources.",
        COUNTER,
    );
    let mut records_out = Family::new(
        "velostream_job_records_out_total",
        "Result rows written to the job's sink.",
        COUNTER,
    );
    let mut errors = Family::new(
        "velostream_job_errors_total",
        "Bad records (sent to the dead-letter file).",
        COUNTER,
    );
    let mut late = Family::new(
        "velostream_job_late_records_total",
        "Records dropped as too late, per partition worker.",
        COUNTER,
    );
    let mut watermark = Family::new(
        "velostream_job_watermark_seconds",
        "Each input partition's watermark (epoch seconds).",
        GAUGE,
    );
    let mut watermark_lag = Family::new(
        "velostream_job_watermark_lag_seconds",
        "How far each input partition's watermark is behind wall time.",
        GAUGE,
    );
    let mut state_keys = Family::new(
        "velostream_job_state_keys",
        "Keys (groups, windows' groups, waiting join rows) held, per partition worker.",
        GAUGE,
    );
    let mut kafka_lag = Family::new(
        "velostream_kafka_consumer_lag_records",
        "Records between a Kafka input partition's read position and its end.",
        GAUGE,
    );
    let mut state_bytes = Family::new(
        "velostream_job_state_bytes",
        "An estimate of the bytes state holds (keys, accumulators, waiting rows), per worker.",
        GAUGE,
    );
    let mut latency = Family::new(
        "velostream_job_batch_latency_seconds",
        "From routing an input batch to delivering every worker's output for it.",
        HISTOGRAM,
    );
    let mut checkpoints = Family::new(
        "velostream_checkpoint_duration_seconds",
        "How long each checkpoint took to write.",
        HISTOGRAM,
    );
    let now = now_millis();
    for job in jobs {
        let m = job.metrics();
        let name = || ("job", job.name().to_string());
        records_in.add(&[name()], m.records_in.load(ORDER) as f64);
        records_out.add(&[name()], m.records_out.load(ORDER) as f64);
        errors.add(&[name()], m.errors.load(ORDER) as f64);
        for (worker, values) in m.worker_values().into_iter().enumerate() {
            let labels = [name(), ("partition", worker.to_string())];
            state_keys.add(&labels, values.state_keys as f64);
            state_bytes.add(&labels, values.state_bytes as f64);
            late.add(&labels, values.late as f64);
        }
        let sources = super::api::sources(job.plan());
        for ((input, partition), time) in m.times() {
            let labels = [
                name(),
                ("source", sources.get(input).cloned().unwrap_or_default()),
                ("partition", partition.to_string()),
            ];
            watermark.add(&labels, time.watermark_ms as f64 / 1000.0);
            watermark_lag.add(
                &labels,
                now.saturating_sub(time.watermark_ms) as f64 / 1000.0,
            );
        }
        for ((input, partition), (topic, records)) in m.kafka_lag() {
            let labels = [
                name(),
                ("source", sources.get(input).cloned().unwrap_or_default()),
                ("topic", topic),
                ("partition", partition.to_string()),
            ];
            kafka_lag.add(&labels, records as f64);
        }
        latency.add_metric(&[name()], m.latency.metric());
        checkpoints.add_metric(&[name()], m.checkpoint_seconds.metric());
    }
    let built_in = [
        records_in,
        records_out,
        errors,
        late,
        watermark,
        watermark_lag,
        state_keys,
        state_bytes,
        kafka_lag,
        latency,
        checkpoints,
    ]
    .into_iter()
    .map(|f| f.0);
    built_in
        .chain(declared(jobs))
        // The encoder refuses a family without samples (no event time yet, no jobs).
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

/// The metrics the jobs' SQL declares, each labelled with its job. Jobs that declare the same
/// name share its family; a family of another type under a name already taken is left out.
fn declared(jobs: &[&JobEntry]) -> Vec<MetricFamily> {
    let mut families: Vec<MetricFamily> = Vec::new();
    for job in jobs {
        for collector in job.metrics().declared() {
            for mut family in collector.collect() {
                let job_label = ("job", job.name().to_string());
                for metric in family.mut_metric().iter_mut() {
                    let mut labels = label_pairs(std::slice::from_ref(&job_label));
                    labels.extend(metric.take_label());
                    metric.set_label(labels);
                }
                match families.iter_mut().find(|f| f.name() == family.name()) {
                    Some(f) if f.get_field_type() == family.get_field_type() => {
                        f.mut_metric().extend(family.take_metric());
                    }
                    Some(_) => tracing::warn!(
                        metric = family.name(),
                        job = job.name(),
                        "a declared metric's name is taken by one of another type: left out"
                    ),
                    None => families.push(family),
                }
            }
        }
    }
    families
}

/// `jobs`' metrics in the Prometheus text format.
pub fn render(jobs: &[&JobEntry]) -> Result<String> {
    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families(jobs), &mut text)
        .map_err(|e| VeloError::Execution(format!("encoding the metrics: {e}")))?;
    String::from_utf8(text).map_err(|e| VeloError::Execution(format!("the metrics text: {e}")))
}

const ORDER: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;
