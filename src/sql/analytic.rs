//! Planning of analytic functions over a stream (`... OVER (PARTITION BY k ORDER BY ts ...)`):
//! ranking, LAG/LEAD and framed aggregates, each with bounded per-partition state.

use std::sync::Arc;

use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::{
    Expr, WindowFrameBound, WindowFrameUnits, WindowFunctionDefinition,
};
use datafusion::physical_expr::aggregate::{AggregateFunctionExpr, LoweredAggregateBuilder};
use datafusion::physical_expr::PhysicalExpr;

/// What an analytic function computes for each row.
#[derive(Debug, Clone)]
pub enum AnalyticKind {
    /// 1, 2, 3, ... per partition.
    RowNumber,
    /// Rank with gaps; rows with equal ORDER BY values share a rank.
    Rank,
    /// Rank without gaps.
    DenseRank,
    /// The argument `offset` rows earlier in the partition, else `default`.
    Lag { offset: usize, default: ScalarValue },
    /// The argument `offset` rows later: the row is emitted when that row arrives (or at end).
    Lead { offset: usize, default: ScalarValue },
    /// An aggregate over the last `preceding` rows and the current one (all rows when None).
    Aggregate {
        function: Arc<AggregateFunctionExpr>,
        preceding: Option<usize>,
    },
}

/// One analytic function of a query.
#[derive(Debug, Clone)]
pub struct AnalyticFunction {
    pub kind: AnalyticKind,
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    pub order_by: Vec<Arc<dyn PhysicalExpr>>,
}

fn plan_err(msg: impl Into<String>) -> DataFusionError {
    DataFusionError::Plan(msg.into())
}

fn literal_usize(expr: Option<&Expr>, default: usize) -> datafusion::error::Result<usize> {
    match expr {
        None => Ok(default),
        Some(Expr::Literal(v, _)) => match v.cast_to(&arrow::datatypes::DataType::UInt64)? {
            ScalarValue::UInt64(Some(n)) => Ok(n as usize),
            _ => Err(plan_err("an offset must be a non-negative integer literal")),
        },
        Some(other) => Err(plan_err(format!(
            "an offset must be a literal, not {other}"
        ))),
    }
}

/// Plans one window expression (possibly aliased) against the input schema.
pub fn plan_analytic(
    state: &SessionState,
    expr: &Expr,
    input: &DFSchema,
    physical: &dyn Fn(Expr) -> datafusion::error::Result<Arc<dyn PhysicalExpr>>,
) -> datafusion::error::Result<AnalyticFunction> {
    let expr = match expr {
        Expr::Alias(a) => a.expr.as_ref(),
        e => e,
    };
    let Expr::WindowFunction(wf) = expr else {
        return Err(plan_err(format!("unsupported window expression {expr}")));
    };
    let WindowFunction { fun, params } = wf.as_ref();
    let partition_by = params
        .partition_by
        .iter()
        .map(|e| physical(e.clone()))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let order_by = params
        .order_by
        .iter()
        .map(|s| physical(s.expr.clone()))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let frame = &params.window_frame;
    let kind = match fun {
        WindowFunctionDefinition::WindowUDF(udwf) => match udwf.name().to_lowercase().as_str() {
            "row_number" => AnalyticKind::RowNumber,
            "rank" => AnalyticKind::Rank,
            "dense_rank" => AnalyticKind::DenseRank,
            name @ ("lag" | "lead") => {
                let offset = literal_usize(params.args.get(1), 1)?;
                let default = match params.args.get(2) {
                    Some(Expr::Literal(v, _)) => v.clone(),
                    Some(other) => return Err(plan_err(format!("a {name} default must be a literal, not {other}"))),
                    None => ScalarValue::Null,
                };
                if name == "lag" {
                    AnalyticKind::Lag { offset, default }
                } else {
                    AnalyticKind::Lead { offset, default }
                }
            }
            other => {
                return Err(plan_err(format!(
                    "{other} is not supported over a stream (ROW_NUMBER, RANK, DENSE_RANK, LAG, LEAD and aggregates are)"
                )))
            }
        },
        WindowFunctionDefinition::AggregateUDF(udaf) => {
            let ends_at_current = matches!(frame.end_bound, WindowFrameBound::CurrentRow)
                || (params.order_by.is_empty() && matches!(frame.end_bound, WindowFrameBound::Following(ref v) if v.is_null()));
            if !ends_at_current {
                return Err(plan_err("over a stream a frame must end at CURRENT ROW"));
            }
            let preceding = match (&frame.units, &frame.start_bound) {
                (_, WindowFrameBound::Preceding(v)) if v.is_null() => None,
                (WindowFrameUnits::Rows, WindowFrameBound::Preceding(v)) => {
                    Some(literal_usize(Some(&Expr::Literal(v.clone(), None)), 0)?)
                }
                (WindowFrameUnits::Rows, WindowFrameBound::CurrentRow) => Some(0),
                _ => return Err(plan_err("over a stream a frame is ROWS BETWEEN n PRECEDING (or UNBOUNDED PRECEDING) AND CURRENT ROW")),
            };
            let aggregate = Expr::AggregateFunction(AggregateFunction::new_udf(
                Arc::clone(udaf),
                params.args.clone(),
                params.distinct,
                None,
                Vec::new(),
                params.null_treatment,
            ));
            let planning_ctx = Default::default();
            let physical_input = input.as_arrow().clone();
            let lowered = LoweredAggregateBuilder::new(
                &aggregate,
                input,
                &physical_input,
                state.execution_props(),
                &planning_ctx,
            )
            .build()?;
            AnalyticKind::Aggregate {
                function: lowered.aggregate,
                preceding,
            }
        }
    };
    let args = match &kind {
        AnalyticKind::Aggregate { function, .. } => function.expressions(),
        AnalyticKind::Lag { .. } | AnalyticKind::Lead { .. } => match params.args.first() {
            Some(a) => vec![physical(a.clone())?],
            None => return Err(plan_err("LAG and LEAD take a value argument")),
        },
        _ => Vec::new(),
    };
    Ok(AnalyticFunction {
        kind,
        args,
        partition_by,
        order_by,
    })
}
