//! Window planning: Flink's `GROUP BY TUMBLE/HOP/SESSION(...)` forms, the window columns added
//! to GROUP BY, and the event-time settings (watermarks, allowed lateness, late-data strategy).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::ast::{self as sql_ast, visit_expressions_mut};

use super::key_spec::{KeyDefault, KeyKind, KeySpec, Keys};
use super::properties::{parse_duration_ms, Properties};
use super::script::{WindowKind, WindowSpec};
use crate::error::{Result, VeloError};

/// Column holding a windowed row's window start (epoch ms).
pub const WINDOW_START: &str = "_window_start";
/// Column holding a windowed row's window end (epoch ms, exclusive).
pub const WINDOW_END: &str = "_window_end";

/// What happens to a record later than the allowed lateness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateDataStrategy {
    /// Drop it and count it (default).
    Drop,
    /// Write it with the reason to the dead-letter sink.
    DeadLetter,
}

/// A planned window: its kind, where event time comes from and how late data is handled.
#[derive(Debug, Clone)]
pub struct WindowPlan {
    pub kind: WindowKind,
    /// Event time of each input row (epoch ms, or a timestamp/text column converted).
    pub time_expr: Arc<dyn PhysicalExpr>,
    /// Positions of `_window_start` / `_window_end` among the GROUP BY keys.
    pub start_key: usize,
    pub end_key: usize,
    pub allowed_lateness_ms: i64,
    pub late_strategy: LateDataStrategy,
}

/// How a query's watermark is derived from its input.
#[derive(Debug, Clone)]
pub struct WatermarkPlan {
    /// Event time of each input row.
    pub time_expr: Arc<dyn PhysicalExpr>,
    /// Index of `_partition` in the input schema.
    pub partition_column: Option<usize>,
    pub max_out_of_orderness_ms: i64,
    pub idle_timeout_ms: Option<i64>,
}

/// `'late.data.allowed_lateness'`: how long a closed window still takes records.
pub const LATE_DATA_ALLOWED_LATENESS: KeySpec = KeySpec {
    name: "late.data.allowed_lateness",
    kind: KeyKind::Duration { positive: false },
    default: KeyDefault::Value("0s"),
    doc: "A tumbling or sliding window's state is kept this long after it closed; a record \
          arriving then updates the window, whose rows are emitted again.",
};

/// `'late.data.strategy'`: what happens to a record later than that.
pub const LATE_DATA_STRATEGY: KeySpec = KeySpec {
    name: "late.data.strategy",
    kind: KeyKind::Choice(&["drop", "dead_letter", "dead-letter", "dlq"]),
    default: KeyDefault::Value("drop"),
    doc: "A record later than the allowed lateness is dropped and counted (`drop`), or written \
          with the reason to the dead-letter file (`dead_letter`).",
};

/// `'late.data.dlq.path'`: where late records go under `dead_letter`.
pub const LATE_DATA_DLQ_PATH: KeySpec = KeySpec {
    name: "late.data.dlq.path",
    kind: KeyKind::Text,
    default: KeyDefault::Note("the source's `dlq.path`"),
    doc: "The dead-letter file of late records: one JSON object `{job, reason, record}` per line.",
};

/// `'<src>.watermark.max_out_of_orderness'`: how far the watermark trails the events.
pub const WATERMARK_MAX_OUT_OF_ORDERNESS: KeySpec = KeySpec {
    name: "watermark.max_out_of_orderness",
    kind: KeyKind::Duration { positive: false },
    default: KeyDefault::Value("0s"),
    doc: "A partition's watermark is its highest event time minus this: records that much out \
          of order are still on time.",
};

/// `'<src>.watermark.idle_timeout'`: when a quiet partition stops holding the watermark.
pub const WATERMARK_IDLE_TIMEOUT: KeySpec = KeySpec {
    name: "watermark.idle_timeout",
    kind: KeyKind::Duration { positive: false },
    default: KeyDefault::None,
    doc: "A partition that brings no records for this long stops holding the query's watermark \
          back.",
};

/// `'<src>.event.time.format'`: how every source reads its event-time column.
pub const EVENT_TIME_FORMAT: KeySpec = KeySpec {
    name: "event.time.format",
    kind: KeyKind::Text,
    default: KeyDefault::Note("`epoch_millis` for numbers, `iso8601` for text"),
    doc: "How `event.time.field` is read: `epoch_millis`, `epoch_seconds`, `iso8601`, or a \
          strftime pattern such as `%Y-%m-%d %H:%M:%S`.",
};

/// The watermark keys, which every source declares.
pub const WATERMARK_KEYS: &[KeySpec] = &[WATERMARK_MAX_OUT_OF_ORDERNESS, WATERMARK_IDLE_TIMEOUT];

/// Reads `'late.data.*'` keys: (allowed lateness ms, strategy).
pub fn late_data_settings(props: &Properties) -> Result<(i64, LateDataStrategy)> {
    let keys = Keys::job(props);
    let lateness = keys.duration_ms(&LATE_DATA_ALLOWED_LATENESS)?.unwrap_or(0);
    let strategy = match keys.choice(&LATE_DATA_STRATEGY)? {
        None | Some("drop") => LateDataStrategy::Drop,
        Some(_) => LateDataStrategy::DeadLetter,
    };
    Ok((lateness, strategy))
}

/// Reads `'<src>.watermark.*'` keys: (max out-of-orderness ms, idle timeout ms).
pub fn watermark_settings(source: &str, props: &Properties) -> Result<(i64, Option<i64>)> {
    let keys = Keys::group(props, source, WATERMARK_KEYS, "source");
    Ok((
        keys.duration_ms(&WATERMARK_MAX_OUT_OF_ORDERNESS)?
            .unwrap_or(0),
        keys.duration_ms(&WATERMARK_IDLE_TIMEOUT)?,
    ))
}

fn function_args(f: &sql_ast::Function) -> Vec<sql_ast::Expr> {
    match &f.args {
        sql_ast::FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                sql_ast::FunctionArg::Unnamed(sql_ast::FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn duration_of(expr: &sql_ast::Expr) -> Option<i64> {
    parse_duration_ms(&expr.to_string())
}

/// Prepares a windowed query's AST: takes a Flink window from GROUP BY (when the statement has
/// no WINDOW clause), maps `TUMBLE_START(...)`-style calls to the window columns, and adds
/// `_window_start, _window_end` to GROUP BY. Returns the window, if the query has one.
pub fn prepare_window(
    ast: &mut sql_ast::Statement,
    declared: Option<&WindowSpec>,
) -> Result<Option<WindowSpec>> {
    let sql_ast::Statement::Query(query) = ast else {
        return Ok(declared.cloned());
    };
    let sql_ast::SetExpr::Select(select) = query.body.as_mut() else {
        return Ok(declared.cloned());
    };
    let mut window = declared.cloned();
    if let sql_ast::GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
        let mut kept = Vec::new();
        for e in exprs.drain(..) {
            let flink = match &e {
                sql_ast::Expr::Function(f) => flink_window(f)?,
                _ => None,
            };
            match flink {
                Some(spec) if window.is_none() => window = Some(spec),
                Some(_) => {
                    return Err(VeloError::Config(
                        "a query has one window: use either WINDOW ... or GROUP BY TUMBLE/HOP/SESSION(...)".into(),
                    ))
                }
                None => kept.push(e),
            }
        }
        *exprs = kept;
    }
    if window.is_none() {
        return Ok(None);
    }
    // Over a join every side offers window columns: the window's are its time column's side's.
    let joined = select.from.len() > 1 || select.from.iter().any(|f| !f.joins.is_empty());
    let qualifier = match &window {
        Some(w) if joined => w
            .time_qualifier
            .clone()
            .or_else(|| select.from.first().and_then(|f| relation_name(&f.relation))),
        _ => None,
    };
    let window_column = |c: &str| match &qualifier {
        Some(q) => sql_ast::Expr::CompoundIdentifier(vec![
            sql_ast::Ident::new(q.clone()),
            sql_ast::Ident::new(c),
        ]),
        None => sql_ast::Expr::Identifier(sql_ast::Ident::new(c)),
    };
    let rewrite = |e: &mut sql_ast::Expr| {
        let column = match &*e {
            sql_ast::Expr::Function(f) => match f.name.to_string().to_lowercase().as_str() {
                "tumble_start" | "hop_start" | "session_start" | "window_start" => {
                    Some(WINDOW_START)
                }
                "tumble_end" | "hop_end" | "session_end" | "window_end" => Some(WINDOW_END),
                _ => None,
            },
            sql_ast::Expr::Identifier(id) if qualifier.is_some() => [WINDOW_START, WINDOW_END]
                .into_iter()
                .find(|c| id.value == *c),
            _ => None,
        };
        if let Some(c) = column {
            *e = window_column(c);
        }
        ControlFlow::<()>::Continue(())
    };
    let _ = visit_expressions_mut(&mut select.projection, rewrite);
    if let Some(having) = select.having.as_mut() {
        let _ = visit_expressions_mut(having, rewrite);
    }
    let group_by_names: Vec<String> = match &select.group_by {
        sql_ast::GroupByExpr::Expressions(exprs, _) => {
            exprs.iter().map(|e| e.to_string().to_lowercase()).collect()
        }
        sql_ast::GroupByExpr::All(_) => Vec::new(),
    };
    if let sql_ast::GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
        for c in [WINDOW_START, WINDOW_END] {
            if !group_by_names
                .iter()
                .any(|n| n == c || n.ends_with(&format!(".{c}")))
            {
                exprs.push(window_column(c));
            }
        }
    }
    Ok(window)
}

/// Windows of subqueries in FROM (`(SELECT ... FROM bid GROUP BY auction, TUMBLE(ts, ...)) w`):
/// each such subquery is rewritten as `prepare_window` rewrites a query, and its window is
/// returned under the source it reads. A source windowed twice, differently, is refused.
pub fn prepare_nested_windows(
    ast: &mut sql_ast::Statement,
) -> Result<std::collections::BTreeMap<String, WindowSpec>> {
    let mut windows = std::collections::BTreeMap::new();
    if let sql_ast::Statement::Query(query) = ast {
        if let sql_ast::SetExpr::Select(select) = query.body.as_mut() {
            for from in select.from.iter_mut() {
                nested_windows(&mut from.relation, &mut windows)?;
                for join in from.joins.iter_mut() {
                    nested_windows(&mut join.relation, &mut windows)?;
                }
            }
        }
    }
    Ok(windows)
}

fn nested_windows(
    factor: &mut sql_ast::TableFactor,
    windows: &mut std::collections::BTreeMap<String, WindowSpec>,
) -> Result<()> {
    let sql_ast::TableFactor::Derived { subquery, .. } = factor else {
        return Ok(());
    };
    let mut inner = sql_ast::Statement::Query(subquery.clone());
    // Deeper subqueries first, then this one.
    for (source, spec) in prepare_nested_windows(&mut inner)? {
        add_window(windows, source, spec)?;
    }
    let Some(spec) = prepare_window(&mut inner, None)? else {
        if let sql_ast::Statement::Query(q) = inner {
            *subquery = q;
        }
        return Ok(());
    };
    let source = match inner {
        sql_ast::Statement::Query(ref q) => match q.body.as_ref() {
            sql_ast::SetExpr::Select(select) => match select.from.first().map(|f| &f.relation) {
                Some(sql_ast::TableFactor::Table { name, .. }) => {
                    name.0.last().map(|p| p.to_string().to_lowercase())
                }
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let Some(source) = source else {
        return Err(VeloError::Config(
            "a windowed subquery must read a source directly (FROM source GROUP BY ..., TUMBLE(...))"
                .into(),
        ));
    };
    let spec = WindowSpec {
        time_qualifier: None,
        ..spec
    };
    add_window(windows, source, spec)?;
    if let sql_ast::Statement::Query(q) = inner {
        *subquery = q;
    }
    Ok(())
}

/// The name a FROM item is known by: its alias, else its table's name.
fn relation_name(factor: &sql_ast::TableFactor) -> Option<String> {
    match factor {
        sql_ast::TableFactor::Table { alias: Some(a), .. }
        | sql_ast::TableFactor::Derived { alias: Some(a), .. } => Some(a.name.value.clone()),
        sql_ast::TableFactor::Table { name, .. } => name.0.last().map(|p| p.to_string()),
        _ => None,
    }
}

fn add_window(
    windows: &mut std::collections::BTreeMap<String, WindowSpec>,
    source: String,
    spec: WindowSpec,
) -> Result<()> {
    match windows.get(&source) {
        Some(existing) if *existing != spec => Err(VeloError::Config(format!(
            "'{source}' is windowed twice, differently: one window per source for now"
        ))),
        _ => {
            windows.insert(source, spec);
            Ok(())
        }
    }
}

/// Reads Flink's `TUMBLE(ts, size)`, `HOP(ts, slide, size)` or `SESSION(ts, gap)`.
fn flink_window(f: &sql_ast::Function) -> Result<Option<WindowSpec>> {
    let name = f.name.to_string().to_lowercase();
    if !matches!(name.as_str(), "tumble" | "hop" | "session") {
        return Ok(None);
    }
    let args = function_args(f);
    let (time_qualifier, time_column) = match args.first() {
        Some(sql_ast::Expr::Identifier(id)) => (None, Some(id.value.to_lowercase())),
        Some(sql_ast::Expr::CompoundIdentifier(ids)) => match ids.as_slice() {
            [.., table, column] => (
                Some(table.value.to_lowercase()),
                Some(column.value.to_lowercase()),
            ),
            _ => (None, ids.last().map(|id| id.value.to_lowercase())),
        },
        _ => (None, None),
    };
    let durations: Vec<Option<i64>> = args.iter().skip(1).map(duration_of).collect();
    let invalid = || {
        VeloError::Config(format!(
            "invalid {}(...): expected a time column and INTERVAL sizes",
            name.to_uppercase()
        ))
    };
    let kind = match (name.as_str(), durations.as_slice()) {
        ("tumble", [Some(size)]) => WindowKind::Tumbling { size_ms: *size },
        ("hop", [Some(slide), Some(size)]) => WindowKind::Sliding {
            size_ms: *size,
            advance_ms: *slide,
        },
        ("session", [Some(gap)]) => WindowKind::Session { gap_ms: *gap },
        _ => return Err(invalid()),
    };
    Ok(Some(WindowSpec {
        kind,
        time_column,
        time_qualifier,
        position: (0, 0),
    }))
}
