//! Interval joins of two streams: finding the time bounds in ON
//! (`b.ts BETWEEN a.ts - x AND a.ts + y`, or a pair of `>=`/`<=`, strict or not), and lowering
//! the join as a merge of its two inputs.

use std::sync::Arc;

use datafusion::common::{Column, DFSchema, DataFusionError};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprSchemable, Join, JoinType, LogicalPlan, Operator,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::lower::{nullable, physical_expr, Lowering};
use super::planner::{IntervalJoinPlan, JoinSides, MergeKind, MergePlan, PlanStage, SourceRole};
use super::ttl::TtlClock;
use super::window::late_data_settings;
use crate::error::{Result, VeloError};

/// The time bounds of an interval join: `lower <= right.time - left.time <= upper`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TimeBounds {
    left_time: Column,
    right_time: Column,
    lower_ms: i64,
    upper_ms: i64,
}

/// The time bounds in `join`'s condition, when it has both a lower and an upper one between
/// the same two columns.
pub(super) fn time_bounds(join: &Join) -> Result<Option<TimeBounds>> {
    let mut comparisons = Vec::new();
    // Windowed sides joined on their windows' end: the bound is that equality.
    let window_ends: Vec<Expr> = join
        .on
        .iter()
        .filter(|(l, r)| is_window_end(l, &join.left) && is_window_end(r, &join.right))
        .map(|(l, r)| l.clone().eq(r.clone()))
        .collect();
    for conjunct in window_ends
        .iter()
        .chain(join.filter.iter().flat_map(split_conjunction))
    {
        match conjunct {
            Expr::Between(b) if !b.negated => {
                comparisons.push((b.expr.as_ref(), Operator::GtEq, b.low.as_ref()));
                comparisons.push((b.expr.as_ref(), Operator::LtEq, b.high.as_ref()));
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                comparisons.push((left.as_ref(), *op, right.as_ref()))
            }
            _ => {}
        }
    }
    let side = |c: &Column| {
        if join.left.schema().has_column(c) {
            Some(0)
        } else if join.right.schema().has_column(c) {
            Some(1)
        } else {
            None
        }
    };
    let mut columns: Option<(Column, Column)> = None;
    let (mut lower, mut upper) = (None::<i64>, None::<i64>);
    for (a, op, b) in comparisons {
        let (Some((ca, oa)), Some((cb, ob))) = (time_term(a)?, time_term(b)?) else {
            continue;
        };
        // `x + oa  op  y + ob`, as `right - left  op'  v`.
        let (op, v, left, right) = match (side(&ca), side(&cb)) {
            (Some(0), Some(1)) => (flip(op), oa.checked_sub(ob), ca, cb),
            (Some(1), Some(0)) => (Some(op), ob.checked_sub(oa), cb, ca),
            _ => continue,
        };
        let (Some(op), Some(v)) = (op, v) else {
            continue;
        };
        match &columns {
            Some(pair) if *pair != (left.clone(), right.clone()) => continue,
            _ => columns = Some((left, right)),
        }
        let tighter_lower = |v: i64| Some(lower.map_or(v, |l: i64| l.max(v)));
        let tighter_upper = |v: i64| Some(upper.map_or(v, |u: i64| u.min(v)));
        match op {
            Operator::GtEq => lower = tighter_lower(v),
            Operator::Gt => lower = v.checked_add(1).and_then(tighter_lower),
            Operator::LtEq => upper = tighter_upper(v),
            Operator::Lt => upper = v.checked_sub(1).and_then(tighter_upper),
            Operator::Eq => {
                lower = tighter_lower(v);
                upper = tighter_upper(v);
            }
            _ => {}
        }
    }
    let (Some((left_time, right_time)), Some(lower_ms), Some(upper_ms)) = (columns, lower, upper)
    else {
        return Ok(None);
    };
    if lower_ms > upper_ms {
        return Err(plan_error(format!(
            "the join's time bounds leave no room: the right time must be between \
             {lower_ms} ms and {upper_ms} ms after the left"
        )));
    }
    Ok(Some(TimeBounds {
        left_time,
        right_time,
        lower_ms,
        upper_ms,
    }))
}

/// True for a column of `side`'s rows that is a window's `_window_end`, by that name or an
/// alias (`HOP_END(...) AS endtime`).
fn is_window_end(e: &Expr, side: &LogicalPlan) -> bool {
    matches!(e, Expr::Column(c) if names_window_end(side, &c.name))
}

/// Whether `name`, a column of `plan`'s rows, is `_window_end` under its aliases.
fn names_window_end(plan: &LogicalPlan, name: &str) -> bool {
    if name == super::window::WINDOW_END {
        return true;
    }
    match plan {
        LogicalPlan::SubqueryAlias(alias) => names_window_end(&alias.input, name),
        LogicalPlan::Filter(filter) => names_window_end(&filter.input, name),
        // A group key passes its column through (`GROUP BY endtime` over a window's rows).
        LogicalPlan::Aggregate(aggregate) => aggregate.group_expr.iter().any(|e| {
            matches!(e, Expr::Column(c) if c.name == name && names_window_end(&aggregate.input, name))
        }),
        LogicalPlan::Projection(projection) => projection
            .expr
            .iter()
            .zip(projection.schema.fields())
            .any(|(e, field)| {
                let inner = match e {
                    Expr::Alias(alias) => alias.expr.as_ref(),
                    other => other,
                };
                field.name() == name
                    && matches!(inner, Expr::Column(c) if names_window_end(&projection.input, &c.name))
            }),
        _ => false,
    }
}

/// `right op left` for `left op right`.
fn flip(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        Operator::Eq => Operator::Eq,
        _ => return None,
    })
}

/// `column ± constant`: the column and the offset in ms (None: not of that form).
fn time_term(e: &Expr) -> Result<Option<(Column, i64)>> {
    Ok(match e {
        Expr::Column(c) => Some((c.clone(), 0)),
        Expr::Cast(c) => time_term(&c.expr)?,
        Expr::TryCast(c) => time_term(&c.expr)?,
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (Some((column, offset)), Some(ms)) = (time_term(left)?, constant_ms(right)?) else {
                return Ok(None);
            };
            let shifted = match op {
                Operator::Plus => offset.checked_add(ms),
                Operator::Minus => offset.checked_sub(ms),
                _ => return Ok(None),
            };
            let shifted = shifted.ok_or_else(|| {
                plan_error("the join's time bound overflows a 64-bit count of milliseconds")
            })?;
            Some((column, shifted))
        }
        _ => None,
    })
}

/// A constant duration in ms: integer milliseconds or an `INTERVAL` of days and smaller.
fn constant_ms(e: &Expr) -> Result<Option<i64>> {
    let overflow = || plan_error("the join's time bound overflows a 64-bit count of milliseconds");
    Ok(match e {
        Expr::Cast(c) => constant_ms(&c.expr)?,
        Expr::Literal(value, _) => match value {
            ScalarValue::Int64(Some(v)) => Some(*v),
            ScalarValue::Int32(Some(v)) => Some(i64::from(*v)),
            ScalarValue::Int16(Some(v)) => Some(i64::from(*v)),
            ScalarValue::Int8(Some(v)) => Some(i64::from(*v)),
            ScalarValue::UInt32(Some(v)) => Some(i64::from(*v)),
            ScalarValue::IntervalDayTime(Some(v)) => Some(
                i64::from(v.days)
                    .checked_mul(86_400_000)
                    .and_then(|d| d.checked_add(i64::from(v.milliseconds)))
                    .ok_or_else(overflow)?,
            ),
            ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => Some(
                i64::from(v.days)
                    .checked_mul(86_400_000)
                    .and_then(|d| d.checked_add(v.nanoseconds / 1_000_000))
                    .ok_or_else(overflow)?,
            ),
            ScalarValue::IntervalMonthDayNano(Some(_)) | ScalarValue::IntervalYearMonth(_) => {
                return Err(plan_error(
                    "a join's time bound must be a fixed length: months and years vary",
                ))
            }
            _ => None,
        },
        _ => None,
    })
}

/// Makes times of both kinds meet: `t + INTERVAL '5' SECOND` becomes `t + 5000` where `t` holds
/// epoch milliseconds as an integer, and an integer compared with a timestamp (such as
/// `_window_end` with a TIMESTAMP column) is read as epoch milliseconds. Time bounds then read
/// the same over integer and timestamp columns.
pub(super) fn align_time_types(
    plan: datafusion::logical_expr::LogicalPlan,
) -> datafusion::error::Result<datafusion::logical_expr::LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    plan.transform_up_with_subqueries(|node| {
        let mut schema = DFSchema::empty();
        for input in node.inputs() {
            schema.merge(input.schema());
        }
        node.map_expressions(|e| {
            e.transform_up(|e| {
                let type_of = |e: &Expr| e.get_type(&schema).ok();
                let millis = |e: &Expr| -> Option<Expr> {
                    let is_int = type_of(e).is_some_and(|t| t.is_integer());
                    is_int.then(|| {
                        Expr::Cast(datafusion::logical_expr::Cast::new(
                            Box::new(e.clone()),
                            arrow::datatypes::DataType::Timestamp(
                                arrow::datatypes::TimeUnit::Millisecond,
                                None,
                            ),
                        ))
                    })
                };
                let is_timestamp = |e: &Expr| {
                    matches!(type_of(e), Some(arrow::datatypes::DataType::Timestamp(..)))
                };
                match &e {
                    Expr::BinaryExpr(BinaryExpr { left, op, right })
                        if matches!(op, Operator::Plus | Operator::Minus) =>
                    {
                        let interval = matches!(
                            right.as_ref(),
                            Expr::Literal(
                                ScalarValue::IntervalDayTime(Some(_))
                                    | ScalarValue::IntervalMonthDayNano(Some(_)),
                                _
                            )
                        );
                        let integer_time = type_of(left).is_some_and(|t| t.is_integer());
                        match (interval && integer_time, constant_ms(right)) {
                            (true, Ok(Some(ms))) => {
                                Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                                    left: left.clone(),
                                    op: *op,
                                    right: Box::new(Expr::Literal(
                                        ScalarValue::Int64(Some(ms)),
                                        None,
                                    )),
                                })))
                            }
                            _ => Ok(Transformed::no(e)),
                        }
                    }
                    Expr::BinaryExpr(BinaryExpr { left, op, right })
                        if matches!(
                            op,
                            Operator::Eq
                                | Operator::NotEq
                                | Operator::Lt
                                | Operator::LtEq
                                | Operator::Gt
                                | Operator::GtEq
                        ) =>
                    {
                        let (l, r) = match (is_timestamp(left), is_timestamp(right)) {
                            (true, false) => (None, millis(right)),
                            (false, true) => (millis(left), None),
                            _ => (None, None),
                        };
                        if l.is_none() && r.is_none() {
                            return Ok(Transformed::no(e));
                        }
                        Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr {
                            left: Box::new(l.unwrap_or_else(|| left.as_ref().clone())),
                            op: *op,
                            right: Box::new(r.unwrap_or_else(|| right.as_ref().clone())),
                        })))
                    }
                    Expr::Between(b) if is_timestamp(&b.expr) => {
                        let (low, high) = (millis(&b.low), millis(&b.high));
                        if low.is_none() && high.is_none() {
                            return Ok(Transformed::no(e));
                        }
                        let mut between = b.clone();
                        if let Some(low) = low {
                            between.low = Box::new(low);
                        }
                        if let Some(high) = high {
                            between.high = Box::new(high);
                        }
                        Ok(Transformed::yes(Expr::Between(between)))
                    }
                    _ => Ok(Transformed::no(e)),
                }
            })
        })
    })
    .map(|t| t.data)
}

/// The bounds of a join of two streams with no time bound in ON: unlimited, over each side's
/// event time (`'state.ttl'` then bounds the state).
pub(super) fn unbounded(join: &Join) -> Result<TimeBounds> {
    let event_time = |side: &datafusion::logical_expr::LogicalPlan| {
        side.schema()
            .qualified_field_with_unqualified_name("_event_time")
            .map(|(q, f)| Column::new(q.cloned(), f.name()))
            .map_err(VeloError::DataFusion)
    };
    Ok(TimeBounds {
        left_time: event_time(&join.left)?,
        right_time: event_time(&join.right)?,
        lower_ms: i64::MIN,
        upper_ms: i64::MAX,
    })
}

/// What a join of two streams is made of, whatever keeps its state: each side's ON keys, the
/// rest of ON over both sides' columns, and the rows it emits.
pub(super) struct JoinShape {
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub rows: DFSchema,
}

impl Lowering<'_> {
    /// The keys, filter and output rows of `join` of `sides`, over the sides' rows.
    pub(super) fn join_shape(
        &self,
        join: &Join,
        sides: JoinSides,
        left_rows: &DFSchema,
        right_rows: &DFSchema,
    ) -> Result<JoinShape> {
        let state = self.ctx.state;
        let mut keys = [
            Vec::with_capacity(join.on.len()),
            Vec::with_capacity(join.on.len()),
        ];
        for (l, r) in &join.on {
            keys[0].push(physical_expr(state, l.clone(), left_rows)?);
            keys[1].push(physical_expr(state, r.clone(), right_rows)?);
        }
        let pair_rows = left_rows.join(right_rows)?;
        let filter = match &join.filter {
            Some(f) => Some(physical_expr(state, f.clone(), &pair_rows)?),
            None => None,
        };
        let rows = match sides {
            JoinSides::Inner => pair_rows,
            JoinSides::Left => left_rows.join(&nullable(right_rows)?)?,
            JoinSides::Right => nullable(left_rows)?.join(right_rows)?,
            JoinSides::Full => nullable(left_rows)?.join(&nullable(right_rows)?)?,
            JoinSides::Semi | JoinSides::Anti => left_rows.clone(),
        };
        Ok(JoinShape { keys, filter, rows })
    }

    /// True when `join` reads a declared table on either side: then it is a lookup, even
    /// with time bounds in its condition.
    pub(super) fn reads_declared_table(&self, join: &Join) -> bool {
        [&join.left, &join.right].iter().any(|side| {
            self.roles_under(side)
                .iter()
                .any(|(_, r)| matches!(r, SourceRole::Table { .. }))
        })
    }

    /// Lowers an interval join of two streams: the left continues this path as input 0, the
    /// right becomes input 1, and they meet at a merge that keeps each side's rows until the
    /// other side's watermark passes their bound.
    pub(super) fn interval_join(&mut self, join: &Join, bounds: TimeBounds) -> Result<DFSchema> {
        let unlimited = bounds.lower_ms == i64::MIN && bounds.upper_ms == i64::MAX;
        let ttl_ms = match (unlimited, self.ttl) {
            (false, _) => None,
            (true, Some(ttl)) if ttl.clock == TtlClock::Event => Some(ttl.ttl_ms),
            (true, _) => {
                return Err(plan_error(
                    "a join of two streams without time bounds keeps its state for \
                     'state.ttl' on event time ('state.ttl.clock' = 'event')",
                ))
            }
        };
        let sides = match join.join_type {
            JoinType::Inner => JoinSides::Inner,
            JoinType::Left => JoinSides::Left,
            JoinType::Right => JoinSides::Right,
            JoinType::Full => JoinSides::Full,
            JoinType::LeftSemi => JoinSides::Semi,
            // NOT IN's NULL rules would hold every left row back while any right row is NULL.
            JoinType::LeftAnti if !join.null_aware => JoinSides::Anti,
            JoinType::LeftAnti => {
                return Err(plan_error(
                    "NOT IN over a stream is not supported yet: SQL's NULL rules would hold \
                     every row back while the other stream could still bring a NULL; use NOT \
                     EXISTS",
                ))
            }
            other => {
                return Err(plan_error(format!(
                    "a {other} join of two streams is not supported yet"
                )))
            }
        };
        if join.on.is_empty() {
            return Err(plan_error(
                "a join needs an equality between its two sides (ON a.k = b.k) besides its \
                 time bounds",
            ));
        }
        // Each side's watermark follows its time column in the bound, or the window of a
        // windowed side, whose rows carry their time as `_window_end`.
        let windowed = |side: &datafusion::logical_expr::LogicalPlan| {
            self.roles_under(side)
                .iter()
                .any(|(name, _)| self.ctx.windows.contains_key(name))
        };
        let (left_windowed, right_windowed) = (windowed(&join.left), windowed(&join.right));
        // A window after the join runs on one side's time column, as its TUMBLE(...) names it.
        let after = self.window.as_ref().map(|w| {
            let column = self.time_column.clone().unwrap_or_default();
            (column, w.time_qualifier.clone())
        });
        let window_time = match &after {
            None => None,
            Some((column, qualifier)) => Some(window_time(
                &bounds,
                column,
                qualifier.as_deref(),
                sides.left_only(),
            )?),
        };
        self.time_column = (!left_windowed).then(|| bounds.left_time.name.clone());
        let left_rows = self.lower(&join.left)?;
        let mut branch = self.for_branch();
        branch.time_column = (!right_windowed).then(|| bounds.right_time.name.clone());
        let right_rows = branch.lower(&join.right)?;
        self.tables = std::mem::take(&mut branch.tables);
        if let (Some((column, _)), Some(time)) = (after, window_time) {
            let right_at = branch.time_at.map(|at| at + left_rows.fields().len());
            match time {
                WindowTime::Side(0) => {}
                WindowTime::Side(_) => self.time_at = right_at,
                WindowTime::Later => self.later_time_at = right_at,
            }
            self.time_column = Some(column);
        }
        let state = self.ctx.state;
        let times = [
            physical_expr(state, Expr::Column(bounds.left_time.clone()), &left_rows)?,
            physical_expr(state, Expr::Column(bounds.right_time.clone()), &right_rows)?,
        ];
        let JoinShape { keys, filter, rows } =
            self.join_shape(join, sides, &left_rows, &right_rows)?;
        // The other side's padded rows have no time of this side: a window on it would drop them.
        if let Some(WindowTime::Side(side)) = window_time {
            if sides.keeps(1 - side) {
                return Err(plan_error(format!(
                    "a window after a {} join runs on the time of the side it keeps whole: the \
                     other side's time is NULL in its padded rows",
                    join.join_type.to_string().to_uppercase()
                )));
            }
        }
        let input = branch.into_stream_input()?;
        self.merges_once(std::slice::from_ref(&input))?;
        let plan = IntervalJoinPlan {
            sides,
            keys,
            times,
            lower_ms: bounds.lower_ms,
            upper_ms: bounds.upper_ms,
            filter,
            ttl_ms,
            late_strategy: late_data_settings(&self.ctx.stmt.properties)?.1,
            side_schemas: [
                Arc::new(left_rows.as_arrow().clone()),
                Arc::new(right_rows.as_arrow().clone()),
            ],
        };
        self.stages.push(PlanStage::Merge(MergePlan {
            kind: MergeKind::IntervalJoin(plan),
            inputs: vec![input],
            schema: Arc::new(rows.as_arrow().clone()),
        }));
        Ok(rows)
    }
}

/// The time a window after a join of two streams runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WindowTime {
    /// One side's time column: 0 (left) or 1 (right).
    Side(usize),
    /// A time column both sides have, unqualified: the later of the two rows' times (the one
    /// side's for a NULL-padded row).
    Later,
}

/// The time a window after the join names (`left_only`: a semi or anti join, whose rows are
/// the left's).
fn window_time(
    bounds: &TimeBounds,
    column: &str,
    qualifier: Option<&str>,
    left_only: bool,
) -> Result<WindowTime> {
    let names = |c: &Column| {
        c.name == column
            && qualifier.is_none_or(|q| c.relation.as_ref().is_none_or(|r| r.table() == q))
    };
    match (names(&bounds.left_time), names(&bounds.right_time)) {
        (true, false) => Ok(WindowTime::Side(0)),
        (false, true) => Ok(WindowTime::Side(1)),
        (true, true) if !left_only => Ok(WindowTime::Later),
        (true, true) => Ok(WindowTime::Side(0)),
        (false, false) => Err(plan_error(format!(
            "a window after a join of two streams runs on one side's time column ({} or {}), \
             or on both sides' (the later of the two), not '{column}'",
            bounds.left_time.flat_name(),
            bounds.right_time.flat_name()
        ))),
    }
}

fn plan_error(message: impl Into<String>) -> VeloError {
    VeloError::DataFusion(DataFusionError::Plan(message.into()))
}
