//! `ChangelogJoinOperator`: an equi-join of two streams where one side or both are changelogs
//! (an aggregate's upsert stream, keyed by its GROUP BY columns). A new row of a key replaces
//! the old one, and a delete removes it; the join then retracts every pair the old row made
//! (emits it again as a delete) before it emits the new row's pairs. An outer side's row comes
//! out NULL-padded while it has no partner, and that padded row is retracted when one comes:
//! the output is a changelog too, whose live rows are always the join of the live inputs.
//! An append-only side's rows are kept for `'state.ttl'` of event time, then forgotten.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, Int64Array};
use arrow::compute::interleave;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{Result, VeloError};
use crate::exec::change::{is_delete, mark_delete};
use crate::exec::operator::{evaluate, evaluate_predicate, Operator};
use crate::exec::shard::KeyShard;
use crate::exec::snapshot::{column, OperatorState};
use crate::exec::window::{event_times, LateRecords};
use crate::sql::ChangelogJoinPlan;

use super::key_encoder::KeyEncoder;
use super::state_rows::{join_state, owned_side_rows, restored_clocks, side_state_rows};

/// A kept row: (batch id, row in the batch).
type RowRef = (u64, u32);

/// What the join knows of one kept row.
struct Kept {
    /// Its join key (None: a NULL in it, so it meets nothing).
    key: Option<Vec<u8>>,
    /// Its primary key, on a changelog side.
    primary_key: Option<Vec<u8>>,
    /// Its event time, on an append-only side.
    time: Option<i64>,
    /// How many partners it has met that are, or were until they expired, kept.
    partners: u32,
}

/// A batch some of whose rows are kept.
struct Stored {
    batch: RecordBatch,
    rows: Vec<Option<Kept>>,
    live: usize,
}

/// One side's kept rows.
#[derive(Default)]
struct Side {
    batches: BTreeMap<u64, Stored>,
    next_batch: u64,
    by_key: HashMap<Vec<u8>, Vec<RowRef>>,
    by_primary_key: HashMap<Vec<u8>, RowRef>,
    /// Append-only rows by event time: the order they expire in.
    by_time: BTreeSet<(i64, RowRef)>,
    len: usize,
}

impl Side {
    /// The bytes its kept rows' batches, keys and indexes hold.
    fn size(&self) -> usize {
        use std::mem::size_of;
        let batches: usize = self
            .batches
            .values()
            .map(|s| {
                s.batch.get_array_memory_size() + s.rows.capacity() * size_of::<Option<Kept>>()
            })
            .sum();
        let keys = |keys: &mut dyn Iterator<Item = &Vec<u8>>, value: usize| -> usize {
            keys.map(|k| k.capacity() + size_of::<Vec<u8>>() + value)
                .sum()
        };
        let by_key: usize = self
            .by_key
            .values()
            .map(|refs| refs.capacity() * size_of::<RowRef>())
            .sum();
        batches
            + keys(&mut self.by_key.keys(), size_of::<Vec<RowRef>>())
            + by_key
            + keys(&mut self.by_primary_key.keys(), size_of::<RowRef>())
            + self.by_time.len() * size_of::<(i64, RowRef)>()
    }

    fn kept_mut(&mut self, at: RowRef) -> Option<&mut Kept> {
        self.batches
            .get_mut(&at.0)?
            .rows
            .get_mut(at.1 as usize)?
            .as_mut()
    }

    /// The live rows of `key`.
    fn rows_of(&self, key: Option<&Vec<u8>>) -> Vec<RowRef> {
        key.and_then(|k| self.by_key.get(k))
            .cloned()
            .unwrap_or_default()
    }

    fn insert(&mut self, at: RowRef, kept: Kept) {
        if let Some(key) = &kept.key {
            self.by_key.entry(key.clone()).or_default().push(at);
        }
        if let Some(pk) = &kept.primary_key {
            self.by_primary_key.insert(pk.clone(), at);
        }
        if let Some(time) = kept.time {
            self.by_time.insert((time, at));
        }
        if let Some(stored) = self.batches.get_mut(&at.0) {
            if let Some(slot) = stored.rows.get_mut(at.1 as usize) {
                *slot = Some(kept);
                stored.live += 1;
                self.len += 1;
            }
        }
    }

    /// Forgets the row at `at`; its batch stays until `drop_done`, so output can still read it.
    fn remove(&mut self, at: RowRef) -> Option<Kept> {
        let stored = self.batches.get_mut(&at.0)?;
        let kept = stored.rows.get_mut(at.1 as usize)?.take()?;
        stored.live -= 1;
        self.len -= 1;
        if let Some(key) = &kept.key {
            if let Some(rows) = self.by_key.get_mut(key) {
                rows.retain(|r| *r != at);
                if rows.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
        if let Some(pk) = &kept.primary_key {
            if self.by_primary_key.get(pk) == Some(&at) {
                self.by_primary_key.remove(pk);
            }
        }
        if let Some(time) = kept.time {
            self.by_time.remove(&(time, at));
        }
        Some(kept)
    }

    fn drop_done(&mut self) {
        self.batches.retain(|_, stored| stored.live > 0);
    }
}

/// One output row: the left and right rows (None: NULL-padded), emitted or retracted.
struct Change {
    delete: bool,
    rows: [Option<RowRef>; 2],
}

impl Change {
    fn insert(rows: [Option<RowRef>; 2]) -> Self {
        Change {
            delete: false,
            rows,
        }
    }

    fn delete(rows: [Option<RowRef>; 2]) -> Self {
        Change { delete: true, rows }
    }
}

/// The join of input 0 (left) with input 1 (right), one side or both changelogs.
pub struct ChangelogJoinOperator {
    plan: ChangelogJoinPlan,
    schema: SchemaRef,
    sides: [Side; 2],
    watermarks: [i64; 2],
    keys: [KeyEncoder; 2],
    primary_keys: [KeyEncoder; 2],
    late: LateRecords,
}

impl ChangelogJoinOperator {
    /// The join of `plan`, emitting rows of `schema`.
    pub fn new(plan: ChangelogJoinPlan, schema: SchemaRef) -> Self {
        ChangelogJoinOperator {
            plan,
            schema,
            sides: Default::default(),
            watermarks: [i64::MIN; 2],
            keys: Default::default(),
            primary_keys: Default::default(),
            late: LateRecords::default(),
        }
    }

    /// Append-only rows with times before this are forgotten: the earlier watermark less the
    /// TTL. The end of a bounded input (an infinite watermark) expires nothing.
    fn expired_before(&self) -> i64 {
        let watermark = self.watermarks[0].min(self.watermarks[1]);
        if watermark == i64::MAX {
            return i64::MIN;
        }
        watermark.saturating_sub(self.plan.ttl_ms)
    }

    /// `side`'s rows of `batch`, its join keys, primary keys and times: what it keeps of each.
    fn describe(&mut self, side: usize, batch: &RecordBatch) -> Result<Vec<Kept>> {
        let n = batch.num_rows();
        let keys = self.plan.keys[side]
            .iter()
            .map(|k| evaluate(k, batch))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let (keys, null_key) = self.keys[side].encode(&keys, n)?;
        let primary_keys = match &self.plan.primary_keys[side] {
            Some(columns) => Some(self.primary_keys[side].encode_columns(batch, columns)?),
            None => None,
        };
        let times = match &self.plan.times[side] {
            Some(time) => Some(event_times(time, batch)?),
            None => None,
        };
        Ok((0..n)
            .map(|r| Kept {
                key: (!null_key[r]).then(|| keys.row(r).as_ref().to_vec()),
                primary_key: primary_keys.as_ref().map(|p| p.row(r).as_ref().to_vec()),
                time: times
                    .as_ref()
                    .map(|t| if t.is_null(r) { i64::MIN } else { t.value(r) }),
                partners: 0,
            })
            .collect())
    }

    /// The rows of `picks` (a left and a right row each, None for NULLs) as output columns.
    fn columns(&self, picks: &[[Option<RowRef>; 2]]) -> Result<Vec<ArrayRef>> {
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for side in 0..2 {
            let state = &self.sides[side];
            // Batch 0 of the interleave is a one-row batch of NULLs, for padded rows.
            let mut ids: Vec<u64> = Vec::new();
            let mut indices = Vec::with_capacity(picks.len());
            for pick in picks {
                indices.push(match pick[side] {
                    None => (0, 0),
                    Some((batch, row)) => {
                        let i = match ids.iter().position(|b| *b == batch) {
                            Some(i) => i,
                            None => {
                                ids.push(batch);
                                ids.len() - 1
                            }
                        };
                        (i + 1, row as usize)
                    }
                });
            }
            let batches = ids
                .iter()
                .map(|id| {
                    state.batches.get(id).map(|s| &s.batch).ok_or_else(|| {
                        VeloError::Execution("a kept row's batch of the join is missing".into())
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            for (c, field) in self.plan.side_schemas[side].fields().iter().enumerate() {
                let null = new_null_array(field.data_type(), 1);
                let mut values: Vec<&dyn Array> = vec![null.as_ref()];
                values.extend(batches.iter().map(|b| b.column(c).as_ref()));
                columns.push(interleave(&values, &indices)?);
            }
        }
        Ok(columns)
    }

    /// The rows of the other side that the row of `side` at `at` meets: its key's, passing
    /// the ON filter.
    fn partners(&self, side: usize, at: RowRef, key: Option<&Vec<u8>>) -> Result<Vec<RowRef>> {
        let candidates = self.sides[1 - side].rows_of(key);
        let Some(filter) = &self.plan.filter else {
            return Ok(candidates);
        };
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let picks: Vec<[Option<RowRef>; 2]> = candidates
            .iter()
            .map(|p| match side {
                0 => [Some(at), Some(*p)],
                _ => [Some(*p), Some(at)],
            })
            .collect();
        let pairs = self.output(self.columns(&picks)?, picks.len())?;
        let pass = evaluate_predicate(filter, &pairs)?;
        Ok(candidates
            .into_iter()
            .enumerate()
            .filter(|(i, _)| pass.is_valid(*i) && pass.value(*i))
            .map(|(_, p)| p)
            .collect())
    }

    fn output(&self, columns: Vec<ArrayRef>, n: usize) -> Result<RecordBatch> {
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }

    fn pair(side: usize, own: RowRef, partner: Option<RowRef>) -> [Option<RowRef>; 2] {
        match side {
            0 => [Some(own), partner],
            _ => [partner, Some(own)],
        }
    }

    /// Replaces `old` (None: nothing) of `side` with `new` (None: a delete) and emits the
    /// difference: `old`'s pairs retracted, `new`'s emitted, and each padded row that gains or
    /// loses its last partner flipped. A partner both rows meet keeps its padding as it was,
    /// so an update that keeps its key emits no padded rows that come and go.
    fn replace(
        &mut self,
        side: usize,
        old: Option<RowRef>,
        new: Option<(RowRef, Kept)>,
        changes: &mut Vec<Change>,
    ) -> Result<()> {
        let keeps = [self.plan.sides.keeps(0), self.plan.sides.keeps(1)];
        let other = 1 - side;
        let gone = match old {
            Some(at) => self.sides[side].remove(at).map(|kept| (at, kept)),
            None => None,
        };
        let old_partners = match &gone {
            Some((at, kept)) => self.partners(side, *at, kept.key.as_ref())?,
            None => Vec::new(),
        };
        let new_partners = match &new {
            Some((at, kept)) => self.partners(side, *at, kept.key.as_ref())?,
            None => Vec::new(),
        };
        if let Some((at, kept)) = &gone {
            if kept.partners == 0 && keeps[side] {
                changes.push(Change::delete(Self::pair(side, *at, None)));
            }
            for p in &old_partners {
                changes.push(Change::delete(Self::pair(side, *at, Some(*p))));
                if new_partners.contains(p) {
                    continue;
                }
                if let Some(partner) = self.sides[other].kept_mut(*p) {
                    partner.partners = partner.partners.saturating_sub(1);
                    if partner.partners == 0 && keeps[other] {
                        changes.push(Change::insert(Self::pair(other, *p, None)));
                    }
                }
            }
        }
        let Some((at, mut kept)) = new else {
            return Ok(());
        };
        if new_partners.is_empty() && keeps[side] {
            changes.push(Change::insert(Self::pair(side, at, None)));
        }
        for p in &new_partners {
            if !old_partners.contains(p) {
                if let Some(partner) = self.sides[other].kept_mut(*p) {
                    if partner.partners == 0 && keeps[other] {
                        changes.push(Change::delete(Self::pair(other, *p, None)));
                    }
                    partner.partners += 1;
                }
            }
            changes.push(Change::insert(Self::pair(side, at, Some(*p))));
        }
        kept.partners = new_partners.len() as u32;
        self.sides[side].insert(at, kept);
        Ok(())
    }

    fn process_side(
        &mut self,
        side: usize,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let deletes = is_delete(&batch);
        let changelog = self.plan.primary_keys[side].is_some();
        if deletes && !changelog {
            return Err(VeloError::Execution(
                "a delete reached the append-only side of a join".into(),
            ));
        }
        let rows = self.describe(side, &batch)?;
        let expired_before = self.expired_before();
        let late: Vec<bool> = rows
            .iter()
            .map(|k| k.time.is_some_and(|t| t < expired_before))
            .collect();
        if late.iter().any(|l| *l) {
            self.late.collect(
                &batch,
                &BooleanArray::from(late.clone()),
                "the record is older than the join's 'state.ttl'",
                self.plan.late_strategy,
            )?;
        }
        let state = &mut self.sides[side];
        let id = state.next_batch;
        state.next_batch += 1;
        let n = batch.num_rows();
        state.batches.insert(
            id,
            Stored {
                batch,
                rows: (0..n).map(|_| None).collect(),
                live: 0,
            },
        );
        let mut changes = Vec::new();
        for (row, kept) in rows.into_iter().enumerate() {
            if late[row] {
                continue;
            }
            let old = kept
                .primary_key
                .as_ref()
                .and_then(|pk| self.sides[side].by_primary_key.get(pk).copied());
            let new = (!deletes).then_some(((id, row as u32), kept));
            self.replace(side, old, new, &mut changes)?;
        }
        self.emit(&changes, out)?;
        for s in &mut self.sides {
            s.drop_done();
        }
        Ok(())
    }

    /// `changes` as batches in their order, one batch per run of inserts or of deletes.
    fn emit(&self, changes: &[Change], out: &mut Vec<RecordBatch>) -> Result<()> {
        for run in changes.chunk_by(|a, b| a.delete == b.delete) {
            let picks: Vec<[Option<RowRef>; 2]> = run.iter().map(|c| c.rows).collect();
            let batch = self.output(self.columns(&picks)?, picks.len())?;
            out.push(match run[0].delete {
                true => mark_delete(batch),
                false => batch,
            });
        }
        Ok(())
    }

    /// Forgets the append-only rows with times before `before`. Their output stands.
    fn expire(&mut self, before: i64) {
        for side in &mut self.sides {
            while let Some(&(time, at)) = side.by_time.first() {
                if time >= before {
                    break;
                }
                side.remove(at);
            }
            side.drop_done();
        }
    }

    /// `side`'s kept rows as checkpoint rows: `_side`, `_partners`, then both sides' columns.
    fn kept_rows(&self, side: usize) -> Result<RecordBatch> {
        let state = &self.sides[side];
        let mut picks = Vec::with_capacity(state.len);
        let mut partners = Vec::with_capacity(state.len);
        for (id, stored) in &state.batches {
            for (row, kept) in stored.rows.iter().enumerate() {
                if let Some(kept) = kept {
                    picks.push(Self::pair(side, (*id, row as u32), None));
                    partners.push(i64::from(kept.partners));
                }
            }
        }
        let mut columns = self.columns(&picks)?;
        let width = self.plan.side_schemas[0].fields().len();
        let own_columns = match side {
            0 => columns.drain(..width).collect(),
            _ => columns.split_off(width),
        };
        let own = RecordBatch::try_new_with_options(
            Arc::clone(&self.plan.side_schemas[side]),
            own_columns,
            &RecordBatchOptions::new().with_row_count(Some(picks.len())),
        )?;
        let extra: Vec<(Field, ArrayRef)> = vec![(
            Field::new("_partners", DataType::Int64, false),
            Arc::new(Int64Array::from(partners)),
        )];
        side_state_rows(side, extra, &own, &self.plan.side_schemas)
    }
}

/// The join's name in checkpoint errors.
const JOIN_STATE: &str = "the join of changelogs";
/// The columns between `_side` and the sides' own in the checkpointed rows.
const STATE_COLUMNS: usize = 1;

impl Operator for ChangelogJoinOperator {
    fn process_batch(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.process_side(0, batch, out)
    }

    fn process_input(
        &mut self,
        input: usize,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        match input {
            0 | 1 => self.process_side(input, batch, out),
            other => Err(VeloError::Execution(format!(
                "a join of two streams has no input {other}"
            ))),
        }
    }

    fn on_input_watermark(
        &mut self,
        input: usize,
        watermark: i64,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        if input > 1 || watermark <= self.watermarks[input] {
            return Ok(());
        }
        self.watermarks[input] = watermark;
        self.expire(self.expired_before());
        Ok(())
    }

    fn on_end_of_input(&mut self, _out: &mut Vec<RecordBatch>) -> Result<()> {
        // Everything was emitted as it came: the state has nothing more to say.
        self.sides = Default::default();
        Ok(())
    }

    fn state_size(&self) -> usize {
        self.sides[0].len + self.sides[1].len
    }

    fn state_bytes(&self) -> usize {
        self.sides[0].size() + self.sides[1].size()
    }

    fn late_count(&self) -> u64 {
        self.late.count
    }

    fn take_dead_letters(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.late.dead_letters)
    }

    fn snapshot(&mut self) -> Result<Option<OperatorState>> {
        let sides = [self.kept_rows(0)?, self.kept_rows(1)?];
        join_state(sides, self.watermarks, self.late.count).map(Some)
    }

    fn restore(&mut self, states: &[OperatorState], shard: &KeyShard) -> Result<()> {
        (self.watermarks, self.late.count) = restored_clocks(states, shard);
        for side in 0..2 {
            let schemas = &self.plan.side_schemas;
            let keys = &self.plan.keys[side];
            for (rows, own) in owned_side_rows(
                states,
                side,
                STATE_COLUMNS,
                schemas,
                keys,
                shard,
                JOIN_STATE,
            )? {
                let partners: Int64Array = column(&rows, "_partners", JOIN_STATE)?;
                let described = self.describe(side, &own)?;
                let state = &mut self.sides[side];
                let id = state.next_batch;
                state.next_batch += 1;
                let n = own.num_rows();
                state.batches.insert(
                    id,
                    Stored {
                        batch: own,
                        rows: (0..n).map(|_| None).collect(),
                        live: 0,
                    },
                );
                for (row, mut kept) in described.into_iter().enumerate() {
                    kept.partners = u32::try_from(partners.value(row)).unwrap_or(u32::MAX);
                    state.insert((id, row as u32), kept);
                }
            }
        }
        Ok(())
    }
}
