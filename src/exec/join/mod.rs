//! Joins. A stream–table join probes a `LookupTable`, read whole before the stream starts and
//! shared, unchanged, by every partition worker; a join of two streams keeps each side's rows
//! until the other side's watermark passes their time bound.

pub mod changelog;
pub mod interval;
mod key_encoder;
pub mod lookup;
mod side_state;
mod state_rows;
pub mod table;

pub use changelog::ChangelogJoinOperator;
pub use interval::IntervalJoinOperator;
pub use lookup::LookupJoinOperator;
pub use table::{latest_per_key, LookupTable};
