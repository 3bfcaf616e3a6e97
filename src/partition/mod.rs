//! Partitioned, shared-nothing execution: a router splits each input batch by key hash,
//! `PartitionWorker` threads own their share of the state, and an output thread delivers the
//! results in a fixed order. Bounded queues between all three give backpressure.

pub mod pipeline;
pub mod router;
pub mod worker;

pub use pipeline::{
    cores, default_partitions, run_partitioned, Delivery, InputEvent, PartitionOptions,
    PartitionStats, RowEncoder, DEFAULT_QUEUE_DEPTH,
};
pub use router::{PartitionRouter, PartitionRun, Piece, Routing};
pub use worker::PartitionWorker;
