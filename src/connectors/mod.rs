//! Sources and sinks: where records come from and where results go.

pub mod avro;
pub mod decode;
pub mod file_sink;
pub mod file_source;
pub mod kafka;
pub mod sink;

pub use file_sink::{FileSink, StdoutSink};
pub use file_source::{BadRecord, FileFormat, FileSource, FileSourceConfig};
pub use sink::{open_sink, Sink, SinkConfig, SinkProgress};
