//! `StreamExecutionEngine`: holds deployed queries by id and runs them synchronously.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

use super::join::LookupTable;
use super::processor::QueryProcessor;
use super::record::{batch_to_records, records_to_batch, StreamRecord};
use super::shard::KeyShard;
use super::snapshot::{PartitionStates, RestoredStates};
use crate::error::{Result, VeloError};
use crate::sql::PlannedQuery;

/// Deployed queries, keyed by query id (never by source: two queries over one source keep
/// separate state). Every entry point is synchronous except the thin channel wrapper.
#[derive(Default)]
pub struct StreamExecutionEngine {
    queries: HashMap<String, QueryProcessor>,
}

impl StreamExecutionEngine {
    /// An engine with no queries.
    pub fn new() -> Self {
        Self::default()
    }

    /// Deploys a planned query under its id; fails if the id is taken.
    pub fn deploy(&mut self, plan: PlannedQuery) -> Result<String> {
        self.install(QueryProcessor::new(plan)?)
    }

    /// Deploys a query whose watermark only moves through `advance_watermark` (a partition
    /// worker's share of a query: its router tracks event time over the whole input), with
    /// the loaded rows of the tables it joins.
    pub fn deploy_with_external_watermarks(
        &mut self,
        plan: PlannedQuery,
        tables: &[Arc<LookupTable>],
    ) -> Result<String> {
        self.install(QueryProcessor::with_tables(plan, tables)?.with_external_watermarks())
    }

    fn install(&mut self, processor: QueryProcessor) -> Result<String> {
        let id = processor.plan().id.clone();
        if self.queries.contains_key(&id) {
            return Err(VeloError::Config(format!(
                "a query named '{id}' is already deployed"
            )));
        }
        self.queries.insert(id.clone(), processor);
        Ok(id)
    }

    /// Removes a deployed query and its state.
    pub fn undeploy(&mut self, query_id: &str) -> Result<()> {
        self.queries
            .remove(query_id)
            .map(|_| ())
            .ok_or_else(|| VeloError::UnknownQuery(query_id.to_string()))
    }

    /// The deployed query ids.
    pub fn query_ids(&self) -> impl Iterator<Item = &str> {
        self.queries.keys().map(String::as_str)
    }

    /// The processor of a deployed query.
    pub fn processor(&self, query_id: &str) -> Result<&QueryProcessor> {
        self.queries
            .get(query_id)
            .ok_or_else(|| VeloError::UnknownQuery(query_id.to_string()))
    }

    fn processor_mut(&mut self, query_id: &str) -> Result<&mut QueryProcessor> {
        self.queries
            .get_mut(query_id)
            .ok_or_else(|| VeloError::UnknownQuery(query_id.to_string()))
    }

    /// The hot path: runs one input batch through the query and returns its output.
    pub fn execute_batch_sync(
        &mut self,
        query_id: &str,
        batch: RecordBatch,
    ) -> Result<Vec<RecordBatch>> {
        self.processor_mut(query_id)?.process_batch(batch)
    }

    /// Runs one batch of stream input `input` (0 for a query over one stream) through the
    /// query and returns its output.
    pub fn execute_batch_from(
        &mut self,
        query_id: &str,
        input: usize,
        batch: RecordBatch,
    ) -> Result<Vec<RecordBatch>> {
        self.processor_mut(query_id)?
            .process_batch_from(input, batch)
    }

    /// Moves the event time of the query's stream input `input` to `watermark`.
    pub fn advance_input_watermark(
        &mut self,
        query_id: &str,
        input: usize,
        watermark: i64,
    ) -> Result<Vec<RecordBatch>> {
        self.processor_mut(query_id)?
            .advance_input_watermark(input, watermark)
    }

    /// Runs one record through the same code as a one-row batch.
    pub fn execute_with_record_sync(
        &mut self,
        query_id: &str,
        record: &StreamRecord,
    ) -> Result<Vec<StreamRecord>> {
        let processor = self.processor_mut(query_id)?;
        let batch = records_to_batch(std::slice::from_ref(record), processor.input_schema())?;
        let mut out = Vec::new();
        for b in processor.process_batch(batch)? {
            out.extend(batch_to_records(&b, record)?);
        }
        Ok(out)
    }

    /// Async convenience: runs the record synchronously, then sends each output into a
    /// bounded channel (waiting for room), for callers consuming EMIT CHANGES as a stream.
    pub async fn execute_with_record(
        &mut self,
        query_id: &str,
        record: &StreamRecord,
        output: &mpsc::Sender<StreamRecord>,
    ) -> Result<()> {
        for r in self.execute_with_record_sync(query_id, record)? {
            output
                .send(r)
                .await
                .map_err(|_| VeloError::Execution("the output channel was closed".into()))?;
        }
        Ok(())
    }

    /// A bounded output channel for `execute_with_record`.
    pub fn output_channel(
        capacity: usize,
    ) -> (mpsc::Sender<StreamRecord>, mpsc::Receiver<StreamRecord>) {
        mpsc::channel(capacity.max(1))
    }

    /// The earliest event time the query still holds output for (None: nothing held).
    pub fn held_since(&self, query_id: &str) -> Result<Option<i64>> {
        Ok(self.processor(query_id)?.held_since())
    }

    /// Late records held for the dead-letter sink, taken once.
    pub fn take_dead_letters(&mut self, query_id: &str) -> Result<Vec<RecordBatch>> {
        Ok(self.processor_mut(query_id)?.take_dead_letters())
    }

    /// Moves the query's event time to `watermark`; returns the windows that closes.
    pub fn advance_watermark(
        &mut self,
        query_id: &str,
        watermark: i64,
    ) -> Result<Vec<RecordBatch>> {
        self.processor_mut(query_id)?.advance_watermark(watermark)
    }

    /// The query's state per operator, for a checkpoint.
    pub fn snapshot(&mut self, query_id: &str) -> Result<PartitionStates> {
        self.processor_mut(query_id)?.snapshot()
    }

    /// Loads a checkpoint's state into the query before any input (see
    /// `QueryProcessor::restore`).
    pub fn restore(
        &mut self,
        query_id: &str,
        states: &RestoredStates,
        shard: &KeyShard,
    ) -> Result<()> {
        self.processor_mut(query_id)?.restore(states, shard)
    }

    /// The query's bounded input ended: returns what that releases (EMIT FINAL groups).
    pub fn end_of_input(&mut self, query_id: &str) -> Result<Vec<RecordBatch>> {
        self.processor_mut(query_id)?.end_of_input()
    }
}
