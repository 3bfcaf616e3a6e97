//! Joins on the stream's path: which side is the table, what kind of lookup the join is, and
//! what is rejected (and why). Subqueries arrive here too: DataFusion's optimizer has turned
//! IN, EXISTS and scalar subqueries into semi, anti, mark and left joins.

use std::sync::Arc;

use datafusion::common::{Column, DFSchema, DataFusionError, NullEquality};
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::scalar::ScalarValue;

use super::interval::{time_bounds, unbounded};
use super::lower::{nullable, physical_expr, Lowering};
use super::planner::{LookupJoinPlan, LookupKind, PlanStage, SourceRole, TableInput};
use crate::error::{Result, VeloError};

/// Which input of a join is the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableSide {
    Left,
    Right,
}

impl Lowering<'_> {
    /// Lowers a join on the stream's path: the stream side continues the stages, and the
    /// table side becomes a table input.
    pub(super) fn join(&mut self, join: &Join) -> Result<DFSchema> {
        if self.table_side {
            return Err(plan_error(
                "a join inside a table's side of a join is not supported yet",
            ));
        }
        if !self.reads_declared_table(join) {
            if let Some(bounds) = time_bounds(join)? {
                return self.interval_join(join, bounds);
            }
            // With 'state.ttl', a join of two streams (bounded or not) keeps both sides' rows
            // for that long; without it, a bounded side serves as a table.
            if self.ttl.is_some() && self.reads_changelog(join) {
                return self.changelog_join(join);
            }
            if self.ttl.is_some() {
                return self.interval_join(join, unbounded(join)?);
            }
        }
        let side = self.table_side_of(join)?;
        let (stream_input, table_input) = match side {
            TableSide::Right => (&join.left, &join.right),
            TableSide::Left => (&join.right, &join.left),
        };
        let kind = lookup_kind(join, side)?;
        let stream_rows = self.lower(stream_input)?;
        let mut table = self.for_table();
        let table_rows = table.lower(table_input)?;
        let single_row = table
            .stages
            .iter()
            .any(|s| matches!(s, PlanStage::Aggregate(agg) if agg.group_exprs.is_empty()));
        let table_id = format!(
            "{}-table-{}",
            self.ctx.stmt.name().unwrap_or("query"),
            self.tables.len()
        );
        let table_plan = table.finish(&table_id, &table_rows)?;

        let state = self.ctx.state;
        let mut stream_keys = Vec::with_capacity(join.on.len());
        let mut table_keys = Vec::with_capacity(join.on.len());
        for (left, right) in &join.on {
            let (stream_key, table_key) = match side {
                TableSide::Right => (left, right),
                TableSide::Left => (right, left),
            };
            stream_keys.push(physical_expr(state, stream_key.clone(), &stream_rows)?);
            table_keys.push(physical_expr(state, table_key.clone(), &table_rows)?);
        }
        let filter = join.filter.as_ref().filter(|f| !is_true(f));
        // Without an equality every stream row meets every table row: fine against a table of
        // at most one row (a scalar subquery), or when there is nothing to compare (EXISTS).
        let cross_is_cheap = single_row
            || (filter.is_none() && matches!(kind, LookupKind::Semi | LookupKind::Anti { .. }));
        if stream_keys.is_empty() && !cross_is_cheap {
            return Err(plan_error(
                "a join needs an equality between its two sides (ON a.k = b.k): without one, \
                 every record would be compared with every row of the table",
            ));
        }
        let (left_rows, right_rows) = match side {
            TableSide::Right => (&stream_rows, &table_rows),
            TableSide::Left => (&table_rows, &stream_rows),
        };
        let pair_rows = left_rows.join(right_rows)?;
        let filter = match filter {
            Some(f) => Some(physical_expr(state, f.clone(), &pair_rows)?),
            None => None,
        };
        let rows = match kind {
            LookupKind::Inner => pair_rows,
            LookupKind::Outer => match side {
                TableSide::Right => stream_rows.join(&nullable(&table_rows)?)?,
                TableSide::Left => nullable(&table_rows)?.join(&stream_rows)?,
            },
            LookupKind::Semi | LookupKind::Anti { .. } => stream_rows.clone(),
            LookupKind::Mark => {
                let (qualifier, mark) = join.schema.qualified_field(join.schema.fields().len() - 1);
                let mut fields: Vec<_> = stream_rows
                    .iter()
                    .map(|(q, f)| (q.cloned(), Arc::clone(f)))
                    .collect();
                fields.push((qualifier.cloned(), Arc::clone(mark)));
                DFSchema::new_with_metadata(fields, stream_rows.metadata().clone())?
            }
        };
        let (as_of, version) = self.as_of(&table_plan.source, kind, &stream_rows, &table_rows)?;
        // The time column moves right when the table's columns come first.
        if side == TableSide::Left && matches!(kind, LookupKind::Inner | LookupKind::Outer) {
            self.time_at = self.time_at.map(|at| at + table_rows.fields().len());
        }
        self.tables.push(TableInput {
            plan: table_plan,
            keys: table_keys,
            nulls_equal: join.null_equality == NullEquality::NullEqualsNull,
            version,
        });
        self.stages.push(PlanStage::LookupJoin(LookupJoinPlan {
            table: self.tables.len() - 1,
            kind,
            stream_keys,
            filter,
            stream_left: side == TableSide::Right,
            as_of,
            schema: Arc::new(rows.as_arrow().clone()),
        }));
        Ok(rows)
    }

    /// For `JOIN table FOR SYSTEM_TIME AS OF s.ts`: the stream's time over its rows and the
    /// table's version time over its rows (None, None: not a temporal join).
    #[allow(clippy::type_complexity)]
    fn as_of(
        &self,
        table: &str,
        kind: LookupKind,
        stream_rows: &DFSchema,
        table_rows: &DFSchema,
    ) -> Result<(Option<Arc<dyn PhysicalExpr>>, Option<Arc<dyn PhysicalExpr>>)> {
        let Some(spec) = self.ctx.stmt.as_of.iter().find(|a| a.table == table) else {
            return Ok((None, None));
        };
        if !matches!(kind, LookupKind::Inner | LookupKind::Outer) {
            return Err(plan_error(
                "FOR SYSTEM_TIME AS OF applies to a JOIN or a LEFT JOIN of a stream with a table",
            ));
        }
        let state = self.ctx.state;
        let time = Column::new(spec.qualifier.clone(), &spec.column);
        let time = physical_expr(state, Expr::Column(time), stream_rows)?;
        let (qualifier, field) = table_rows
            .qualified_field_with_unqualified_name("_event_time")
            .map_err(|_| {
                plan_error(format!(
                    "'{table}' is joined FOR SYSTEM_TIME AS OF, so its rows need their version \
                     time, _event_time: keep it in the table's side of the query"
                ))
            })?;
        let version = Column::new(qualifier.cloned(), field.name());
        let version = physical_expr(state, Expr::Column(version), table_rows)?;
        Ok((Some(time), Some(version)))
    }

    /// The table's side of `join`: a declared table over a stream; else the side the join
    /// type keeps whole (the right of a LEFT JOIN, an IN subquery), which must end.
    fn table_side_of(&self, join: &Join) -> Result<TableSide> {
        let left = self.roles_under(&join.left);
        let right = self.roles_under(&join.right);
        let declared = |roles: &[(String, SourceRole)]| {
            !roles.is_empty()
                && roles
                    .iter()
                    .all(|(_, r)| matches!(r, SourceRole::Table { .. }))
        };
        let bounded =
            |roles: &[(String, SourceRole)]| roles.iter().all(|(_, r)| *r != SourceRole::Stream);
        let preferred = match join.join_type {
            JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
                TableSide::Left
            }
            _ => TableSide::Right,
        };
        let side = match (declared(&left), declared(&right)) {
            (true, false) if join.join_type == JoinType::Inner => TableSide::Left,
            (false, true) if join.join_type == JoinType::Inner => TableSide::Right,
            _ if join.join_type == JoinType::Inner && !bounded(&right) && bounded(&left) => {
                TableSide::Left
            }
            _ => preferred,
        };
        let (table, stream) = match side {
            TableSide::Left => (&left, &right),
            TableSide::Right => (&right, &left),
        };
        if let Some((name, _)) = table.iter().find(|(_, r)| *r == SourceRole::Stream) {
            if !stream.is_empty() && bounded(stream) {
                // The other side could be the table, but this join type needs it whole.
                let other = match side {
                    TableSide::Left => TableSide::Right,
                    TableSide::Right => TableSide::Left,
                };
                lookup_kind(join, other)?;
            }
            let other = stream
                .first()
                .map(|(n, _)| format!("'{n}' with "))
                .unwrap_or_default();
            return Err(plan_error(format!(
                "a join of {other}the stream '{name}' needs '{name}' to be a table (declare it \
                 with CREATE TABLE ... PRIMARY KEY, or read it from a file that is not followed), \
                 or time bounds to join two streams: ON a.k = b.k AND b.ts BETWEEN \
                 a.ts - INTERVAL '1' MINUTE AND a.ts + INTERVAL '1' MINUTE (or 'state.ttl' to \
                 keep both sides for that long)"
            )));
        }
        Ok(side)
    }

    /// The sources a subplan reads, with their roles.
    pub(super) fn roles_under(&self, plan: &LogicalPlan) -> Vec<(String, SourceRole)> {
        let mut found = Vec::new();
        let _ = datafusion::common::tree_node::TreeNode::apply(plan, |node| {
            if let LogicalPlan::TableScan(scan) = node {
                let name = scan.table_name.table().to_string();
                let role = self
                    .ctx
                    .roles
                    .get(&name)
                    .cloned()
                    .unwrap_or(SourceRole::Stream);
                found.push((name, role));
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        found
    }
}

/// The lookup a join is, seen from the stream; joins that would have to emit table rows no
/// stream row matched are rejected, since on a stream that is never known.
fn lookup_kind(join: &Join, side: TableSide) -> Result<LookupKind> {
    use JoinType::*;
    use TableSide::{Left as TableLeft, Right as TableRight};
    Ok(match (join.join_type, side) {
        (Inner, _) => LookupKind::Inner,
        (Left, TableRight) | (Right, TableLeft) => LookupKind::Outer,
        (LeftSemi, TableRight) | (RightSemi, TableLeft) => LookupKind::Semi,
        (LeftAnti, TableRight) | (RightAnti, TableLeft) => LookupKind::Anti {
            null_aware: join.null_aware,
        },
        (LeftMark, TableRight) | (RightMark, TableLeft) => LookupKind::Mark,
        (Full, _) => {
            return Err(plan_error(
                "FULL JOIN with a table would emit the table rows no record matched, which on \
                 a stream is never known: use LEFT JOIN with the table on the right",
            ))
        }
        (Left, TableLeft) | (Right, TableRight) => {
            return Err(plan_error(
                "this outer join keeps the table's unmatched rows, which on a stream is never \
                 known: put the table on the other side (stream LEFT JOIN table)",
            ))
        }
        (other, _) => {
            return Err(plan_error(format!(
                "a {other} join with the table on this side is not supported on streams"
            )))
        }
    })
}

fn is_true(e: &Expr) -> bool {
    matches!(e, Expr::Literal(ScalarValue::Boolean(Some(true)), _))
}

fn plan_error(message: impl Into<String>) -> VeloError {
    VeloError::DataFusion(DataFusionError::Plan(message.into()))
}
