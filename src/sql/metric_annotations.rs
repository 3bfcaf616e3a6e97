//! `-- @metric` annotations above a CSAS: parsed, checked against the query's output columns
//! and planned into `DeclaredMetric`s. A malformed annotation is an error at its line and
//! column, so a deploy with one starts nothing.
//!
//! ```sql
//! -- @metric: big_trades_total
//! -- @metric_type: counter
//! -- @metric_help: "trades over 10k"
//! -- @metric_labels: symbol
//! -- @metric_condition: notional > 10000
//! ```

use arrow::datatypes::{DataType, SchemaRef};

use super::planner::QueryPlanner;
use super::script::{Annotation, Statement, StatementKind};
use super::source_text::{nearest, SourceText};
use crate::error::{Result, VeloError};
use crate::metrics::declared::{DeclaredMetric, MetricDeclaration, MetricKind};

/// The keys that describe the metric the last `@metric` started.
const KEYS: [&str; 6] = [
    "metric_type",
    "metric_help",
    "metric_labels",
    "metric_condition",
    "metric_field",
    "metric_buckets",
];

/// Prometheus's default buckets, for a histogram without `@metric_buckets`.
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One `@metric` and the annotations after it.
struct Block<'a> {
    name: &'a Annotation,
    keys: Vec<&'a Annotation>,
}

impl<'a> Block<'a> {
    fn get(&self, key: &str) -> Option<&'a Annotation> {
        self.keys.iter().rev().find(|a| a.key == key).copied()
    }
}

/// The statement's declared metrics, planned over its output columns `output`.
pub fn plan_metrics(
    stmt: &Statement,
    output: &SchemaRef,
    planner: &QueryPlanner,
    source: &SourceText,
) -> Result<Vec<DeclaredMetric>> {
    let at = |a: &Annotation, message: String| source.error(a.line, a.column, message);
    let mut blocks: Vec<Block> = Vec::new();
    for a in &stmt.metric_annotations {
        if a.key == "metric" {
            blocks.push(Block {
                name: a,
                keys: Vec::new(),
            });
            continue;
        }
        if !KEYS.contains(&a.key.as_str()) {
            let hint = nearest(&a.key, KEYS.iter().copied().chain(["metric"]))
                .map(|k| format!(" (did you mean '@{k}'?)"))
                .unwrap_or_default();
            return Err(at(a, format!("unknown annotation '@{}'{hint}", a.key)));
        }
        match blocks.last_mut() {
            Some(block) => block.keys.push(a),
            None => {
                return Err(at(
                    a,
                    format!("'@{}' comes before any '@metric: name'", a.key),
                ))
            }
        }
    }
    if let (Some(first), StatementKind::CreateSource { .. }) = (blocks.first(), &stmt.kind) {
        return Err(at(
            first.name,
            "a metric is computed from a query's output rows: declare it above a \
             CREATE STREAM ... AS SELECT"
                .to_string(),
        ));
    }
    let mut metrics: Vec<DeclaredMetric> = Vec::new();
    for block in &blocks {
        let name = &block.name.value;
        if !valid_name(name) {
            return Err(at(
                block.name,
                format!(
                    "'{name}' is not a metric name: letters, digits, '_' and ':', not starting \
                     with a digit"
                ),
            ));
        }
        if name.starts_with("velostream_") {
            return Err(at(
                block.name,
                format!("'{name}': names starting 'velostream_' are the built-in metrics'"),
            ));
        }
        if metrics.iter().any(|m| m.name == *name) {
            return Err(at(
                block.name,
                format!("the metric '{name}' is declared twice"),
            ));
        }
        metrics.push(DeclaredMetric::new(declaration(
            block, output, planner, &at,
        )?)?);
    }
    Ok(metrics)
}

/// A metric name as Prometheus allows it.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn declaration(
    block: &Block,
    output: &SchemaRef,
    planner: &QueryPlanner,
    at: &dyn Fn(&Annotation, String) -> VeloError,
) -> Result<MetricDeclaration> {
    let name = block.name.value.clone();
    let kind = match block.get("metric_type") {
        None => MetricKind::Counter,
        Some(a) => match a.value.to_lowercase().as_str() {
            "counter" => MetricKind::Counter,
            "gauge" => MetricKind::Gauge,
            "histogram" => MetricKind::Histogram {
                buckets: match block.get("metric_buckets") {
                    Some(b) => buckets(b).map_err(|m| at(b, m))?,
                    None => DEFAULT_BUCKETS.to_vec(),
                },
            },
            other => {
                return Err(at(
                    a,
                    format!("'{other}' is not a metric type: counter, gauge or histogram"),
                ))
            }
        },
    };
    if let (Some(b), false) = (
        block.get("metric_buckets"),
        matches!(kind, MetricKind::Histogram { .. }),
    ) {
        return Err(at(b, "'@metric_buckets' is for a histogram".to_string()));
    }
    let field = match (block.get("metric_field"), &kind) {
        (Some(f), MetricKind::Counter) => {
            return Err(at(
                f,
                format!(
                    "'{name}' is a counter, which counts rows: '@metric_field' is for a gauge \
                     or a histogram"
                ),
            ))
        }
        (Some(f), _) => {
            let expr = planner
                .row_expr(&f.value, output)
                .map_err(|m| at(f, format!("'@metric_field' of '{name}': {m}")))?;
            if !expr.0.is_numeric() {
                return Err(at(
                    f,
                    format!(
                        "'@metric_field' of '{name}' must be a number, and '{}' is {}",
                        f.value, expr.0
                    ),
                ));
            }
            Some(expr.1)
        }
        (None, MetricKind::Counter) => None,
        (None, kind) => {
            return Err(at(
                block.name,
                format!(
                    "the {} '{name}' needs '@metric_field': the output column (or expression) \
                     it measures",
                    kind.name()
                ),
            ))
        }
    };
    let condition = match block.get("metric_condition") {
        Some(c) => {
            let (data_type, expr) = planner
                .row_expr(&c.value, output)
                .map_err(|m| at(c, format!("'@metric_condition' of '{name}': {m}")))?;
            if data_type != DataType::Boolean {
                return Err(at(
                    c,
                    format!(
                        "'@metric_condition' of '{name}' must be true or false, and '{}' is \
                         {data_type}",
                        c.value
                    ),
                ));
            }
            Some(expr)
        }
        None => None,
    };
    let mut labels = Vec::new();
    if let Some(l) = block.get("metric_labels") {
        for label in l.value.split(',').map(str::trim) {
            let Ok(index) = output.index_of(label) else {
                let columns = output.fields().iter().map(|f| f.name().as_str());
                let hint = nearest(label, columns)
                    .map(|c| format!(" (did you mean '{c}'?)"))
                    .unwrap_or_default();
                return Err(at(
                    l,
                    format!("the label '{label}' of '{name}' is not an output column{hint}"),
                ));
            };
            if !valid_name(label) || label.starts_with("__") {
                return Err(at(l, format!("'{label}' cannot be a label name")));
            }
            labels.push((label.to_string(), index));
        }
    }
    if labels.iter().any(|(l, _)| l == "job") {
        return Err(at(
            block.get("metric_labels").unwrap_or(block.name),
            "'job' is the label every metric gets: rename the column".to_string(),
        ));
    }
    let help = block
        .get("metric_help")
        .map(|h| h.value.trim_matches('"').to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| name.clone());
    Ok(MetricDeclaration {
        name,
        help,
        kind,
        labels,
        condition,
        field,
    })
}

/// `@metric_buckets: 0.1, 1, 10`: finite upper bounds, in increasing order.
fn buckets(a: &Annotation) -> std::result::Result<Vec<f64>, String> {
    let mut out: Vec<f64> = Vec::new();
    for text in a.value.split(',').map(str::trim) {
        let bound: f64 = text
            .parse()
            .ok()
            .filter(|b: &f64| b.is_finite())
            .ok_or_else(|| format!("'{text}' is not a bucket bound (a number)"))?;
        if out.last().is_some_and(|last| *last >= bound) {
            return Err("'@metric_buckets' must increase: 0.1, 1, 10".to_string());
        }
        out.push(bound);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::script::parse_script;
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    fn output() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, true),
            Field::new("qty", DataType::Int64, true),
            Field::new("price", DataType::Float64, true),
        ]))
    }

    fn planned(annotations: &str) -> Result<Vec<DeclaredMetric>> {
        let sql = format!(
            "{annotations}\nCREATE STREAM out AS SELECT symbol, qty, price FROM t \
             WITH ('out.type' = 'stdout');"
        );
        let script = parse_script(&sql)?;
        plan_metrics(
            &script.statements[0],
            &output(),
            &QueryPlanner::new(),
            &script.source,
        )
    }

    fn error(annotations: &str) -> String {
        match planned(annotations) {
            Ok(_) => panic!("planned: {annotations}"),
            Err(e) => e.to_string(),
        }
    }

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            output(),
            vec![
                Arc::new(StringArray::from(vec![
                    Some("A"),
                    Some("B"),
                    Some("A"),
                    None,
                ])),
                Arc::new(Int64Array::from(vec![5, 50, 500, 7])),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])),
            ],
        )
        .expect("batch")
    }

    /// The text the exporter would write for `metric`.
    fn exposition(metric: &DeclaredMetric) -> String {
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &metric.collector().collect(),
            &mut text,
        )
        .expect("encode");
        String::from_utf8(text).expect("utf8")
    }

    #[test]
    fn a_counter_counts_the_rows_that_pass_its_condition_per_label() {
        let mut metrics = planned(
            "-- @metric: big_total\n-- @metric_type: counter\n-- @metric_help: \"big ones\"\n\
             -- @metric_labels: symbol\n-- @metric_condition: qty > 10",
        )
        .expect("planned");
        metrics[0].observe(&batch()).expect("observe");
        metrics[0].observe(&batch()).expect("observe");
        let text = exposition(&metrics[0]);
        assert!(text.contains("# HELP big_total big ones"), "{text}");
        assert!(text.contains("big_total{symbol=\"A\"} 2"), "{text}");
        assert!(text.contains("big_total{symbol=\"B\"} 2"), "{text}");
        assert!(!text.contains("symbol=\"\""), "{text}");
    }

    #[test]
    fn a_gauge_holds_the_latest_value_and_a_histogram_observes_each() {
        let mut metrics = planned(
            "-- @metric: last_price\n-- @metric_type: gauge\n-- @metric_field: price\n\
             -- @metric_labels: symbol\n\
             -- @metric: qty_hist\n-- @metric_type: histogram\n-- @metric_field: qty * 2\n\
             -- @metric_buckets: 10, 100, 1000",
        )
        .expect("planned");
        for m in &mut metrics {
            m.observe(&batch()).expect("observe");
        }
        let gauge = exposition(&metrics[0]);
        assert!(gauge.contains("last_price{symbol=\"A\"} 3"), "{gauge}");
        assert!(gauge.contains("last_price{symbol=\"\"} 4"), "{gauge}");
        let histogram = exposition(&metrics[1]);
        assert!(
            histogram.contains("qty_hist_bucket{le=\"10\"} 1"),
            "{histogram}"
        );
        assert!(
            histogram.contains("qty_hist_bucket{le=\"100\"} 3"),
            "{histogram}"
        );
        assert!(histogram.contains("qty_hist_sum 1124"), "{histogram}");
        assert!(histogram.contains("qty_hist_count 4"), "{histogram}");
    }

    #[test]
    fn deletes_are_not_counted() {
        let mut metrics = planned("-- @metric: rows_total").expect("planned");
        metrics[0]
            .observe(&crate::exec::change::mark_delete(batch()))
            .expect("observe");
        metrics[0].observe(&batch()).expect("observe");
        assert!(exposition(&metrics[0]).contains("rows_total 4"));
    }

    #[test]
    fn malformed_annotations_are_errors_at_their_line_and_column() {
        let e = error("-- @metric: m\n-- @metric_lables: symbol");
        assert!(
            e.contains("unknown annotation '@metric_lables' (did you mean '@metric_labels'?)"),
            "{e}"
        );
        assert!(e.contains("line 2"), "{e}");
        let e = error("-- @metric: m\n-- @metric_labels: symbl");
        assert!(
            e.contains("the label 'symbl' of 'm' is not an output column (did you mean 'symbol'?)"),
            "{e}"
        );
        assert!(e.contains("line 2, column 20"), "{e}");
        let e = error("-- @metric: m\n-- @metric_type: gauge");
        assert!(e.contains("the gauge 'm' needs '@metric_field'"), "{e}");
        let e = error("-- @metric: m\n-- @metric_type: meter");
        assert!(e.contains("'meter' is not a metric type"), "{e}");
        let e = error("-- @metric: m\n-- @metric_condition: qty + 1");
        assert!(
            e.contains("must be true or false, and 'qty + 1' is Int64"),
            "{e}"
        );
        let e = error("-- @metric: m\n-- @metric_condition: nope > 1");
        assert!(e.contains("'@metric_condition' of 'm'"), "{e}");
        let e = error("-- @metric: m\n-- @metric_type: gauge\n-- @metric_field: symbol");
        assert!(e.contains("must be a number"), "{e}");
        let e = error("-- @metric: m\n-- @metric_type: histogram\n-- @metric_field: qty\n-- @metric_buckets: 10, 1");
        assert!(e.contains("must increase"), "{e}");
        let e = error("-- @metric: 9lives");
        assert!(e.contains("is not a metric name"), "{e}");
        let e = error("-- @metric_type: counter\n-- @metric: m");
        assert!(e.contains("comes before any '@metric: name'"), "{e}");
        let e = error("-- @metric: velostream_job_records_in_total");
        assert!(e.contains("are the built-in metrics'"), "{e}");
        let e = error("-- @metric: m\n-- @metric: m");
        assert!(e.contains("declared twice"), "{e}");
        let e = error("-- @metric: m\n-- @metric_field: qty");
        assert!(e.contains("is a counter"), "{e}");
    }
}
