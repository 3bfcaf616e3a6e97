//! The file source: JSON lines, a JSON array or CSV, from a file, a directory or a glob,
//! optionally following a growing file. Files are cut into blocks of whole records
//! (`blocks`), which decode with arrow-json/arrow-csv on any thread (`block_decoder`), here or
//! on a pool (`pool`); a record that does not decode is reported with file:line and skipped,
//! and its neighbours still flow.

mod block_decoder;
mod blocks;
mod field_starts;
mod plain_csv;
mod plain_numbers;
pub mod pool;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;

pub use self::block_decoder::BlockDecoder;
pub use self::blocks::{Block, BlockCutter, Cut, BLOCK_BYTES};
use super::check_key_fields;
use crate::error::{Result, VeloError};
use crate::exec::event_time::EventTimeFormat;
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
/// How long a followed file that has nothing new waits before it is read again.
const WATCH_POLL: Duration = Duration::from_millis(100);

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
    /// Files read at once, a block from each in turn (`'<src>.readers'`, default 4; a
    /// followed file is read alone).
    pub readers: usize,
    /// Threads that decode the blocks cut from the files (`'<src>.decode.threads'`, default
    /// one per core). The output does not depend on it.
    pub decode_threads: usize,
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
    doc: "Files read at once, a block from each in turn (a `watch` source reads its files one \
          after another); see [sql.md](sql.md#file_source).",
};
/// `'<src>.decode.threads'`.
pub const DECODE_THREADS: KeySpec = KeySpec {
    name: "decode.threads",
    kind: KeyKind::Integer { min: 1 },
    default: KeyDefault::Note("one per core"),
    doc: "Threads that decode a file's blocks (1 MiB of whole records each) in parallel; \
          the blocks are handed on in file order, so the output is the same for any count.",
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
        DECODE_THREADS,
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
            decode_threads: keys
                .count(&DECODE_THREADS)?
                .unwrap_or_else(crate::partition::cores),
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

/// Reads the configured files in order: cuts each into blocks of whole records
/// ([`BlockCutter`]) and decodes them ([`BlockDecoder`]), here or on a pool
/// (`pool::ParallelReader`).
pub struct FileSource {
    config: FileSourceConfig,
    files: Vec<PathBuf>,
    /// Each file's place in the whole source's file list (differs after `split`).
    indices: Vec<usize>,
    decoder: BlockDecoder,
    current: Option<BlockCutter>,
    next_file: usize,
    /// Decoded batches not yet handed out by `next_batch`.
    decoded: VecDeque<SourceBatch>,
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
        let decoder = BlockDecoder::new(&config, schema);
        Ok(FileSource {
            indices: (0..files.len()).collect(),
            files,
            config,
            decoder,
            current: None,
            next_file: 0,
            decoded: VecDeque::new(),
        })
    }

    /// The full data schema of the files.
    pub fn schema(&self) -> &SchemaRef {
        &self.decoder.schema
    }

    /// The source's settings.
    pub fn config(&self) -> &FileSourceConfig {
        &self.config
    }

    /// Decode only these columns (data or system) from now on.
    pub fn set_projection(&mut self, wanted: &Schema) {
        let data: Vec<Field> = self
            .decoder
            .schema
            .fields()
            .iter()
            .filter(|f| {
                wanted.field_with_name(f.name()).is_ok()
                    || self.config.event_time_field.as_deref() == Some(f.name().as_str())
            })
            .map(|f| f.as_ref().clone())
            .collect();
        let system_columns = wanted
            .fields()
            .iter()
            .filter(|f| crate::sql::planner::is_system_column(f.name()))
            .map(|f| f.name().clone())
            .collect();
        self.decoder
            .set_projection(Arc::new(Schema::new(data)), system_columns);
    }

    /// How this source's blocks decode (the same for every share after `split`).
    pub fn decoder(&self) -> &BlockDecoder {
        &self.decoder
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
                    decoder: self.decoder.clone(),
                    current: None,
                    next_file: 0,
                    decoded: VecDeque::new(),
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

    /// The next block of records, in file order. `Waiting` only for a followed (`watch`)
    /// last file that has no new complete record; `End` once every file is read.
    pub fn next_block(&mut self) -> Result<Cut> {
        loop {
            if self.current.is_none() {
                if self.next_file >= self.files.len() {
                    return Ok(Cut::End);
                }
                let path = self.files[self.next_file].clone();
                let index = self.indices[self.next_file];
                self.next_file += 1;
                if self.config.format == FileFormat::Json {
                    return Ok(Cut::Block(json_array_block(path, index)?));
                }
                let (quoted, header) = match self.config.format {
                    FileFormat::Csv { header, .. } => (true, header),
                    _ => (false, false),
                };
                self.current = Some(BlockCutter::open(path, index, quoted, header)?);
            }
            let follow = self.config.watch && self.next_file >= self.files.len();
            let Some(cutter) = self.current.as_mut() else {
                continue;
            };
            match cutter.next(follow)? {
                Cut::End => self.current = None,
                cut => return Ok(cut),
            }
        }
    }

    /// The file a `Waiting` cut waits on (its place in the whole list).
    fn waiting_file(&self) -> usize {
        self.next_file
            .checked_sub(1)
            .and_then(|i| self.indices.get(i).copied())
            .unwrap_or(0)
    }

    /// The next batch, decoded on this thread; `None` at the end of a bounded input. A
    /// followed file (`watch`) never ends: when no new data has arrived it returns an empty
    /// batch after a short wait.
    pub fn next_batch(&mut self) -> Result<Option<SourceBatch>> {
        loop {
            if let Some(batch) = self.decoded.pop_front() {
                return Ok(Some(batch));
            }
            match self.next_block()? {
                Cut::Block(block) => self.decoded.extend(self.decoder.decode(&block)?),
                Cut::Waiting => return Ok(Some(self.idle_batch())),
                Cut::End => return Ok(None),
            }
        }
    }

    /// What a followed file that has nothing new hands out, after a short wait.
    pub fn idle_batch(&self) -> SourceBatch {
        std::thread::sleep(WATCH_POLL);
        SourceBatch {
            file: self.waiting_file(),
            batch: RecordBatch::new_empty(self.output_schema()),
            bad_records: Vec::new(),
            bytes: 0,
        }
    }

    /// Schema of emitted batches: projected data columns plus requested system columns.
    pub fn output_schema(&self) -> SchemaRef {
        self.decoder.output_schema()
    }
}

/// A JSON array file, read whole, as one block of its elements, one per line.
fn json_array_block(path: PathBuf, index: usize) -> Result<Block> {
    let text = std::fs::read_to_string(&path)
        .map_err(|e| VeloError::io(format!("reading {}", path.display()), e))?;
    let values = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(items)) => items,
        Ok(single @ serde_json::Value::Object(_)) => vec![single],
        Ok(_) => {
            return Err(VeloError::BadRecord {
                location: path.display().to_string(),
                reason: "a json file must hold an array of objects".into(),
            })
        }
        Err(e) => {
            return Err(VeloError::BadRecord {
                location: format!("{}:{}", path.display(), e.line()),
                reason: e.to_string(),
            })
        }
    };
    let mut data = Vec::with_capacity(text.len());
    for v in values {
        data.extend_from_slice(v.to_string().as_bytes());
        data.push(b'\n');
    }
    Ok(Block {
        file: index,
        path: Arc::new(path),
        data,
        first_line: 1,
        bytes: text.len() as u64,
    })
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
