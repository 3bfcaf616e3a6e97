//! Routing: which partition worker each input row goes to. Keyed queries hash their key
//! (GROUP BY or PARTITION BY expressions, evaluated on the input) so a key's rows always
//! meet the same worker and its state; stateless queries deal whole batches round-robin.
//! A source already partitioned by (part of) the key feeds its partitions to the workers
//! directly: each source partition always goes to the same worker, with no hashing or gather.

use std::sync::Arc;

use arrow::array::{ArrayRef, UInt32Array};
use arrow::buffer::ScalarBuffer;
use arrow::compute::take_record_batch;
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{Result, VeloError};
use crate::exec::shard::{hash_keys, partition_of};
use crate::sql::{LookupKind, MergeKind, MergePlan, PlanStage, PlannedQuery};

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
        if let Some(merge) = plan.merge() {
            return Routing::for_merge(plan, merge).swap_remove(0);
        }
        let mut key: Option<Vec<Arc<dyn PhysicalExpr>>> = None;
        // How the rows a keyed stage reads relate to the input, whose columns the router
        // hashes.
        let mut layout = Layout::Input;
        for stage in &plan.stages {
            let stage_key = match stage {
                PlanStage::Filter { .. } => continue,
                PlanStage::Project { .. } => {
                    layout = Layout::Reshaped;
                    continue;
                }
                PlanStage::LookupJoin(join) => {
                    layout = match (layout, join.kind, join.stream_left) {
                        (layout, LookupKind::Semi | LookupKind::Anti { .. }, _) => layout,
                        (Layout::Input, _, true) => {
                            Layout::Prefix(plan.input_schema.fields().len())
                        }
                        (Layout::Prefix(n), _, true) => Layout::Prefix(n),
                        _ => Layout::Reshaped,
                    };
                    continue;
                }
                PlanStage::Merge(_) => {
                    layout = Layout::Reshaped;
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
            match layout {
                Layout::Input => {}
                Layout::Reshaped => {
                    return Routing::Single("the keyed stage reads projected rows");
                }
                Layout::Prefix(n) => {
                    let reads_input_only = stage_key
                        .iter()
                        .flat_map(collect_columns)
                        .all(|c| c.index() < n);
                    if !reads_input_only {
                        return Routing::Single("the keyed stage's key reads a joined table");
                    }
                }
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

impl Routing {
    /// The routing of each stream input (input 0 first): a query over several streams joins
    /// them by key on each worker, or deals out rows to workers when it keeps no state.
    pub fn for_inputs(plan: &PlannedQuery) -> Vec<Routing> {
        match plan.merge() {
            Some(merge) => Routing::for_merge(plan, merge),
            None => vec![Routing::for_plan(plan)],
        }
    }

    fn for_merge(plan: &PlannedQuery, merge: &MergePlan) -> Vec<Routing> {
        let inputs = merge.inputs.len() + 1;
        let merge_at = plan
            .stages
            .iter()
            .position(|s| matches!(s, PlanStage::Merge(_)))
            .unwrap_or(0);
        let lanes: Vec<&[PlanStage]> = std::iter::once(&plan.stages[..merge_at])
            .chain(merge.inputs.iter().map(|i| i.stages.as_slice()))
            .collect();
        let after = &plan.stages[merge_at + 1..];
        let stateless = |stages: &[PlanStage]| {
            stages.iter().all(|s| {
                matches!(
                    s,
                    PlanStage::Filter { .. } | PlanStage::Project { .. } | PlanStage::LookupJoin(_)
                )
            })
        };
        let single = |reason| vec![Routing::Single(reason); inputs];
        if !stateless(after) {
            return single("a query over several streams keeps its state in one place");
        }
        match &merge.kind {
            MergeKind::Union if lanes.iter().all(|l| stateless(l)) => {
                vec![Routing::RoundRobin; inputs]
            }
            MergeKind::Union => single("a query over several streams keeps its state in one place"),
            MergeKind::IntervalJoin(join) => {
                // Each side is hashed by its join key, which must read the input's columns.
                let filters_only = lanes
                    .iter()
                    .all(|l| l.iter().all(|s| matches!(s, PlanStage::Filter { .. })));
                if !filters_only {
                    return single("a side of the join reshapes its rows before the join");
                }
                join.keys.iter().map(|k| Routing::Hash(k.clone())).collect()
            }
            // A changelog side is an aggregate's output, made in one place.
            MergeKind::ChangelogJoin(_) => {
                single("a side of the join is an aggregate's changelog, kept in one place")
            }
        }
    }
}

/// How rows at some stage relate to the input rows.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// The input's columns, as they came.
    Input,
    /// The input's first `n` columns come first, then columns a join added.
    Prefix(usize),
    /// Columns computed from the input.
    Reshaped,
}

fn same_exprs(a: &[Arc<dyn PhysicalExpr>], b: &[Arc<dyn PhysicalExpr>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_string() == y.to_string())
}

/// A run of consecutive rows of a batch that all come from one source partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRun {
    /// The source partition (a Kafka partition).
    pub partition: i32,
    /// How many rows the run holds.
    pub rows: usize,
}

/// Splits input batches into one piece per partition worker.
pub struct PartitionRouter {
    routing: Routing,
    partitions: usize,
    /// The source's partitions split the key (and there is more than one worker): route by
    /// source partition instead of by hash.
    direct: bool,
    next: usize,
    hashes: Vec<u64>,
    /// Each row's partition (reused between batches).
    targets: Vec<u32>,
    /// Each partition's first slot in the row buffer, and the end (reused between batches).
    starts: Vec<usize>,
}

impl PartitionRouter {
    /// A router over `partitions` workers (a `Single` routing always uses one).
    /// `source_key`: the input columns the source is partitioned by (equal values never come
    /// from two source partitions); when the routing key holds all of them, every key lives in
    /// one source partition and batches that say their partitions are fed directly.
    pub fn new(routing: Routing, partitions: usize, source_key: &[String]) -> Self {
        let partitions = match routing {
            Routing::Single(_) => 1,
            _ => partitions.max(1),
        };
        let direct = match &routing {
            Routing::Hash(key) => {
                partitions > 1
                    && !source_key.is_empty()
                    && source_key.iter().all(|name| {
                        key.iter().any(|e| {
                            e.as_ref()
                                .downcast_ref::<Column>()
                                .is_some_and(|c| c.name() == name)
                        })
                    })
            }
            _ => false,
        };
        PartitionRouter {
            routing,
            partitions,
            direct,
            next: 0,
            hashes: Vec::new(),
            targets: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// How many workers the routing uses.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// True when batches from a partitioned source go to workers by source partition.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Splits a batch whose rows come in `runs` from the source's partitions. With direct
    /// routing, each run goes whole to its source partition's worker (a slice, no copy);
    /// otherwise the batch is split by key hash like any other.
    pub fn split_runs(
        &mut self,
        batch: RecordBatch,
        runs: &[PartitionRun],
    ) -> Result<Vec<Option<Piece>>> {
        if !self.is_direct() {
            return self.split(batch);
        }
        let mut slices: Vec<Vec<RecordBatch>> = vec![Vec::new(); self.partitions];
        let mut offset = 0;
        for run in runs {
            let rows = run.rows.min(batch.num_rows() - offset);
            if rows > 0 {
                let worker = run.partition.rem_euclid(self.partitions as i32) as usize;
                slices[worker].push(batch.slice(offset, rows));
            }
            offset += rows;
        }
        if offset < batch.num_rows() {
            return Err(VeloError::Execution(format!(
                "the partition runs cover {offset} of the batch's {} rows",
                batch.num_rows()
            )));
        }
        Ok(slices
            .into_iter()
            .map(|s| match s.len() {
                0 => None,
                1 => s.into_iter().next().map(Piece::Whole),
                _ => Some(Piece::Slices(s)),
            })
            .collect())
    }

    /// The batch's rows per worker, in input order within each piece (None: no rows). Only
    /// row numbers are computed here; each worker gathers its own rows, in parallel.
    pub fn split(&mut self, batch: RecordBatch) -> Result<Vec<Option<Piece>>> {
        let mut pieces: Vec<Option<Piece>> = vec![None; self.partitions];
        if self.partitions == 1 {
            pieces[0] = Some(Piece::Whole(batch));
            return Ok(pieces);
        }
        let key = match &self.routing {
            Routing::Hash(key) => key,
            _ => {
                pieces[self.next] = Some(Piece::Whole(batch));
                self.next = (self.next + 1) % self.partitions;
                return Ok(pieces);
            }
        };
        let arrays = key
            .iter()
            .map(|e| e.evaluate(&batch)?.into_array(batch.num_rows()))
            .collect::<datafusion::error::Result<Vec<ArrayRef>>>()?;
        hash_keys(&arrays, batch.num_rows(), &mut self.hashes)?;
        let n = self.partitions;
        self.targets.clear();
        self.targets
            .extend(self.hashes.iter().map(|hash| partition_of(*hash, n)));
        let rows = rows_by_partition(&self.targets, self.partitions, &mut self.starts);
        let rows = ScalarBuffer::from(rows);
        for (p, piece) in pieces.iter_mut().enumerate() {
            let (start, end) = (self.starts[p], self.starts[p + 1]);
            if end - start == batch.num_rows() {
                *piece = Some(Piece::Whole(batch.clone()));
            } else if end > start {
                let rows = UInt32Array::new(rows.slice(start, end - start), None);
                *piece = Some(Piece::Rows(batch.clone(), rows));
            }
        }
        Ok(pieces)
    }
}

/// The row numbers grouped by partition, in row order within each (one buffer; partition
/// `p`'s rows are `starts[p]..starts[p + 1]`), for rows whose partitions are `targets`.
fn rows_by_partition(targets: &[u32], partitions: usize, starts: &mut Vec<usize>) -> Vec<u32> {
    starts.clear();
    starts.resize(partitions + 1, 0);
    // One slot more than the rows: the branch-free passes below store every row somewhere.
    let mut rows = vec![0u32; targets.len() + 1];
    if partitions <= 4 {
        // A pass per partition that stores every row at the cursor and advances the cursor
        // only for the partition's own rows: no branch, and the cursor stays in a register.
        let mut at = 0;
        for (p, start) in starts.iter_mut().enumerate().take(partitions) {
            *start = at;
            for (row, &target) in targets.iter().enumerate() {
                rows[at] = row as u32;
                at += usize::from(target as usize == p);
            }
        }
        starts[partitions] = at;
    } else {
        // A counting sort: one pass to count, one to place.
        for &target in targets {
            starts[target as usize + 1] += 1;
        }
        for p in 0..partitions {
            starts[p + 1] += starts[p];
        }
        let mut next = starts.clone();
        for (row, &target) in targets.iter().enumerate() {
            let slot = &mut next[target as usize];
            rows[*slot] = row as u32;
            *slot += 1;
        }
    }
    rows.truncate(targets.len());
    rows
}

/// One worker's share of an input batch.
#[derive(Debug, Clone)]
pub enum Piece {
    /// All of the batch.
    Whole(RecordBatch),
    /// These rows of the (shared) batch, in order.
    Rows(RecordBatch, UInt32Array),
    /// Slices of the batch (runs of the worker's source partitions), in order.
    Slices(Vec<RecordBatch>),
}

impl Piece {
    /// The rows as batches of their own, in order.
    pub fn into_batches(self) -> Result<Vec<RecordBatch>> {
        match self {
            Piece::Whole(batch) => Ok(vec![batch]),
            Piece::Rows(batch, rows) => Ok(vec![take_record_batch(&batch, &rows)?]),
            Piece::Slices(slices) => Ok(slices),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::QueryPlanner;
    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Int64, true),
        ]))
    }

    /// The routing key of `GROUP BY s`.
    fn key_s() -> Vec<Arc<dyn PhysicalExpr>> {
        match routing("SELECT s, COUNT(*) FROM t GROUP BY s") {
            Routing::Hash(key) => key,
            other => panic!("not hashed: {other:?}"),
        }
    }

    fn routing(sql: &str) -> Routing {
        let mut planner = QueryPlanner::new();
        let schema = schema();
        planner.register_source("t", schema).expect("source");
        Routing::for_plan(&planner.plan_sql(sql, "q").expect("plan"))
    }

    fn key_names(r: &Routing) -> Vec<String> {
        match r {
            Routing::Hash(k) => k.iter().map(|e| e.to_string()).collect(),
            other => panic!("not hashed: {other:?}"),
        }
    }

    #[test]
    fn keys_come_from_group_by_and_partition_by_without_window_columns() {
        assert_eq!(
            key_names(&routing("SELECT s, COUNT(*) FROM t GROUP BY s")).len(),
            1
        );
        let windowed = routing("SELECT s, COUNT(*) FROM t GROUP BY s WINDOW TUMBLING(ts, 1m)");
        assert_eq!(
            key_names(&windowed).len(),
            1,
            "window columns are not routing keys"
        );
        assert!(key_names(&routing(
            "SELECT UPPER(s) AS u, COUNT(*) FROM t GROUP BY UPPER(s)"
        ))[0]
            .contains("upper"));
        assert_eq!(
            key_names(&routing(
                "SELECT s, LAG(v) OVER (PARTITION BY s ORDER BY ts) FROM t"
            ))
            .len(),
            1
        );
        assert!(matches!(
            routing("SELECT s, v FROM t WHERE v > 1"),
            Routing::RoundRobin
        ));
        for single in [
            "SELECT COUNT(*) FROM t",
            "SELECT s FROM t ORDER BY s",
            "SELECT s FROM t LIMIT 3",
            "SELECT DISTINCT s FROM t",
            "SELECT s, ROW_NUMBER() OVER (ORDER BY ts) FROM t",
        ] {
            assert!(matches!(routing(single), Routing::Single(_)), "{single}");
        }
    }

    #[test]
    fn a_key_always_lands_on_the_same_worker_in_input_order() {
        let (key, schema) = (key_s(), schema());
        let mut router = PartitionRouter::new(Routing::Hash(key), 4, &[]);
        let mut home: std::collections::HashMap<String, usize> = Default::default();
        let mut used = std::collections::HashSet::new();
        for round in 0..3i64 {
            let n = 200;
            let keys: StringArray = (0..n)
                .map(|i| Some(format!("k{}", (i * 7 + round) % 50)))
                .collect();
            let values = Int64Array::from_iter_values((0..n).map(|i| round * 1000 + i));
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(keys),
                    Arc::new(values),
                    Arc::new(Int64Array::from(vec![0; n as usize])),
                ],
            )
            .expect("batch");
            let mut total = 0;
            for (worker, piece) in router.split(batch).expect("split").into_iter().enumerate() {
                let Some(piece) = piece else { continue };
                let [rows] = <[RecordBatch; 1]>::try_from(piece.into_batches().expect("rows"))
                    .expect("one batch");
                total += rows.num_rows();
                used.insert(worker);
                let keys = rows
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("keys");
                let values = rows
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("v");
                assert!(
                    values.values().windows(2).all(|w| w[0] < w[1]),
                    "input order kept"
                );
                for i in 0..keys.len() {
                    let at = *home.entry(keys.value(i).to_string()).or_insert(worker);
                    assert_eq!(at, worker, "key {} moved", keys.value(i));
                }
            }
            assert_eq!(total, n as usize);
        }
        assert_eq!(used.len(), 4, "50 keys spread over every worker");
    }

    #[test]
    fn runs_of_a_source_partitioned_by_the_key_go_whole_to_their_worker() {
        let (key, schema) = (key_s(), schema());
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from_iter_values(
                    (0..10).map(|i| format!("k{i}")),
                )),
                Arc::new(Int64Array::from_iter_values(0..10)),
                Arc::new(Int64Array::from(vec![0; 10])),
            ],
        )
        .expect("batch");
        let runs = [(0, 3), (1, 2), (2, 4), (0, 1)]
            .map(|(partition, rows)| PartitionRun { partition, rows });
        let values = |piece: Option<Piece>| -> Vec<Vec<i64>> {
            piece
                .map(|p| p.into_batches().expect("batches"))
                .unwrap_or_default()
                .iter()
                .map(|b| {
                    let v = b
                        .column(1)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("v");
                    v.values().to_vec()
                })
                .collect()
        };
        let mut direct = PartitionRouter::new(Routing::Hash(key.clone()), 2, &["s".into()]);
        assert!(direct.is_direct());
        let pieces = direct.split_runs(batch.clone(), &runs).expect("split");
        let [first, second] = <[Option<Piece>; 2]>::try_from(pieces).expect("two pieces");
        assert_eq!(
            values(first),
            vec![vec![0, 1, 2], vec![5, 6, 7, 8], vec![9]]
        );
        assert_eq!(values(second), vec![vec![3, 4]]);

        let short = [PartitionRun {
            partition: 0,
            rows: 4,
        }];
        assert!(direct.split_runs(batch.clone(), &short).is_err());

        let mut hashed = PartitionRouter::new(Routing::Hash(key), 2, &["v".into()]);
        assert!(!hashed.is_direct(), "the source key is not the routing key");
        let total: usize = hashed
            .split_runs(batch, &runs)
            .expect("split")
            .into_iter()
            .flatten()
            .flat_map(|p| p.into_batches().expect("batches"))
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(total, 10);
    }

    #[test]
    fn rows_are_grouped_by_partition_in_row_order() {
        let mut state = 11u64;
        for partitions in [2, 3, 4, 5, 16] {
            let targets: Vec<u32> = (0..1000)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((state >> 33) % partitions as u64) as u32
                })
                .collect();
            let mut starts = Vec::new();
            let rows = rows_by_partition(&targets, partitions, &mut starts);
            assert_eq!(rows.len(), targets.len());
            for p in 0..partitions {
                let expected: Vec<u32> = (0..targets.len() as u32)
                    .filter(|&r| targets[r as usize] == p as u32)
                    .collect();
                assert_eq!(
                    rows[starts[p]..starts[p + 1]],
                    expected[..],
                    "{partitions}/{p}"
                );
            }
        }
    }
}
