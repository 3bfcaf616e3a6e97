//! Plans one query: DataFusion turns the SQL into a logical plan, which we lower into the
//! chain of streaming stages that `exec` runs (filter, project, aggregate, distinct, sort, limit).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::empty::EmptyTable;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, DataFusionError, SchemaError};
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Distinct, Expr, FetchType, LogicalPlan, SkipType};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::aggregate::{AggregateFunctionExpr, LoweredAggregateBuilder};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{create_physical_sort_exprs, PhysicalExpr, PhysicalSortExpr};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{self as sql_ast, visit_expressions_mut};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::analytic::{plan_analytic, AnalyticFunction};
use super::functions::{register_velostream_functions, rewrite_function_calls};
use super::properties::Properties;
use super::script::{EmitMode, Statement, WindowKind, WindowSpec};
use super::source_text::{nearest, position_in_message, SourceText};
use super::window::{
    late_data_settings, prepare_window, watermark_settings, WatermarkPlan, WindowPlan, WINDOW_END,
    WINDOW_START,
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
    /// The source it reads (FROM).
    pub source: String,
    /// The columns a batch handed to the query must have (data fields it uses + system columns).
    pub input_schema: SchemaRef,
    /// The rows it emits.
    pub output_schema: SchemaRef,
    /// Stages in execution order.
    pub stages: Vec<PlanStage>,
    /// Output columns that key an upsert stream (the GROUP BY columns), empty for append streams.
    pub key_columns: Vec<String>,
    /// The WINDOW clause (or Flink window in GROUP BY), if any.
    pub window: Option<WindowSpec>,
    /// How the query's watermark advances (windowed queries).
    pub watermark: Option<WatermarkPlan>,
    /// WITH properties of the statement.
    pub properties: Properties,
}

/// Plans queries against registered sources, with velostream's functions installed.
pub struct QueryPlanner {
    ctx: SessionContext,
    sources: BTreeMap<String, SchemaRef>,
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
        let ctx = SessionContext::new_with_config(config);
        register_velostream_functions(&ctx);
        QueryPlanner {
            ctx,
            sources: BTreeMap::new(),
        }
    }

    /// Registers a source by name with its data fields; system columns are added here.
    pub fn register_source(&mut self, name: &str, data_schema: SchemaRef) -> Result<()> {
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
        Ok(())
    }

    /// The data schema a source was registered with.
    pub fn source_schema(&self, name: &str) -> Option<&SchemaRef> {
        self.sources.get(name)
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
        expand_wildcards(&mut ast, &self.sources);
        inline_lateral_aliases(&mut ast, &source_columns);
        rewrite_function_calls(&mut ast);

        let state = self.ctx.state();
        let candidates: Vec<String> = source_columns.iter().cloned().collect();
        let plan = resolve_now(state.statement_to_plan(DFStatement::Statement(Box::new(ast))))?
            .map_err(|e| to_sql_error(source, stmt, e, &candidates))?;
        let plan = state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .map_err(|e| to_sql_error(source, stmt, e, &candidates))?;
        lower_plan(&state, &plan, stmt, window, id).map_err(|e| match e {
            VeloError::DataFusion(e) => to_sql_error(source, stmt, e, &candidates),
            other => other,
        })
    }
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

/// Expands `*` and `t.*` to the source's data columns: system and window columns are
/// selectable by name but are not part of `*`.
fn expand_wildcards(ast: &mut sql_ast::Statement, sources: &BTreeMap<String, SchemaRef>) {
    let sql_ast::Statement::Query(query) = ast else {
        return;
    };
    let sql_ast::SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let Some(sql_ast::TableFactor::Table { name, .. }) = select.from.first().map(|f| &f.relation)
    else {
        return;
    };
    let table = name.to_string().to_lowercase();
    let Some(schema) = sources.get(&table) else {
        return;
    };
    let columns: Vec<sql_ast::Ident> = schema
        .fields()
        .iter()
        .filter(|f| !is_system_column(f.name()))
        .map(|f| sql_ast::Ident::with_quote('"', f.name()))
        .collect();
    let mut items = Vec::with_capacity(select.projection.len());
    for item in select.projection.drain(..) {
        match item {
            sql_ast::SelectItem::Wildcard(_) => {
                items.extend(columns.iter().map(|c| {
                    sql_ast::SelectItem::UnnamedExpr(sql_ast::Expr::Identifier(c.clone()))
                }));
            }
            sql_ast::SelectItem::QualifiedWildcard(
                sql_ast::SelectItemQualifiedWildcardKind::ObjectName(q),
                _,
            ) => {
                let qualifier: Vec<sql_ast::Ident> =
                    q.0.iter().filter_map(|p| p.as_ident().cloned()).collect();
                items.extend(columns.iter().map(|c| {
                    let mut parts = qualifier.clone();
                    parts.push(c.clone());
                    sql_ast::SelectItem::UnnamedExpr(sql_ast::Expr::CompoundIdentifier(parts))
                }));
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
        .split(". This issue was likely caused by a bug in DataFusion's code")
        .next()
        .unwrap_or(msg)
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
        if let Some(best) = nearest(
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
    }
    let (line, column) = position.unwrap_or(stmt.position);
    source.error(line, column, message)
}

/// Lowers an analyzed logical plan to streaming stages.
fn lower_plan(
    state: &datafusion::execution::session_state::SessionState,
    plan: &LogicalPlan,
    stmt: &Statement,
    window: Option<WindowSpec>,
    id: &str,
) -> Result<PlannedQuery> {
    // Collect the chain from the root down to the scan.
    let mut chain = Vec::new();
    let mut node = plan;
    loop {
        chain.push(node);
        let inputs = node.inputs();
        match inputs.as_slice() {
            [] => break,
            [one] => node = one,
            _ => return Err(unsupported(node)),
        }
    }
    chain.reverse();
    let LogicalPlan::TableScan(scan) = chain[0] else {
        return Err(unsupported(chain[0]));
    };
    let source_name = scan.table_name.table().to_string();

    // The input schema: only the columns the query uses, in table order.
    let mut used = HashSet::new();
    plan.apply(|n| {
        for e in n.expressions() {
            for c in e.column_refs() {
                used.insert(c.name.clone());
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    let ttl = crate::sql::ttl::state_ttl_settings(&stmt.properties)?;
    if ttl.is_some() && window.is_some() {
        return Err(VeloError::Config(
            "'state.ttl' applies to a GROUP BY without a window: a window's state is dropped \
             when the window closes"
                .into(),
        ));
    }
    // An event-time TTL runs on the watermark, which follows the records' event time.
    let ttl_on_event_time = ttl.is_some_and(|t| t.clock == crate::sql::TtlClock::Event);
    let time_column = match &window {
        Some(w) => Some(
            w.time_column
                .clone()
                .unwrap_or_else(|| "_event_time".to_string()),
        ),
        None => ttl_on_event_time.then(|| "_event_time".to_string()),
    };
    if let Some(t) = &time_column {
        used.insert(t.clone());
        used.insert("_partition".to_string());
    } else if used.contains(WINDOW_START) || used.contains(WINDOW_END) {
        return Err(VeloError::Config(format!(
            "{WINDOW_START} and {WINDOW_END} exist only in a windowed query (add WINDOW TUMBLING(...))"
        )));
    }
    let scan_schema = scan.projected_schema.as_ref();
    let keep: Vec<usize> = (0..scan_schema.fields().len())
        .filter(|&i| used.contains(scan_schema.field(i).name()))
        .collect();
    let input_schema = Arc::new(Schema::new(
        keep.iter()
            .map(|&i| scan_schema.field(i).as_ref().clone())
            .collect::<Vec<_>>(),
    ));

    let props = state.execution_props();
    let mut stages: Vec<PlanStage> = Vec::new();
    let mut group_count: Option<usize> = None;
    let mut key_columns = Vec::new();
    let time_expr = match &time_column {
        Some(name) => {
            let index = input_schema.index_of(name).map_err(|_| {
                VeloError::Config(format!(
                    "the window's time column '{name}' is not a column of '{source_name}'"
                ))
            })?;
            Some(Arc::new(Column::new(name, index)) as Arc<dyn PhysicalExpr>)
        }
        None => None,
    };
    let emit = stmt.emit.unwrap_or(if window.is_some() {
        EmitMode::Final
    } else {
        EmitMode::Changes
    });
    // Until the first projection or aggregate, rows still have the (restricted) scan columns.
    // `restricted`: the columns the rows carry while they are still the scan's (plus analytic
    // columns appended after them); None once a projection or aggregate made new rows.
    let mut restricted: Option<Vec<usize>> = Some(keep.clone());
    // A projection's columns as executed, where their types differ from the logical plan's
    // (see `executed_schema`): the next node reads these, and if nothing reshapes the rows
    // after it, so does the sink.
    let mut executed: Option<DFSchema> = None;
    let mut output_override: Option<SchemaRef> = None;
    for (i, node) in chain.iter().enumerate().skip(1) {
        let input = chain[i - 1];
        let input_schema_df = match (&restricted, executed.take()) {
            (_, Some(schema)) => schema,
            (Some(k), None) => restrict_schema(input.schema(), k)?,
            (None, None) => input.schema().as_ref().clone(),
        };
        restricted = match (node, restricted.take()) {
            (LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_), _) => None,
            (LogicalPlan::Window(w), Some(mut k)) => {
                let before = w.input.schema().fields().len();
                k.extend(before..w.schema.fields().len());
                Some(k)
            }
            (_, k) => k,
        };
        match node {
            LogicalPlan::SubqueryAlias(_) if i == 1 => {}
            LogicalPlan::Filter(filter) => {
                let predicate = physical_expr(state, filter.predicate.clone(), &input_schema_df)?;
                match stages.last_mut() {
                    Some(PlanStage::Aggregate(agg)) if agg.having.is_none() => {
                        agg.having = Some(predicate)
                    }
                    _ => stages.push(PlanStage::Filter { predicate }),
                }
            }
            LogicalPlan::Projection(proj) => {
                let exprs = proj
                    .expr
                    .iter()
                    .map(|e| physical_expr(state, e.clone(), &input_schema_df))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                let schema = Arc::new(proj.schema.as_arrow().clone());
                if let Some(k) = group_count.take() {
                    let group_names: Vec<&str> = input_schema_df
                        .fields()
                        .iter()
                        .take(k)
                        .map(|f| f.name().as_str())
                        .collect();
                    for (e, f) in proj.expr.iter().zip(schema.fields()) {
                        let inner = match e {
                            datafusion::logical_expr::Expr::Alias(a) => a.expr.as_ref(),
                            other => other,
                        };
                        if let datafusion::logical_expr::Expr::Column(c) = inner {
                            if group_names.contains(&c.name.as_str()) {
                                key_columns.push(f.name().clone());
                            }
                        }
                    }
                }
                let (schema, as_executed) =
                    executed_schema(&proj.schema, &exprs, &input_schema_df)?;
                executed = as_executed;
                output_override = executed.is_some().then(|| Arc::clone(&schema));
                stages.push(PlanStage::Project { exprs, schema });
            }
            LogicalPlan::Aggregate(agg) => {
                output_override = None;
                let physical_input = input_schema_df.as_arrow().clone();
                let group_exprs = agg
                    .group_expr
                    .iter()
                    .map(|e| {
                        if matches!(e, datafusion::logical_expr::Expr::GroupingSet(_)) {
                            return Err(DataFusionError::Plan(
                                "GROUPING SETS, CUBE and ROLLUP are not supported on streams"
                                    .into(),
                            ));
                        }
                        physical_expr(state, e.clone(), &input_schema_df)
                    })
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                let mut aggregates = Vec::new();
                let mut filters = Vec::new();
                for e in &agg.aggr_expr {
                    let planning_ctx = Default::default();
                    let name = e.schema_name().to_string();
                    let e = &simplify(state, e.clone(), &input_schema_df)?;
                    let lowered = LoweredAggregateBuilder::new(
                        e,
                        &input_schema_df,
                        &physical_input,
                        props,
                        &planning_ctx,
                    )
                    .with_name(name)
                    .build()?;
                    aggregates.push(lowered.aggregate);
                    filters.push(lowered.filter);
                }
                group_count = Some(agg.group_expr.len());
                let window_plan = match (&window, &time_expr) {
                    (Some(spec), Some(time_expr)) => {
                        let key_position = |name: &str| {
                            agg.group_expr.iter().position(|e| {
                                matches!(e, datafusion::logical_expr::Expr::Column(c) if c.name == name)
                            })
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
                            late_data_settings(&stmt.properties)?;
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
                stages.push(PlanStage::Aggregate(AggregatePlan {
                    group_exprs,
                    aggregates,
                    filters,
                    having: None,
                    output_schema: Arc::new(agg.schema.as_arrow().clone()),
                    emit,
                    window: window_plan,
                    ttl,
                    time_expr: time_expr.clone(),
                }));
            }
            LogicalPlan::Distinct(Distinct::All(_)) => stages.push(PlanStage::Distinct),
            LogicalPlan::Window(w) => {
                output_override = None;
                let physical = |e: Expr| physical_expr(state, e, &input_schema_df);
                let functions = w
                    .window_expr
                    .iter()
                    .map(|e| {
                        let e = simplify(state, e.clone(), &input_schema_df)?;
                        plan_analytic(state, &e, &input_schema_df, &physical)
                    })
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                // The output keeps the input's columns; with a restricted scan, only those.
                let mut fields: Vec<Field> = input_schema_df
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                let window_fields = w
                    .schema
                    .fields()
                    .iter()
                    .skip(w.input.schema().fields().len());
                fields.extend(window_fields.map(|f| f.as_ref().clone()));
                stages.push(PlanStage::Analytic {
                    functions,
                    schema: Arc::new(Schema::new(fields)),
                });
            }
            LogicalPlan::Sort(sort) => {
                let sort_exprs = sort
                    .expr
                    .iter()
                    .map(|s| Ok(s.with_expr(simplify(state, s.expr.clone(), &input_schema_df)?)))
                    .collect::<datafusion::error::Result<Vec<_>>>()?;
                let exprs = create_physical_sort_exprs(
                    &sort_exprs,
                    &input_schema_df,
                    props,
                    &Default::default(),
                )?;
                stages.push(PlanStage::Sort { exprs });
                if let Some(fetch) = sort.fetch {
                    stages.push(PlanStage::Limit {
                        skip: 0,
                        fetch: Some(fetch),
                    });
                }
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
                stages.push(PlanStage::Limit { skip, fetch });
            }
            other => return Err(unsupported(other)),
        }
    }
    if ttl.is_some() && !stages.iter().any(|s| matches!(s, PlanStage::Aggregate(_))) {
        return Err(VeloError::Config(
            "'state.ttl' bounds the state of a GROUP BY, and this query has none".into(),
        ));
    }
    let output_schema =
        output_override.unwrap_or_else(|| Arc::new(plan.schema().as_arrow().clone()));
    let watermark = match &time_expr {
        Some(t) => {
            let (max_out_of_orderness_ms, idle_timeout_ms) =
                watermark_settings(&source_name, &stmt.properties)?;
            Some(WatermarkPlan {
                time_expr: Arc::clone(t),
                partition_column: input_schema.index_of("_partition").ok(),
                max_out_of_orderness_ms,
                idle_timeout_ms,
            })
        }
        None => None,
    };
    Ok(PlannedQuery {
        id: id.to_string(),
        source: source_name,
        input_schema,
        output_schema,
        stages,
        key_columns,
        window,
        watermark,
        properties: stmt.properties.clone(),
    })
}

/// A projection's schema with each column's type as its physical expression computes it.
/// Simplification can make them differ from the logical plan's: `ROUND(d, 1)` on a DECIMAL
/// keeps the input's scale while the scale argument is still a cast, and takes scale 1 once
/// the cast is folded. Returns the arrow schema, and the DataFusion schema for the next node
/// when some type changed (None: the logical one holds).
fn executed_schema(
    logical: &DFSchema,
    exprs: &[Arc<dyn PhysicalExpr>],
    input: &DFSchema,
) -> datafusion::error::Result<(SchemaRef, Option<DFSchema>)> {
    let mut changed = false;
    let mut fields = Vec::with_capacity(exprs.len());
    for ((qualifier, planned), expr) in logical.iter().zip(exprs) {
        let actual = expr.return_field(input.as_arrow())?;
        let field = if actual.data_type() == planned.data_type() {
            Arc::clone(planned)
        } else {
            changed = true;
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
    if !changed {
        return Ok((Arc::new(logical.as_arrow().clone()), None));
    }
    let schema = DFSchema::new_with_metadata(fields, logical.metadata().clone())?;
    Ok((Arc::new(schema.as_arrow().clone()), Some(schema)))
}

/// Lowers a logical expression, simplified first (see `simplify`).
fn physical_expr(
    state: &datafusion::execution::session_state::SessionState,
    expr: Expr,
    schema: &DFSchema,
) -> datafusion::error::Result<Arc<dyn PhysicalExpr>> {
    state.create_physical_expr(simplify(state, expr, schema)?, schema)
}

/// Coerces and simplifies an expression as DataFusion's optimizer would (COALESCE becomes CASE,
/// constants fold); physical planning expects that form.
fn simplify(
    state: &datafusion::execution::session_state::SessionState,
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

fn unsupported(node: &LogicalPlan) -> VeloError {
    let what = match node {
        LogicalPlan::Join(_) => "JOIN",
        LogicalPlan::Window(_) => "window functions (OVER ...)",
        LogicalPlan::Union(_) => "UNION",
        LogicalPlan::EmptyRelation(_) => "a query without FROM",
        LogicalPlan::Subquery(_) => "subqueries",
        LogicalPlan::Distinct(_) => "DISTINCT ON",
        LogicalPlan::Values(_) => "VALUES",
        _ => "this kind of query",
    };
    VeloError::DataFusion(DataFusionError::Plan(format!(
        "{what} is not supported on streams yet"
    )))
}
