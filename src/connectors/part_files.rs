//! The exactly-once file sink (`'<name>.delivery' = 'exactly_once'`): `'<name>.path'` is a
//! directory of part files, one per checkpoint epoch. An epoch's rows go to a hidden
//! in-progress part, synced and sealed at the checkpoint's barrier (before its manifest is
//! written), and renamed into view once the checkpoint is durable. After a crash, the part of the checkpoint the job
//! restores from is published if the crash came before its rename, and every later part is
//! discarded: its rows are written again from the restored state. Readers that list the
//! visible parts in name order see every result row exactly once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use super::file_sink::{row_encoder, FileSink};
use super::sink::Sink;
use crate::error::{Result, VeloError};
use crate::partition::RowEncoder;

/// A directory of part files, each made visible when its checkpoint completes.
pub struct PartFileSink {
    dir: PathBuf,
    csv: bool,
    delimiter: u8,
    /// The part being written: its epoch and file.
    current: Option<(u64, FileSink)>,
}

impl PartFileSink {
    /// A sink writing parts under `dir` (created if missing); nothing is written until
    /// [`Sink::begin_epochs`].
    pub fn create(dir: &Path, csv: bool, delimiter: u8) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| VeloError::io(format!("creating {}", dir.display()), e))?;
        Ok(PartFileSink {
            dir: dir.to_path_buf(),
            csv,
            delimiter,
            current: None,
        })
    }

    fn extension(&self) -> &'static str {
        if self.csv {
            "csv"
        } else {
            "jsonl"
        }
    }

    /// The visible part of `epoch`.
    fn part(&self, epoch: u64) -> PathBuf {
        self.dir
            .join(format!("part-{epoch:010}.{}", self.extension()))
    }

    /// The in-progress part of `epoch` (hidden from readers that skip dot files).
    fn in_progress(&self, epoch: u64) -> PathBuf {
        self.dir
            .join(format!(".part-{epoch:010}.{}.inprogress", self.extension()))
    }

    /// The epoch a part file's name carries, and whether it is in progress.
    fn epoch_of(name: &str) -> Option<(u64, bool)> {
        let (rest, in_progress) = match name.strip_prefix(".part-") {
            Some(rest) => (rest, true),
            None => (name.strip_prefix("part-")?, false),
        };
        Some((rest.get(..10)?.parse().ok()?, in_progress))
    }

    fn open(&mut self, epoch: u64) -> Result<()> {
        let file = FileSink::create(&self.in_progress(epoch), self.csv, self.delimiter)?;
        self.current = Some((epoch, file));
        Ok(())
    }

    fn publish(&self, epoch: u64) -> Result<()> {
        let (from, to) = (self.in_progress(epoch), self.part(epoch));
        std::fs::rename(&from, &to)
            .map_err(|e| VeloError::io(format!("publishing {}", to.display()), e))?;
        sync_dir(&self.dir)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| VeloError::io(format!("syncing {}", dir.display()), e))
}

impl PartFileSink {
    /// The part being written.
    fn current(&mut self) -> Result<&mut FileSink> {
        match self.current.as_mut() {
            Some((_, file)) => Ok(file),
            None => Err(VeloError::Execution(format!(
                "the exactly-once sink {} was written before its first epoch began",
                self.dir.display()
            ))),
        }
    }
}

impl Sink for PartFileSink {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        self.current()?.write_batch(batch)
    }

    /// Every part is encoded as a file sink encodes its file, so the workers may do it.
    fn encoder(&self) -> Option<Arc<dyn RowEncoder>> {
        Some(row_encoder(self.csv, self.delimiter))
    }

    fn write_encoded(&mut self, batch: &RecordBatch, bytes: &[u8]) -> Result<()> {
        self.current()?.write_encoded(batch, bytes)
    }

    /// Writes the current part's rows through to disk; it stays hidden until its commit.
    fn flush(&mut self) -> Result<()> {
        match self.current.as_mut() {
            Some((_, file)) => file.sync(),
            None => Ok(()),
        }
    }

    fn seal_epoch(&mut self, epoch: u64) -> Result<()> {
        let Some((current, mut file)) = self.current.take() else {
            return Ok(());
        };
        if current != epoch {
            return Err(VeloError::Execution(format!(
                "{}: checkpoint {epoch} passed while part {current} was being written",
                self.dir.display()
            )));
        }
        file.sync()?;
        drop(file);
        self.open(epoch + 1)
    }

    fn commit_epoch(&mut self, epoch: u64) -> Result<()> {
        if self.current.as_ref().is_some_and(|(e, _)| *e == epoch) {
            self.seal_epoch(epoch)?;
        }
        self.publish(epoch)
    }

    fn begin_epochs(&mut self, restored: Option<u64>, next: u64) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| VeloError::io(format!("listing {}", self.dir.display()), e))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let Some((epoch, in_progress)) = Self::epoch_of(&name) else {
                continue;
            };
            let path = self.dir.join(&name);
            if in_progress && restored == Some(epoch) {
                // Synced before its checkpoint's manifest, which is durable: publish it.
                self.publish(epoch)?;
            } else if in_progress || restored.is_some_and(|r| epoch > r) {
                // Rows of a checkpoint that never completed (or was given up as damaged):
                // they are written again from the restored state.
                if !in_progress {
                    tracing::warn!(part = %name, "removing a part past the restored checkpoint");
                }
                std::fs::remove_file(&path)
                    .map_err(|e| VeloError::io(format!("removing {}", path.display()), e))?;
            }
        }
        self.open(next)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn rows(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))])
            .expect("batch")
    }

    fn visible(dir: &Path) -> Vec<(String, String)> {
        let mut parts: Vec<(String, String)> = std::fs::read_dir(dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().into_string().expect("name"))
            .filter(|n| !n.starts_with('.'))
            .map(|n| {
                let text = std::fs::read_to_string(dir.join(&n)).expect("read");
                (n, text)
            })
            .collect();
        parts.sort();
        parts
    }

    #[test]
    fn parts_become_visible_only_when_their_checkpoint_completes() {
        let dir = tempfile::tempdir().expect("dir");
        let mut sink = PartFileSink::create(dir.path(), false, b',').expect("sink");
        sink.begin_epochs(None, 1).expect("begin");
        sink.write_batch(&rows(&[1, 2])).expect("write");
        sink.flush().expect("flush");
        assert!(
            visible(dir.path()).is_empty(),
            "epoch 1 is not committed yet"
        );
        sink.commit_epoch(1).expect("commit");
        sink.flush().expect("flush");
        // A crash now, with checkpoint 2's state files written but not its manifest; the
        // restart restores checkpoint 1 and numbers the next one 3: part 2's rows are
        // discarded, to be written again.
        drop(sink);
        let mut sink = PartFileSink::create(dir.path(), false, b',').expect("sink");
        sink.begin_epochs(Some(1), 3).expect("begin");
        sink.write_batch(&rows(&[3, 4])).expect("write");
        sink.commit_epoch(3).expect("commit");
        assert_eq!(
            visible(dir.path()),
            vec![
                (
                    "part-0000000001.jsonl".to_string(),
                    "{\"v\":1}\n{\"v\":2}\n".to_string()
                ),
                (
                    "part-0000000003.jsonl".to_string(),
                    "{\"v\":3}\n{\"v\":4}\n".to_string()
                ),
            ]
        );
    }

    #[test]
    fn rows_encoded_by_the_workers_give_each_csv_part_its_own_header() {
        let dir = tempfile::tempdir().expect("dir");
        let mut sink = PartFileSink::create(dir.path(), true, b',').expect("sink");
        let encoder = sink.encoder().expect("an encoder");
        sink.begin_epochs(None, 1).expect("begin");
        let write = |sink: &mut PartFileSink, values: &[i64]| {
            let mut bytes = Vec::new();
            encoder.encode(&rows(values), &mut bytes).expect("encode");
            sink.write_encoded(&rows(values), &bytes).expect("write");
        };
        write(&mut sink, &[1, 2]);
        sink.commit_epoch(1).expect("commit");
        write(&mut sink, &[3]);
        sink.commit_epoch(2).expect("commit");
        assert_eq!(
            visible(dir.path()),
            vec![
                ("part-0000000001.csv".to_string(), "v\n1\n2\n".to_string()),
                ("part-0000000002.csv".to_string(), "v\n3\n".to_string()),
            ]
        );
    }

    #[test]
    fn a_crash_between_manifest_and_rename_publishes_the_part_on_restore() {
        let dir = tempfile::tempdir().expect("dir");
        let mut sink = PartFileSink::create(dir.path(), false, b',').expect("sink");
        sink.begin_epochs(None, 1).expect("begin");
        sink.write_batch(&rows(&[7])).expect("write");
        // The checkpoint's flush and seal, then its manifest; the crash comes before the
        // commit.
        sink.flush().expect("flush");
        sink.seal_epoch(1).expect("seal");
        drop(sink);
        let mut sink = PartFileSink::create(dir.path(), false, b',').expect("sink");
        sink.begin_epochs(Some(1), 2).expect("begin");
        assert_eq!(
            visible(dir.path()),
            vec![(
                "part-0000000001.jsonl".to_string(),
                "{\"v\":7}\n".to_string()
            )]
        );
        assert!(sink.write_batch(&rows(&[8])).is_ok());
    }
}
