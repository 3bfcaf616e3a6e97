//! File and stdout sinks: JSON lines (deletes carry `"_deleted": true`) or CSV.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;

use super::sink::Sink;
use crate::error::{Result, VeloError};
use crate::exec::change::{is_delete, with_deleted_flag};

/// Writes batches as JSON lines to any writer.
fn write_json_lines<W: Write>(out: &mut W, batch: &RecordBatch) -> Result<()> {
    let batch = if is_delete(batch) {
        with_deleted_flag(batch)?
    } else {
        batch.clone()
    };
    let mut writer = arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow::json::writer::LineDelimited>(out);
    writer.write(&batch)?;
    writer.finish()?;
    Ok(())
}

/// JSON lines on standard output.
pub struct StdoutSink {
    out: BufWriter<std::io::Stdout>,
}

impl StdoutSink {
    /// A buffered stdout sink.
    pub fn new() -> Self {
        StdoutSink {
            out: BufWriter::with_capacity(1 << 16, std::io::stdout()),
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
        write_json_lines(&mut self.out, batch)
    }

    fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| VeloError::io("writing to stdout", e))
    }
}

/// A JSON-lines or CSV file.
pub struct FileSink {
    path: PathBuf,
    out: BufWriter<File>,
    csv: bool,
    delimiter: u8,
    wrote_header: bool,
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
            out: BufWriter::with_capacity(1 << 20, file),
            csv,
            delimiter,
            wrote_header: false,
        })
    }
}

impl FileSink {
    /// Flushes the buffer and syncs the file to disk.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| VeloError::io(format!("syncing {}", self.path.display()), e))
    }
}

impl Sink for FileSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        if !self.csv {
            return write_json_lines(&mut self.out, batch);
        }
        let batch = if is_delete(batch) {
            with_deleted_flag(batch)?
        } else {
            batch.clone()
        };
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(!self.wrote_header)
            .with_delimiter(self.delimiter)
            .build(&mut self.out);
        writer.write(&batch)?;
        self.wrote_header = true;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| VeloError::io(format!("writing {}", self.path.display()), e))
    }
}
