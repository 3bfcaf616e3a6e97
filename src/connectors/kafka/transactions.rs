//! The exactly-once Kafka sink's transactions (`'<name>.delivery' = 'exactly_once'`): one
//! Kafka transaction per checkpoint epoch, committed once that epoch's checkpoint is durable.
//!
//! librdkafka cannot take over a transaction a crashed producer left open: a restart aborts
//! it. So each transaction also commits a marker, the epoch as the offset of a per-job
//! marker group (`send_offsets_to_transaction`), and a restart reads the marker back: the job
//! restores the checkpoint of the last epoch whose transaction committed, not a later one,
//! and writes the later epochs' rows again. Readers with `isolation.level=read_committed` see
//! every result row once.
//!
//! One transaction is open at a time. Between an epoch's barrier (its seal) and its commit,
//! rows of the next epoch are held in memory and sent when the next transaction begins: the
//! checkpoint writer seals an epoch only once the one before it is committed, so they are at
//! most one checkpoint's write time of output.

use std::time::Duration;

use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{Producer, ProducerContext};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::source::kafka_error;
use crate::connectors::sink::CommittedOutput;
use crate::error::{Result, VeloError};

/// How long a transaction call (init, offsets, commit, abort) may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the sink's transactions stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `init_transactions` has not run: the producer may not send yet.
    Uninitialized,
    /// Initialized, no transaction open (after a recovery).
    Idle,
    /// A transaction is open and takes rows.
    Open,
    /// The open transaction holds epoch `.0`'s rows and waits for its checkpoint; new rows
    /// are held back.
    Sealed(u64),
}

/// The transactions of one exactly-once Kafka sink.
pub struct Transactions {
    sink: String,
    /// The sink's topic; its partition 0 carries the marker offset.
    topic: String,
    marker_group: String,
    /// A consumer of the marker group that never subscribes: its group metadata goes with
    /// each transaction's marker, and it reads the marker back.
    marker: BaseConsumer,
    phase: Phase,
    /// Rows written after the seal, to send in the next transaction.
    held: Vec<RecordBatch>,
}

impl Transactions {
    /// Transactions of sink `sink` writing `topic`, whose marker group is `marker_group`,
    /// reaching the brokers with the producer's `client` settings.
    pub fn new(sink: &str, topic: &str, marker_group: &str, client: &ClientConfig) -> Result<Self> {
        let mut config = ClientConfig::new();
        for (k, v) in client.config_map() {
            if k == "bootstrap.servers" || k.starts_with("security.") || k.starts_with("sasl.") {
                config.set(k, v);
            }
        }
        let marker = config
            .set("group.id", marker_group)
            .set("enable.auto.commit", "false")
            // Wait for a transaction still completing rather than read a stale marker.
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| kafka_error(&format!("creating the marker reader of '{sink}'"), e))?;
        Ok(Transactions {
            sink: sink.to_string(),
            topic: topic.to_string(),
            marker_group: marker_group.to_string(),
            marker,
            phase: Phase::Uninitialized,
            held: Vec::new(),
        })
    }

    /// Whether a new row must wait for the next transaction.
    pub fn holds(&self) -> bool {
        matches!(self.phase, Phase::Sealed(_))
    }

    /// Keeps a row batch for the next transaction.
    pub fn hold(&mut self, batch: &RecordBatch) {
        self.held.push(batch.clone());
    }

    /// Whether a transaction is open to send into.
    pub fn check_open(&self) -> Result<()> {
        match self.phase {
            Phase::Open | Phase::Sealed(_) => Ok(()),
            Phase::Uninitialized | Phase::Idle => Err(VeloError::Execution(format!(
                "the exactly-once sink '{}' was written with no transaction open",
                self.sink
            ))),
        }
    }

    /// Closes the open transaction's rows as `epoch`'s (the producer was flushed).
    pub fn seal(&mut self, epoch: u64) -> Result<()> {
        match self.phase {
            Phase::Open => {
                self.phase = Phase::Sealed(epoch);
                Ok(())
            }
            other => Err(self.out_of_order(format!("sealing epoch {epoch}"), other)),
        }
    }

    /// Commits sealed `epoch` with its marker and opens the next transaction; returns the
    /// rows held meanwhile, to send into it.
    pub fn commit<C: ProducerContext>(
        &mut self,
        producer: &impl Producer<C>,
        epoch: u64,
    ) -> Result<Vec<RecordBatch>> {
        if self.phase != Phase::Sealed(epoch) {
            return Err(self.out_of_order(format!("committing epoch {epoch}"), self.phase));
        }
        let offset = i64::try_from(epoch)
            .map_err(|_| VeloError::Execution(format!("epoch {epoch} is past an offset")))?;
        let mut marker = TopicPartitionList::new();
        marker
            .add_partition_offset(&self.topic, 0, Offset::Offset(offset))
            .map_err(|e| self.failed("setting the commit marker", e))?;
        let group = self.marker.group_metadata().ok_or_else(|| {
            VeloError::Execution(format!(
                "sink '{}': no group metadata for marker group '{}'",
                self.sink, self.marker_group
            ))
        })?;
        producer
            .send_offsets_to_transaction(&marker, &group, TRANSACTION_TIMEOUT)
            .map_err(|e| self.failed("adding the commit marker to the transaction", e))?;
        producer
            .commit_transaction(TRANSACTION_TIMEOUT)
            .map_err(|e| self.failed(&format!("committing epoch {epoch}"), e))?;
        self.phase = Phase::Idle;
        self.begin(producer)?;
        Ok(std::mem::take(&mut self.held))
    }

    /// Discards whatever no commit covers (fencing an earlier run's open transaction), and
    /// reads through which epoch the output is committed.
    pub fn recover<C: ProducerContext>(
        &mut self,
        producer: &impl Producer<C>,
    ) -> Result<CommittedOutput> {
        match self.phase {
            Phase::Uninitialized => producer
                .init_transactions(TRANSACTION_TIMEOUT)
                .map_err(|e| self.failed("initializing transactions", e))?,
            Phase::Open | Phase::Sealed(_) => producer
                .abort_transaction(TRANSACTION_TIMEOUT)
                .map_err(|e| self.failed("aborting the open transaction", e))?,
            Phase::Idle => {}
        }
        self.phase = Phase::Idle;
        self.held.clear();
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, 0);
        let committed = self
            .marker
            .committed_offsets(list, TRANSACTION_TIMEOUT)
            .map_err(|e| self.failed("reading the commit marker", e))?;
        let epoch = committed.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) => u64::try_from(o).ok(),
            _ => None,
        });
        tracing::info!(sink = %self.sink, marker_group = %self.marker_group, ?epoch, "output committed through epoch");
        Ok(CommittedOutput::Through(epoch))
    }

    /// Opens a transaction for the rows to come (recovering first if nothing did).
    pub fn begin<C: ProducerContext>(&mut self, producer: &impl Producer<C>) -> Result<()> {
        if matches!(
            self.phase,
            Phase::Uninitialized | Phase::Open | Phase::Sealed(_)
        ) {
            self.recover(producer)?;
        }
        producer
            .begin_transaction()
            .map_err(|e| self.failed("beginning a transaction", e))?;
        self.phase = Phase::Open;
        Ok(())
    }

    fn failed(&self, what: &str, e: rdkafka::error::KafkaError) -> VeloError {
        kafka_error(&format!("exactly-once sink '{}' {what}", self.sink), e)
    }

    fn out_of_order(&self, what: String, phase: Phase) -> VeloError {
        VeloError::Execution(format!(
            "exactly-once sink '{}': {what} while its transactions are {phase:?}",
            self.sink
        ))
    }
}
