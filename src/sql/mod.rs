//! The SQL front end: split a script into statements, pull out velostream's streaming clauses,
//! and plan each query with DataFusion into the operators `exec` runs.

pub mod analytic;
mod changelog_join;
mod declaration;
pub mod functions;
mod interval;
mod join;
pub mod key_spec;
mod lower;
pub mod metric_annotations;
pub mod plan_shape;
pub mod planner;
pub mod properties;
pub mod script;
pub mod source_text;
pub mod ttl;
pub mod udfs;
pub mod window;

pub use planner::{
    AggregatePlan, ChangelogJoinPlan, IntervalJoinPlan, JoinSides, LookupJoinPlan, LookupKind,
    MergeKind, MergePlan, PlanStage, PlannedQuery, QueryPlanner, SourceRole, StreamInput,
    TableInput,
};
pub use properties::Properties;
pub use script::{
    parse_script, AsOf, ColumnDef, EmitMode, Script, Statement, StatementKind, WindowKind,
    WindowSpec,
};
pub use ttl::{StateTtl, TtlClock};
