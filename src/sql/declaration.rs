//! The column list of a `CREATE STREAM` or `CREATE TABLE` declaration: names, types and the
//! PRIMARY KEY.

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

use super::script::{error_at, ident, split_commas, token_text, word, ColumnDef};
use super::source_text::SourceText;
use crate::error::{Result, VeloError};

/// The columns of a declaration, and its PRIMARY KEY columns (a `PRIMARY KEY (a, b)` item or
/// `PRIMARY KEY` after a column's type).
pub(super) fn parse_columns(
    source: &SourceText,
    sig: &[&TokenWithSpan],
) -> Result<(Vec<ColumnDef>, Vec<String>)> {
    let mut columns = Vec::new();
    let mut primary_key = Vec::new();
    for part in split_commas(sig) {
        if part.first().and_then(|t| word(t)).as_deref() == Some("PRIMARY") {
            primary_key.extend(parse_primary_key(source, part)?);
            continue;
        }
        let is_key = part.windows(2).any(|w| {
            word(w[0]).as_deref() == Some("PRIMARY") && word(w[1]).as_deref() == Some("KEY")
        });
        let Some((name_tok, type_toks)) = part.split_first() else {
            continue;
        };
        let name =
            ident(name_tok).ok_or_else(|| error_at(source, name_tok, "expected a column name"))?;
        let Some(type_tok) = type_toks.first() else {
            return Err(error_at(
                source,
                name_tok,
                format!("expected a type after column '{name}'"),
            ));
        };
        let type_name = word(type_tok).unwrap_or_default();
        let numbers: Vec<u32> = type_toks
            .iter()
            .filter_map(|t| match &t.token {
                Token::Number(n, _) => n.parse().ok(),
                _ => None,
            })
            .collect();
        let data_type = match type_name.as_str() {
            "BOOLEAN" | "BOOL" => DataType::Boolean,
            "INT" | "INTEGER" => DataType::Int32,
            "BIGINT" | "LONG" => DataType::Int64,
            "DOUBLE" | "FLOAT" | "REAL" => DataType::Float64,
            "DECIMAL" | "NUMERIC" => {
                let precision = numbers.first().copied().unwrap_or(38).min(38) as u8;
                let scale = numbers.get(1).copied().unwrap_or(0) as i8;
                DataType::Decimal128(precision, scale)
            }
            "VARCHAR" | "STRING" | "TEXT" | "CHAR" => DataType::Utf8,
            "TIMESTAMP" => DataType::Timestamp(TimeUnit::Millisecond, None),
            "DATE" => DataType::Date32,
            _ => {
                return Err(error_at(
                    source,
                    type_tok,
                    format!(
                        "unknown type '{}' for column '{name}': expected BOOLEAN, INT, BIGINT, DOUBLE, \
                         DECIMAL(p,s), VARCHAR, TIMESTAMP or DATE",
                        token_text(type_tok)
                    ),
                ))
            }
        };
        if is_key {
            primary_key.push(name.clone());
        }
        columns.push(ColumnDef { name, data_type });
    }
    if let Some(missing) = primary_key
        .iter()
        .find(|k| !columns.iter().any(|c| &c.name == *k))
    {
        let at = sig.first().copied();
        let message = format!("PRIMARY KEY names '{missing}', which is not a declared column");
        return Err(match at {
            Some(t) => error_at(source, t, message),
            None => VeloError::Config(message),
        });
    }
    Ok((columns, primary_key))
}

/// `PRIMARY KEY (a, b)`: the column names.
fn parse_primary_key(source: &SourceText, part: &[&TokenWithSpan]) -> Result<Vec<String>> {
    let expected = || error_at(source, part[0], "expected PRIMARY KEY (column, ...)");
    if part.get(1).and_then(|t| word(t)).as_deref() != Some("KEY")
        || part.get(2).map(|t| &t.token) != Some(&Token::LParen)
        || part.last().map(|t| &t.token) != Some(&Token::RParen)
    {
        return Err(expected());
    }
    split_commas(&part[3..part.len() - 1])
        .into_iter()
        .map(|names| match names {
            [one] => ident(one).ok_or_else(expected),
            _ => Err(expected()),
        })
        .collect()
}
