//! Plans one query: DataFusion turns the SQL into a logical plan, which we lower into the
//! chain of streaming stages that `exec` runs (filter, project, aggregate, distinct, sort, limit).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::empty::EmptyTable;
use datafusion::common::{DataFusionError, SchemaError};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::decorrelate_predicate_subquery::DecorrelatePredicateSubquery;
use datafusion::optimizer::eliminate_cross_join::EliminateCrossJoin;
use datafusion::optimizer::extract_equijoin_predicate::ExtractEquijoinPredicate;
use datafusion::optimizer::push_down_filter::PushDownFilter;
use datafusion::optimizer::scalar_subquery_to_join::ScalarSubqueryToJoin;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{self as sql_ast, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::analytic::AnalyticFunction;
use super::functions::{register_velostream_functions, rewrite_function_calls};
use super::interval::align_time_types;
use super::lower::{lower_query, QueryContext};
use super::properties::Properties;
use super::script::{EmitMode, Statement, WindowSpec};
use super::source_text::{nearest, position_in_message, SourceText};
use super::window::{
    prepare_nested_windows, prepare_window, WatermarkPlan, WindowPlan, WINDOW_END, WINDOW_START,
};
use crate::error::{Result, VeloError};

/// Columns every source offers besides its data fields (filled from record metadata).
pub const SYSTEM_COLUMNS: [(&str, DataType); 7] = [
    ("_timestamp", DataType::Int64),
    ("_event_time", DataType::Int64),
    ("_offset", DataType::Int64),
    ("_partition", DataType::Int32),
    ("_topic", DataType::Utf8),
    ("_key", DataType::Utf8),
    // A record's Kafka headers as a JSON object of strings (NULL for files); read with
    // HEADER('name') and HAS_HEADER('name').
    ("_headers", DataType::Utf8),
];

/// True for the name of a system column.
pub fn is_system_column(name: &str) -> bool {
    SYSTEM_COLUMNS.iter().any(|(n, _)| *n == name)
}

/// One streaming stage of a planned query, in execution order.
#[derive(Debug, Clone)]
pub enum PlanStage {
    /// Keep rows where the predicate is true (WHERE).
    Filter { predicate: Arc<dyn PhysicalExpr> },
    /// Compute the output columns (SELECT list).
    Project {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    /// Continuous GROUP BY with incremental accumulators, HAVING folded in.
    Aggregate(AggregatePlan),
    /// Emit each distinct row once (SELECT DISTINCT).
    Distinct,
    /// Order each emitted batch (the whole result for EMIT FINAL).
    Sort { exprs: Vec<PhysicalSortExpr> },
    /// Skip `skip` rows, then pass at most `fetch`.
    Limit { skip: usize, fetch: Option<usize> },
    /// Analytic functions (`OVER`): the input columns plus one column per function.
    Analytic {
        functions: Vec<AnalyticFunction>,
        schema: SchemaRef,
    },
    /// Join each row with a table read whole before the stream started.
    LookupJoin(LookupJoinPlan),
    /// Where the query's other stream inputs join input 0: the stages before it are input 0's
    /// own, and each other input brings its own (see `MergePlan`).
    Merge(MergePlan),
}

/// Where several stream inputs meet.
#[derive(Debug, Clone)]
pub struct MergePlan {
    pub kind: MergeKind,
    /// Inputs 1, 2, ...: each stream with the stages that run on it alone.
    pub inputs: Vec<StreamInput>,
    /// The rows the merge emits.
    pub schema: SchemaRef,
}

/// How merged inputs combine.
#[derive(Debug, Clone)]
pub enum MergeKind {
    /// UNION ALL: every input's rows, relabelled to the union's columns.
    Union,
    /// An interval join of input 0 (the left) with input 1 (the right).
    IntervalJoin(IntervalJoinPlan),
    /// A join of two streams of which one or both are changelogs: it retracts what it emitted
    /// when a row is updated or deleted.
    ChangelogJoin(ChangelogJoinPlan),
}

/// What a join of two streams emits: pairs with the outer sides' unmatched rows, or (semi,
/// anti) the left rows that meet a partner, or that never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinSides {
    Inner,
    Left,
    Right,
    Full,
    /// `EXISTS` / `IN` over a stream: each left row once, when it first meets a partner.
    Semi,
    /// `NOT EXISTS` over a stream: each left row that met none, once none can come.
    Anti,
}

impl JoinSides {
    /// True when side `side` (0 left, 1 right) keeps its unmatched rows.
    pub fn keeps(self, side: usize) -> bool {
        matches!(
            (self, side),
            (JoinSides::Full, _)
                | (JoinSides::Left, 0)
                | (JoinSides::Right, 1)
                | (JoinSides::Anti, 0)
        )
    }

    /// True when only the left rows come out (semi and anti joins).
    pub fn left_only(self) -> bool {
        matches!(self, JoinSides::Semi | JoinSides::Anti)
    }
}

/// `left JOIN right ON keys AND right.t BETWEEN left.t + lower AND left.t + upper`.
#[derive(Debug, Clone)]
pub struct IntervalJoinPlan {
    pub sides: JoinSides,
    /// Each side's key expressions (paired), over that side's rows.
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Each side's event time, over that side's rows.
    pub times: [Arc<dyn PhysicalExpr>; 2],
    /// The bounds (ms, inclusive) of `right time - left time`.
    pub lower_ms: i64,
    pub upper_ms: i64,
    /// The whole non-equality part of ON (the time bounds included), over both sides' columns.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// `'state.ttl'` of a join without time bounds (the bounds are then unlimited): a row is
    /// kept until the watermark, the earlier of both sides', passes its time by this much.
    pub ttl_ms: Option<i64>,
    /// What happens to a row behind its side's watermark (`'late.data.strategy'`).
    pub late_strategy: crate::sql::window::LateDataStrategy,
    /// Each side's columns.
    pub side_schemas: [SchemaRef; 2],
}

/// `left JOIN right ON keys` of two streams where a side is a changelog: an aggregate's
/// upsert stream, whose new row for a key replaces the old one. Every pair a row made is
/// retracted (emitted as a delete) when the row is replaced or deleted, and an outer side's
/// row is NULL-padded while it has no partner. Append-only sides keep rows for `'state.ttl'`.
#[derive(Debug, Clone)]
pub struct ChangelogJoinPlan {
    /// Inner, Left, Right or Full.
    pub sides: JoinSides,
    /// Each side's key expressions (paired), over that side's rows.
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Per side: the columns (by index) of its primary key, its aggregate's GROUP BY keys;
    /// None for an append-only stream.
    pub primary_keys: [Option<Vec<usize>>; 2],
    /// An append-only side's event time, which `'state.ttl'` runs on.
    pub times: [Option<Arc<dyn PhysicalExpr>>; 2],
    /// The non-equality part of ON, over both sides' columns.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// An append-only side's row goes once the earlier watermark passes its time by this much.
    pub ttl_ms: i64,
    /// What happens to an append-only row older than the TTL on arrival.
    pub late_strategy: crate::sql::window::LateDataStrategy,
    /// Each side's columns.
    pub side_schemas: [SchemaRef; 2],
}

/// A stream input of a query besides input 0: what it reads and the stages that run on it
/// before it meets the others.
#[derive(Debug, Clone)]
pub struct StreamInput {
    /// The source it reads.
    pub source: String,
    /// The columns a batch of it must have.
    pub input_schema: SchemaRef,
    /// How its watermark advances (None: it has no event time).
    pub watermark: Option<WatermarkPlan>,
    pub stages: Vec<PlanStage>,
}

/// How a stream row meets the table rows whose key it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    /// One output row per matching table row (INNER JOIN).
    Inner,
    /// As Inner, and a row with no match once, its table columns NULL (LEFT JOIN with the
    /// stream on the left).
    Outer,
    /// The row, once, when some table row matches (IN, EXISTS).
    Semi,
    /// The row when no table row matches (NOT EXISTS; NOT IN when `null_aware`: a NULL on
    /// either side makes the answer unknown, so the row is dropped).
    Anti { null_aware: bool },
    /// The row plus a boolean column: does some table row match (IN inside OR).
    Mark,
}

/// A join of the stream with a table (see `PlanStage::LookupJoin`).
#[derive(Debug, Clone)]
pub struct LookupJoinPlan {
    /// The table, an index into `PlannedQuery::tables`.
    pub table: usize,
    pub kind: LookupKind,
    /// The stream row's side of each equality of ON, over the stage input.
    pub stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The rest of ON, over the stream's and the table's columns side by side (in the
    /// join's left-right order).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The stream is the join's left input, so its columns come first.
    pub stream_left: bool,
    /// `FOR SYSTEM_TIME AS OF`: the stream row's time, over the stage input. The row meets,
    /// per key, the table row whose version was valid then (the latest that began before).
    pub as_of: Option<Arc<dyn PhysicalExpr>>,
    /// The rows the stage emits.
    pub schema: SchemaRef,
}

/// A table a query joins: a bounded input, planned as its own query and read whole before the
/// stream starts.
#[derive(Debug, Clone)]
pub struct TableInput {
    /// The table's rows: its source (`plan.source`) through the stages of its side of the join.
    pub plan: PlannedQuery,
    /// The table's side of each equality of ON, over `plan`'s output.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// NULL keys match each other (DataFusion plans some set operations so).
    pub nulls_equal: bool,
    /// For a temporal join: when each row's version begins (its `_event_time`), over `plan`'s
    /// output. Every version is kept, not only the latest per key.
    pub version: Option<Arc<dyn PhysicalExpr>>,
}

impl PlannedQuery {
    /// The merge of several stream inputs, if the query has one.
    pub fn merge(&self) -> Option<&MergePlan> {
        self.stages.iter().find_map(|s| match s {
            PlanStage::Merge(m) => Some(m),
            _ => None,
        })
    }

    /// The stream inputs other than input 0 (empty for a query over one stream).
    pub fn side_inputs(&self) -> &[StreamInput] {
        self.merge()
            .map(|m| m.inputs.as_slice())
            .unwrap_or_default()
    }
}

/// What a registered source can be in a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRole {
    /// Records without end (a Kafka topic, a followed file).
    Stream,
    /// Records that end (a file read once): it may serve as a table.
    Bounded,
    /// A declared table: the latest row per primary key (all rows when it has none).
    Table { primary_key: Vec<String> },
}

/// A GROUP BY: keys, aggregates and an optional HAVING over its output.
#[derive(Debug, Clone)]
pub struct AggregatePlan {
    /// Group key expressions over the stage input.
    pub group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    /// The aggregate functions, with their argument expressions.
    pub aggregates: Vec<Arc<AggregateFunctionExpr>>,
    /// Per-aggregate `FILTER (WHERE ...)`.
    pub filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// HAVING, evaluated over `output_schema`.
    pub having: Option<Arc<dyn PhysicalExpr>>,
    /// Group columns followed by aggregate columns.
    pub output_schema: SchemaRef,
    /// How results are emitted.
    pub emit: EmitMode,
    /// The window, for a windowed aggregate.
    pub window: Option<WindowPlan>,
    /// The group key that is the input's event time (`_window_end` after a window): a group
    /// comes out, final, once the watermark passes it.
    pub closes_on: Option<usize>,
    /// `'state.ttl'`: how long a key with no records is kept (GROUP BY without a window).
    pub ttl: Option<crate::sql::StateTtl>,
    /// The event time of an input row, for a TTL on event time.
    pub time_expr: Option<Arc<dyn PhysicalExpr>>,
}

/// A query ready to deploy: what it reads, the stages, what it writes.
#[derive(Debug, Clone)]
pub struct PlannedQuery {
    /// The query id: CSAS/CTAS name or a generated one.
    pub id: String,
    /// The source of its input 0: the stream it reads (FROM), or a UNION ALL's first branch.
    pub source: String,
    /// The columns a batch of input 0 must have (data fields it uses + system columns).
    pub input_schema: SchemaRef,
    /// The rows it emits.
    pub output_schema: SchemaRef,
    /// Stages in execution order.
    pub stages: Vec<PlanStage>,
    /// The tables its joins read (see `PlanStage::LookupJoin`).
    pub tables: Vec<TableInput>,
    /// Output columns that key an upsert stream (the GROUP BY columns), empty for append streams.
    pub key_columns: Vec<String>,
    /// The WINDOW clause (or Flink window in GROUP BY), if any.
    pub window: Option<WindowSpec>,
    /// How input 0's watermark advances (windowed queries).
    pub watermark: Option<WatermarkPlan>,
    /// WITH properties of the statement.
    pub properties: Properties,
}

/// Plans queries against registered sources, with velostream's functions installed.
pub struct QueryPlanner {
    ctx: SessionContext,
    sources: BTreeMap<String, SchemaRef>,
    roles: BTreeMap<String, SourceRole>,
}

impl Default for QueryPlanner {
    fn default() -> Self {
        Self::new()
    }
}

impl QueryPlanner {
    /// A planner with exact decimal literals and velostream's function aliases.
    pub fn new() -> Self {
        let mut config = SessionConfig::new();
        let opts = config.options_mut();
        opts.sql_parser.parse_float_as_decimal = true;
        opts.sql_parser.map_string_types_to_utf8view = false;
        opts.sql_parser.collect_spans = true;
        // Every scalar subquery becomes a join, which the stream side can run.
        opts.optimizer.enable_physical_uncorrelated_scalar_subquery = false;
        let ctx = SessionContext::new_with_config(config);
        register_velostream_functions(&ctx);
        QueryPlanner {
            ctx,
            sources: BTreeMap::new(),
            roles: BTreeMap::new(),
        }
    }

    /// Registers a stream by name with its data fields (see `register_source_as`).
    pub fn register_source(&mut self, name: &str, data_schema: SchemaRef) -> Result<()> {
        self.register_source_as(name, data_schema, SourceRole::Stream)
    }

    /// Registers a source by name with its data fields and its role in joins; system columns
    /// are added here.
    pub fn register_source_as(
        &mut self,
        name: &str,
        data_schema: SchemaRef,
        role: SourceRole,
    ) -> Result<()> {
        let mut fields: Vec<Field> = data_schema
            .fields()
            .iter()
            .filter(|f| {
                !is_system_column(f.name()) && f.name() != WINDOW_START && f.name() != WINDOW_END
            })
            .map(|f| f.as_ref().clone())
            .collect();
        fields.extend(
            SYSTEM_COLUMNS
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true)),
        );
        // Filled by the window operator; planning needs them to resolve in GROUP BY and SELECT.
        fields.extend([WINDOW_START, WINDOW_END].map(|n| Field::new(n, DataType::Int64, true)));
        let schema = Arc::new(Schema::new(fields));
        // Replacing a table of the same name is fine: a later declaration wins.
        let _ = self.ctx.deregister_table(name)?;
        self.ctx
            .register_table(name, Arc::new(EmptyTable::new(Arc::clone(&schema))))?;
        self.sources.insert(name.to_string(), data_schema);
        self.roles.insert(name.to_string(), role);
        Ok(())
    }

    /// The data schema a source was registered with.
    pub fn source_schema(&self, name: &str) -> Option<&SchemaRef> {
        self.sources.get(name)
    }

    /// An expression over one row of `schema`, as SQL text (a metric's condition, say): its
    /// type and its physical form. Errors are DataFusion's message, for the caller to place.
    pub fn row_expr(
        &self,
        sql: &str,
        schema: &SchemaRef,
    ) -> std::result::Result<(DataType, Arc<dyn PhysicalExpr>), String> {
        let message = |e: DataFusionError| e.strip_backtrace();
        let df_schema =
            datafusion::common::DFSchema::try_from(schema.as_ref().clone()).map_err(message)?;
        let expr = self.ctx.parse_sql_expr(sql, &df_schema).map_err(message)?;
        let physical =
            super::lower::physical_expr(&self.ctx.state(), expr, &df_schema).map_err(message)?;
        let data_type = physical.data_type(schema).map_err(message)?;
        Ok((data_type, physical))
    }

    /// The sources a statement's query reads (table names in FROM).
    pub fn referenced_sources(&self, stmt: &Statement, source: &SourceText) -> Result<Vec<String>> {
        let ast = parse_query(stmt, source)?;
        let (refs, _) = datafusion::sql::resolve::resolve_table_references(
            &DFStatement::Statement(Box::new(ast)),
            true,
        )
        .map_err(|e| to_sql_error(source, stmt, e, &[]))?;
        Ok(refs.iter().map(|r| r.table().to_string()).collect())
    }

    /// Parses and plans one query given as SQL text; its id is the CSAS/CTAS name or `default_id`.
    pub fn plan_sql(&self, sql: &str, default_id: &str) -> Result<PlannedQuery> {
        let script = super::script::parse_script(sql)?;
        let Some(stmt) = script.statements.first() else {
            return Err(VeloError::Config("no statement to plan".into()));
        };
        let id = stmt.name().unwrap_or(default_id).to_string();
        self.plan(stmt, &script.source, &id)
    }

    /// Plans a query statement (SELECT, CSAS or CTAS) into streaming stages.
    pub fn plan(&self, stmt: &Statement, source: &SourceText, id: &str) -> Result<PlannedQuery> {
        let mut ast = parse_query(stmt, source)?;
        let source_columns: HashSet<String> = self
            .sources
            .values()
            .flat_map(|s| s.fields().iter().map(|f| f.name().to_lowercase()))
            .chain(SYSTEM_COLUMNS.iter().map(|(n, _)| n.to_string()))
            .collect();
        let window = prepare_window(&mut ast, stmt.window.as_ref()).map_err(|e| match e {
            VeloError::Config(msg) => source.error(stmt.position.0, stmt.position.1, msg),
            other => other,
        })?;
        let windows = prepare_nested_windows(&mut ast).map_err(|e| match e {
            VeloError::Config(msg) => source.error(stmt.position.0, stmt.position.1, msg),
            other => other,
        })?;
        expand_wildcards(&mut ast, &self.sources);
        inline_lateral_aliases(&mut ast, &source_columns);
        rewrite_function_calls(&mut ast);

        let state = self.ctx.state();
        let candidates: Vec<String> = source_columns.iter().cloned().collect();
        let plan = resolve_now(state.statement_to_plan(DFStatement::Statement(Box::new(ast))))?
            .map_err(|e| to_sql_error(source, stmt, e, &candidates))?;
        let plan = align_time_types(plan)
            .and_then(|plan| {
                state
                    .analyzer()
                    .execute_and_check(plan, state.config_options(), |_, _| {})
            })
            .map_err(|e| to_sql_error(source, stmt, e, &candidates))?;
        // Before decorrelation, which adds projections of every column.
        let reads_window_columns = reads_window_columns(&plan)?;
        let plan =
            decorrelate(plan, &state).map_err(|e| to_sql_error(source, stmt, e, &candidates))?;
        let ctx = QueryContext {
            state: &state,
            stmt,
            roles: &self.roles,
            reads_window_columns,
            windows: &windows,
        };
        lower_query(&ctx, &plan, window, id).map_err(|e| match e {
            VeloError::DataFusion(e) => to_sql_error(source, stmt, e, &candidates),
            other => other,
        })
    }
}

/// True when the query (subqueries included) names `_window_start` or `_window_end`.
fn reads_window_columns(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|n| {
        for e in n.expressions() {
            found |= e
                .column_refs()
                .iter()
                .any(|c| c.name == WINDOW_START || c.name == WINDOW_END);
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

/// Runs the optimizer rules that turn subqueries into joins, find the equalities of join
/// conditions and push filters towards the sources; the rest of DataFusion's optimizer targets
/// batch execution.
fn decorrelate(
    plan: LogicalPlan,
    state: &datafusion::execution::session_state::SessionState,
) -> datafusion::error::Result<LogicalPlan> {
    let rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![
        Arc::new(ScalarSubqueryToJoin::new()),
        Arc::new(DecorrelatePredicateSubquery::new()),
        Arc::new(ExtractEquijoinPredicate::new()),
        Arc::new(EliminateCrossJoin::new()),
        // A join's inputs are filtered before they meet, and a two-stream join sees its
        // time bounds in its condition.
        Arc::new(PushDownFilter::new()),
    ];
    Optimizer::with_rules(rules).optimize(plan, state, |_, _| {})
}

/// The position just after the last non-blank char (where "found: EOF" errors point).
fn end_of_text(sql: &str) -> (u64, u64) {
    let text = SourceText::new(sql);
    let last = sql.trim_end().chars().count();
    let (line, column) = text.position(last.saturating_sub(1));
    (line, column + 1)
}

/// Runs a future that cannot wait on anything: DataFusion's planning is `async` only to look up
/// tables, and ours are in memory. Polling once keeps the sync core free of an executor.
fn resolve_now<F: std::future::Future>(future: F) -> Result<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Ok(out),
        std::task::Poll::Pending => Err(VeloError::Execution(
            "planning unexpectedly waited on I/O".into(),
        )),
    }
}

fn parse_query(stmt: &Statement, source: &SourceText) -> Result<sql_ast::Statement> {
    let mut parsed = Parser::parse_sql(&GenericDialect {}, &stmt.query_sql).map_err(|e| {
        let msg = e.to_string();
        let (line, column) =
            position_in_message(&msg).unwrap_or_else(|| end_of_text(&stmt.query_sql));
        source.error(line, column, clean_message(&msg))
    })?;
    match parsed.len() {
        1 => Ok(parsed.remove(0)),
        _ => Err(source.error(stmt.position.0, stmt.position.1, "expected one query")),
    }
}

/// Expands `*` and `t.*` to the sources' data columns: system and window columns are
/// selectable by name but are not part of `*`. Over a join, `*` is each relation's data
/// columns in FROM order, qualified by the relation's name.
fn expand_wildcards(ast: &mut sql_ast::Statement, sources: &BTreeMap<String, SchemaRef>) {
    let sql_ast::Statement::Query(query) = ast else {
        return;
    };
    let sql_ast::SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let factors = select
        .from
        .iter()
        .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)));
    // Each relation's qualifier and data columns (None: not a source, DataFusion expands it).
    let mut relations: Vec<(Vec<sql_ast::Ident>, Option<Vec<sql_ast::Ident>>)> = Vec::new();
    for factor in factors {
        match factor {
            sql_ast::TableFactor::Table { name, alias, .. } => {
                let table = name.to_string().to_lowercase();
                let qualifier = match alias {
                    Some(a) => vec![a.name.clone()],
                    None => name
                        .0
                        .iter()
                        .filter_map(|p| p.as_ident().cloned())
                        .collect(),
                };
                let columns = sources.get(&table).map(|schema| {
                    schema
                        .fields()
                        .iter()
                        .filter(|f| !is_system_column(f.name()))
                        .map(|f| sql_ast::Ident::with_quote('"', f.name()))
                        .collect()
                });
                relations.push((qualifier, columns));
            }
            sql_ast::TableFactor::Derived {
                alias: Some(alias), ..
            } => relations.push((vec![alias.name.clone()], None)),
            // Anything else: leave every wildcard to DataFusion.
            _ => return,
        }
    }
    let qualified = |qualifier: &[sql_ast::Ident], columns: &[sql_ast::Ident]| {
        columns
            .iter()
            .map(|c| {
                let mut parts = qualifier.to_vec();
                parts.push(c.clone());
                sql_ast::SelectItem::UnnamedExpr(sql_ast::Expr::CompoundIdentifier(parts))
            })
            .collect::<Vec<_>>()
    };
    let mut items = Vec::with_capacity(select.projection.len());
    for item in select.projection.drain(..) {
        match item {
            sql_ast::SelectItem::Wildcard(_) if relations.len() == 1 => match &relations[0].1 {
                Some(columns) => items.extend(columns.iter().map(|c| {
                    sql_ast::SelectItem::UnnamedExpr(sql_ast::Expr::Identifier(c.clone()))
                })),
                None => items.push(item),
            },
            sql_ast::SelectItem::Wildcard(_) => {
                for (qualifier, columns) in &relations {
                    match columns {
                        Some(columns) => items.extend(qualified(qualifier, columns)),
                        None => items.push(sql_ast::SelectItem::QualifiedWildcard(
                            sql_ast::SelectItemQualifiedWildcardKind::ObjectName(
                                sql_ast::ObjectName::from(qualifier.clone()),
                            ),
                            Default::default(),
                        )),
                    }
                }
            }
            sql_ast::SelectItem::QualifiedWildcard(
                sql_ast::SelectItemQualifiedWildcardKind::ObjectName(ref q),
                _,
            ) => {
                let wanted: Vec<sql_ast::Ident> =
                    q.0.iter().filter_map(|p| p.as_ident().cloned()).collect();
                let same = |a: &[sql_ast::Ident]| {
                    a.len() == wanted.len()
                        && a.iter()
                            .zip(&wanted)
                            .all(|(x, y)| x.value.eq_ignore_ascii_case(&y.value))
                };
                match relations.iter().find(|(q, _)| same(q)) {
                    Some((qualifier, Some(columns))) => items.extend(qualified(qualifier, columns)),
                    _ => items.push(item),
                }
            }
            other => items.push(other),
        }
    }
    select.projection = items;
}

/// Rewrites `price * qty AS notional, notional * 0.01 AS fee` so `fee` uses the expression:
/// a later SELECT item may name an earlier item's alias when no source column has that name.
fn inline_lateral_aliases(ast: &mut sql_ast::Statement, source_columns: &HashSet<String>) {
    let sql_ast::Statement::Query(query) = ast else {
        return;
    };
    let sql_ast::SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let mut aliases: Vec<(String, sql_ast::Expr)> = Vec::new();
    for item in select.projection.iter_mut() {
        let (expr, alias) = match item {
            sql_ast::SelectItem::ExprWithAlias { expr, alias } => {
                (expr, Some(alias.value.to_lowercase()))
            }
            sql_ast::SelectItem::UnnamedExpr(expr) => (expr, None),
            _ => continue,
        };
        if !aliases.is_empty() {
            let _ = visit_expressions_mut(expr, |e: &mut sql_ast::Expr| {
                if let sql_ast::Expr::Identifier(id) = e {
                    let name = id.value.to_lowercase();
                    if !source_columns.contains(&name) {
                        if let Some((_, aliased)) = aliases.iter().rev().find(|(a, _)| *a == name) {
                            *e = sql_ast::Expr::Nested(Box::new(aliased.clone()));
                        }
                    }
                }
                std::ops::ControlFlow::<()>::Continue(())
            });
        }
        if let Some(alias) = alias {
            aliases.push((alias, expr.clone()));
        }
    }
}

fn clean_message(msg: &str) -> String {
    let msg = msg
        .trim_start_matches("SQL error: ")
        .trim_start_matches("ParserError(\"")
        .trim_start_matches("sql parser error: ")
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("Schema error: ");
    // An internal error is not the user's to report: keep what it says, not the plea.
    let msg = msg
        .split("This issue was likely caused by a bug in DataFusion's code")
        .next()
        .unwrap_or(msg)
        .trim_end()
        .trim_end_matches('.')
        .trim_start_matches("Internal error: ");
    match msg.find(" at Line: ") {
        Some(at) => msg[..at].to_string(),
        None => msg.trim_end_matches("\")").to_string(),
    }
}

/// DataFusion's messages for a comparison of types that have no common type, as "cannot
/// compare A with B", and the operator to point at.
fn incompatible_comparison(message: &str) -> Option<(String, &'static str)> {
    if let Some(rest) =
        message.strip_prefix("Cannot infer common argument type for comparison operation ")
    {
        for (spaced, operator) in [
            (" <= ", "<="),
            (" >= ", ">="),
            (" <> ", "<>"),
            (" != ", "!="),
            (" = ", "="),
            (" < ", "<"),
            (" > ", ">"),
        ] {
            if let Some((left, right)) = rest.split_once(spaced) {
                return Some((format!("cannot compare {left} with {right}"), operator));
            }
        }
    }
    let rest = message.strip_prefix("Can not find compatible types to compare ")?;
    let (left, right) = rest.split_once(" with ")?;
    Some((
        format!("cannot compare {left} with the IN list's {right}"),
        "IN",
    ))
}

/// Turns a DataFusion error into a SQL error at the best position we can find.
fn to_sql_error(
    source: &SourceText,
    stmt: &Statement,
    e: DataFusionError,
    candidates: &[String],
) -> VeloError {
    let text = e.to_string();
    // The root cause, without the wrappers ("type_coercion caused by ...") around it.
    let mut message = clean_message(&e.find_root().to_string());
    let mut position = None;
    if let Some(diag) = e.diagnostic() {
        if let Some(span) = diag.span.filter(|s| s.start.line > 0) {
            position = Some((span.start.line, span.start.column));
        }
    }
    let not_found = match e.find_root() {
        DataFusionError::SchemaError(se, _) => match se.as_ref() {
            SchemaError::FieldNotFound {
                field,
                valid_fields,
            } => Some((field.clone(), valid_fields.clone())),
            _ => None,
        },
        _ => None,
    };
    if let Some((field, valid_fields)) = not_found {
        let bare = field.name.clone();
        message = format!("unknown column '{bare}'");
        let valid: Vec<&str> = valid_fields.iter().map(|c| c.name.as_str()).collect();
        // The name exists, under another relation: the qualifier is what is wrong.
        let elsewhere = valid_fields
            .iter()
            .find(|c| c.name == bare && field.relation.is_some());
        if let Some(other) = elsewhere {
            message = format!(
                "unknown column '{}' (did you mean '{}'?)",
                field.flat_name(),
                other.flat_name()
            );
        } else if let Some(best) = nearest(
            &bare,
            valid
                .iter()
                .copied()
                .chain(candidates.iter().map(String::as_str)),
        ) {
            message.push_str(&format!(" (did you mean '{best}'?)"));
        }
        if position.is_none() {
            let text = SourceText::new(&stmt.query_sql);
            position = text.find_word(&bare).map(|i| text.position(i));
        }
    } else if let Some(rest) = message.clone().strip_prefix("Invalid function '") {
        let name = rest.split('\'').next().unwrap_or_default().to_string();
        message = format!("unknown function '{name}'");
        if let Some(best) = rest
            .split("Did you mean '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
        {
            message.push_str(&format!(" (did you mean '{best}'?)"));
        }
        if position.is_none() {
            let text = SourceText::new(&stmt.query_sql);
            position = text.find_word(&name).map(|i| text.position(i));
        }
    } else if let Some((compared, operator)) = incompatible_comparison(&message) {
        message = compared;
        if position.is_none() {
            let text = SourceText::new(&stmt.query_sql);
            position = text.find_word(operator).map(|i| text.position(i));
        }
    } else if let Some(pos) = position_in_message(&text) {
        position = position.or(Some(pos));
    } else if position.is_none() && (message.contains("JOIN") || message.contains("join")) {
        let text = SourceText::new(&stmt.query_sql);
        position = text.find_word("JOIN").map(|i| text.position(i));
    }
    let (line, column) = position.unwrap_or(stmt.position);
    source.error(line, column, message)
}
