//! A job over several streams (a UNION ALL): its inputs are read in turn, a batch from each
//! that has one, so the order is fixed for given inputs and batch sizes. Each batch is tagged
//! with its input; an input that ends says so, and the others go on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use super::inputs::JobInput;
use super::output::{lock, record_bad, DeadLetterFile};
use super::JobSummary;
use crate::connectors::file_source::FileSource;
use crate::error::{Result, VeloError};
use crate::partition::InputEvent;

/// Where one of the inputs is in its reading.
enum Reader<'a> {
    File {
        source: Box<FileSource>,
        name: String,
    },
    Memory(std::slice::Iter<'a, RecordBatch>),
    Done,
}

/// Every stream input of a job, read in turn.
pub(super) struct MergedInputs<'a> {
    readers: Vec<Reader<'a>>,
    next: usize,
    queued: VecDeque<InputEvent>,
}

impl<'a> MergedInputs<'a> {
    /// Opens `inputs` (input 0 first), each reading the columns of its schema; the outputs of
    /// earlier statements are in `outputs`.
    pub(super) fn open(
        inputs: &[(&JobInput, SchemaRef)],
        outputs: &'a BTreeMap<String, Vec<RecordBatch>>,
        dead_letter: &Mutex<DeadLetterFile>,
    ) -> Result<Self> {
        let readers = inputs
            .iter()
            .map(|(input, schema)| match input {
                JobInput::File(config) => {
                    let mut source = FileSource::open(config.clone())?;
                    source.set_projection(schema);
                    if let Some(p) = &config.dead_letter_path {
                        lock(dead_letter).open(p)?;
                    }
                    Ok(Reader::File {
                        source: Box::new(source),
                        name: config.name.clone(),
                    })
                }
                JobInput::Upstream(name) => Ok(Reader::Memory(
                    outputs.get(name).map(|b| b.iter()).unwrap_or_default(),
                )),
                // Refused when the script was planned.
                JobInput::Kafka(config) => Err(VeloError::Execution(format!(
                    "the Kafka topic '{}' cannot be read as one of several streams",
                    config.topic
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MergedInputs {
            readers,
            next: 0,
            queued: VecDeque::new(),
        })
    }

    /// The next event: a batch of the next input in turn, an input's end, or None once every
    /// input has ended. Bad records count in `summary` and go to the dead-letter file.
    pub(super) fn next(
        &mut self,
        summary: &mut JobSummary,
        dead_letter: &Mutex<DeadLetterFile>,
    ) -> Result<Option<InputEvent>> {
        if let Some(event) = self.queued.pop_front() {
            return Ok(Some(event));
        }
        while self.readers.iter().any(|r| !matches!(r, Reader::Done)) {
            let input = self.next;
            self.next = (input + 1) % self.readers.len();
            let batch = match &mut self.readers[input] {
                Reader::Done => continue,
                Reader::File { source, name } => match source.next_batch()? {
                    Some(chunk) => {
                        record_bad(summary, dead_letter, name, chunk.bad_records)?;
                        if chunk.batch.num_rows() == 0 {
                            // A followed file is idle: make what was written so far visible.
                            return Ok(Some(InputEvent::Idle));
                        }
                        Some(chunk.batch)
                    }
                    None => None,
                },
                Reader::Memory(batches) => batches.next().cloned(),
            };
            match batch {
                Some(batch) => {
                    summary.records_in += batch.num_rows() as u64;
                    return Ok(Some(InputEvent::InputBatch { input, batch }));
                }
                None => {
                    self.readers[input] = Reader::Done;
                    return Ok(Some(InputEvent::InputEnded(input)));
                }
            }
        }
        Ok(None)
    }
}
