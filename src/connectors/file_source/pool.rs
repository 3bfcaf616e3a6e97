//! `ParallelReader`: a file source read by a pool of threads. One cutter thread reads the
//! files, `readers` of them at a time, taking a block from each in turn; `decode_threads`
//! threads decode the blocks. Block `k` goes to decoder `k mod D` and is taken back from it
//! in the same turn, so the batches come out in the order the blocks were cut, with no
//! sorting, and every queue is bounded: memory stays flat however large the files.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::Scope;

use super::{BlockDecoder, Cut, FileSource, SourceBatch};
use crate::error::{Result, VeloError};

/// Blocks each decoder holds in its queue in and out.
const QUEUE: usize = 2;

/// What reaches the job from a decoder, in cut order.
enum Item {
    /// The batches of one block of reader `reader`'s files.
    Batches {
        reader: usize,
        batches: Result<Vec<SourceBatch>>,
    },
    /// Reader `reader` has read every file it was dealt.
    Done { reader: usize },
    /// The cutter failed to read.
    Failed(VeloError),
}

/// What the cutter hands a decoder.
enum Work {
    /// A block to decode.
    Decode { reader: usize, block: super::Block },
    /// Something that needs no decoding, passed on in its turn.
    Pass(Item),
}

/// A file source read by a cutter and a pool of decoders, its batches taken in file order.
pub struct ParallelReader {
    decoded: Vec<Receiver<Item>>,
    /// The decoder the next item comes from.
    next: usize,
    pending: VecDeque<(usize, SourceBatch)>,
    /// The file each reader reads now (None once it is done).
    reading: Vec<Option<usize>>,
    /// The files being read changed since the last batch handed out.
    changed: bool,
}

impl ParallelReader {
    /// Starts the cutter, reading `readers` files at a time (at most one per file), and the
    /// source's `decode_threads` decoders, in `scope`.
    pub fn start<'scope>(
        scope: &'scope Scope<'scope, '_>,
        source: FileSource,
        readers: usize,
    ) -> Result<Self> {
        let threads = source.config().decode_threads.max(1);
        let shares = source.split(readers);
        let readers = shares.len();
        let mut to_decoders = Vec::with_capacity(threads);
        let mut decoded = Vec::with_capacity(threads);
        for d in 0..threads {
            let (work_tx, work_rx) = sync_channel(QUEUE);
            let (item_tx, item_rx) = sync_channel(QUEUE);
            let decoder = shares[0].decoder().clone();
            std::thread::Builder::new()
                .name(format!("velo-decode-{d}"))
                .spawn_scoped(scope, move || decode(&decoder, &work_rx, &item_tx))
                .map_err(|e| VeloError::io("starting a decoder", e))?;
            to_decoders.push(work_tx);
            decoded.push(item_rx);
        }
        std::thread::Builder::new()
            .name("velo-read".into())
            .spawn_scoped(scope, move || cut(shares, &to_decoders))
            .map_err(|e| VeloError::io("starting the file reader", e))?;
        Ok(ParallelReader {
            decoded,
            next: 0,
            pending: VecDeque::new(),
            // Reader r starts with file r of the whole list.
            reading: (0..readers).map(Some).collect(),
            changed: true,
        })
    }

    /// The next batch in order, and the files being read when that set changed (each is an
    /// input partition the watermark waits for). None once every file is read.
    pub fn next_batch(&mut self) -> Result<Option<(SourceBatch, Option<Vec<i32>>)>> {
        loop {
            if let Some((reader, batch)) = self.pending.pop_front() {
                if self.reading[reader] != Some(batch.file) {
                    self.reading[reader] = Some(batch.file);
                    self.changed = true;
                }
                let files = std::mem::take(&mut self.changed).then(|| self.files());
                return Ok(Some((batch, files)));
            }
            if self.reading.iter().all(Option::is_none) {
                return Ok(None);
            }
            let from = &self.decoded[self.next];
            self.next = (self.next + 1) % self.decoded.len();
            match from.recv() {
                Ok(Item::Batches { reader, batches }) => {
                    self.pending
                        .extend(batches?.into_iter().map(|b| (reader, b)));
                }
                Ok(Item::Done { reader }) => {
                    self.reading[reader] = None;
                    self.changed = true;
                }
                Ok(Item::Failed(e)) => return Err(e),
                Err(_) => {
                    return Err(VeloError::Execution(
                        "a file decoder stopped before the end of its input".into(),
                    ))
                }
            }
        }
    }

    /// The files being read now.
    fn files(&self) -> Vec<i32> {
        self.reading.iter().flatten().map(|&f| f as i32).collect()
    }
}

/// The cutter: takes a block from each reader's files in turn and deals them to the
/// decoders in turn, until every reader is done or the job stops reading.
fn cut(mut shares: Vec<FileSource>, decoders: &[SyncSender<Work>]) {
    let mut done = vec![false; shares.len()];
    let mut turn = 0;
    let mut sent = 0;
    while done.iter().any(|d| !d) {
        let reader = turn % shares.len();
        turn += 1;
        if done[reader] {
            continue;
        }
        let share = &mut shares[reader];
        let (work, failed) = match share.next_block() {
            Ok(Cut::Block(block)) => (Work::Decode { reader, block }, false),
            Ok(Cut::Waiting) => {
                let batches = Ok(vec![share.idle_batch()]);
                (Work::Pass(Item::Batches { reader, batches }), false)
            }
            Ok(Cut::End) => {
                done[reader] = true;
                (Work::Pass(Item::Done { reader }), false)
            }
            Err(e) => (Work::Pass(Item::Failed(e)), true),
        };
        // A closed queue means the job stopped reading.
        if decoders[sent % decoders.len()].send(work).is_err() || failed {
            return;
        }
        sent += 1;
    }
}

/// A decoder: decodes the blocks it is dealt and passes everything on in order.
fn decode(decoder: &BlockDecoder, work: &Receiver<Work>, out: &SyncSender<Item>) {
    for w in work.iter() {
        let item = match w {
            Work::Decode { reader, block } => Item::Batches {
                reader,
                batches: decoder.decode(&block),
            },
            Work::Pass(item) => item,
        };
        if out.send(item).is_err() {
            return;
        }
    }
}
