//! `COALESCE`, `NVL`/`IFNULL`, `NVL2`: DataFusion's, evaluable without the simplifier.

use std::sync::Arc;

use arrow::compute::is_not_null;
use arrow::compute::kernels::zip::zip;
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

use super::arrays;

/// What a [`Conditional`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionalKind {
    /// `COALESCE(a, b, ...)`, `NVL(a, b)`: the first non-null argument.
    Coalesce,
    /// `NVL2(a, b, c)`: `b` where `a` is not null, else `c`.
    Nvl2,
}

/// DataFusion's COALESCE, NVL and NVL2 (same name, types and `simplify`) with an `invoke` of
/// their own: DataFusion evaluates them only once its simplifier has turned them into CASE.
/// The planner simplifies projections, filters and aggregates (where `simplify` makes the CASE
/// and this `invoke` never runs), but lowers `ORDER BY` expressions unsimplified, where
/// DataFusion's versions fail with "coalesce should have been simplified to case". Remove it once
/// the planner simplifies sort expressions too. Here every argument is evaluated (no short
/// circuit).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Conditional {
    inner: Arc<ScalarUDF>,
    kind: ConditionalKind,
}

impl Conditional {
    /// Wraps DataFusion's `inner` function.
    pub fn new(inner: Arc<ScalarUDF>, kind: ConditionalKind) -> Self {
        Conditional { inner, kind }
    }
}

impl ScalarUDFImpl for Conditional {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.inner().coerce_types(arg_types)
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.inner().return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.inner().return_field_from_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.inner().simplify(args, info)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = arrays(&args)?;
        let result = match (self.kind, arrays.as_slice()) {
            (ConditionalKind::Coalesce, [init @ .., last]) => {
                let mut result = Arc::clone(last);
                for a in init.iter().rev() {
                    result = zip(&is_not_null(a)?, a, &result)?;
                }
                result
            }
            (ConditionalKind::Nvl2, [tested, if_set, if_null]) => {
                zip(&is_not_null(tested)?, if_set, if_null)?
            }
            _ => return exec_err!("{}: wrong number of arguments", self.name()),
        };
        Ok(ColumnarValue::Array(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::udfs::test_support::*;

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
        assert_eq!(out.types[0], DataType::Int64);
        let grouped = rows_of(
            "SELECT COALESCE(x, 0) AS k, COUNT(*) AS n FROM t GROUP BY COALESCE(x, 0) EMIT FINAL",
            &rows,
        );
        assert_eq!(grouped, strs(&[&["1", "1"], &["0", "2"]]));
    }

    #[test]
    fn order_by_evaluates_them_unsimplified() {
        // ORDER BY expressions skip the planner's simplifier (see `Conditional`).
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
