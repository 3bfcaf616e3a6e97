//! `JSON_VALUE(json, path)` / `JSON_EXTRACT(json, path)`: JSONPath-lite lookups.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::common::{exec_err, plan_datafusion_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{arrays, as_utf8, is_string};

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// `.name` or `['name']`.
    Key(String),
    /// `[n]`.
    Index(usize),
}

/// Parses `$.a.b`, `$.a[0]`, `$['a']`, `$."a b"`; a path without `$` is taken as `$.` + path.
pub fn parse_json_path(path: &str) -> std::result::Result<Vec<PathStep>, String> {
    let path = path.trim();
    let rest = match path.strip_prefix('$') {
        Some(r) => r,
        None if path.starts_with('[') || path.starts_with('.') || path.is_empty() => path,
        None => return parse_json_path(&format!("$.{path}")),
    };
    let chars: Vec<char> = rest.chars().collect();
    let mut steps = Vec::new();
    let mut i = 0;
    let bad = |why: &str| format!("invalid JSON path '{path}': {why}");
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
                    let (key, next) = quoted(&chars, i).ok_or_else(|| bad("unclosed quote"))?;
                    steps.push(PathStep::Key(key));
                    i = next;
                } else {
                    let start = i;
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        i += 1;
                    }
                    if start == i {
                        return Err(bad("empty key after '.'"));
                    }
                    let key: String = chars[start..i].iter().collect();
                    if key == "*" {
                        return Err(bad("wildcards are not supported"));
                    }
                    steps.push(PathStep::Key(key));
                }
            }
            '[' => {
                i += 1;
                while i < chars.len() && chars[i] == ' ' {
                    i += 1;
                }
                if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
                    let (key, next) = quoted(&chars, i).ok_or_else(|| bad("unclosed quote"))?;
                    steps.push(PathStep::Key(key));
                    i = next;
                } else {
                    let start = i;
                    while i < chars.len() && chars[i] != ']' {
                        i += 1;
                    }
                    let index: String = chars[start..i].iter().collect();
                    let index = index.trim().parse::<usize>().map_err(|_| {
                        bad("an index must be a non-negative integer or a quoted key")
                    })?;
                    steps.push(PathStep::Index(index));
                }
                while i < chars.len() && chars[i] == ' ' {
                    i += 1;
                }
                if i >= chars.len() || chars[i] != ']' {
                    return Err(bad("expected ']'"));
                }
                i += 1;
            }
            c => return Err(bad(&format!("unexpected '{c}'"))),
        }
    }
    Ok(steps)
}

/// A quoted key starting at `chars[start]`; returns it and the index after the closing quote.
fn quoted(chars: &[char], start: usize) -> Option<(String, usize)> {
    let quote = chars[start];
    let mut key = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                key.push(chars[i + 1]);
                i += 2;
            }
            c if c == quote => return Some((key, i + 1)),
            c => {
                key.push(c);
                i += 1;
            }
        }
    }
    None
}

/// The value at `path` in `doc`, if any.
fn lookup<'a>(doc: &'a serde_json::Value, path: &[PathStep]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(doc, |v, step| match step {
        PathStep::Key(k) => v.as_object()?.get(k),
        PathStep::Index(i) => v.as_array()?.get(*i),
    })
}

/// Which JSON function: the scalar as text, or the JSON text of any value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonPathMode {
    /// `JSON_VALUE`: strings unquoted, numbers and booleans as text; NULL for objects/arrays.
    Value,
    /// `JSON_EXTRACT`: the value's JSON text (strings keep their quotes).
    Extract,
}

/// `JSON_VALUE(json, path)` and `JSON_EXTRACT(json, path)`. Missing paths, JSON nulls and
/// documents that do not parse give NULL. The document may be a string or a nested column.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct JsonPathFunction {
    signature: Signature,
    mode: JsonPathMode,
}

impl JsonPathFunction {
    /// JSON_VALUE or JSON_EXTRACT.
    pub fn new(mode: JsonPathMode) -> Self {
        JsonPathFunction {
            signature: Signature::user_defined(Volatility::Immutable),
            mode,
        }
    }

    fn render(&self, v: &serde_json::Value) -> Option<String> {
        match (self.mode, v) {
            (_, serde_json::Value::Null) => None,
            (JsonPathMode::Value, serde_json::Value::String(s)) => Some(s.clone()),
            (JsonPathMode::Value, serde_json::Value::Number(n)) => Some(n.to_string()),
            (JsonPathMode::Value, serde_json::Value::Bool(b)) => Some(b.to_string()),
            (JsonPathMode::Value, _) => None,
            (JsonPathMode::Extract, v) => Some(v.to_string()),
        }
    }

    fn label(&self) -> &'static str {
        match self.mode {
            JsonPathMode::Value => "JSON_VALUE",
            JsonPathMode::Extract => "JSON_EXTRACT",
        }
    }
}

/// The documents of `array` as parsed JSON (None for nulls and text that does not parse).
fn json_documents(array: &ArrayRef) -> Result<Vec<Option<serde_json::Value>>> {
    if is_string(array.data_type()) || array.data_type().is_null() {
        let text = as_utf8(array)?;
        return Ok(text
            .iter()
            .map(|t| t.and_then(|t| serde_json::from_str(t).ok()))
            .collect());
    }
    // A nested column (struct, list, map): write each row as JSON and read it back.
    let schema = Arc::new(Schema::new(vec![Field::new(
        "v",
        array.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema, vec![Arc::clone(array)])?;
    let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
    writer.write(&batch)?;
    writer.finish()?;
    let bytes = writer.into_inner();
    let text = String::from_utf8_lossy(&bytes);
    let mut docs: Vec<Option<serde_json::Value>> = text
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|mut row| row.get_mut("v").map(serde_json::Value::take))
        })
        .collect();
    docs.resize(array.len(), None);
    Ok(docs)
}

impl ScalarUDFImpl for JsonPathFunction {
    fn name(&self) -> &str {
        match self.mode {
            JsonPathMode::Value => "json_value",
            JsonPathMode::Extract => "json_extract",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [doc, path] = arg_types else {
            return plan_err!(
                "{} takes (json, path), e.g. {}(payload, '$.a.b'); got {} arguments",
                self.label(),
                self.label(),
                arg_types.len()
            );
        };
        let doc = match doc {
            t if is_string(t) || t.is_null() => DataType::Utf8,
            DataType::Struct(_)
            | DataType::List(_)
            | DataType::LargeList(_)
            | DataType::FixedSizeList(..)
            | DataType::Map(..) => doc.clone(),
            other => {
                return plan_err!(
                    "{} takes JSON text or a nested column, got {other}",
                    self.label()
                )
            }
        };
        if !is_string(path) && !path.is_null() {
            return plan_err!("{}'s path must be a string, got {path}", self.label());
        }
        Ok(vec![doc, DataType::Utf8])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if let Some(Some(path)) = args.scalar_arguments.get(1) {
            if let Some(path) = path.try_as_str().flatten() {
                parse_json_path(path).map_err(|e| plan_datafusion_err!("{}: {e}", self.label()))?;
            }
        }
        Ok(Arc::new(Field::new(self.name(), DataType::Utf8, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let [doc, path] = arrays.as_slice() else {
            return exec_err!("{} takes two arguments", self.label());
        };
        let docs = json_documents(doc)?;
        let paths = as_utf8(path)?;
        let mut out = StringBuilder::with_capacity(args.number_rows, args.number_rows * 8);
        // A literal path was checked at planning; a path read from a column that does not
        // parse gives NULL rather than failing the job.
        let mut parsed: Option<(String, Option<Vec<PathStep>>)> = None;
        for (row, doc) in docs.iter().enumerate() {
            let (Some(doc), true) = (doc, paths.is_valid(row)) else {
                out.append_null();
                continue;
            };
            let text = paths.value(row);
            if parsed.as_ref().is_none_or(|(p, _)| p != text) {
                parsed = Some((text.to_string(), parse_json_path(text).ok()));
            }
            let steps = parsed.as_ref().and_then(|(_, s)| s.as_deref());
            out.append_option(
                steps
                    .and_then(|steps| lookup(doc, steps))
                    .and_then(|v| self.render(v)),
            );
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::udfs::test_support::*;

    #[test]
    fn json_value_and_extract_follow_paths() {
        let doc = r#"{"user":{"name":"ann","tags":["x","y"],"age":31,"score":1.5,"vip":true,"nick":null},"a b":{"c":"q"}}"#;
        let rows = [
            serde_json::json!({ "j": doc }).to_string(),
            serde_json::json!({ "j": "not json" }).to_string(),
            serde_json::json!({ "j": null }).to_string(),
        ];
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let out = rows_of(
            "SELECT JSON_VALUE(j, '$.user.name'), JSON_VALUE(j, '$.user.tags[1]'), \
             JSON_VALUE(j, '$.user.age'), JSON_VALUE(j, '$.user.score'), \
             JSON_VALUE(j, '$.user.vip'), JSON_VALUE(j, '$.user.nick'), \
             JSON_VALUE(j, '$.user.missing'), JSON_VALUE(j, '$.user'), \
             JSON_VALUE(j, '$[''a b''].c'), JSON_VALUE(j, '$.user[\"name\"]'), \
             JSON_EXTRACT(j, '$.user.tags'), JSON_EXTRACT(j, '$.user.name'), \
             JSON_EXTRACT(j, '$.user.age'), JSON_EXTRACT(j, '$.nope') FROM t",
            &rows,
        );
        let nulls = ["NULL"; 14];
        assert_eq!(
            out,
            strs(&[
                &[
                    "ann",
                    "y",
                    "31",
                    "1.5",
                    "true",
                    "NULL",
                    "NULL",
                    "NULL",
                    "q",
                    "ann",
                    r#"["x","y"]"#,
                    r#""ann""#,
                    "31",
                    "NULL"
                ],
                &nulls,
                &nulls,
            ])
        );
    }

    #[test]
    fn json_functions_read_nested_columns() {
        let rows = [
            r#"{"p": {"a": 1, "b": [10, 20], "c": {"d": "e"}}}"#,
            r#"{"q": 1}"#,
        ];
        let out = rows_of(
            "SELECT JSON_VALUE(p, '$.b[1]'), JSON_VALUE(p, 'c.d'), JSON_EXTRACT(p, '$.c') FROM t",
            &rows,
        );
        assert_eq!(
            out,
            strs(&[&["20", "e", r#"{"d":"e"}"#], &["NULL", "NULL", "NULL"]])
        );
    }

    #[test]
    fn json_paths_parse_or_fail_at_planning() {
        assert_eq!(
            parse_json_path("$.a[2]['b c'].d"),
            Ok(vec![
                PathStep::Key("a".into()),
                PathStep::Index(2),
                PathStep::Key("b c".into()),
                PathStep::Key("d".into()),
            ])
        );
        assert_eq!(parse_json_path("$"), Ok(vec![]));
        assert_eq!(parse_json_path("a"), Ok(vec![PathStep::Key("a".into())]));
        assert!(parse_json_path("$.a[x]").is_err());
        assert!(parse_json_path("$.a[1").is_err());
        assert!(parse_json_path("$.*").is_err());
        let e = error_of("SELECT JSON_VALUE('{}', '$.a[') FROM t", ONE);
        assert!(e.contains("invalid JSON path '$.a['"), "{e}");
    }

    #[test]
    fn paths_may_come_from_columns() {
        let rows = [
            r#"{"path": "$.a", "j": "{\"a\": 1}"}"#,
            r#"{"path": "$.b[0]", "j": "{\"b\": [2]}"}"#,
            r#"{"path": "$[", "j": "{}"}"#,
        ];
        let out = rows_of("SELECT JSON_VALUE(j, path) FROM t", &rows);
        assert_eq!(out, strs(&[&["1"], &["2"], &["NULL"]]));
    }
}
