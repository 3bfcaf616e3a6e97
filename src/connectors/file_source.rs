//! The file source: JSON lines, a JSON array or CSV, from a file, a directory or a glob,
//! optionally following a growing file. Decodes with arrow-json/arrow-csv in batches; a record
//! that does not decode is reported with file:line and skipped, and its neighbours still flow.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int32Array, Int64Array, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

use super::check_key_fields;
use super::decode::{decode_json, decode_with_fallback};
use crate::error::{Result, VeloError};
use crate::exec::event_time::{constant_millis, to_epoch_millis, EventTimeFormat};
use crate::exec::input::now_millis;
use crate::sql::key_spec::{
    type_key, Connector, KeyDefault, KeyKind, KeySpec, Keys, Role, CONFIG_FILE,
};
use crate::sql::window::{
    EVENT_TIME_FORMAT, WATERMARK_IDLE_TIMEOUT, WATERMARK_MAX_OUT_OF_ORDERNESS,
};
use crate::sql::Properties;

/// Rows per decoded batch.
pub const DEFAULT_BATCH_SIZE: usize = 8192;
/// Files read at once when `'<src>.readers'` is not set. A constant, not the core count, so
/// the order batches arrive in (and so the output) is the same on every machine.
pub const DEFAULT_READERS: usize = 4;
/// Lines read to infer a schema.
const INFER_LINES: usize = 1000;

/// A file's format.
#[derive(Debug, Clone, PartialEq)]
pub enum FileFormat {
    /// One JSON object per line.
    Jsonl,
    /// One JSON array of objects.
    Json,
    /// Delimited text.
    Csv { header: bool, delimiter: u8 },
}

impl FileFormat {
    /// The format named by `format`, or guessed from the file extension.
    pub fn from_name_or_path(name: Option<&str>, path: &str) -> Result<Self> {
        let name = name.map(str::to_lowercase).unwrap_or_else(|| {
            Path::new(path)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("jsonl")
                .to_lowercase()
        });
        match name.as_str() {
            "jsonl" | "ndjson" | "jsonlines" => Ok(FileFormat::Jsonl),
            "json" => Ok(FileFormat::Json),
            "csv" => Ok(FileFormat::Csv {
                header: true,
                delimiter: b',',
            }),
            "tsv" => Ok(FileFormat::Csv {
                header: true,
                delimiter: b'\t',
            }),
            other => Err(VeloError::Config(format!(
                "unknown file format '{other}' for {path}: expected jsonl, json or csv"
            ))),
        }
    }
}

/// What to do with a record that does not decode.
#[derive(Debug, Clone, PartialEq)]
pub enum OnError {
    /// Report, count and skip it (default).
    Skip,
    /// Stop the job with the error.
    Fail,
}

/// Settings of a file source (from `'<src>.*'` keys or a CLI binding).
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    pub name: String,
    pub path: String,
    pub format: FileFormat,
    pub watch: bool,
    /// A declared schema (`CREATE STREAM name (cols)`); inferred from the data when None.
    pub schema: Option<SchemaRef>,
    pub event_time_field: Option<String>,
    pub event_time_format: Option<EventTimeFormat>,
    pub on_error: OnError,
    /// Where bad records are written, one JSON object per record, when set.
    pub dead_letter_path: Option<PathBuf>,
    pub batch_size: usize,
    /// Files read at once, each by its own thread, their batches taken in turn
    /// (`'<src>.readers'`, default 4; a followed file is read alone).
    pub readers: usize,
    /// Columns the files split the rows by (`'<src>.key.field'`): equal values are never in
    /// two files, so a query keyed by them is fed file by file.
    pub key_fields: Vec<String>,
}

/// `'<src>.path'`.
pub const PATH: KeySpec = KeySpec {
    name: "path",
    kind: KeyKind::Text,
    default: KeyDefault::Required,
    doc: "A file, a directory (all its files, sorted) or a glob (`data/*.jsonl`); \
          `velo-sql-batch --source NAME=PATH` sets it too.",
};
/// `'<src>.format'`.
pub const FORMAT: KeySpec = KeySpec {
    name: "format",
    kind: KeyKind::Choice(&["jsonl", "json", "csv", "tsv", "ndjson", "jsonlines"]),
    default: KeyDefault::Note("from the file extension"),
    doc: "`jsonl`: one JSON object per line; `json`: one array of objects; `csv` (`tsv`: \
          tab-separated).",
};
/// `'<src>.header'`.
pub const HEADER: KeySpec = KeySpec {
    name: "header",
    kind: KeyKind::Bool,
    default: KeyDefault::Value("true"),
    doc: "CSV: the first line names the columns.",
};
/// `'<src>.delimiter'`.
pub const DELIMITER: KeySpec = KeySpec {
    name: "delimiter",
    kind: KeyKind::Char,
    default: KeyDefault::Value(","),
    doc: "CSV: the field delimiter.",
};
/// `'<src>.watch'`.
pub const WATCH: KeySpec = KeySpec {
    name: "watch",
    kind: KeyKind::Bool,
    default: KeyDefault::Value("false"),
    doc: "Follow a growing file: the job then runs until stopped.",
};
/// `'<src>.event.time.field'`.
pub const EVENT_TIME_FIELD: KeySpec = KeySpec {
    name: "event.time.field",
    kind: KeyKind::Text,
    default: KeyDefault::Note("ingestion time"),
    doc: "The column holding each record's event time (`_event_time`).",
};
/// `'<src>.on_error'`.
pub const ON_ERROR: KeySpec = KeySpec {
    name: "on_error",
    kind: KeyKind::Choice(&["skip", "fail", "continue", "log"]),
    default: KeyDefault::Value("skip"),
    doc: "A record that does not decode: `skip` reports `file:line` and the reason, counts and \
          skips it; `fail` stops the job.",
};
/// `'<src>.dlq.path'`.
pub const DLQ_PATH: KeySpec = KeySpec {
    name: "dlq.path",
    kind: KeyKind::Text,
    default: KeyDefault::None,
    doc: "Each bad record is written to this file as a JSON line \
          `{source, location, reason, record}`.",
};
/// `'<src>.dead_letter.path'`.
pub const DEAD_LETTER_PATH: KeySpec = KeySpec {
    name: "dead_letter.path",
    kind: KeyKind::Text,
    default: KeyDefault::None,
    doc: "The same as `dlq.path`.",
};
/// `'<src>.batch.size'`.
pub const BATCH_SIZE: KeySpec = KeySpec {
    name: "batch.size",
    kind: KeyKind::Integer { min: 1 },
    default: KeyDefault::Value("8192"),
    doc: "Records per batch; watermarks advance once per batch.",
};
/// `'<src>.readers'`.
pub const READERS: KeySpec = KeySpec {
    name: "readers",
    kind: KeyKind::Integer { min: 1 },
    default: KeyDefault::Value("4"),
    doc: "Files read at once, each by its own thread (a `watch` source reads its files one after \
          another); see [sql.md](sql.md#file_source).",
};
/// `'<src>.key.field'`.
pub const KEY_FIELD: KeySpec = KeySpec {
    name: "key.field",
    kind: KeyKind::List,
    default: KeyDefault::None,
    doc: "Columns that split the rows among the files: equal values are never in two files, so \
          a query keyed by them is fed file by file to its workers, without re-hashing \
          ([partitions.md](partitions.md#sources-already-partitioned-by-the-key)).",
};

/// `'<src>.type' = 'file_source'`: what a file source reads.
pub const FILE_SOURCE: Connector = Connector {
    kind: "file_source",
    label: "file_source",
    role: Role::Source,
    doc: "JSON lines, a JSON array or CSV, from a file, a directory or a glob, optionally \
          followed as it grows.",
    keys: &[
        type_key(KeyDefault::Note("a source with a `path`")),
        PATH,
        FORMAT,
        HEADER,
        DELIMITER,
        WATCH,
        EVENT_TIME_FIELD,
        EVENT_TIME_FORMAT,
        WATERMARK_MAX_OUT_OF_ORDERNESS,
        WATERMARK_IDLE_TIMEOUT,
        ON_ERROR,
        DLQ_PATH,
        DEAD_LETTER_PATH,
        BATCH_SIZE,
        READERS,
        KEY_FIELD,
        CONFIG_FILE,
    ],
    librdkafka: false,
};

impl FileSourceConfig {
    /// Reads `'<name>.*'` keys.
    pub fn from_properties(
        name: &str,
        props: &Properties,
        schema: Option<SchemaRef>,
    ) -> Result<Self> {
        let keys = Keys::of(props, name, &FILE_SOURCE);
        let path = keys.text(&PATH).ok_or_else(|| {
            VeloError::Config(format!(
                "source '{name}' needs '{name}.path' (or --source {name}=PATH)"
            ))
        })?;
        let mut format = FileFormat::from_name_or_path(keys.choice(&FORMAT)?, &path)?;
        if let FileFormat::Csv { header, delimiter } = &mut format {
            if let Some(h) = keys.bool(&HEADER)? {
                *header = h;
            }
            if let Some(d) = keys.char(&DELIMITER)? {
                *delimiter = d;
            }
        }
        let on_error = match keys.choice(&ON_ERROR)? {
            Some("fail") => OnError::Fail,
            _ => OnError::Skip,
        };
        Ok(FileSourceConfig {
            name: name.to_string(),
            path,
            format,
            watch: keys.bool(&WATCH)?.unwrap_or(false),
            schema,
            event_time_field: keys.text(&EVENT_TIME_FIELD),
            event_time_format: EventTimeFormat::parse(keys.text(&EVENT_TIME_FORMAT).as_deref()),
            on_error,
            dead_letter_path: keys
                .text(&DLQ_PATH)
                .or_else(|| keys.text(&DEAD_LETTER_PATH))
                .map(PathBuf::from),
            batch_size: keys.count(&BATCH_SIZE)?.unwrap_or(DEFAULT_BATCH_SIZE),
            readers: keys.count(&READERS)?.unwrap_or(DEFAULT_READERS),
            key_fields: keys.list(&KEY_FIELD),
        })
    }
}

/// A record that did not decode.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRecord {
    /// `file:line` (or `file:[index]` for a JSON array).
    pub location: String,
    pub reason: String,
    pub raw: String,
}

/// A decoded batch plus the records that failed in it.
#[derive(Debug)]
pub struct SourceBatch {
    pub batch: RecordBatch,
    /// The file the rows come from: its place in the source's sorted file list.
    pub file: usize,
    pub bad_records: Vec<BadRecord>,
    /// Bytes read for this batch (progress reporting).
    pub bytes: u64,
}

/// The files a path names: the file itself, a directory's files (sorted) or a glob's matches.
pub fn expand_paths(path: &str) -> Result<Vec<PathBuf>> {
    let p = Path::new(path);
    if p.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(p)
            .map_err(|e| VeloError::io(format!("listing {path}"), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        return Ok(files);
    }
    if path.contains(['*', '?', '[']) {
        let mut files: Vec<PathBuf> = glob::glob(path)
            .map_err(|e| VeloError::Config(format!("bad glob '{path}': {e}")))?
            .filter_map(|p| p.ok())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(VeloError::Config(format!("no files match '{path}'")));
        }
        return Ok(files);
    }
    if !p.exists() {
        return Err(VeloError::Config(format!(
            "input file '{path}' does not exist"
        )));
    }
    Ok(vec![p.to_path_buf()])
}

/// Reads the configured files in order, batch by batch.
pub struct FileSource {
    config: FileSourceConfig,
    files: Vec<PathBuf>,
    /// Each file's place in the whole source's file list (differs after `split`).
    indices: Vec<usize>,
    /// Full data schema (declared or inferred).
    schema: SchemaRef,
    /// The data columns the query needs (decoding skips the rest).
    projection: SchemaRef,
    /// System columns the query needs.
    system_columns: Vec<String>,
    current: Option<OpenFile>,
    next_file: usize,
    /// The line buffer, reused for every batch.
    chunk: LineChunk,
    errors: u64,
}

struct OpenFile {
    path: PathBuf,
    index: usize,
    reader: BufReader<File>,
    /// Lines consumed so far (the next line's number is this + 1).
    line: u64,
    /// A trailing line without newline, kept while following a growing file.
    partial: Vec<u8>,
    /// For a JSON array file: the decoded elements not yet emitted.
    json_values: Option<std::vec::IntoIter<serde_json::Value>>,
}

impl FileSource {
    /// Opens the source: finds its files, infers or takes its schema, and checks its
    /// `key.field` columns against it.
    pub fn open(config: FileSourceConfig) -> Result<Self> {
        let files = expand_paths(&config.path)?;
        let schema = match &config.schema {
            Some(s) => Arc::clone(s),
            None => Arc::new(infer_schema(&files, &config.format)?),
        };
        check_key_fields(&config.name, &config.key_fields, &schema)?;
        Ok(FileSource {
            projection: Arc::clone(&schema),
            schema,
            indices: (0..files.len()).collect(),
            files,
            config,
            system_columns: Vec::new(),
            current: None,
            next_file: 0,
            chunk: LineChunk::new(DEFAULT_BATCH_SIZE),
            errors: 0,
        })
    }

    /// The full data schema of the files.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Decode only these columns (data or system) from now on.
    pub fn set_projection(&mut self, wanted: &Schema) {
        let data: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .filter(|f| {
                wanted.field_with_name(f.name()).is_ok()
                    || self.config.event_time_field.as_deref() == Some(f.name().as_str())
            })
            .map(|f| f.as_ref().clone())
            .collect();
        self.projection = Arc::new(Schema::new(data));
        self.system_columns = wanted
            .fields()
            .iter()
            .filter(|f| crate::sql::planner::is_system_column(f.name()))
            .map(|f| f.name().clone())
            .collect();
    }

    /// Records that failed to decode so far.
    pub fn error_count(&self) -> u64 {
        self.errors
    }

    /// Deals the files to `readers` sources, file `i` to reader `i mod readers`, each with
    /// this source's schema and projection; batches keep their file's place in the whole list.
    pub fn split(self, readers: usize) -> Vec<FileSource> {
        let readers = readers.clamp(1, self.files.len().max(1));
        (0..readers)
            .map(|r| {
                let picked: Vec<usize> = (r..self.files.len()).step_by(readers).collect();
                FileSource {
                    config: self.config.clone(),
                    files: picked.iter().map(|&i| self.files[i].clone()).collect(),
                    indices: picked.iter().map(|&i| self.indices[i]).collect(),
                    schema: Arc::clone(&self.schema),
                    projection: Arc::clone(&self.projection),
                    system_columns: self.system_columns.clone(),
                    current: None,
                    next_file: 0,
                    chunk: LineChunk::new(DEFAULT_BATCH_SIZE),
                    errors: 0,
                }
            })
            .collect()
    }

    /// Total size in bytes of the input files (for progress).
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    }

    /// The next batch; `None` at the end of a bounded input. A followed file (`watch`) never
    /// ends: when no new data has arrived it returns an empty batch after a short wait.
    pub fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        loop {
            if self.current.is_none() {
                if self.next_file >= self.files.len() {
                    return Ok(None);
                }
                let path = self.files[self.next_file].clone();
                let file = File::open(&path)
                    .map_err(|e| VeloError::io(format!("opening {}", path.display()), e))?;
                self.current = Some(OpenFile {
                    path,
                    index: self.indices[self.next_file],
                    reader: BufReader::with_capacity(1 << 20, file),
                    line: 0,
                    partial: Vec::new(),
                    json_values: None,
                });
                self.next_file += 1;
            }
            let last_file = self.next_file >= self.files.len();
            let follow = self.config.watch && last_file;
            let Some(file) = self.current.as_mut() else {
                continue;
            };
            let chunk = &mut self.chunk;
            match self.config.format {
                FileFormat::Json => read_json_array(file, chunk, self.config.batch_size)?,
                FileFormat::Csv { header, .. } => {
                    read_lines(file, chunk, self.config.batch_size, follow, header)?
                }
                FileFormat::Jsonl => {
                    read_lines(file, chunk, self.config.batch_size, follow, false)?
                }
            }
            if chunk.is_empty() {
                if chunk.at_end && !follow {
                    self.current = None;
                    continue;
                }
                std::thread::sleep(Duration::from_millis(100));
                let file = file.index;
                let empty = RecordBatch::new_empty(self.output_schema());
                return Ok(Some(SourceBatch {
                    file,
                    batch: empty,
                    bad_records: Vec::new(),
                    bytes: 0,
                }));
            }
            let path = file.path.clone();
            let file_index = file.index;
            let (batch, lines_ok, bad) = self.decode(&self.chunk, &path)?;
            self.errors += bad.len() as u64;
            if let (OnError::Fail, Some(b)) = (&self.config.on_error, bad.first()) {
                return Err(VeloError::BadRecord {
                    location: b.location.clone(),
                    reason: b.reason.clone(),
                });
            }
            let batch = self.add_system_columns(batch, &lines_ok, &path, file_index)?;
            return Ok(Some(SourceBatch {
                file: file_index,
                batch,
                bad_records: bad,
                bytes: self.chunk.bytes,
            }));
        }
    }

    /// Schema of emitted batches: projected data columns plus requested system columns.
    pub fn output_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .projection
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        for name in &self.system_columns {
            let t = crate::sql::planner::SYSTEM_COLUMNS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .unwrap_or(DataType::Utf8);
            fields.push(Field::new(name, t, true));
        }
        Arc::new(Schema::new(fields))
    }

    /// Decodes a chunk in one go; if that fails, line by line to find and skip the bad ones.
    /// Returns the batch, the line numbers of its rows, and the bad records.
    fn decode(
        &self,
        chunk: &LineChunk,
        path: &Path,
    ) -> Result<(RecordBatch, Vec<u64>, Vec<BadRecord>)> {
        let decoded = decode_with_fallback(
            &self.projection,
            &chunk.data,
            &chunk.ends,
            "not a record",
            |data, ends| self.decode_bytes(data, ends.len()),
        )?;
        let ok_lines = decoded.kept.iter().map(|&i| chunk.numbers[i]).collect();
        let bad = decoded
            .failed
            .into_iter()
            .map(|(i, reason)| {
                let number = chunk.numbers[i];
                let location = match self.config.format {
                    FileFormat::Json => format!("{}:[{}]", path.display(), number - 1),
                    _ => format!("{}:{}", path.display(), number),
                };
                let raw = String::from_utf8_lossy(chunk.line(i)).trim_end().to_string();
                tracing::warn!(source = %self.config.name, %location, %reason, "skipping bad record");
                BadRecord {
                    location,
                    reason,
                    raw,
                }
            })
            .collect();
        Ok((decoded.batch, ok_lines, bad))
    }

    /// Decodes newline-separated records (`rows` of them) into one batch.
    fn decode_bytes(&self, data: &[u8], rows: usize) -> std::result::Result<RecordBatch, String> {
        let batch_size = rows.max(1);
        let mut batches = Vec::new();
        match &self.config.format {
            FileFormat::Csv { delimiter, .. } => {
                let full = Arc::clone(&self.schema);
                let projection: Vec<usize> = self
                    .projection
                    .fields()
                    .iter()
                    .filter_map(|f| full.index_of(f.name()).ok())
                    .collect();
                let mut decoder = arrow::csv::ReaderBuilder::new(full)
                    .with_header(false)
                    .with_delimiter(*delimiter)
                    .with_batch_size(batch_size)
                    .with_projection(projection)
                    .build_decoder();
                let mut offset = 0;
                loop {
                    let read = decoder.decode(&data[offset..]).map_err(|e| e.to_string())?;
                    offset += read;
                    if read == 0 || offset >= data.len() {
                        // Signal end of input so a last record without newline completes.
                        decoder.decode(&[]).map_err(|e| e.to_string())?;
                    }
                    if let Some(b) = decoder.flush().map_err(|e| e.to_string())? {
                        batches.push(b);
                    }
                    if read == 0 || offset >= data.len() {
                        break;
                    }
                }
            }
            _ => return decode_json(&self.projection, data, rows),
        }
        match batches.len() {
            1 => Ok(batches.remove(0)),
            _ => concat_batches(&self.projection, &batches).map_err(|e| e.to_string()),
        }
    }

    fn add_system_columns(
        &self,
        batch: RecordBatch,
        lines: &[u64],
        path: &Path,
        file_index: usize,
    ) -> Result<RecordBatch> {
        if self.system_columns.is_empty() {
            return Ok(batch);
        }
        let n = batch.num_rows();
        let now = now_millis();
        let mut columns = batch.columns().to_vec();
        for name in &self.system_columns {
            let col: ArrayRef = match name.as_str() {
                "_offset" => Arc::new(Int64Array::from_iter_values(
                    lines.iter().map(|l| *l as i64),
                )),
                "_partition" => Arc::new(Int32Array::from_value(file_index as i32, n)),
                "_topic" => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                    path.display().to_string(),
                    n,
                ))),
                "_event_time" => match &self.config.event_time_field {
                    Some(field) => {
                        // set_projection always decodes the event-time field.
                        let array = batch.column_by_name(field).cloned().ok_or_else(|| {
                            VeloError::Config(format!(
                                "event-time field '{field}' is not a column of source '{}'",
                                self.config.name
                            ))
                        })?;
                        let millis =
                            to_epoch_millis(&array, self.config.event_time_format.as_ref())?;
                        let filled: Int64Array =
                            millis.iter().map(|v| Some(v.unwrap_or(now))).collect();
                        Arc::new(filled)
                    }
                    None => constant_millis(now, n),
                },
                "_timestamp" => constant_millis(now, n),
                _ => arrow::array::new_null_array(&DataType::Utf8, n),
            };
            columns.push(col);
        }
        Ok(RecordBatch::try_new(self.output_schema(), columns)?)
    }
}

/// Lines read from a file: one buffer, where each line ends, and each line's number.
struct LineChunk {
    data: Vec<u8>,
    /// Exclusive end offset of each line in `data` (newline included).
    ends: Vec<usize>,
    /// 1-based line number (or array index + 1) of each line.
    numbers: Vec<u64>,
    bytes: u64,
    at_end: bool,
}

impl LineChunk {
    fn new(capacity: usize) -> Self {
        LineChunk {
            data: Vec::with_capacity(capacity * 64),
            ends: Vec::with_capacity(capacity),
            numbers: Vec::with_capacity(capacity),
            bytes: 0,
            at_end: false,
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Empties the chunk, keeping its buffers for the next read.
    fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.numbers.clear();
        self.bytes = 0;
        self.at_end = false;
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn line(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }
}

/// Reads up to `max` non-blank lines (skipping a CSV header on line 1).
fn read_lines(
    file: &mut OpenFile,
    chunk: &mut LineChunk,
    max: usize,
    follow: bool,
    header: bool,
) -> Result<()> {
    chunk.clear();
    while chunk.len() < max {
        let start = chunk.data.len();
        chunk.data.append(&mut file.partial);
        let n = file
            .reader
            .read_until(b'\n', &mut chunk.data)
            .map_err(|e| VeloError::io(format!("reading {}", file.path.display()), e))?;
        chunk.bytes += n as u64;
        if chunk.data.len() == start {
            chunk.at_end = true;
            break;
        }
        if chunk.data.last() != Some(&b'\n') {
            if follow {
                // The writer has not finished this line yet: keep it for the next read.
                file.partial = chunk.data.split_off(start);
                chunk.at_end = true;
                break;
            }
            chunk.data.push(b'\n');
        }
        file.line += 1;
        let blank = chunk.data[start..].iter().all(|b| b.is_ascii_whitespace());
        if blank || (header && file.line == 1) {
            chunk.data.truncate(start);
            continue;
        }
        chunk.ends.push(chunk.data.len());
        chunk.numbers.push(file.line);
    }
    Ok(())
}

/// Reads a JSON array file once, then hands out its elements as lines of JSON.
fn read_json_array(file: &mut OpenFile, chunk: &mut LineChunk, max: usize) -> Result<()> {
    chunk.clear();
    if file.json_values.is_none() {
        let mut text = String::new();
        file.reader
            .read_to_string(&mut text)
            .map_err(|e| VeloError::io(format!("reading {}", file.path.display()), e))?;
        chunk.bytes = text.len() as u64;
        let values: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(&text)
        {
            Ok(serde_json::Value::Array(items)) => items,
            Ok(single @ serde_json::Value::Object(_)) => vec![single],
            Ok(_) => {
                return Err(VeloError::BadRecord {
                    location: file.path.display().to_string(),
                    reason: "a json file must hold an array of objects".into(),
                })
            }
            Err(e) => {
                return Err(VeloError::BadRecord {
                    location: format!("{}:{}", file.path.display(), e.line()),
                    reason: e.to_string(),
                })
            }
        };
        file.json_values = Some(values.into_iter());
    }
    if let Some(values) = file.json_values.as_mut() {
        for v in values.by_ref().take(max) {
            file.line += 1;
            chunk.data.extend_from_slice(v.to_string().as_bytes());
            chunk.data.push(b'\n');
            chunk.ends.push(chunk.data.len());
            chunk.numbers.push(file.line);
        }
    }
    chunk.at_end = chunk.is_empty();
    Ok(())
}

/// Infers a schema from the first lines of the first file.
fn infer_schema(files: &[PathBuf], format: &FileFormat) -> Result<Schema> {
    let Some(first) = files.first() else {
        return Err(VeloError::Config("no input files".into()));
    };
    let open =
        || File::open(first).map_err(|e| VeloError::io(format!("opening {}", first.display()), e));
    match format {
        FileFormat::Csv { header, delimiter } => {
            let (schema, _) = arrow::csv::reader::Format::default()
                .with_header(*header)
                .with_delimiter(*delimiter)
                .infer_schema(BufReader::new(open()?), Some(INFER_LINES))?;
            Ok(schema)
        }
        FileFormat::Jsonl => {
            let reader = BufReader::new(open()?);
            let values = reader
                .lines()
                .take(INFER_LINES)
                .map_while(|l| l.ok())
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
                .filter(|v| v.is_object())
                .map(Ok::<_, arrow::error::ArrowError>);
            Ok(arrow::json::reader::infer_json_schema_from_iterator(
                values,
            )?)
        }
        FileFormat::Json => {
            let text = std::fs::read_to_string(first)
                .map_err(|e| VeloError::io(format!("reading {}", first.display()), e))?;
            let values: Vec<serde_json::Value> = match serde_json::from_str(&text) {
                Ok(serde_json::Value::Array(items)) => items,
                Ok(v) => vec![v],
                Err(e) => {
                    return Err(VeloError::BadRecord {
                        location: format!("{}:{}", first.display(), e.line()),
                        reason: e.to_string(),
                    })
                }
            };
            Ok(arrow::json::reader::infer_json_schema_from_iterator(
                values.into_iter().take(INFER_LINES).map(Ok),
            )?)
        }
    }
}
