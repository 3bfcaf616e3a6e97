//! Metrics declared in SQL (`-- @metric: ...` above a CSAS), computed from the job's output
//! rows: a counter counts the rows that pass the condition, a gauge holds the field's value of
//! the latest such row, a histogram observes the field of each, per label values. Each job's
//! output thread owns its `DeclaredMetric`s; the server reads their collectors at scrape time.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use prometheus::core::Collector;

use crate::error::{Result, VeloError};
use crate::exec::change::is_delete;

/// What a declared metric computes.
#[derive(Debug, Clone)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram { buckets: Vec<f64> },
}

impl MetricKind {
    /// The kind's name in SQL and in the exposition.
    pub fn name(&self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram { .. } => "histogram",
        }
    }
}

/// One label value set's series.
#[derive(Clone)]
enum Series {
    Counter(prometheus::Counter),
    Gauge(prometheus::Gauge),
    Histogram(prometheus::Histogram),
}

/// The metric's collector: every label value set's series.
#[derive(Clone)]
pub enum MetricVec {
    Counter(prometheus::CounterVec),
    Gauge(prometheus::GaugeVec),
    Histogram(prometheus::HistogramVec),
}

impl std::fmt::Debug for MetricVec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            MetricVec::Counter(_) => "counter",
            MetricVec::Gauge(_) => "gauge",
            MetricVec::Histogram(_) => "histogram",
        };
        write!(f, "MetricVec({kind})")
    }
}

impl MetricVec {
    /// The metric's family as it stands (one metric per label value set).
    pub fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        match self {
            MetricVec::Counter(v) => v.collect(),
            MetricVec::Gauge(v) => v.collect(),
            MetricVec::Histogram(v) => v.collect(),
        }
    }

    fn series(&self, labels: &[&str]) -> Result<Series> {
        let series = match self {
            MetricVec::Counter(v) => v.get_metric_with_label_values(labels).map(Series::Counter),
            MetricVec::Gauge(v) => v.get_metric_with_label_values(labels).map(Series::Gauge),
            MetricVec::Histogram(v) => v
                .get_metric_with_label_values(labels)
                .map(Series::Histogram),
        };
        series.map_err(|e| VeloError::Execution(format!("a declared metric's labels: {e}")))
    }
}

/// A planned `@metric`: the expressions over the output rows and the collector they feed.
pub struct DeclaredMetric {
    pub name: String,
    pub kind: MetricKind,
    /// The output columns whose values label the series.
    labels: Vec<usize>,
    /// Rows that count: all when None.
    condition: Option<Arc<dyn PhysicalExpr>>,
    /// A gauge's or histogram's value.
    field: Option<Arc<dyn PhysicalExpr>>,
    collector: MetricVec,
    /// Series looked up so far, by label values: the collector's own map takes a lock.
    series: HashMap<Vec<String>, Series>,
}

/// What a `DeclaredMetric` is planned from.
pub struct MetricDeclaration {
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    /// The label names (output columns) and their column indices.
    pub labels: Vec<(String, usize)>,
    pub condition: Option<Arc<dyn PhysicalExpr>>,
    pub field: Option<Arc<dyn PhysicalExpr>>,
}

impl DeclaredMetric {
    /// The metric, with its collector made (the names were checked when it was planned).
    pub fn new(d: MetricDeclaration) -> Result<DeclaredMetric> {
        let names: Vec<&str> = d.labels.iter().map(|(n, _)| n.as_str()).collect();
        let opts = prometheus::Opts::new(&d.name, &d.help);
        let made = match &d.kind {
            MetricKind::Counter => {
                prometheus::CounterVec::new(opts, &names).map(MetricVec::Counter)
            }
            MetricKind::Gauge => prometheus::GaugeVec::new(opts, &names).map(MetricVec::Gauge),
            MetricKind::Histogram { buckets } => prometheus::HistogramVec::new(
                prometheus::HistogramOpts::from(opts).buckets(buckets.clone()),
                &names,
            )
            .map(MetricVec::Histogram),
        };
        let collector = made.map_err(|e| {
            VeloError::Config(format!("the metric '{}' cannot be made: {e}", d.name))
        })?;
        Ok(DeclaredMetric {
            name: d.name,
            kind: d.kind,
            labels: d.labels.into_iter().map(|(_, i)| i).collect(),
            condition: d.condition,
            field: d.field,
            collector,
            series: HashMap::new(),
        })
    }

    /// The collector the exporter reads.
    pub fn collector(&self) -> MetricVec {
        self.collector.clone()
    }

    /// Counts into `collector` from now on (a restarted run's, declared by the first run).
    pub fn count_into(&mut self, collector: MetricVec) {
        self.collector = collector;
        self.series.clear();
    }

    /// Counts or observes the rows of one output batch. Deletes (retractions) are not events.
    pub fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 || is_delete(batch) {
            return Ok(());
        }
        let passing = match &self.condition {
            Some(c) => Some(boolean(&evaluate(c, batch)?, &self.name)?),
            None => None,
        };
        let values = match &self.field {
            Some(f) => {
                let array = evaluate(f, batch)?;
                Some(arrow::compute::cast(&array, &DataType::Float64)?)
            }
            None => None,
        };
        let values = values.as_ref().map(|a| a.as_primitive::<Float64Type>());
        let labels: Vec<Arc<dyn Array>> = self
            .labels
            .iter()
            .map(|i| arrow::compute::cast(batch.column(*i), &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()?;
        let labels: Vec<_> = labels.iter().map(|a| a.as_string::<i32>()).collect();
        for row in 0..batch.num_rows() {
            if passing
                .as_ref()
                .is_some_and(|p| !p.is_valid(row) || !p.value(row))
            {
                continue;
            }
            // A NULL field has no value to set or observe.
            let value = match values {
                Some(v) if v.is_null(row) => continue,
                Some(v) => v.value(row),
                None => 0.0,
            };
            let key: Vec<String> = labels
                .iter()
                .map(|l| match l.is_null(row) {
                    true => String::new(),
                    false => l.value(row).to_string(),
                })
                .collect();
            let series = match self.series.get(&key) {
                Some(s) => s,
                None => {
                    let refs: Vec<&str> = key.iter().map(String::as_str).collect();
                    let made = self.collector.series(&refs)?;
                    self.series.entry(key).or_insert(made)
                }
            };
            match series {
                Series::Counter(c) => c.inc(),
                Series::Gauge(g) => g.set(value),
                Series::Histogram(h) => h.observe(value),
            }
        }
        Ok(())
    }
}

fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<Arc<dyn Array>> {
    Ok(expr.evaluate(batch)?.into_array(batch.num_rows())?)
}

fn boolean(array: &Arc<dyn Array>, metric: &str) -> Result<BooleanArray> {
    array
        .as_boolean_opt()
        .cloned()
        .ok_or_else(|| VeloError::Execution(format!("the condition of '{metric}' is not boolean")))
}
