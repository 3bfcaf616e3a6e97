//! Kafka: a consumer-group source and a producer sink, both speaking JSON, and an in-process
//! mock cluster for tests and demos.

pub mod config;
pub mod mock;
pub mod sink;
pub mod source;
pub mod start_positions;
pub mod table;
pub mod transactions;

pub use config::{client_config, topic_of, KafkaDefaults};
pub use mock::MockKafka;
pub use sink::KafkaSink;
pub use source::{KafkaBatch, KafkaSource, KafkaSourceConfig};
pub use table::TableLog;
