//! Lowers DataFusion's logical plan to the streaming stages `exec` runs. The plan is a tree:
//! one path from the stream's scan to the root becomes the stage list, and each join on that
//! path hangs a table off it (a bounded input lowered the same way, run whole before the
//! stream starts: see `sql/join.rs`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{Field, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, DataFusionError};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Distinct, Expr, FetchType, LogicalPlan, SkipType};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{create_physical_sort_exprs, PhysicalExpr};

use super::analytic::plan_analytic;
use super::planner::{
    AggregatePlan, MergeKind, MergePlan, PlanStage, PlannedQuery, SourceRole, StreamInput,
    TableInput,
};
use super::script::{EmitMode, Statement, WindowKind, WindowSpec};
use super::ttl::{state_ttl_settings, StateTtl, TtlClock};
use super::window::{
    late_data_settings, watermark_settings, WatermarkPlan, WindowPlan, WINDOW_END, WINDOW_START,
};
use crate::error::{Result, VeloError};

/// What a query's lowering needs to know besides its plan.
pub(super) struct QueryContext<'a> {
    pub state: &'a SessionState,
    pub stmt: &'a Statement,
    /// Each registered source's role in a join.
    pub roles: &'a BTreeMap<String, SourceRole>,
    /// The query names `_window_start` or `_window_end` somewhere.
    pub reads_window_columns: bool,
    /// The windows of subqueries in FROM, by the source each reads.
    pub windows: &'a BTreeMap<String, WindowSpec>,
}

/// Lowers an analyzed and decorrelated logical plan into a query with id `id`.
pub(super) fn lower_query(
    ctx: &QueryContext<'_>,
    plan: &LogicalPlan,
    window: Option<WindowSpec>,
    id: &str,
) -> Result<PlannedQuery> {
    let ttl = state_ttl_settings(&ctx.stmt.properties)?;
    if ttl.is_some() && window.is_some() {
        return Err(VeloError::Config(
            "'state.ttl' applies to a GROUP BY without a window: a window's state is dropped \
             when the window closes"
                .into(),
        ));
    }
    // An event-time TTL runs on the watermark, which follows the records' event time.
    let ttl_on_event_time = ttl.is_some_and(|t| t.clock == TtlClock::Event);
    let time_column = match &window {
        Some(w) => Some(
            w.time_column
                .clone()
                .unwrap_or_else(|| "_event_time".to_string()),
        ),
        None => ttl_on_event_time.then(|| "_event_time".to_string()),
    };
    let mut used = used_columns(plan, ctx.roles)?;
    // A temporal join reads the stream's time and the table's version time.
    for as_of in &ctx.stmt.as_of {
        used.insert(as_of.column.clone());
        used.insert("_event_time".to_string());
    }
    if let Some(t) = &time_column {
        used.insert(t.clone());
        used.insert("_partition".to_string());
    } else if ctx.reads_window_columns && ctx.windows.is_empty() {
        return Err(VeloError::Config(format!(
            "{WINDOW_START} and {WINDOW_END} exist only in a windowed query (add WINDOW TUMBLING(...))"
        )));
    }
    for spec in ctx.windows.values() {
        used.insert(
            spec.time_column
                .clone()
                .unwrap_or_else(|| "_event_time".into()),
        );
        used.insert("_partition".to_string());
    }
    let emit = ctx.stmt.emit.unwrap_or(if window.is_some() {
        EmitMode::Final
    } else {
        EmitMode::Changes
    });
    let mut lowering = Lowering::new(ctx, &used, emit);
    lowering.window = window;
    lowering.ttl = ttl;
    lowering.time_column = time_column;
    let rows = lowering.lower(plan)?;
    let bounded_by_ttl = |s: &PlanStage| match s {
        PlanStage::Aggregate(_) => true,
        PlanStage::Merge(m) => match &m.kind {
            MergeKind::IntervalJoin(j) => j.ttl_ms.is_some(),
            MergeKind::ChangelogJoin(_) => true,
            MergeKind::Union => false,
        },
        _ => false,
    };
    if lowering.ttl.is_some() && !lowering.stages.iter().any(bounded_by_ttl) {
        return Err(VeloError::Config(
            "'state.ttl' bounds the state of a GROUP BY or of a join of two streams, and this \
             query has neither"
                .into(),
        ));
    }
    lowering.finish(id, &rows)
}

/// The columns a plan reads anywhere, by name, plus every table's primary key (the latest
/// row per key is found before anything else reads the table).
fn used_columns(
    plan: &LogicalPlan,
    roles: &BTreeMap<String, SourceRole>,
) -> Result<HashSet<String>> {
    let mut used = HashSet::new();
    plan.apply(|n| {
        for e in n.expressions() {
            for c in e.column_refs() {
                used.insert(c.name.clone());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    for role in roles.values() {
        if let SourceRole::Table { primary_key } = role {
            used.extend(primary_key.iter().cloned());
        }
    }
    Ok(used)
}

/// One lowered input path, before it becomes a query or a merge's input.
struct LoweredInput {
    source: String,
    input_schema: SchemaRef,
    watermark: Option<WatermarkPlan>,
    stages: Vec<PlanStage>,
    tables: Vec<TableInput>,
    key_columns: Vec<String>,
    window: Option<WindowSpec>,
}

/// The state of lowering one input's path through the plan: the stream's, or a table's.
pub(super) struct Lowering<'a> {
    pub ctx: &'a QueryContext<'a>,
    used: &'a HashSet<String>,
    pub emit: EmitMode,
    pub(super) window: Option<WindowSpec>,
    pub(super) ttl: Option<StateTtl>,
    /// The event-time column, read at the scan.
    pub(super) time_column: Option<String>,
    /// The scan this path reads, once lowered.
    source: Option<String>,
    input_schema: Option<SchemaRef>,
    /// Event time over the scan's columns, for the watermark.
    scan_time: Option<Arc<dyn PhysicalExpr>>,
    /// Where the event-time column is in the rows as they are now (None: not carried).
    pub time_at: Option<usize>,
    /// After a join, where the other side's time column is when a window runs on the later of
    /// the two rows' times (`time_at` is the left's then).
    pub(super) later_time_at: Option<usize>,
    pub stages: Vec<PlanStage>,
    pub tables: Vec<TableInput>,
    /// The output columns that key its rows: the GROUP BY columns, as projections name them.
    pub(super) key_columns: Vec<String>,
    /// The number of GROUP BY keys of the aggregate just lowered, for the projection after it.
    group_count: Option<usize>,
    /// True for a table's path: it runs whole before the stream, so it has no joins of its
    /// own and its aggregates emit once, at its end.
    pub table_side: bool,
    /// The path's window aggregate is lowered: later aggregates group its rows.
    window_lowered: bool,
}

impl<'a> Lowering<'a> {
    pub fn new(ctx: &'a QueryContext<'a>, used: &'a HashSet<String>, emit: EmitMode) -> Self {
        Lowering {
            ctx,
            used,
            emit,
            window: None,
            ttl: None,
            time_column: None,
            source: None,
            input_schema: None,
            scan_time: None,
            time_at: None,
            later_time_at: None,
            stages: Vec::new(),
            tables: Vec::new(),
            key_columns: Vec::new(),
            group_count: None,
            table_side: false,
            window_lowered: false,
        }
    }

    /// The lowering of a table's side of a join.
    pub fn for_table(&self) -> Lowering<'a> {
        let mut table = Lowering::new(self.ctx, self.used, EmitMode::Final);
        table.table_side = true;
        table
    }

    /// The lowering of another stream input of a merge (a UNION ALL branch): it reads event
    /// time as this one does, and adds its tables to this one's.
    pub fn for_branch(&mut self) -> Lowering<'a> {
        let mut branch = Lowering::new(self.ctx, self.used, self.emit);
        branch.time_column = self.time_column.clone();
        branch.tables = std::mem::take(&mut self.tables);
        branch
    }

    /// The planned query of this path, whose rows come out as `rows`.
    pub fn finish(self, id: &str, rows: &DFSchema) -> Result<PlannedQuery> {
        let properties = self.ctx.stmt.properties.clone();
        let input = self.into_input()?;
        Ok(PlannedQuery {
            id: id.to_string(),
            source: input.source,
            input_schema: input.input_schema,
            output_schema: Arc::new(rows.as_arrow().clone()),
            stages: input.stages,
            tables: input.tables,
            key_columns: input.key_columns,
            window: input.window,
            watermark: input.watermark,
            properties,
        })
    }

    /// This path as a stream input: its source, watermark and stages.
    fn into_input(self) -> Result<LoweredInput> {
        let (Some(source), Some(input_schema)) = (self.source, self.input_schema) else {
            return Err(VeloError::Config(
                "the query reads no source (FROM is missing)".into(),
            ));
        };
        let watermark = match &self.scan_time {
            Some(t) => {
                let (max_out_of_orderness_ms, idle_timeout_ms) =
                    watermark_settings(&source, &self.ctx.stmt.properties)?;
                Some(WatermarkPlan {
                    time_expr: Arc::clone(t),
                    partition_column: input_schema.index_of("_partition").ok(),
                    max_out_of_orderness_ms,
                    idle_timeout_ms,
                })
            }
            None => None,
        };
        Ok(LoweredInput {
            source,
            input_schema,
            watermark,
            stages: self.stages,
            tables: self.tables,
            key_columns: self.key_columns,
            window: self.window,
        })
    }

    /// This path as another input of a merge.
    pub(super) fn into_stream_input(self) -> Result<StreamInput> {
        let input = self.into_input()?;
        Ok(StreamInput {
            source: input.source,
            input_schema: input.input_schema,
            watermark: input.watermark,
            stages: input.stages,
        })
    }

    /// Lowers a UNION ALL: its first branch continues this path as input 0, and each other
    /// branch becomes an input of its own; they meet at a merge.
    fn union(&mut self, union: &datafusion::logical_expr::Union) -> Result<DFSchema> {
        if self.table_side {
            return Err(VeloError::DataFusion(DataFusionError::Plan(
                "UNION inside a table's side of a join is not supported yet".into(),
            )));
        }
        let (first, others) = match union.inputs.split_first() {
            Some(split) => split,
            None => return Err(unsupported(&LogicalPlan::Union(union.clone()))),
        };
        self.lower(first)?;
        let mut inputs = Vec::with_capacity(others.len());
        for other in others {
            let mut branch = self.for_branch();
            branch.lower(other)?;
            if branch.time_at != self.time_at {
                self.time_at = None;
            }
            self.tables = std::mem::take(&mut branch.tables);
            inputs.push(branch.into_stream_input()?);
        }
        self.merges_once(&inputs)?;
        let rows = union.schema.as_ref().clone();
        self.stages.push(PlanStage::Merge(MergePlan {
            kind: MergeKind::Union,
            inputs,
            schema: Arc::new(rows.as_arrow().clone()),
        }));
        Ok(rows)
    }

    /// Refuses a second merge: this path's stages and `inputs`' hold none yet.
    pub(super) fn merges_once(&self, inputs: &[StreamInput]) -> Result<()> {
        let merges = self
            .stages
            .iter()
            .chain(inputs.iter().flat_map(|i| &i.stages))
            .any(|s| matches!(s, PlanStage::Merge(_)));
        if merges {
            return Err(VeloError::DataFusion(DataFusionError::Plan(
                "a query may merge its streams once (one UNION ALL or one join of two streams) \
                 for now"
                    .into(),
            )));
        }
        Ok(())
    }

    /// Lowers `node` and the path below it; returns the schema of the rows it emits.
    pub fn lower(&mut self, node: &LogicalPlan) -> Result<DFSchema> {
        if let Some(e) = node.expressions().iter().find(|e| contains_subquery(e)) {
            return Err(VeloError::DataFusion(DataFusionError::Plan(format!(
                "this subquery cannot be planned as a join on a stream: {e}"
            ))));
        }
        match node {
            LogicalPlan::TableScan(scan) => self.scan(scan),
            LogicalPlan::Join(join) => self.join(join),
            LogicalPlan::Union(union) => self.union(union),
            _ => {
                let input = match node.inputs().as_slice() {
                    [one] => self.lower(one)?,
                    _ => return Err(unsupported(node)),
                };
                self.node(node, input)
            }
        }
    }

    fn scan(&mut self, scan: &datafusion::logical_expr::TableScan) -> Result<DFSchema> {
        let name = scan.table_name.table().to_string();
        if self.source.is_some() {
            return Err(unsupported(&LogicalPlan::TableScan(scan.clone())));
        }
        // A windowed subquery's rows come as its windows close: never a table read whole.
        if self.table_side && self.ctx.windows.contains_key(&name) {
            return Err(VeloError::DataFusion(DataFusionError::Plan(format!(
                "the windowed subquery over '{name}' is a stream of window results: join it \
                 on `_window_end` (equal, or within an interval) with another stream"
            ))));
        }
        // A windowed subquery's path reads event time as its window says.
        if let (None, false, Some(spec)) = (
            &self.time_column,
            self.table_side,
            self.ctx.windows.get(&name),
        ) {
            self.time_column = Some(
                spec.time_column
                    .clone()
                    .unwrap_or_else(|| "_event_time".to_string()),
            );
            self.window = Some(spec.clone());
            if self.ctx.stmt.emit.is_none() {
                self.emit = EmitMode::Final;
            }
        }
        // Only the columns the query uses, in table order.
        let scanned = scan.projected_schema.as_ref();
        // A path with event time keeps a watermark per input partition (each side of a join
        // of two streams has its own).
        let wanted = |name: &String| {
            self.used.contains(name) || self.time_column.is_some() && name == "_partition"
        };
        let keep: Vec<usize> = (0..scanned.fields().len())
            .filter(|&i| wanted(scanned.field(i).name()))
            .collect();
        let rows = restrict_schema(scanned, &keep)?;
        let input_schema = Arc::new(rows.as_arrow().clone());
        if let Some(column) = &self.time_column {
            let index = input_schema.index_of(column).map_err(|_| {
                VeloError::Config(format!(
                    "the window's time column '{column}' is not a column of '{name}'"
                ))
            })?;
            self.scan_time = Some(Arc::new(Column::new(column, index)));
            self.time_at = Some(index);
        }
        self.source = Some(name);
        self.input_schema = Some(input_schema);
        Ok(rows)
    }

    /// Lowers a node with one input, whose rows come in as `input`.
    fn node(&mut self, node: &LogicalPlan, input: DFSchema) -> Result<DFSchema> {
        let state = self.ctx.state;
        let stateful = matches!(
            node,
            LogicalPlan::Aggregate(_)
                | LogicalPlan::Distinct(_)
                | LogicalPlan::Window(_)
                | LogicalPlan::Sort(_)
                | LogicalPlan::Limit(_)
        );
        let retracts = |s: &PlanStage| matches!(s, PlanStage::Merge(m) if matches!(m.kind, MergeKind::ChangelogJoin(_)));
        if stateful && self.stages.iter().any(retracts) {
            return Err(VeloError::DataFusion(DataFusionError::Plan(
                "a GROUP BY, DISTINCT, ORDER BY, LIMIT or window function over a join with an \
                 aggregate's changelog is not supported yet: the join retracts rows, which \
                 those would have to take back"
                    .into(),
            )));
        }
        match node {
            LogicalPlan::SubqueryAlias(alias) => Ok(input.replace_qualifier(alias.alias.clone())),
            LogicalPlan::Filter(filter) => {
                let predicate = physical_expr(state, filter.predicate.clone(), &input)?;
                match self.stages.last_mut() {
                    Some(PlanStage::Aggregate(agg)) if agg.having.is_none() => {
                        agg.having = Some(predicate)
                    }
                    _ => self.stages.push(PlanStage::Filter { predicate }),
                }
                Ok(input)
            }
            LogicalPlan::Projection(proj) => {
                let exprs = proj
                    .expr
                    .iter()
                    .map(|e| physical_expr(state, e.clone(), &input))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                if let Some(k) = self.group_count.take() {
                    let group_names: Vec<&str> = input
                        .fields()
                        .iter()
                        .take(k)
                        .map(|f| f.name().as_str())
                        .collect();
                    for (e, f) in proj.expr.iter().zip(proj.schema.fields()) {
                        if let Expr::Column(c) = unalias(e) {
                            if group_names.contains(&c.name.as_str()) {
                                self.key_columns.push(f.name().clone());
                            }
                        }
                    }
                }
                let moved = |at: Option<usize>| {
                    at.and_then(|at| {
                        proj.expr.iter().position(|e| match unalias(e) {
                            Expr::Column(c) => input.index_of_column(c).ok() == Some(at),
                            _ => false,
                        })
                    })
                };
                self.time_at = moved(self.time_at);
                self.later_time_at = moved(self.later_time_at);
                let rows = executed_schema(&proj.schema, &exprs, &input)?;
                self.stages.push(PlanStage::Project {
                    exprs,
                    schema: Arc::new(rows.as_arrow().clone()),
                });
                Ok(rows)
            }
            LogicalPlan::Aggregate(agg) => self.aggregate(agg, input),
            LogicalPlan::Distinct(Distinct::All(_)) => {
                self.stages.push(PlanStage::Distinct);
                Ok(input)
            }
            LogicalPlan::Window(w) => {
                let physical = |e: Expr| physical_expr(state, e, &input);
                let functions = w
                    .window_expr
                    .iter()
                    .map(|e| {
                        let e = simplify(state, e.clone(), &input)?;
                        plan_analytic(state, &e, &input, &physical)
                    })
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                // The output keeps the input's columns (as the rows carry them), then one
                // column per function.
                let mut fields: Vec<_> = input
                    .iter()
                    .map(|(q, f)| (q.cloned(), Arc::clone(f)))
                    .collect();
                let before = w.input.schema().fields().len();
                fields.extend(
                    w.schema
                        .iter()
                        .skip(before)
                        .map(|(q, f)| (q.cloned(), Arc::clone(f))),
                );
                let rows = DFSchema::new_with_metadata(fields, input.metadata().clone())?;
                self.stages.push(PlanStage::Analytic {
                    functions,
                    schema: Arc::new(rows.as_arrow().clone()),
                });
                Ok(rows)
            }
            LogicalPlan::Sort(sort) => {
                let sort_exprs = sort
                    .expr
                    .iter()
                    .map(|s| Ok(s.with_expr(simplify(state, s.expr.clone(), &input)?)))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                let exprs = create_physical_sort_exprs(
                    &sort_exprs,
                    &input,
                    state.execution_props(),
                    &Default::default(),
                )?;
                self.stages.push(PlanStage::Sort { exprs });
                if let Some(fetch) = sort.fetch {
                    self.stages.push(PlanStage::Limit {
                        skip: 0,
                        fetch: Some(fetch),
                    });
                }
                Ok(input)
            }
            LogicalPlan::Limit(limit) => {
                let skip = match limit.get_skip_type()? {
                    SkipType::Literal(n) => n,
                    SkipType::UnsupportedExpr => return Err(unsupported(node)),
                };
                let fetch = match limit.get_fetch_type()? {
                    FetchType::Literal(n) => n,
                    FetchType::UnsupportedExpr => return Err(unsupported(node)),
                };
                self.stages.push(PlanStage::Limit { skip, fetch });
                Ok(input)
            }
            other => Err(unsupported(other)),
        }
    }

    fn aggregate(
        &mut self,
        agg: &datafusion::logical_expr::Aggregate,
        input: DFSchema,
    ) -> Result<DFSchema> {
        let state = self.ctx.state;
        let physical_input = input.as_arrow().clone();
        let group_exprs = agg
            .group_expr
            .iter()
            .map(|e| {
                if matches!(e, Expr::GroupingSet(_)) {
                    return Err(DataFusionError::Plan(
                        "GROUPING SETS, CUBE and ROLLUP are not supported on streams".into(),
                    ));
                }
                physical_expr(state, e.clone(), &input)
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let mut aggregates = Vec::new();
        let mut filters = Vec::new();
        for e in &agg.aggr_expr {
            let planning_ctx = Default::default();
            let name = e.schema_name().to_string();
            let e = &simplify(state, e.clone(), &input)?;
            let lowered = LoweredAggregateBuilder::new(
                e,
                &input,
                &physical_input,
                state.execution_props(),
                &planning_ctx,
            )
            .with_name(name)
            .build()?;
            aggregates.push(lowered.aggregate);
            filters.push(lowered.filter);
        }
        self.group_count = Some(agg.group_expr.len());
        // Event time as the aggregate's input carries it.
        let time_expr = match (&self.time_column, self.time_at, self.later_time_at) {
            // After a join: the later of the two rows' times (GREATEST skips a padded NULL).
            (Some(_), Some(at), Some(other)) => {
                let column = |at: usize| {
                    let (qualifier, field) = input.qualified_field(at);
                    Expr::Column(datafusion::common::Column::new(
                        qualifier.cloned(),
                        field.name(),
                    ))
                };
                let later =
                    datafusion::functions::expr_fn::greatest(vec![column(at), column(other)]);
                Some(physical_expr(state, later, &input)?)
            }
            (Some(name), Some(at), _) => {
                Some(Arc::new(Column::new(name, at)) as Arc<dyn PhysicalExpr>)
            }
            (Some(name), None, _) => {
                return Err(VeloError::Config(format!(
                    "the time column '{name}' does not reach the GROUP BY: select it by name in \
                     the subquery"
                )))
            }
            (None, ..) => None,
        };
        // The key that is the input's event time (a window's `_window_end` after it): such a
        // group is complete once the watermark passes that time.
        let closes_on = match (self.window_lowered, self.time_at) {
            (true, Some(at)) => agg.group_expr.iter().position(
                |e| matches!(e, Expr::Column(c) if input.index_of_column(c).ok() == Some(at)),
            ),
            _ => None,
        };
        let window = match (&self.window, &time_expr) {
            // A path is windowed once; an aggregate after the window groups its rows.
            _ if self.window_lowered => None,
            (Some(spec), Some(time_expr)) => {
                let key_position = |name: &str| {
                    agg.group_expr
                        .iter()
                        .position(|e| matches!(e, Expr::Column(c) if c.name == name))
                };
                let (Some(start_key), Some(end_key)) =
                    (key_position(WINDOW_START), key_position(WINDOW_END))
                else {
                    return Err(VeloError::Config(
                        "the window columns are missing from GROUP BY".into(),
                    ));
                };
                validate_window(&spec.kind)?;
                let (allowed_lateness_ms, late_strategy) =
                    late_data_settings(&self.ctx.stmt.properties)?;
                Some(WindowPlan {
                    kind: spec.kind,
                    time_expr: Arc::clone(time_expr),
                    start_key,
                    end_key,
                    allowed_lateness_ms,
                    late_strategy,
                })
            }
            _ => None,
        };
        // A window's rows carry their event time as `_window_end`, and so do the groups of
        // an aggregate keyed by it.
        self.time_at = window.as_ref().map(|w| w.end_key).or(closes_on);
        self.later_time_at = None;
        self.window_lowered |= window.is_some();
        self.stages.push(PlanStage::Aggregate(AggregatePlan {
            group_exprs,
            aggregates,
            filters,
            having: None,
            output_schema: Arc::new(agg.schema.as_arrow().clone()),
            emit: self.emit,
            window,
            closes_on,
            ttl: self.ttl,
            time_expr,
        }));
        Ok(agg.schema.as_ref().clone())
    }
}

/// The expression under its aliases.
fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

/// True when `e` still holds a subquery (one DataFusion could not turn into a join).
fn contains_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
        ))
    })
    .unwrap_or(false)
}

/// A projection's schema with each column's type as its physical expression computes it.
/// Simplification can make them differ from the logical plan's: `ROUND(d, 1)` on a DECIMAL
/// keeps the input's scale while the scale argument is still a cast, and takes scale 1 once
/// the cast is folded.
fn executed_schema(
    logical: &DFSchema,
    exprs: &[Arc<dyn PhysicalExpr>],
    input: &DFSchema,
) -> datafusion::error::Result<DFSchema> {
    let mut fields = Vec::with_capacity(exprs.len());
    for ((qualifier, planned), expr) in logical.iter().zip(exprs) {
        let actual = expr.return_field(input.as_arrow())?;
        let field = if actual.data_type() == planned.data_type() {
            Arc::clone(planned)
        } else {
            Arc::new(
                planned
                    .as_ref()
                    .clone()
                    .with_data_type(actual.data_type().clone())
                    .with_nullable(planned.is_nullable() || actual.is_nullable()),
            )
        };
        fields.push((qualifier.cloned(), field));
    }
    DFSchema::new_with_metadata(fields, logical.metadata().clone())
}

/// Lowers a logical expression, simplified first (see `simplify`).
pub(super) fn physical_expr(
    state: &SessionState,
    expr: Expr,
    schema: &DFSchema,
) -> datafusion::error::Result<Arc<dyn PhysicalExpr>> {
    state.create_physical_expr(simplify(state, expr, schema)?, schema)
}

/// Coerces and simplifies an expression as DataFusion's optimizer would (COALESCE becomes CASE,
/// constants fold); physical planning expects that form.
fn simplify(
    state: &SessionState,
    expr: Expr,
    schema: &DFSchema,
) -> datafusion::error::Result<Expr> {
    let context = SimplifyContext::builder()
        .with_schema(Arc::new(schema.clone()))
        .with_config_options(Arc::clone(state.config_options()))
        .with_query_execution_start_time(state.execution_props().query_execution_start_time)
        .build();
    let simplifier = ExprSimplifier::new(context);
    simplifier.simplify(simplifier.coerce(expr, schema)?)
}

/// A scan-level schema restricted to the used columns, so that column indices of physical
/// expressions match the input batches (which carry only those columns).
fn restrict_schema(schema: &DFSchema, keep: &[usize]) -> Result<DFSchema> {
    let fields = keep
        .iter()
        .map(|&i| {
            let (q, f) = schema.qualified_field(i);
            (q.cloned(), Arc::clone(f))
        })
        .collect::<Vec<_>>();
    Ok(DFSchema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )?)
}

/// `schema` with every field nullable (the table's side of an outer join).
pub(super) fn nullable(schema: &DFSchema) -> Result<DFSchema> {
    let fields = schema
        .iter()
        .map(|(q, f)| {
            let field: Field = f.as_ref().clone().with_nullable(true);
            (q.cloned(), Arc::new(field))
        })
        .collect::<Vec<_>>();
    Ok(DFSchema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )?)
}

fn validate_window(kind: &WindowKind) -> Result<()> {
    let ok = match *kind {
        WindowKind::Tumbling { size_ms } => size_ms > 0,
        WindowKind::Sliding {
            size_ms,
            advance_ms,
        } => size_ms > 0 && advance_ms > 0 && advance_ms <= size_ms,
        WindowKind::Session { gap_ms } => gap_ms > 0,
    };
    if ok {
        Ok(())
    } else {
        Err(VeloError::Config(
            "window sizes must be positive, and a SLIDING advance at most its size".into(),
        ))
    }
}

pub(super) fn unsupported(node: &LogicalPlan) -> VeloError {
    let what = match node {
        LogicalPlan::Join(_) => "JOIN",
        LogicalPlan::Window(_) => "window functions (OVER ...)",
        LogicalPlan::Union(_) => "UNION",
        LogicalPlan::EmptyRelation(_) => "a query without FROM",
        LogicalPlan::Subquery(_) => "subqueries",
        LogicalPlan::Distinct(_) => "DISTINCT ON",
        LogicalPlan::Values(_) => "VALUES",
        LogicalPlan::TableScan(_) => "reading a second stream in one query",
        _ => "this kind of query",
    };
    VeloError::DataFusion(DataFusionError::Plan(format!(
        "{what} is not supported on streams yet"
    )))
}
