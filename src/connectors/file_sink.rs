//! File and stdout sinks: JSON lines (deletes carry `"_deleted": true`) or CSV. Both hand
//! the workers a [`RowEncoder`], so rows are encoded in parallel and only written here, in
//! order; the bytes are the same as encoding them here.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use super::sink::Sink;
use crate::error::{Result, VeloError};
use crate::exec::change::{is_delete, with_deleted_flag};
use crate::partition::RowEncoder;

/// A batch as written: a delete batch gains its `_deleted` flag.
fn as_written(batch: &RecordBatch) -> Result<RecordBatch> {
    if is_delete(batch) {
        Ok(with_deleted_flag(batch)?)
    } else {
        Ok(batch.clone())
    }
}

/// Encodes rows as JSON lines.
#[derive(Debug)]
struct JsonLines;

impl RowEncoder for JsonLines {
    fn encode(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        super::json_lines::encode(&as_written(batch)?, out)
    }
}

/// Encodes rows as CSV lines, without the header (the sink writes it once).
#[derive(Debug)]
struct CsvLines {
    delimiter: u8,
}

impl CsvLines {
    fn write(&self, batch: &RecordBatch, header: bool, out: &mut Vec<u8>) -> Result<()> {
        if !header {
            return super::csv_lines::encode(&as_written(batch)?, self.delimiter, out);
        }
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .with_delimiter(self.delimiter)
            .build(out);
        writer.write(&as_written(batch)?)?;
        Ok(())
    }
}

impl RowEncoder for CsvLines {
    fn encode(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        self.write(batch, false, out)
    }
}

/// How a file sink encodes rows: CSV lines (the header apart) or JSON lines.
pub fn row_encoder(csv: bool, delimiter: u8) -> Arc<dyn RowEncoder> {
    match csv {
        true => Arc::new(CsvLines { delimiter }),
        false => Arc::new(JsonLines),
    }
}

/// JSON lines on standard output.
pub struct StdoutSink {
    out: BufWriter<std::io::Stdout>,
    scratch: Vec<u8>,
}

impl StdoutSink {
    /// A buffered stdout sink.
    pub fn new() -> Self {
        StdoutSink {
            out: BufWriter::with_capacity(1 << 16, std::io::stdout()),
            scratch: Vec::new(),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.scratch.clear();
        JsonLines.encode(batch, &mut self.scratch)?;
        self.out
            .write_all(&self.scratch)
            .map_err(|e| VeloError::io("writing to stdout", e))
    }

    fn encoder(&self) -> Option<Arc<dyn RowEncoder>> {
        Some(Arc::new(JsonLines))
    }

    fn write_encoded(&mut self, _batch: &RecordBatch, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| VeloError::io("writing to stdout", e))
    }

    fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| VeloError::io("writing to stdout", e))
    }
}

/// The bytes a file sink gathers before it writes. A batch's bytes of at least this size go
/// straight to the file, since gathering them would copy every byte; smaller batches (a
/// trickle of changes) are gathered into writes of this size.
const FILE_BUFFER: usize = 1 << 16;

/// A JSON-lines or CSV file.
pub struct FileSink {
    path: PathBuf,
    out: BufWriter<File>,
    /// CSV: the delimiter (None: JSON lines).
    csv: Option<u8>,
    /// Encodes rows as this file holds them, here or on the workers.
    encoder: Arc<dyn RowEncoder>,
    wrote_header: bool,
    scratch: Vec<u8>,
}

impl FileSink {
    /// Creates (truncates) the file at `path`, making parent directories.
    pub fn create(path: &Path, csv: bool, delimiter: u8) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| VeloError::io(format!("creating {}", dir.display()), e))?;
        }
        let file = File::create(path)
            .map_err(|e| VeloError::io(format!("creating {}", path.display()), e))?;
        Ok(FileSink {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(FILE_BUFFER, file),
            csv: csv.then_some(delimiter),
            encoder: row_encoder(csv, delimiter),
            wrote_header: false,
            scratch: Vec::new(),
        })
    }

    /// Flushes the buffer and syncs the file to disk.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| VeloError::io(format!("syncing {}", self.path.display()), e))
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| VeloError::io(format!("writing {}", self.path.display()), e))
    }
}

impl Sink for FileSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        let written = self
            .encoder
            .encode(batch, &mut bytes)
            .and_then(|()| self.write_encoded(batch, &bytes));
        self.scratch = bytes;
        written
    }

    fn encoder(&self) -> Option<Arc<dyn RowEncoder>> {
        Some(Arc::clone(&self.encoder))
    }

    fn write_encoded(&mut self, batch: &RecordBatch, bytes: &[u8]) -> Result<()> {
        if let (Some(delimiter), false) = (self.csv, self.wrote_header) {
            let mut header = Vec::new();
            CsvLines { delimiter }.write(&batch.slice(0, 0), true, &mut header)?;
            self.write_all(&header)?;
            self.wrote_header = true;
        }
        self.write_all(bytes)
    }

    fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| VeloError::io(format!("writing {}", self.path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch(from: i64) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from(vec![Some("a,b"), None])),
                Arc::new(Int64Array::from(vec![from, from + 1])),
            ],
        )
        .expect("batch")
    }

    /// Writes two batches with `sink`'s own encoding, and two encoded by its encoder as a
    /// worker would; both files' text.
    fn both_ways(csv: bool) -> (String, String) {
        let dir = tempfile::tempdir().expect("dir");
        let (direct, encoded) = (dir.path().join("direct"), dir.path().join("encoded"));
        let mut sink = FileSink::create(&direct, csv, b';').expect("sink");
        sink.write_batch(&batch(1)).expect("write");
        sink.write_batch(&batch(3)).expect("write");
        sink.flush().expect("flush");
        let mut sink = FileSink::create(&encoded, csv, b';').expect("sink");
        let encoder = sink.encoder().expect("an encoder");
        for b in [batch(1), batch(3)] {
            let mut bytes = Vec::new();
            encoder.encode(&b, &mut bytes).expect("encode");
            sink.write_encoded(&b, &bytes).expect("write");
        }
        sink.flush().expect("flush");
        let read = |p: &Path| std::fs::read_to_string(p).expect("read");
        (read(&direct), read(&encoded))
    }

    #[test]
    fn rows_encoded_by_a_worker_are_the_bytes_the_sink_writes_itself() {
        let (direct, encoded) = both_ways(true);
        assert_eq!(direct, "k;n\na,b;1\n;2\na,b;3\n;4\n");
        assert_eq!(encoded, direct);
        let (direct, encoded) = both_ways(false);
        assert_eq!(
            direct,
            "{\"k\":\"a,b\",\"n\":1}\n{\"k\":null,\"n\":2}\n{\"k\":\"a,b\",\"n\":3}\n{\"k\":null,\"n\":4}\n"
        );
        assert_eq!(encoded, direct);
    }
}
