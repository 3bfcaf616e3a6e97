//! `FileReaders`: a file source read by several threads at once. Reader `r` decodes files
//! `r`, `r + k`, `r + 2k`, ... of the sorted list; the job takes their batches in turn, one
//! from each reader, so the order is fixed for a given reader count, whatever the width.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::Scope;

use crate::connectors::file_source::{FileSource, SourceBatch};
use crate::error::{Result, VeloError};

/// Batches each reader decodes ahead of the job.
const READ_AHEAD: usize = 2;

struct Reader {
    batches: Receiver<Result<SourceBatch>>,
    /// The file it reads now (None once it is done).
    file: Option<usize>,
}

/// Several readers of one file source, taken in turn.
pub(super) struct FileReaders {
    readers: Vec<Reader>,
    next: usize,
    /// The files being read changed since the last batch handed out.
    changed: bool,
}

impl FileReaders {
    /// Starts `count` reader threads (at most one per file) in `scope` over `source`'s files.
    pub(super) fn start<'scope>(
        scope: &'scope Scope<'scope, '_>,
        source: FileSource,
        count: usize,
    ) -> Result<Self> {
        let mut readers = Vec::new();
        for (r, mut share) in source.split(count).into_iter().enumerate() {
            let (tx, rx) = sync_channel(READ_AHEAD);
            std::thread::Builder::new()
                .name(format!("velo-read-{r}"))
                .spawn_scoped(scope, move || {
                    while let Some(read) = share.next_batch().transpose() {
                        let failed = read.is_err();
                        // A closed channel means the job stopped reading.
                        if tx.send(read).is_err() || failed {
                            return;
                        }
                    }
                })
                .map_err(|e| VeloError::io("starting a file reader", e))?;
            // Reader r starts with file r of the whole list.
            readers.push(Reader {
                batches: rx,
                file: Some(r),
            });
        }
        Ok(FileReaders {
            readers,
            next: 0,
            changed: true,
        })
    }

    /// The next batch in turn, and the files being read when that set changed (each is an
    /// input partition the watermark waits for). None when every reader is done.
    pub(super) fn next(&mut self) -> Result<Option<(SourceBatch, Option<Vec<i32>>)>> {
        while self.readers.iter().any(|r| r.file.is_some()) {
            let i = self.next;
            self.next = (i + 1) % self.readers.len();
            let reader = &mut self.readers[i];
            if reader.file.is_none() {
                continue;
            }
            match reader.batches.recv() {
                Ok(Ok(batch)) => {
                    if reader.file != Some(batch.file) {
                        reader.file = Some(batch.file);
                        self.changed = true;
                    }
                    let files = std::mem::take(&mut self.changed).then(|| self.reading());
                    return Ok(Some((batch, files)));
                }
                Ok(Err(e)) => return Err(e),
                // The reader is done; its turn passes to the next one.
                Err(_) => {
                    reader.file = None;
                    self.changed = true;
                }
            }
        }
        Ok(None)
    }

    /// The files being read now.
    fn reading(&self) -> Vec<i32> {
        self.readers
            .iter()
            .filter_map(|r| r.file.map(|f| f as i32))
            .collect()
    }
}
