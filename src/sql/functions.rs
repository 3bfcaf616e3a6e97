//! velostream's function catalogue on top of DataFusion's: aliases for names users know,
//! argument-order rewrites, and the few functions DataFusion lacks.

use std::ops::ControlFlow;

use datafusion::execution::context::SessionContext;
use datafusion::sql::sqlparser::ast::{self as sql_ast, visit_expressions_mut};

use super::udfs::{self, DateUnit};

/// Registers aliases and velostream-only functions on a DataFusion session.
pub fn register_velostream_functions(ctx: &SessionContext) {
    let state = ctx.state();
    let scalar_aliases: [(&str, &[&'static str]); 5] = [
        ("character_length", &["len"]),
        ("ceil", &["ceiling"]),
        ("regexp_like", &["regexp"]),
        ("to_unixtime", &["unix_timestamp"]),
        ("to_timestamp_seconds", &[]),
    ];
    for (name, aliases) in scalar_aliases {
        if let Some(f) = state.scalar_functions().get(name) {
            if !aliases.is_empty() {
                ctx.register_udf(f.as_ref().clone().with_aliases(aliases.iter().copied()));
            }
        }
    }
    let aggregate_aliases: [(&str, &[&'static str]); 4] = [
        ("first_value", &["first"]),
        ("last_value", &["last"]),
        ("string_agg", &["group_concat", "listagg"]),
        ("approx_distinct", &["approx_count_distinct"]),
    ];
    for (name, aliases) in aggregate_aliases {
        if let Some(f) = state.aggregate_functions().get(name) {
            ctx.register_udaf(f.as_ref().clone().with_aliases(aliases.iter().copied()));
        }
    }
    if let Some(var) = state.aggregate_functions().get("var_samp") {
        ctx.register_udaf(var.as_ref().clone().with_aliases(["variance"]));
    }
    // After the aliases: DATE_FORMAT replaces DataFusion's alias of TO_CHAR.
    for udf in udfs::scalar_udfs() {
        ctx.register_udf(udf);
    }
    for udaf in udfs::aggregate_udfs() {
        ctx.register_udaf(udaf);
    }
}

/// Rewrites calls whose velostream form differs from DataFusion's in shape, not just name:
/// `COUNT_DISTINCT(x)` → `COUNT(DISTINCT x)`, `POSITION(sub, str)` → `STRPOS(str, sub)`,
/// `MOD(a, b)` → `a % b`, `DATEDIFF(day, a, b)` → `DATEDIFF('day', a, b)`,
/// `UNIX_TIMESTAMP()` → `TO_UNIXTIME(NOW())` and
/// `FROM_UNIXTIME(secs, '%Y-%m-%d')` → `DATE_FORMAT(FROM_UNIXTIME(secs), '%Y-%m-%d')`.
pub fn rewrite_function_calls(ast: &mut sql_ast::Statement) {
    let _ = visit_expressions_mut(ast, |e: &mut sql_ast::Expr| {
        let sql_ast::Expr::Function(f) = e else {
            return ControlFlow::<()>::Continue(());
        };
        let name = f.name.to_string().to_lowercase();
        if name == "unix_timestamp" || name == "from_unixtime" {
            rewrite_unix_time(&name, f);
            return ControlFlow::Continue(());
        }
        if name == "header" || name == "has_header" {
            if let Some(lookup) = header_lookup(f) {
                *e = match name.as_str() {
                    "header" => lookup,
                    _ => {
                        sql_ast::Expr::Nested(Box::new(sql_ast::Expr::IsNotNull(Box::new(lookup))))
                    }
                };
            }
            return ControlFlow::Continue(());
        }
        let sql_ast::FunctionArguments::List(list) = &mut f.args else {
            return ControlFlow::Continue(());
        };
        match name.as_str() {
            "count_distinct" => {
                f.name = sql_ast::ObjectName::from(vec![sql_ast::Ident::new("count")]);
                list.duplicate_treatment = Some(sql_ast::DuplicateTreatment::Distinct);
            }
            "position" if list.args.len() == 2 => {
                list.args.swap(0, 1);
                f.name = sql_ast::ObjectName::from(vec![sql_ast::Ident::new("strpos")]);
            }
            "mod" if list.args.len() == 2 => {
                let args: Vec<sql_ast::Expr> = list
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        sql_ast::FunctionArg::Unnamed(sql_ast::FunctionArgExpr::Expr(x)) => {
                            Some(x.clone())
                        }
                        _ => None,
                    })
                    .collect();
                if let [a, b] = args.as_slice() {
                    *e = sql_ast::Expr::Nested(Box::new(sql_ast::Expr::BinaryOp {
                        left: Box::new(a.clone()),
                        op: sql_ast::BinaryOperator::Modulo,
                        right: Box::new(b.clone()),
                    }));
                }
            }
            "datediff" | "timestampdiff" => {
                // A bare unit (`day`) would be planned as a column: make it a string literal.
                if let Some(sql_ast::FunctionArg::Unnamed(sql_ast::FunctionArgExpr::Expr(unit))) =
                    list.args.first_mut()
                {
                    if let sql_ast::Expr::Identifier(id) = unit {
                        if DateUnit::parse(&id.value).is_some() {
                            *unit = string_literal(&id.value.to_lowercase());
                        }
                    }
                }
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
}

/// `UNIX_TIMESTAMP()` → `TO_UNIXTIME(NOW())`; `FROM_UNIXTIME(secs, '<pattern with %>')` →
/// `DATE_FORMAT(FROM_UNIXTIME(secs), pattern)` (DataFusion's second argument is a time zone).
fn rewrite_unix_time(name: &str, f: &mut sql_ast::Function) {
    let sql_ast::FunctionArguments::List(list) = &f.args else {
        return;
    };
    let unnamed =
        |e: sql_ast::Expr| sql_ast::FunctionArg::Unnamed(sql_ast::FunctionArgExpr::Expr(e));
    if name == "unix_timestamp" && list.args.is_empty() {
        let mut now = f.clone();
        now.name = sql_ast::ObjectName::from(vec![sql_ast::Ident::new("now")]);
        f.name = sql_ast::ObjectName::from(vec![sql_ast::Ident::new("to_unixtime")]);
        if let sql_ast::FunctionArguments::List(list) = &mut f.args {
            list.args = vec![unnamed(sql_ast::Expr::Function(now))];
        }
        return;
    }
    let is_format = name == "from_unixtime"
        && list.args.len() == 2
        && matches!(
            &list.args[1],
            sql_ast::FunctionArg::Unnamed(sql_ast::FunctionArgExpr::Expr(sql_ast::Expr::Value(v)))
                if matches!(&v.value, sql_ast::Value::SingleQuotedString(s) if s.contains('%'))
        );
    if !is_format {
        return;
    }
    let mut inner = f.clone();
    let pattern = match &mut inner.args {
        sql_ast::FunctionArguments::List(list) => list.args.remove(1),
        _ => return,
    };
    f.name = sql_ast::ObjectName::from(vec![sql_ast::Ident::new("date_format")]);
    if let sql_ast::FunctionArguments::List(list) = &mut f.args {
        list.args = vec![unnamed(sql_ast::Expr::Function(inner)), pattern];
    }
}

/// `HEADER('name')` → `JSON_VALUE(_headers, '$."name"')`: the Kafka headers travel as a JSON
/// object in `_headers`. Only a string-literal name (without `"`) is rewritten; anything else
/// is left for the planner to report as an unknown function.
fn header_lookup(f: &sql_ast::Function) -> Option<sql_ast::Expr> {
    let sql_ast::FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let [sql_ast::FunctionArg::Unnamed(sql_ast::FunctionArgExpr::Expr(sql_ast::Expr::Value(v)))] =
        list.args.as_slice()
    else {
        return None;
    };
    let sql_ast::Value::SingleQuotedString(header) = &v.value else {
        return None;
    };
    if header.contains('"') {
        return None;
    }
    let unnamed =
        |e: sql_ast::Expr| sql_ast::FunctionArg::Unnamed(sql_ast::FunctionArgExpr::Expr(e));
    let mut lookup = f.clone();
    lookup.name = sql_ast::ObjectName::from(vec![sql_ast::Ident::new("json_value")]);
    lookup.args = sql_ast::FunctionArguments::List(sql_ast::FunctionArgumentList {
        duplicate_treatment: None,
        args: vec![
            unnamed(sql_ast::Expr::Identifier(sql_ast::Ident::new("_headers"))),
            unnamed(string_literal(&format!("$.\"{header}\""))),
        ],
        clauses: Vec::new(),
    });
    Some(sql_ast::Expr::Function(lookup))
}

fn string_literal(s: &str) -> sql_ast::Expr {
    sql_ast::Expr::Value(sql_ast::Value::SingleQuotedString(s.to_string()).into())
}

#[cfg(test)]
mod tests {
    use crate::sql::udfs::test_support::*;

    #[test]
    fn catalogue_aliases_work() {
        let rows = [
            r#"{"g": "a", "s": "hello", "x": 1.2, "i": 7, "j": 3}"#,
            r#"{"g": "a", "s": "world", "x": -2.5, "i": 4, "j": 2}"#,
            r#"{"g": "a", "s": "hello", "x": 0.5, "i": 9, "j": 5}"#,
        ];
        let out = rows_of(
            "SELECT LEN(s), CEILING(x), REGEXP(s, 'l+o'), MOD(i, j), POSITION('l', s) AS p1, \
             POSITION('l' IN s) AS p2, UNIX_TIMESTAMP('2024-01-01T00:00:00Z'), \
             LEAST(i, j, 4), GREATEST(x, i), CONCAT('a', 1, 2.5), CONCAT(s, '-', i, '-', x) \
             FROM t",
            &rows,
        );
        assert_eq!(
            out[0],
            [
                "5",
                "2.0",
                "true",
                "1",
                "3",
                "3",
                "1704067200",
                "3",
                "7.0",
                "a12.5",
                "hello-7-1.2"
            ]
        );
        assert_eq!(
            out[1],
            [
                "5",
                "-2.0",
                "false",
                "0",
                "4",
                "4",
                "1704067200",
                "2",
                "4.0",
                "a12.5",
                "world-4--2.5"
            ]
        );
        let out = rows_of(
            "SELECT g, FIRST(s), LAST(s), GROUP_CONCAT(s, ','), LISTAGG(s, '|'), \
             APPROX_COUNT_DISTINCT(s), VARIANCE(i), COUNT_DISTINCT(s) FROM t GROUP BY g EMIT FINAL",
            &rows,
        );
        assert_eq!(
            out,
            strs(&[&[
                "a",
                "hello",
                "hello",
                "hello,world,hello",
                "hello|world|hello",
                "2",
                "6.333333333333333",
                "2"
            ]])
        );
    }

    #[test]
    fn now_and_unix_timestamp_are_fixed_at_planning() {
        let before = chrono::Utc::now();
        let out = rows_of(
            "SELECT UNIX_TIMESTAMP(), DATE_FORMAT(NOW(), '%Y-%m-%d'), CURRENT_DATE, \
             CURRENT_TIMESTAMP = NOW(), CAST(CURRENT_TIMESTAMP AS TIME) = CURRENT_TIME FROM t",
            &[r#"{"k": 1}"#, r#"{"k": 2}"#],
        );
        let after = chrono::Utc::now();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], out[1], "one value for the whole query");
        let secs: i64 = out[0][0].parse().expect("seconds");
        assert!(before.timestamp() <= secs && secs <= after.timestamp());
        let days = [before, after].map(|t| t.format("%Y-%m-%d").to_string());
        assert!(days.contains(&out[0][1]) && days.contains(&out[0][2]));
        assert_eq!(out[0][3], "true");
        assert_eq!(out[0][4], "true");
    }

    #[test]
    fn order_by_over_planning_time_functions() {
        // DataFusion's simplifier folds these; ORDER BY expressions go through it too.
        let rows = [
            r#"{"x": 1, "ms": 1000}"#,
            r#"{"x": null, "ms": 3000}"#,
            r#"{"x": 3, "ms": 2000}"#,
            r#"{"x": -2, "ms": 4000}"#,
        ];
        let ordered = |order: &str| {
            first_column(
                &format!("SELECT x FROM t ORDER BY {order} EMIT FINAL"),
                &rows,
            )
        };
        assert_eq!(
            ordered("DATEDIFF(millisecond, ms, NOW())"),
            ["-2", "NULL", "3", "1"]
        );
        assert_eq!(
            ordered("DATEDIFF(day, CURRENT_DATE, CURRENT_TIMESTAMP), x DESC"),
            ["NULL", "3", "1", "-2"]
        );
    }

    #[test]
    fn coalesce_nvl_and_nvl2_evaluate() {
        let rows = [
            r#"{"x": 1, "y": 10}"#,
            r#"{"x": null, "y": 20}"#,
            r#"{"k": 0}"#,
        ];
        let out = run(
            "",
            &rows,
            "SELECT COALESCE(x, y, 0), COALESCE(NULL, x, -1), NVL(x, 3), IFNULL(y, 4), \
             NVL2(x, 'set', 'unset'), NULLIF(x, 1), COALESCE(x) FROM t",
        );
        assert_eq!(
            out.rows,
            strs(&[
                &["1", "1", "1", "10", "set", "NULL", "1"],
                &["20", "-1", "3", "20", "unset", "NULL", "NULL"],
                &["0", "-1", "3", "4", "unset", "NULL", "NULL"],
            ])
        );
        assert_eq!(out.types[0], arrow::datatypes::DataType::Int64);
        let grouped = rows_of(
            "SELECT COALESCE(x, 0) AS k, COUNT(*) AS n FROM t GROUP BY COALESCE(x, 0) EMIT FINAL",
            &rows,
        );
        assert_eq!(grouped, strs(&[&["1", "1"], &["0", "2"]]));
    }

    #[test]
    fn order_by_over_coalesce_and_nvl() {
        // DataFusion rewrites these to CASE in its simplifier; ORDER BY goes through it too.
        let rows = [
            r#"{"x": 1}"#,
            r#"{"x": null}"#,
            r#"{"x": 3}"#,
            r#"{"x": -2}"#,
        ];
        let ordered = |order: &str| {
            first_column(
                &format!("SELECT x FROM t ORDER BY {order} EMIT FINAL"),
                &rows,
            )
        };
        assert_eq!(ordered("COALESCE(x, 0)"), ["-2", "NULL", "1", "3"]);
        assert_eq!(ordered("NVL(x, 10) DESC"), ["NULL", "3", "1", "-2"]);
        assert_eq!(ordered("IFNULL(x, 2)"), ["-2", "1", "NULL", "3"]);
        assert_eq!(ordered("NVL2(x, 0, 1), x"), ["-2", "1", "3", "NULL"]);
    }
}
