//! velostream: a streaming SQL engine.
//!
//! Layers, each importing only the ones below it:
//! `server` (velo-sql: runs an app's jobs until stopped)
//! → `job` (runs a statement: source → partitions → sink; commits Kafka offsets)
//! → `connectors` (files, Kafka, stdout) and `partition` (router, workers, output thread)
//! → `checkpoint` (durable state: a job's checkpoints in a state store)
//! → `exec` (operators, state, the engine) → `sql` (parse, plan).
//! `metrics` (a job's live counters) and `error` serve every layer.

pub mod checkpoint;
pub mod connectors;
pub mod error;
pub mod exec;
pub mod job;
pub mod metrics;
pub mod partition;
pub mod server;
pub mod sql;

pub use error::{Result, VeloError};
pub use exec::engine::StreamExecutionEngine;
pub use exec::record::StreamRecord;
