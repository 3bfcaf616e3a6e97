//! velostream: a streaming SQL engine.
//!
//! Layers, each importing only the ones below it:
//! `job` (runs a statement's sources → partitions → sinks) → `connectors` (files, stdout)
//! → `partition` (router, workers, output thread) → `exec` (operators, state, the engine)
//! → `sql` (parse, plan).

pub mod connectors;
pub mod error;
pub mod exec;
pub mod job;
pub mod partition;
pub mod sql;

pub use error::{Result, VeloError};
pub use exec::engine::StreamExecutionEngine;
pub use exec::record::StreamRecord;
