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
}
