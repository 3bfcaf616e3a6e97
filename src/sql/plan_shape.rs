//! What a plan's state depends on, one line per part: a restore compares these lines with the
//! checkpoint's and names the first that changed, instead of loading state into a plan it
//! does not fit.

use std::sync::Arc;

use arrow::datatypes::Schema;
use datafusion::physical_expr::PhysicalExpr;

use super::planner::{PlanStage, PlannedQuery};

impl PlanStage {
    /// The stage's kind, part of its operator's stable name ("2-aggregate").
    pub fn kind(&self) -> &'static str {
        match self {
            PlanStage::Filter { .. } => "filter",
            PlanStage::Project { .. } => "project",
            PlanStage::Aggregate(_) => "aggregate",
            PlanStage::Distinct => "distinct",
            PlanStage::Sort { .. } => "sort",
            PlanStage::Limit { .. } => "limit",
            PlanStage::Analytic { .. } => "analytic",
            PlanStage::LookupJoin(_) => "lookup-join",
            PlanStage::Merge(_) => "merge",
        }
    }

    /// The state the stage keeps, and what bounds it (None: it keeps none).
    pub fn state_bound(&self) -> Option<(&'static str, String)> {
        use super::planner::MergeKind;
        let ttl = |ttl: &Option<crate::sql::StateTtl>| {
            ttl.map(|t| format!("'state.ttl' = {} ms of {:?} time", t.ttl_ms, t.clock))
        };
        match self {
            PlanStage::Filter { .. } | PlanStage::Project { .. } => None,
            PlanStage::Aggregate(agg) => Some(match (&agg.window, agg.closes_on) {
                (Some(w), _) => (
                    "accumulators per group of each open window",
                    format!(
                        "a window goes when the watermark passes its end plus {} ms",
                        w.allowed_lateness_ms
                    ),
                ),
                (None, Some(_)) => (
                    "accumulators per group of each open window end",
                    "a group goes when the watermark passes its window end".to_string(),
                ),
                (None, None) => (
                    "accumulators per group",
                    ttl(&agg.ttl).unwrap_or_else(|| "none: every key seen is kept".to_string()),
                ),
            }),
            PlanStage::Distinct => Some(("every distinct row", "none".to_string())),
            PlanStage::Sort { .. } => Some(("every row until the input ends", "none".to_string())),
            PlanStage::Limit { .. } => Some(("a row count", "constant".to_string())),
            PlanStage::Analytic { .. } => {
                Some(("each partition's frame", "the frame's size".to_string()))
            }
            PlanStage::LookupJoin(_) => Some((
                "the table, read whole before the stream",
                "the table's keys".to_string(),
            )),
            PlanStage::Merge(merge) => match &merge.kind {
                MergeKind::Union => None,
                MergeKind::IntervalJoin(j) => Some((
                    "each side's rows waiting for a partner",
                    match j.ttl_ms {
                        Some(ttl) => format!("'state.ttl' = {ttl} ms of event time"),
                        None => format!(
                            "a row goes when the other side's watermark passes its bound \
                             ({} ms to {} ms)",
                            j.lower_ms, j.upper_ms
                        ),
                    },
                )),
                MergeKind::ChangelogJoin(j) => Some((
                    "each side's live rows",
                    format!(
                        "a changelog side's keys; an append-only side's rows for 'state.ttl' \
                         = {} ms",
                        j.ttl_ms
                    ),
                )),
            },
        }
    }

    /// One line describing what the stage computes.
    pub fn describe(&self) -> String {
        match self {
            PlanStage::Filter { predicate } => format!("WHERE {predicate}"),
            PlanStage::Project { exprs, .. } => format!("SELECT {}", list(exprs)),
            PlanStage::Aggregate(agg) => {
                let aggregates: Vec<String> = agg
                    .aggregates
                    .iter()
                    .map(|a| a.name().to_string())
                    .collect();
                let filters: Vec<String> = agg
                    .filters
                    .iter()
                    .map(|f| f.as_ref().map_or("-".to_string(), |f| f.to_string()))
                    .collect();
                let window = agg.window.as_ref().map_or("none".to_string(), |w| {
                    format!(
                        "{:?} on {} lateness {}ms {:?}",
                        w.kind, w.time_expr, w.allowed_lateness_ms, w.late_strategy
                    )
                });
                format!(
                    "GROUP BY {} AGGREGATES [{}] FILTERS [{}] HAVING {} EMIT {:?} WINDOW {window}",
                    list(&agg.group_exprs),
                    aggregates.join(", "),
                    filters.join(", "),
                    agg.having
                        .as_ref()
                        .map_or("-".to_string(), |h| h.to_string()),
                    agg.emit,
                )
            }
            PlanStage::Distinct => "DISTINCT".to_string(),
            PlanStage::Sort { exprs } => {
                let exprs: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
                format!("ORDER BY {}", exprs.join(", "))
            }
            PlanStage::Limit { skip, fetch } => format!("OFFSET {skip} LIMIT {fetch:?}"),
            PlanStage::Analytic { functions, .. } => {
                let functions: Vec<String> = functions
                    .iter()
                    .map(|f| {
                        format!(
                            "{:?}({}) OVER (PARTITION BY {} ORDER BY {})",
                            f.kind,
                            list(&f.args),
                            list(&f.partition_by),
                            list(&f.order_by)
                        )
                    })
                    .collect();
                functions.join(", ")
            }
            PlanStage::Merge(merge) => {
                let inputs: Vec<String> = merge
                    .inputs
                    .iter()
                    .map(|i| {
                        let stages: Vec<String> = i.stages.iter().map(|s| s.describe()).collect();
                        format!("{} [{}]", i.source, stages.join("; "))
                    })
                    .collect();
                format!("{:?} WITH {}", merge.kind, inputs.join(", "))
            }
            PlanStage::LookupJoin(join) => format!(
                "{:?} JOIN table {} ON {} FILTER {}",
                join.kind,
                join.table,
                list(&join.stream_keys),
                join.filter
                    .as_ref()
                    .map_or("-".to_string(), |f| f.to_string())
            ),
        }
    }
}

impl PlannedQuery {
    /// The parts of the plan its state depends on: the input columns, each stage under its
    /// operator name, and the output columns.
    pub fn state_shape(&self) -> Vec<String> {
        let mut lines = vec![format!("input: {}", columns(&self.input_schema))];
        for (i, stage) in self.stages.iter().enumerate() {
            lines.push(format!("{i}-{}: {}", stage.kind(), stage.describe()));
        }
        lines.push(format!("output: {}", columns(&self.output_schema)));
        lines
    }
}

fn list(exprs: &[Arc<dyn PhysicalExpr>]) -> String {
    exprs
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn columns(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};

    use crate::sql::QueryPlanner;

    fn shape(sql: &str) -> Vec<String> {
        let mut planner = QueryPlanner::new();
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, true),
            Field::new("qty", DataType::Int64, true),
        ]));
        planner.register_source("t", schema).expect("source");
        planner.plan_sql(sql, "q").expect("plan").state_shape()
    }

    #[test]
    fn the_shape_names_what_the_state_depends_on() {
        let counts = shape("SELECT symbol, COUNT(*) AS n FROM t GROUP BY symbol EMIT CHANGES");
        assert_eq!(
            counts,
            shape("SELECT symbol, COUNT(*) AS n FROM t GROUP BY symbol EMIT CHANGES"),
            "the same SQL has the same shape"
        );
        let sums = shape("SELECT symbol, SUM(qty) AS n FROM t GROUP BY symbol EMIT CHANGES");
        let changed: Vec<_> = counts.iter().zip(&sums).filter(|(a, b)| a != b).collect();
        assert!(
            changed
                .iter()
                .any(|(a, _)| a.contains("aggregate") && a.contains("count")),
            "the aggregate line changed: {changed:?}"
        );
    }
}
