//! A job's stream inputs as one source of pipeline events: files, earlier statements' output
//! and Kafka topics, mixed. Bounded inputs with event time are read furthest-behind first (the
//! input whose latest event time is earliest); otherwise (a topic or a followed file among
//! them, or an input without event time) in turn, a batch at a time, so the order
//! is fixed for given bounded inputs and batch sizes. Each batch is tagged with its input; an
//! input that ends says so, and the others go on.
//!
//! A Kafka input is polled without waiting while another input has data, follows each poll
//! with a commit barrier to its offset committer (without durable state) or advances the
//! checkpoint trigger's positions (with it), and reports its partition assignment, so that
//! each of its partitions holds its input's watermark until it has sent data.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use super::durable::CheckpointTrigger;
use super::inputs::JobInput;
use super::kafka::Barrier;
use super::output::{lock, record_bad, DeadLetterFile};
use super::JobSummary;
use crate::connectors::file_source::{FileSource, FileSourceConfig};
use crate::connectors::kafka::KafkaSource;
use crate::error::Result;
use crate::exec::window::event_times;
use crate::metrics::JobMetrics;
use crate::partition::InputEvent;

/// How often a Kafka input's consumer lag is republished.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// How long a poll of Kafka waits for a first message when no input had data last round.
const KAFKA_POLL_WAIT: Duration = Duration::from_millis(100);

/// One Kafka input: its source, and where its barriers go.
pub(super) struct KafkaReader {
    pub name: String,
    pub source: KafkaSource,
    /// Its index among the job's Kafka inputs (in checkpoint positions).
    pub slot: usize,
    /// To its offset committer (without durable state).
    pub barriers: Option<Sender<Barrier>>,
    /// Its index among the job's stream inputs.
    pub input: usize,
    /// Where its consumer lag is published, and when it last was.
    pub metrics: Arc<JobMetrics>,
    pub lag_published: Option<Instant>,
}

/// Where one of the inputs is in its reading.
enum Reader<'a> {
    File {
        config: FileSourceConfig,
        schema: SchemaRef,
        source: Box<FileSource>,
    },
    Memory {
        batches: &'a [RecordBatch],
        next: usize,
    },
    Kafka(Box<KafkaReader>),
}

/// What reading found besides events: a Kafka input lost partitions to another member of
/// its group.
pub(super) struct Revoked {
    pub source: String,
    pub partitions: Vec<i32>,
}

/// Every stream input of a job, read in turn.
pub(super) struct StreamInputs<'a> {
    readers: Vec<Reader<'a>>,
    /// Per input: it has ended.
    ended: Vec<bool>,
    next: usize,
    queued: VecDeque<InputEvent>,
    /// Some input had data in the current round: Kafka polls do not wait.
    busy: bool,
    /// The last commit barrier's id, over every Kafka input.
    barrier: u64,
    /// Bounded inputs only: each input's event time (over its columns) and the latest read so
    /// far. The input furthest behind is read next, so a join's sides advance together and its
    /// state holds what the bound asks, not the difference in the inputs' reading speed.
    aligned: Option<Vec<ReadTime>>,
}

/// A bounded input's event time over its columns, and the latest read so far.
type ReadTime = (SchemaRef, Arc<dyn PhysicalExpr>, Option<i64>);

impl<'a> StreamInputs<'a> {
    /// Opens `inputs` (input 0 first), each reading the columns of its schema; the outputs of
    /// earlier statements are in `outputs`, and Kafka inputs come open in `kafka` (in input
    /// order).
    /// `times` holds each input's event time over its columns, where it has one.
    pub(super) fn open(
        inputs: &[(&JobInput, SchemaRef)],
        times: &[Option<Arc<dyn PhysicalExpr>>],
        outputs: &'a BTreeMap<String, Vec<RecordBatch>>,
        mut kafka: Vec<KafkaReader>,
        dead_letter: &Mutex<DeadLetterFile>,
    ) -> Result<Self> {
        // A followed file may idle while behind: reading it first would starve the others.
        let followed = inputs
            .iter()
            .any(|(input, _)| matches!(input, JobInput::File(c) if c.watch));
        let aligned = (kafka.is_empty() && !followed && inputs.len() > 1)
            .then(|| {
                inputs
                    .iter()
                    .zip(times)
                    .map(|((_, schema), time)| {
                        time.clone().map(|t| (SchemaRef::clone(schema), t, None))
                    })
                    .collect::<Option<Vec<_>>>()
            })
            .flatten();
        kafka.reverse();
        let mut readers = Vec::with_capacity(inputs.len());
        for (input, schema) in inputs {
            let reader = match input {
                JobInput::File(config) => {
                    if let Some(p) = &config.dead_letter_path {
                        lock(dead_letter).open(p)?;
                    }
                    Reader::File {
                        config: config.clone(),
                        schema: SchemaRef::clone(schema),
                        source: Box::new(open_file(config, schema)?),
                    }
                }
                JobInput::Upstream(name) => Reader::Memory {
                    batches: outputs.get(name).map(Vec::as_slice).unwrap_or_default(),
                    next: 0,
                },
                JobInput::Kafka(config) => match kafka.pop() {
                    Some(reader) => Reader::Kafka(Box::new(reader)),
                    None => {
                        return Err(crate::error::VeloError::Execution(format!(
                            "the Kafka topic '{}' was not opened",
                            config.topic
                        )))
                    }
                },
            };
            readers.push(reader);
        }
        Ok(StreamInputs {
            ended: vec![false; readers.len()],
            readers,
            next: 0,
            queued: VecDeque::new(),
            busy: false,
            barrier: 0,
            aligned,
        })
    }

    /// The Kafka inputs, in input order.
    pub(super) fn kafka_mut(&mut self) -> impl Iterator<Item = &mut KafkaReader> + use<'_, 'a> {
        self.readers.iter_mut().filter_map(|r| match r {
            Reader::Kafka(k) => Some(k.as_mut()),
            _ => None,
        })
    }

    /// Reads every bounded input again from its start after the pipeline stopped to start
    /// over (Kafka inputs are moved by the caller). Events queued before are dropped.
    pub(super) fn restart(&mut self) -> Result<()> {
        self.queued.clear();
        self.next = 0;
        self.ended.fill(false);
        for (_, _, latest) in self.aligned.iter_mut().flatten() {
            *latest = None;
        }
        for reader in &mut self.readers {
            match reader {
                Reader::File {
                    config,
                    schema,
                    source,
                } => **source = open_file(config, schema)?,
                Reader::Memory { next, .. } => *next = 0,
                Reader::Kafka(_) => {}
            }
        }
        Ok(())
    }

    /// The next event queued by an earlier read, if any.
    pub(super) fn take_queued(&mut self) -> Option<InputEvent> {
        self.queued.pop_front()
    }

    /// Queues `event` after those queued already (a snapshot barrier after a poll).
    pub(super) fn queue(&mut self, event: InputEvent) {
        self.queued.push_back(event);
    }

    /// The next event: a batch of the next input in turn, an input's end, an idle Kafka poll
    /// (with its barrier), or None once every input has ended; Err(Revoked) through `revoked`
    /// when a Kafka input lost partitions. Bad records count in `summary` and go to the
    /// dead-letter file; Kafka positions advance `trigger`.
    pub(super) fn next(
        &mut self,
        summary: &mut JobSummary,
        dead_letter: &Mutex<DeadLetterFile>,
        mut trigger: Option<&mut CheckpointTrigger>,
        revoked: &mut Option<Revoked>,
    ) -> Result<Option<InputEvent>> {
        if let Some(event) = self.queued.pop_front() {
            return Ok(Some(event));
        }
        while self.ended.iter().any(|e| !e) {
            let input = self.furthest_behind().unwrap_or(self.next);
            self.next = (input + 1) % self.readers.len();
            if input == 0 {
                self.busy = false;
            }
            if self.ended[input] {
                continue;
            }
            let batch = match &mut self.readers[input] {
                Reader::File { config, source, .. } => match source.next_batch()? {
                    Some(chunk) => {
                        record_bad(summary, dead_letter, &config.name, chunk.bad_records)?;
                        if chunk.batch.num_rows() == 0 {
                            // A followed file is idle: make what was written so far visible.
                            return Ok(Some(InputEvent::Idle));
                        }
                        Some(chunk.batch)
                    }
                    None => None,
                },
                Reader::Memory { batches, next } => {
                    let batch = batches.get(*next).cloned();
                    *next += 1;
                    batch
                }
                Reader::Kafka(_) => {
                    let wait = if self.busy {
                        Duration::ZERO
                    } else {
                        KAFKA_POLL_WAIT
                    };
                    let had_data =
                        self.poll_kafka(input, wait, summary, dead_letter, &mut trigger, revoked)?;
                    self.busy |= had_data;
                    if revoked.is_some() {
                        return Ok(Some(InputEvent::Stop));
                    }
                    return Ok(self.queued.pop_front());
                }
            };
            match batch {
                Some(batch) => {
                    self.busy = true;
                    self.note_time(input, &batch);
                    summary.records_in += batch.num_rows() as u64;
                    return Ok(Some(InputEvent::InputBatch { input, batch }));
                }
                None => {
                    self.ended[input] = true;
                    return Ok(Some(InputEvent::InputEnded(input)));
                }
            }
        }
        Ok(None)
    }

    /// With aligned reading: the input not ended whose latest event time is earliest (one
    /// with none read yet first).
    fn furthest_behind(&self) -> Option<usize> {
        let aligned = self.aligned.as_ref()?;
        aligned
            .iter()
            .enumerate()
            .filter(|(k, _)| !self.ended[*k])
            .min_by_key(|(_, (_, _, latest))| latest.unwrap_or(i64::MIN))
            .map(|(k, _)| k)
    }

    /// Advances input `input`'s latest event time over `batch`; reading goes back to turns
    /// when its times cannot be read (a batch in other columns than planned).
    fn note_time(&mut self, input: usize, batch: &RecordBatch) {
        let Some(aligned) = self.aligned.as_mut() else {
            return;
        };
        let (schema, time, latest) = &mut aligned[input];
        let max = match batch.schema().fields() == schema.fields() {
            true => event_times(time, batch)
                .ok()
                .and_then(|t| arrow::compute::max(&t)),
            false => None,
        };
        match max {
            Some(t) => *latest = Some(latest.map_or(t, |l| l.max(t))),
            None => self.aligned = None,
        }
    }

    /// Polls Kafka input `input` once, queueing its assignment change, its batch (or Idle) and
    /// its commit barrier; true when it had records.
    fn poll_kafka(
        &mut self,
        input: usize,
        wait: Duration,
        summary: &mut JobSummary,
        dead_letter: &Mutex<DeadLetterFile>,
        trigger: &mut Option<&mut CheckpointTrigger>,
        revoked: &mut Option<Revoked>,
    ) -> Result<bool> {
        let Reader::Kafka(kafka) = &mut self.readers[input] else {
            return Ok(false);
        };
        let polled = kafka.source.next_batch(wait)?;
        if kafka
            .lag_published
            .is_none_or(|at| at.elapsed() >= LAG_EVERY)
        {
            let lags = kafka.source.consumer_lag()?;
            kafka
                .metrics
                .publish_kafka_lag(kafka.input, kafka.source.topic(), &lags);
            kafka.lag_published = Some(Instant::now());
        }
        // After the poll: the group join that assigns partitions happens inside it, and the
        // clock must know every partition before a batch counts.
        if let Some(change) = kafka.source.assignment_if_changed()? {
            if !change.revoked.is_empty() {
                // The state of every key may hold records of a revoked partition: stop, and
                // start over. The polled batch is read again.
                *revoked = Some(Revoked {
                    source: kafka.name.clone(),
                    partitions: change.revoked,
                });
                return Ok(false);
            }
            tracing::info!(source = %kafka.name, partitions = ?change.assigned, "partitions assigned");
            self.queued.push_back(InputEvent::Partitions {
                input,
                ids: change.assigned,
            });
        }
        // Every poll ends with a commit barrier; an idle one (no records, no offsets) still
        // lets the output side commit what is done.
        let (next_offsets, had_data) = match polled {
            Some(polled) => {
                summary.records_in += polled.batch.num_rows() as u64;
                record_bad(summary, dead_letter, &kafka.name, polled.bad_records)?;
                self.queued.push_back(InputEvent::PartitionedBatch {
                    input,
                    batch: polled.batch,
                    runs: polled.runs,
                });
                (polled.next_offsets, true)
            }
            None => {
                self.queued.push_back(InputEvent::Idle);
                (BTreeMap::new(), false)
            }
        };
        if let Some(t) = trigger.as_deref_mut() {
            t.advance(kafka.slot, &next_offsets);
        }
        if let Some(barriers) = &kafka.barriers {
            self.barrier += 1;
            // The committer may have stopped with an error; the output side reports it.
            let _ = barriers.send(Barrier {
                id: self.barrier,
                next_offsets,
            });
            self.queued.push_back(InputEvent::Checkpoint(self.barrier));
        }
        Ok(had_data)
    }
}

fn open_file(config: &FileSourceConfig, schema: &SchemaRef) -> Result<FileSource> {
    let mut source = FileSource::open(config.clone())?;
    source.set_projection(schema);
    Ok(source)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    use super::*;

    /// Batches of one `ts` column, one batch per list of times.
    fn batches(times: &[&[i64]]) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Int64, true)]));
        times
            .iter()
            .map(|t| {
                let column = Arc::new(Int64Array::from(t.to_vec()));
                RecordBatch::try_new(Arc::clone(&schema), vec![column]).expect("batch")
            })
            .collect()
    }

    /// The inputs of every event, in order: a batch's input, or an end's (as `end k`).
    fn order(outputs: &BTreeMap<String, Vec<RecordBatch>>, timed: bool) -> Vec<String> {
        let (a, b) = (
            JobInput::Upstream("a".into()),
            JobInput::Upstream("b".into()),
        );
        let schema = outputs["a"][0].schema();
        let inputs = [(&a, Arc::clone(&schema)), (&b, schema)];
        let time: Arc<dyn PhysicalExpr> = Arc::new(Column::new("ts", 0));
        let times = vec![timed.then(|| Arc::clone(&time)); 2];
        let dead_letter = Mutex::new(DeadLetterFile::new(Default::default()));
        let mut streams =
            StreamInputs::open(&inputs, &times, outputs, Vec::new(), &dead_letter).expect("open");
        let mut summary = JobSummary::default();
        let mut seen = Vec::new();
        while let Some(event) = streams
            .next(&mut summary, &dead_letter, None, &mut None)
            .expect("next")
        {
            seen.push(match event {
                InputEvent::InputBatch { input, batch } => {
                    let ts = batch.column(0).as_any().downcast_ref::<Int64Array>();
                    format!("{input}@{}", ts.map_or(-1, |t| t.value(0)))
                }
                InputEvent::InputEnded(k) => format!("end {k}"),
                _ => "other".into(),
            });
        }
        seen
    }

    #[test]
    fn bounded_inputs_are_read_furthest_behind_first() {
        // Input a moves 10 s a batch, input b 1 s: b is read until it catches up with a.
        let outputs = BTreeMap::from([
            ("a".to_string(), batches(&[&[0, 10_000], &[20_000]])),
            (
                "b".to_string(),
                batches(&[&[0], &[5_000], &[12_000], &[30_000]]),
            ),
        ]);
        assert_eq!(
            order(&outputs, true),
            ["0@0", "1@0", "1@5000", "1@12000", "0@20000", "1@30000", "end 0", "end 1"]
        );
        // Without event time, they take turns.
        assert_eq!(
            order(&outputs, false),
            ["0@0", "1@0", "0@20000", "1@5000", "end 0", "1@12000", "1@30000", "end 1"]
        );
    }
}
