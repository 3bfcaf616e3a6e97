//! Joins of two streams where a side is a changelog: a subquery that aggregates without a
//! window, whose rows replace each other by their GROUP BY keys. The join retracts the pairs
//! a replaced row made, so its output is a changelog too.

use std::sync::Arc;

use datafusion::common::{Column, DFSchema, DataFusionError};
use datafusion::logical_expr::{Expr, Join, JoinType, LogicalPlan};

use super::interval::JoinShape;
use super::lower::{physical_expr, Lowering};
use super::planner::{ChangelogJoinPlan, JoinSides, MergeKind, MergePlan, PlanStage};
use super::ttl::TtlClock;
use super::window::late_data_settings;
use crate::error::{Result, VeloError};

impl Lowering<'_> {
    /// True when a side of `join` aggregates without a window: its rows are a changelog.
    pub(super) fn reads_changelog(&self, join: &Join) -> bool {
        [&join.left, &join.right]
            .iter()
            .any(|side| self.is_changelog(side))
    }

    fn is_changelog(&self, side: &LogicalPlan) -> bool {
        let windowed = self
            .roles_under(side)
            .iter()
            .any(|(name, _)| self.ctx.windows.contains_key(name));
        let mut aggregates = false;
        let _ = datafusion::common::tree_node::TreeNode::apply(side, |node| {
            aggregates |= matches!(node, LogicalPlan::Aggregate(_));
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        });
        aggregates && !windowed
    }

    /// Lowers a join of two streams, one or both changelogs: the left continues this path as
    /// input 0, the right becomes input 1, and they meet at a merge that keeps each side's
    /// live rows and retracts what a replaced row made.
    pub(super) fn changelog_join(&mut self, join: &Join) -> Result<DFSchema> {
        if !self.ttl.is_some_and(|t| t.clock == TtlClock::Event) {
            return Err(plan_error(
                "a join of two streams without time bounds keeps its state for 'state.ttl' on \
                 event time ('state.ttl.clock' = 'event')",
            ));
        }
        let ttl_ms = self.ttl.map_or(0, |t| t.ttl_ms);
        let sides = match join.join_type {
            JoinType::Inner => JoinSides::Inner,
            JoinType::Left => JoinSides::Left,
            JoinType::Right => JoinSides::Right,
            JoinType::Full => JoinSides::Full,
            other => {
                let what = match other {
                    JoinType::LeftSemi | JoinType::RightSemi => "IN or EXISTS (a semi join)",
                    JoinType::LeftAnti | JoinType::RightAnti => {
                        "NOT IN or NOT EXISTS (an anti join)"
                    }
                    _ => "a subquery under OR (a mark join)",
                };
                return Err(plan_error(format!(
                    "{what} over an aggregate's changelog is not supported yet: only INNER, \
                     LEFT, RIGHT and FULL joins retract their rows"
                )));
            }
        };
        if join.on.is_empty() {
            return Err(plan_error(
                "a join needs an equality between its two sides (ON a.k = b.k)",
            ));
        }
        let changelog = [
            self.is_changelog(&join.left),
            self.is_changelog(&join.right),
        ];
        let key_columns = std::mem::take(&mut self.key_columns);
        let before = self.stages.len();
        let left_rows = self.lower(&join.left)?;
        let left_keys = std::mem::replace(&mut self.key_columns, key_columns);
        let left_pk = primary_key(changelog[0], &self.stages[before..], &left_keys, &left_rows)?;
        let mut branch = self.for_branch();
        branch.ttl = self.ttl;
        let right_rows = branch.lower(&join.right)?;
        self.tables = std::mem::take(&mut branch.tables);
        let right_keys = std::mem::take(&mut branch.key_columns);
        let right_pk = primary_key(changelog[1], &branch.stages, &right_keys, &right_rows)?;
        let state = self.ctx.state;
        let time = |appends: bool, side: &LogicalPlan, rows: &DFSchema| -> Result<_> {
            if !appends {
                return Ok(None);
            }
            let (qualifier, field) = side
                .schema()
                .qualified_field_with_unqualified_name("_event_time")
                .map_err(|_| {
                    plan_error(
                        "the append-only side of a join with a changelog keeps its rows for \
                         'state.ttl' of their _event_time: select _event_time in its subquery",
                    )
                })?;
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            Ok(Some(physical_expr(state, column, rows)?))
        };
        let times = [
            time(!changelog[0], &join.left, &left_rows)?,
            time(!changelog[1], &join.right, &right_rows)?,
        ];
        let JoinShape { keys, filter, rows } =
            self.join_shape(join, sides, &left_rows, &right_rows)?;
        let input = branch.into_stream_input()?;
        self.merges_once(std::slice::from_ref(&input))?;
        // The output's rows are keyed by both sides' keys when both have one; a pair with an
        // append-only row has no key of its own.
        self.key_columns = match (&left_pk, &right_pk) {
            (Some(_), Some(_)) => [left_keys, right_keys].concat(),
            _ => Vec::new(),
        };
        self.time_at = None;
        let plan = ChangelogJoinPlan {
            sides,
            keys,
            primary_keys: [left_pk, right_pk],
            times,
            filter,
            ttl_ms,
            late_strategy: late_data_settings(&self.ctx.stmt.properties)?.1,
            side_schemas: [
                Arc::new(left_rows.as_arrow().clone()),
                Arc::new(right_rows.as_arrow().clone()),
            ],
        };
        self.stages.push(PlanStage::Merge(MergePlan {
            kind: MergeKind::ChangelogJoin(plan),
            inputs: vec![input],
            schema: Arc::new(rows.as_arrow().clone()),
        }));
        Ok(rows)
    }
}

/// The columns of a changelog side's rows that key them: its aggregate's GROUP BY keys, as the
/// projections after it name them (`key_names`). None for an append-only side.
fn primary_key(
    changelog: bool,
    stages: &[PlanStage],
    key_names: &[String],
    rows: &DFSchema,
) -> Result<Option<Vec<usize>>> {
    if !changelog {
        return Ok(None);
    }
    let Some(at) = stages
        .iter()
        .rposition(|s| matches!(s, PlanStage::Aggregate(_)))
    else {
        return Err(plan_error(
            "a side of the join aggregates, but not on the join's path",
        ));
    };
    let PlanStage::Aggregate(aggregate) = &stages[at] else {
        return Ok(None);
    };
    let after = &stages[at + 1..];
    if !after
        .iter()
        .all(|s| matches!(s, PlanStage::Filter { .. } | PlanStage::Project { .. }))
    {
        return Err(plan_error(
            "a side of the join reshapes its GROUP BY's rows before the join (DISTINCT, ORDER \
             BY, LIMIT or a window function): only filters and projections may follow it",
        ));
    }
    let groups = aggregate.group_exprs.len();
    let schema = rows.as_arrow();
    if after.is_empty() {
        return Ok(Some((0..groups).collect()));
    }
    let columns: Vec<usize> = key_names
        .iter()
        .filter_map(|name| schema.index_of(name).ok())
        .collect();
    if columns.len() != groups {
        return Err(plan_error(
            "a GROUP BY joined as a changelog must select all its GROUP BY columns: they key \
             its rows, each of which replaces the last of its key",
        ));
    }
    Ok(Some(columns))
}

fn plan_error(message: impl Into<String>) -> VeloError {
    VeloError::DataFusion(DataFusionError::Plan(message.into()))
}
