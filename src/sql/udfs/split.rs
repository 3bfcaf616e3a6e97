//! `SPLIT(str, delim)`: a list of strings.

use std::sync::Arc;

use arrow::array::{Array, ListBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{arrays, as_utf8, is_string};

/// `SPLIT(str, delim)`: the pieces of `str` between occurrences of `delim`, as a list of
/// strings. An empty string gives an empty list; an empty delimiter gives `[str]`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Split {
    signature: Signature,
}

impl Default for Split {
    fn default() -> Self {
        Self::new()
    }
}

impl Split {
    /// The SPLIT function.
    pub fn new() -> Self {
        Split {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

impl ScalarUDFImpl for Split {
    fn name(&self) -> &str {
        "split"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return plan_err!(
                "SPLIT takes (string, delimiter), got {} arguments",
                arg_types.len()
            );
        }
        for t in arg_types {
            if !is_string(t) && !t.is_null() {
                return plan_err!("SPLIT takes strings, got {t}");
            }
        }
        Ok(vec![DataType::Utf8, DataType::Utf8])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(string_list_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let [text, delim] = arrays.as_slice() else {
            return exec_err!("SPLIT takes two arguments");
        };
        let text = as_utf8(text)?;
        let delim = as_utf8(delim)?;
        let mut out = ListBuilder::new(StringBuilder::new());
        for row in 0..args.number_rows {
            if text.is_null(row) || delim.is_null(row) {
                out.append_null();
                continue;
            }
            let (s, d) = (text.value(row), delim.value(row));
            if d.is_empty() {
                out.values().append_value(s);
            } else if !s.is_empty() {
                for piece in s.split(d) {
                    out.values().append_value(piece);
                }
            }
            out.append(true);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::udfs::test_support::*;

    #[test]
    fn split_returns_a_list_of_strings() {
        let rows = [r#"{"s": "a,b,,c"}"#, r#"{"s": null}"#, r#"{"s": ""}"#];
        let out = run(
            "",
            &rows,
            "SELECT SPLIT(s, ','), SPLIT('abc', ''), SPLIT('x--y', '--') FROM t",
        );
        assert_eq!(
            out.rows,
            strs(&[
                &["[a, b, , c]", "[abc]", "[x, y]"],
                &["NULL", "[abc]", "[x, y]"],
                &["[]", "[abc]", "[x, y]"],
            ])
        );
        assert_eq!(out.types[0], string_list_type());
    }
}
