//! Splits a velostream SQL script into statements and lifts out the clauses DataFusion does not
//! know (WINDOW, EMIT, WITH properties, CREATE STREAM/TABLE wrappers, `-- @` annotations).
//! What remains of each query is plain SQL, kept at its original line/column.

use std::collections::BTreeMap;

use arrow::datatypes::DataType;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer, Whitespace};

use super::declaration::parse_columns;
use super::properties::{parse_duration_ms, KeyOrigin, Properties};
use super::source_text::SourceText;
use crate::error::{Result, VeloError};

/// A parsed script: its statements in order, with the text they came from.
#[derive(Debug, Clone)]
pub struct Script {
    /// The original text, for error positions.
    pub source: SourceText,
    /// Statements in file order.
    pub statements: Vec<Statement>,
}

impl Script {
    /// `-- @key: value` annotations of the whole script (later statements override earlier).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut all = BTreeMap::new();
        for s in &self.statements {
            all.extend(s.annotations.clone());
        }
        all
    }
}

/// What a statement does.
#[derive(Debug, Clone, PartialEq)]
pub enum StatementKind {
    /// A bare `SELECT`: results go to the configured sink or stdout.
    Select,
    /// `CREATE STREAM name AS SELECT ...`.
    CreateStreamAs { name: String },
    /// `CREATE TABLE name AS SELECT ...`.
    CreateTableAs { name: String },
    /// `CREATE STREAM name [(col TYPE, ...)] WITH (...)` or `CREATE TABLE name [(...)] WITH
    /// (...)`: declares a source with its schema.
    CreateSource {
        name: String,
        /// Empty when the source's format carries the schema (Avro).
        columns: Vec<ColumnDef>,
        /// Some for `CREATE TABLE`: the table's PRIMARY KEY columns (empty: none declared).
        /// The latest row of a key wins.
        table: Option<Vec<String>>,
    },
}

/// A declared column of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: DataType,
}

/// `EMIT CHANGES` or `EMIT FINAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmitMode {
    /// Every change of a result row, as it happens.
    Changes,
    /// Each result row once, when its group (or window) closes.
    Final,
}

/// The kind and sizes (ms) of a `WINDOW` clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumbling { size_ms: i64 },
    Sliding { size_ms: i64, advance_ms: i64 },
    Session { gap_ms: i64 },
}

/// A `WINDOW` clause: kind plus the optional event-time column.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    pub kind: WindowKind,
    pub time_column: Option<String>,
    /// The time column's table (`v` of `TUMBLE(v.ts, ...)`): after a join of two streams it
    /// says whose time the window runs on.
    pub time_qualifier: Option<String>,
    /// Where the clause starts (line, column), for errors.
    pub position: (u64, u64),
}

/// One statement of a script.
#[derive(Debug, Clone)]
pub struct Statement {
    pub kind: StatementKind,
    /// The query as plain SQL, padded with whitespace so positions match the original file.
    /// Empty for `CreateSource`.
    pub query_sql: String,
    /// Where the statement starts (line, column).
    pub position: (u64, u64),
    pub window: Option<WindowSpec>,
    pub emit: Option<EmitMode>,
    pub properties: Properties,
    pub annotations: BTreeMap<String, String>,
    /// The `-- @metric...` annotations, in order (several metrics may be declared).
    pub metric_annotations: Vec<Annotation>,
    /// `JOIN table FOR SYSTEM_TIME AS OF s.ts`: the tables joined by event time, lifted out
    /// of the query text.
    pub as_of: Vec<AsOf>,
}

/// One `-- @key: value` annotation and where its value starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    pub key: String,
    pub value: String,
    pub line: u64,
    pub column: u64,
}

/// A temporal join's `table FOR SYSTEM_TIME AS OF qualifier.column`.
#[derive(Debug, Clone, PartialEq)]
pub struct AsOf {
    /// The table joined.
    pub table: String,
    /// The stream's time column (`o.ts`: qualifier `o`, column `ts`).
    pub qualifier: Option<String>,
    pub column: String,
}

impl Statement {
    /// The name of the job: the CSAS/CTAS name, else the `@job_name` annotation.
    pub fn name(&self) -> Option<&str> {
        match &self.kind {
            StatementKind::CreateStreamAs { name }
            | StatementKind::CreateTableAs { name }
            | StatementKind::CreateSource { name, .. } => Some(name),
            StatementKind::Select => self.annotations.get("job_name").map(String::as_str),
        }
    }
}

/// Parses a script of `;`-separated statements.
pub fn parse_script(sql: &str) -> Result<Script> {
    let source = SourceText::new(sql);
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| source.error(e.location.line, e.location.column, e.message.clone()))?;
    let mut statements = Vec::new();
    let mut start = 0;
    for i in 0..=tokens.len() {
        if i == tokens.len() || tokens[i].token == Token::SemiColon {
            if let Some(stmt) = parse_statement(&source, &tokens[start..i])? {
                statements.push(stmt);
            }
            start = i + 1;
        }
    }
    Ok(Script { source, statements })
}

fn is_significant(t: &TokenWithSpan) -> bool {
    !matches!(t.token, Token::Whitespace(_) | Token::EOF)
}

pub(super) fn word(t: &TokenWithSpan) -> Option<String> {
    match &t.token {
        Token::Word(w) => Some(w.value.to_uppercase()),
        _ => None,
    }
}

pub(super) fn ident(t: &TokenWithSpan) -> Option<String> {
    match &t.token {
        Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
        Token::Word(w) => Some(w.value.to_lowercase()),
        _ => None,
    }
}

fn start_of(source: &SourceText, t: &TokenWithSpan) -> usize {
    source.index(t.span.start.line, t.span.start.column)
}

fn end_of(source: &SourceText, t: &TokenWithSpan) -> usize {
    source.index(t.span.end.line, t.span.end.column)
}

pub(super) fn error_at(
    source: &SourceText,
    t: &TokenWithSpan,
    msg: impl Into<String>,
) -> VeloError {
    source.error(t.span.start.line, t.span.start.column, msg)
}

/// Index (into `sig`) of the `)` matching the `(` at `open`.
fn matching_paren(source: &SourceText, sig: &[&TokenWithSpan], open: usize) -> Result<usize> {
    let mut depth = 0i32;
    for (i, t) in sig.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
    }
    Err(error_at(
        source,
        sig[open],
        "unbalanced '(': expected a matching ')'",
    ))
}

/// Splits `sig[from..to]` at top-level commas.
pub(super) fn split_commas<'a, 'b>(sig: &'b [&'a TokenWithSpan]) -> Vec<&'b [&'a TokenWithSpan]> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, t) in sig.iter().enumerate() {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                parts.push(&sig[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < sig.len() {
        parts.push(&sig[start..]);
    }
    parts
}

fn parse_statement(source: &SourceText, tokens: &[TokenWithSpan]) -> Result<Option<Statement>> {
    let mut annotations = BTreeMap::new();
    let mut metric_annotations = Vec::new();
    for t in tokens {
        if let Token::Whitespace(Whitespace::SingleLineComment { comment, .. }) = &t.token {
            if let Some(rest) = comment.trim().strip_prefix('@') {
                if let Some((k, v)) = rest.split_once(':') {
                    let (key, value) = (k.trim().to_string(), v.trim().to_string());
                    if key.starts_with("metric") {
                        // `--` and what precedes the value on its line.
                        let before = comment.len() - comment.trim_start().len() + 1 + k.len() + 1;
                        let lead = v.len() - v.trim_start().len();
                        metric_annotations.push(Annotation {
                            key,
                            value,
                            line: t.span.start.line,
                            column: t.span.start.column + 2 + (before + lead) as u64,
                        });
                    } else {
                        annotations.insert(key, value);
                    }
                }
            }
        }
    }
    let sig: Vec<&TokenWithSpan> = tokens.iter().filter(|t| is_significant(t)).collect();
    let Some(first) = sig.first() else {
        return Ok(None);
    };
    let position = (first.span.start.line, first.span.start.column);
    let stmt_end = end_of(source, sig[sig.len() - 1]);

    let (kind, query_at) =
        if word(first).as_deref() == Some("CREATE") {
            let what = sig.get(1).and_then(|t| word(t));
            let name_tok = sig.get(2).ok_or_else(|| {
                error_at(
                    source,
                    first,
                    "expected CREATE STREAM name or CREATE TABLE name",
                )
            })?;
            let name = ident(name_tok)
                .ok_or_else(|| error_at(source, name_tok, "expected a stream or table name"))?;
            let next = sig.get(3).map(|t| &t.token);
            let table = what.as_deref() == Some("TABLE");
            let declared = |columns, primary_key, properties| Statement {
                kind: StatementKind::CreateSource {
                    name: name.clone(),
                    columns,
                    table: table.then_some(primary_key),
                },
                query_sql: String::new(),
                position,
                window: None,
                emit: None,
                properties,
                annotations: annotations.clone(),
                metric_annotations: metric_annotations.clone(),
                as_of: Vec::new(),
            };
            match (what.as_deref(), next) {
                (Some("STREAM" | "TABLE"), Some(Token::LParen)) => {
                    let close = matching_paren(source, &sig, 3)?;
                    let (columns, primary_key) = parse_columns(source, &sig[4..close])?;
                    if !table && !primary_key.is_empty() {
                        return Err(error_at(
                            source,
                            sig[1],
                            "a PRIMARY KEY makes a table: use CREATE TABLE",
                        ));
                    }
                    let properties = match sig.get(close + 1) {
                        Some(t) if word(t).as_deref() == Some("WITH") => {
                            parse_with(source, &sig, close + 1)?.0
                        }
                        Some(t) => {
                            return Err(error_at(
                                source,
                                t,
                                "expected WITH (...) or end of statement",
                            ))
                        }
                        None => Properties::default(),
                    };
                    return Ok(Some(declared(columns, primary_key, properties)));
                }
                (Some("STREAM" | "TABLE"), Some(Token::Word(w)))
                    if w.value.eq_ignore_ascii_case("WITH") =>
                {
                    let properties = parse_with(source, &sig, 3)?.0;
                    return Ok(Some(declared(Vec::new(), Vec::new(), properties)));
                }
                (Some("STREAM"), Some(Token::Word(w))) if w.value.eq_ignore_ascii_case("AS") => {
                    (StatementKind::CreateStreamAs { name }, 4)
                }
                (Some("TABLE"), Some(Token::Word(w))) if w.value.eq_ignore_ascii_case("AS") => {
                    (StatementKind::CreateTableAs { name }, 4)
                }
                _ => return Err(error_at(
                    source,
                    sig.get(1).unwrap_or(first),
                    "expected CREATE STREAM name AS SELECT ..., CREATE TABLE name AS SELECT ... \
                     or CREATE STREAM name [(columns)] WITH (...)",
                )),
            }
        } else {
            (StatementKind::Select, 0)
        };

    let Some(query_first) = sig.get(query_at) else {
        return Err(error_at(
            source,
            sig[sig.len() - 1],
            "expected a SELECT query after AS",
        ));
    };
    let query_start = start_of(source, query_first);
    let mut blanks = Vec::new();
    let mut window = None;
    let mut emit = None;
    let mut properties = Properties::default();
    let mut as_of = Vec::new();
    let mut depth = 0i32;
    let mut i = query_at;
    while i < sig.len() {
        let t = sig[i];
        if let Some((spec, end)) = parse_as_of(source, &sig, i)? {
            as_of.push(spec);
            blanks.push((start_of(source, t), end_of(source, sig[end])));
            i = end + 1;
            continue;
        }
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            _ => {}
        }
        let kw = if depth == 0 { word(t) } else { None };
        let next_kw = sig.get(i + 1).and_then(|n| word(n));
        match kw.as_deref() {
            Some("WINDOW")
                if matches!(next_kw.as_deref(), Some("TUMBLING" | "SLIDING" | "SESSION")) =>
            {
                let open = i + 2;
                if sig.get(open).map(|t| &t.token) != Some(&Token::LParen) {
                    return Err(error_at(
                        source,
                        sig[i + 1],
                        "expected '(' after the window kind",
                    ));
                }
                let close = matching_paren(source, &sig, open)?;
                window = Some(parse_window(source, &sig, i, open, close)?);
                blanks.push((start_of(source, t), end_of(source, sig[close])));
                i = close + 1;
                continue;
            }
            Some("EMIT") => {
                emit = Some(match next_kw.as_deref() {
                    Some("CHANGES") => EmitMode::Changes,
                    Some("FINAL") => EmitMode::Final,
                    _ => {
                        return Err(error_at(
                            source,
                            sig.get(i + 1).unwrap_or(&t),
                            "expected CHANGES or FINAL after EMIT",
                        ))
                    }
                });
                blanks.push((start_of(source, t), end_of(source, sig[i + 1])));
                i += 2;
                continue;
            }
            Some("WITH")
                if i > query_at && sig.get(i + 1).map(|n| &n.token) == Some(&Token::LParen) =>
            {
                let (props, close) = parse_with(source, &sig, i)?;
                properties = props;
                blanks.push((start_of(source, t), end_of(source, sig[close])));
                i = close + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    let mut query_sql = source.blanked((query_start, stmt_end), &blanks);
    rewrite_row_buffers(source, &sig[query_at..], &mut query_sql)?;
    Ok(Some(Statement {
        kind,
        query_sql,
        position,
        window,
        emit,
        properties,
        annotations,
        metric_annotations,
        as_of,
    }))
}

/// `FOR SYSTEM_TIME AS OF [qualifier.]column` at `sig[at]`, after a table name: the spec
/// and the index of its last token.
fn parse_as_of(
    source: &SourceText,
    sig: &[&TokenWithSpan],
    at: usize,
) -> Result<Option<(AsOf, usize)>> {
    let words: Vec<Option<String>> = (at..at + 4)
        .map(|i| sig.get(i).and_then(|t| word(t)))
        .collect();
    if words
        != [Some("FOR"), Some("SYSTEM_TIME"), Some("AS"), Some("OF")].map(|w| w.map(String::from))
    {
        return Ok(None);
    }
    let expected = || {
        error_at(
            source,
            sig[at],
            "expected JOIN table FOR SYSTEM_TIME AS OF stream.time_column",
        )
    };
    let table = at
        .checked_sub(1)
        .and_then(|i| ident(sig[i]))
        .ok_or_else(expected)?;
    let first = sig
        .get(at + 4)
        .and_then(|t| ident(t))
        .ok_or_else(expected)?;
    let dotted = sig.get(at + 5).map(|t| &t.token) == Some(&Token::Period);
    Ok(Some(match dotted {
        true => {
            let column = sig
                .get(at + 6)
                .and_then(|t| ident(t))
                .ok_or_else(expected)?;
            let spec = AsOf {
                table,
                qualifier: Some(first),
                column,
            };
            (spec, at + 6)
        }
        false => {
            let spec = AsOf {
                table,
                qualifier: None,
                column: first,
            };
            (spec, at + 4)
        }
    }))
}

/// Rewrites velostream's `OVER (ROWS WINDOW BUFFER n ROWS [PARTITION BY k] [ORDER BY t])` to
/// standard `OVER ([PARTITION BY k] [ORDER BY t] ROWS BETWEEN n-1 PRECEDING AND CURRENT ROW)`:
/// the last n rows of the partition, the current one included.
fn rewrite_row_buffers(
    source: &SourceText,
    sig: &[&TokenWithSpan],
    sql: &mut String,
) -> Result<()> {
    let mut edits = Vec::new();
    for i in 0..sig.len() {
        let is_buffer = word(sig[i]).as_deref() == Some("OVER")
            && sig.get(i + 1).map(|t| &t.token) == Some(&Token::LParen)
            && sig.get(i + 2).and_then(|t| word(t)).as_deref() == Some("ROWS")
            && sig.get(i + 3).and_then(|t| word(t)).as_deref() == Some("WINDOW")
            && sig.get(i + 4).and_then(|t| word(t)).as_deref() == Some("BUFFER");
        if !is_buffer {
            continue;
        }
        let close = matching_paren(source, sig, i + 1)?;
        let n: u64 = match sig.get(i + 5).map(|t| &t.token) {
            Some(Token::Number(n, _)) => n.parse().unwrap_or(0),
            _ => 0,
        };
        if n == 0 || sig.get(i + 6).and_then(|t| word(t)).as_deref() != Some("ROWS") {
            return Err(error_at(
                source,
                sig[i + 2],
                "expected ROWS WINDOW BUFFER n ROWS with n > 0",
            ));
        }
        let rest = if i + 7 < close {
            source.slice(start_of(source, sig[i + 7]), start_of(source, sig[close]))
        } else {
            String::new()
        };
        let replacement = format!(
            "({} ROWS BETWEEN {} PRECEDING AND CURRENT ROW)",
            rest.trim(),
            n - 1
        );
        edits.push((
            start_of(source, sig[i + 1]),
            end_of(source, sig[close]),
            replacement,
        ));
    }
    for (from, to, text) in edits.into_iter().rev() {
        let mut chars: Vec<char> = sql.chars().collect();
        chars.splice(from..to, text.chars());
        *sql = chars.into_iter().collect();
    }
    Ok(())
}

/// Parses `WITH ( 'k' = 'v', ... )` starting at the WITH token; returns the `)` index too.
fn parse_with(
    source: &SourceText,
    sig: &[&TokenWithSpan],
    with_at: usize,
) -> Result<(Properties, usize)> {
    let open = with_at + 1;
    if sig.get(open).map(|t| &t.token) != Some(&Token::LParen) {
        return Err(error_at(source, sig[with_at], "expected '(' after WITH"));
    }
    let close = matching_paren(source, sig, open)?;
    let mut props = Properties::default();
    for part in split_commas(&sig[open + 1..close]) {
        let (key, eq, value) = match part {
            [k, e, v] => (k, e, v),
            _ => {
                let at = part.first().copied().unwrap_or(sig[open]);
                return Err(error_at(
                    source,
                    at,
                    "expected 'key' = 'value' in WITH (...)",
                ));
            }
        };
        if eq.token != Token::Eq {
            return Err(error_at(
                source,
                eq,
                "expected '=' between a WITH key and its value",
            ));
        }
        let at = KeyOrigin::Sql {
            line: key.span.start.line,
            column: key.span.start.column,
        };
        props.insert_at(token_text(key), token_text(value), at);
    }
    Ok((props, close))
}

pub(super) fn token_text(t: &TokenWithSpan) -> String {
    match &t.token {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s.clone(),
        Token::Word(w) => w.value.clone(),
        Token::Number(n, _) => n.clone(),
        other => other.to_string(),
    }
}

fn parse_window(
    source: &SourceText,
    sig: &[&TokenWithSpan],
    at: usize,
    open: usize,
    close: usize,
) -> Result<WindowSpec> {
    let kind_tok = sig[at + 1];
    let kind_name = word(kind_tok).unwrap_or_default();
    let mut args: Vec<&[&TokenWithSpan]> = split_commas(&sig[open + 1..close]);
    let mut time_column = None;
    if let Some(first) = args.first() {
        if first.len() == 1 && parse_duration_ms(&token_text(first[0])).is_none() {
            if let Some(name) = ident(first[0]).filter(|n| n.to_uppercase() != "INTERVAL") {
                time_column = Some(name);
                args.remove(0);
            }
        }
    }
    let mut durations = Vec::new();
    for arg in &args {
        let (Some(a), Some(b)) = (arg.first(), arg.last()) else {
            continue;
        };
        let text = source.slice(start_of(source, a), end_of(source, b));
        let ms = parse_duration_ms(&text).filter(|ms| *ms > 0).ok_or_else(|| {
            error_at(
                source,
                a,
                format!("invalid window duration '{text}': expected e.g. 5s, 100ms, 10m, 1h, 1d or INTERVAL '5' SECOND"),
            )
        })?;
        durations.push(ms);
    }
    let kind = match (kind_name.as_str(), durations.as_slice()) {
        ("TUMBLING", [size]) => WindowKind::Tumbling { size_ms: *size },
        ("SLIDING", [size, advance]) => WindowKind::Sliding {
            size_ms: *size,
            advance_ms: *advance,
        },
        ("SESSION", [gap]) => WindowKind::Session { gap_ms: *gap },
        _ => {
            let expected = match kind_name.as_str() {
                "TUMBLING" => "TUMBLING([time_col,] size)",
                "SLIDING" => "SLIDING([time_col,] size, advance)",
                _ => "SESSION([time_col,] gap)",
            };
            return Err(error_at(source, kind_tok, format!("expected {expected}")));
        }
    };
    Ok(WindowSpec {
        kind,
        time_column,
        time_qualifier: None,
        position: (sig[at].span.start.line, sig[at].span.start.column),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_lifts_streaming_clauses() {
        let sql = "-- @job_name: t1\nCREATE STREAM out AS SELECT symbol, COUNT(*) FROM trades\n\
                   GROUP BY symbol WINDOW TUMBLING(INTERVAL '1' MINUTE) EMIT FINAL\n\
                   WITH ('out.type' = 'stdout');\nSELECT 1;";
        let script = parse_script(sql).unwrap();
        assert_eq!(script.statements.len(), 2);
        let s = &script.statements[0];
        assert_eq!(s.kind, StatementKind::CreateStreamAs { name: "out".into() });
        assert_eq!(s.emit, Some(EmitMode::Final));
        assert_eq!(
            s.window.as_ref().unwrap().kind,
            WindowKind::Tumbling { size_ms: 60_000 }
        );
        assert_eq!(s.properties.get("out.type"), Some("stdout"));
        assert_eq!(
            s.annotations.get("job_name").map(String::as_str),
            Some("t1")
        );
        assert!(!s.query_sql.contains("WINDOW"));
        assert!(!s.query_sql.contains("CREATE"));
        assert!(s.query_sql.contains("GROUP BY symbol"));
    }

    #[test]
    fn declares_a_source_whose_format_carries_the_columns() {
        let sql = "CREATE STREAM t WITH ('t.type' = 'kafka_source', 't.format' = 'avro')";
        let script = parse_script(sql).unwrap();
        match &script.statements[0].kind {
            StatementKind::CreateSource { name, columns, .. } => {
                assert_eq!(name, "t");
                assert!(columns.is_empty());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            script.statements[0].properties.get("t.format"),
            Some("avro")
        );
    }

    #[test]
    fn declares_sources() {
        let sql = "CREATE STREAM o (id BIGINT, amount DECIMAL(10,2), ts TIMESTAMP) WITH ('o.path'='x.csv')";
        let script = parse_script(sql).unwrap();
        match &script.statements[0].kind {
            StatementKind::CreateSource {
                name,
                columns,
                table,
            } => {
                assert_eq!(name, "o");
                assert_eq!(columns[1].data_type, DataType::Decimal128(10, 2));
                assert_eq!(*table, None);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn declares_tables_with_their_primary_key() {
        for sql in [
            "CREATE TABLE c (id BIGINT, name VARCHAR, PRIMARY KEY (id)) WITH ('c.path'='c.csv')",
            "CREATE TABLE c (id BIGINT PRIMARY KEY, name VARCHAR)",
        ] {
            let script = parse_script(sql).unwrap();
            match &script.statements[0].kind {
                StatementKind::CreateSource { columns, table, .. } => {
                    assert_eq!(columns.len(), 2, "{sql}");
                    assert_eq!(table.as_deref(), Some(&["id".to_string()][..]), "{sql}");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let err = parse_script("CREATE TABLE c (id BIGINT, PRIMARY KEY (nope))")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'nope', which is not a declared column"),
            "{err}"
        );
        let err = parse_script("CREATE STREAM c (id BIGINT PRIMARY KEY)")
            .unwrap_err()
            .to_string();
        assert!(err.contains("use CREATE TABLE"), "{err}");
    }

    #[test]
    fn lifts_temporal_joins_out_of_the_query() {
        let sql = "SELECT o.id, r.rate FROM orders o JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r \
                   ON o.currency = r.currency";
        let script = parse_script(sql).unwrap();
        let s = &script.statements[0];
        assert_eq!(
            s.as_of,
            vec![AsOf {
                table: "rates".into(),
                qualifier: Some("o".into()),
                column: "ts".into()
            }]
        );
        assert!(!s.query_sql.contains("SYSTEM_TIME"), "{}", s.query_sql);
        assert!(s.query_sql.contains("JOIN rates"));
        assert!(s.query_sql.contains("AS r"));
    }

    #[test]
    fn reports_positions() {
        let err = parse_script("SELECT a FROM t\nEMIT SOON")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2, column 6"), "{err}");
    }
}
