//! Joins. A stream–table join probes a `LookupTable`, read whole before the stream starts and
//! shared, unchanged, by every partition worker.

pub mod lookup;
pub mod table;

pub use lookup::LookupJoinOperator;
pub use table::{latest_per_key, LookupTable};
