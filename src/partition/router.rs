//! Routing: which partition worker each input row goes to. Keyed queries hash their key
//! (GROUP BY or PARTITION BY expressions, evaluated on the input) so a key's rows always
//! meet the same worker and its state; stateless queries deal whole batches round-robin.

use std::sync::Arc;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;
use crate::sql::{PlanStage, PlannedQuery};

/// How a query's input is spread over partition workers.
#[derive(Debug, Clone)]
pub enum Routing {
    /// One worker sees every row; the reason says why the query cannot be split.
    Single(&'static str),
    /// No state: whole batches go to the workers in turn.
    RoundRobin,
    /// Rows go to `hash(key) % partitions`.
    Hash(Vec<Arc<dyn PhysicalExpr>>),
}

impl Routing {
    /// The routing `plan` allows. A query splits by key when its first stateful stage is
    /// keyed and reads the input columns directly (only filters before it), and nothing after
    /// it needs every row in one place (ORDER BY, LIMIT, DISTINCT, a second keyed stage).
    pub fn for_plan(plan: &PlannedQuery) -> Routing {
        let mut key: Option<Vec<Arc<dyn PhysicalExpr>>> = None;
        let mut reshaped = false;
        for stage in &plan.stages {
            let stage_key = match stage {
                PlanStage::Filter { .. } => continue,
                PlanStage::Project { .. } => {
                    reshaped = true;
                    continue;
                }
                PlanStage::Sort { .. } => return Routing::Single("ORDER BY sorts all rows"),
                PlanStage::Limit { .. } => return Routing::Single("LIMIT counts all rows"),
                PlanStage::Distinct => return Routing::Single("DISTINCT compares all rows"),
                PlanStage::Aggregate(agg) => {
                    let window_keys = agg
                        .window
                        .as_ref()
                        .map(|w| [w.start_key, w.end_key])
                        .unwrap_or([usize::MAX; 2]);
                    agg.group_exprs
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !window_keys.contains(i))
                        .map(|(_, e)| Arc::clone(e))
                        .collect::<Vec<_>>()
                }
                PlanStage::Analytic { functions, .. } => {
                    let first = functions
                        .first()
                        .map(|f| f.partition_by.clone())
                        .unwrap_or_default();
                    if !functions
                        .iter()
                        .all(|f| same_exprs(&f.partition_by, &first))
                    {
                        return Routing::Single("the OVER clauses partition differently");
                    }
                    first
                }
            };
            if key.is_some() {
                return Routing::Single("a second keyed stage follows the first");
            }
            if reshaped {
                return Routing::Single("the keyed stage reads projected rows");
            }
            if stage_key.is_empty() {
                return Routing::Single("the query keeps one global state (no key)");
            }
            key = Some(stage_key);
        }
        match key {
            Some(k) => Routing::Hash(k),
            None => Routing::RoundRobin,
        }
    }
}

fn same_exprs(a: &[Arc<dyn PhysicalExpr>], b: &[Arc<dyn PhysicalExpr>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_string() == y.to_string())
}

/// Splits input batches into one piece per partition worker.
pub struct PartitionRouter {
    routing: Routing,
    partitions: usize,
    next: usize,
    hashes: Vec<u64>,
    rows: Vec<Vec<u32>>,
    random_state: RandomState,
}

impl PartitionRouter {
    /// A router over `partitions` workers (a `Single` routing always uses one).
    pub fn new(routing: Routing, partitions: usize) -> Self {
        let partitions = match routing {
            Routing::Single(_) => 1,
            _ => partitions.max(1),
        };
        PartitionRouter {
            routing,
            partitions,
            next: 0,
            hashes: Vec::new(),
            rows: vec![Vec::new(); partitions],
            random_state: RandomState::with_seed(0x7665_6c6f),
        }
    }

    /// How many workers the routing uses.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// The batch's rows per worker, in input order within each piece (None: no rows).
    pub fn split(&mut self, batch: RecordBatch) -> Result<Vec<Option<RecordBatch>>> {
        let mut pieces: Vec<Option<RecordBatch>> = vec![None; self.partitions];
        if self.partitions == 1 {
            pieces[0] = Some(batch);
            return Ok(pieces);
        }
        let key = match &self.routing {
            Routing::Hash(key) => key,
            _ => {
                pieces[self.next] = Some(batch);
                self.next = (self.next + 1) % self.partitions;
                return Ok(pieces);
            }
        };
        let arrays = key
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(batch.num_rows()))
            .collect::<datafusion::error::Result<Vec<ArrayRef>>>()?;
        self.hashes.clear();
        self.hashes.resize(batch.num_rows(), 0);
        create_hashes(&arrays, &self.random_state, &mut self.hashes)?;
        for rows in &mut self.rows {
            rows.clear();
        }
        let n = self.partitions as u64;
        for (row, hash) in self.hashes.iter().enumerate() {
            self.rows[(hash % n) as usize].push(row as u32);
        }
        for (piece, rows) in pieces.iter_mut().zip(&self.rows) {
            if rows.len() == batch.num_rows() {
                *piece = Some(batch.clone());
            } else if !rows.is_empty() {
                let indices = UInt32Array::from(rows.clone());
                *piece = Some(take_record_batch(&batch, &indices)?);
            }
        }
        Ok(pieces)
    }
}
