//! Execution: operators that run a planned query over batches, their state, and the engine
//! that holds deployed queries. Everything here is synchronous: input in, output returned.

pub mod aggregate;
pub mod analytic;
pub mod change;
pub mod engine;
pub mod event_time;
pub mod expiry;
pub mod group_keys;
pub mod group_table;
pub mod input;
pub mod join;
pub mod operator;
pub mod processor;
pub mod record;
pub mod running;
pub mod session;
pub mod shard;
pub mod snapshot;
pub mod union;
pub mod watermark;
pub mod window;
