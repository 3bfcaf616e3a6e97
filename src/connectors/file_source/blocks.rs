//! Cutting a file into blocks of whole records: the one sequential step of reading a file.
//! A block ends at a newline outside CSV quotes, so blocks decode independently, on any
//! thread, and where a file is cut depends only on its bytes, never on how many threads
//! decode it.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use memchr::{memchr, memchr2_iter, memchr_iter, memrchr};

use crate::error::{Result, VeloError};

/// Bytes read per block; a block grows past this only to finish a record.
pub const BLOCK_BYTES: usize = 1 << 20;
/// How far past the last newline outside quotes a block may grow before the cutter takes
/// the quotes for a stray one and cuts at a newline anyway (the decoder then reads that
/// block line by line), so one bad quote cannot pull the rest of a file into memory.
const MAX_QUOTED_BYTES: usize = 8 * BLOCK_BYTES;

/// Whole records cut from one file.
#[derive(Debug)]
pub struct Block {
    /// The file's place in the source's sorted file list.
    pub file: usize,
    /// The file's path, for `file:line` locations.
    pub path: Arc<PathBuf>,
    /// Whole records, the last one ending with a newline.
    pub data: Vec<u8>,
    /// The 1-based number of the block's first line.
    pub first_line: u64,
    /// Bytes read from the file for this block (progress reporting).
    pub bytes: u64,
}

/// What the cutter has next.
#[derive(Debug)]
pub enum Cut {
    /// A block of records.
    Block(Block),
    /// A followed file has no new complete record yet.
    Waiting,
    /// The file is read to its end.
    End,
}

/// Reads one file and cuts it into [`Block`]s.
pub struct BlockCutter {
    file: File,
    path: Arc<PathBuf>,
    index: usize,
    /// CSV: a newline inside double quotes does not end a record.
    quoted: bool,
    /// A header line still to drop.
    header: bool,
    /// Bytes read and not yet handed out: the start of a record not yet complete.
    carry: Vec<u8>,
    /// The number of `carry`'s first line.
    line: u64,
    /// Bytes read into `carry` since the last block.
    read: u64,
}

impl BlockCutter {
    /// Opens `path`, the file at `index` of its source; `quoted` for CSV, `header` to drop
    /// the first line.
    pub fn open(path: PathBuf, index: usize, quoted: bool, header: bool) -> Result<Self> {
        let file = File::open(&path)
            .map_err(|e| VeloError::io(format!("opening {}", path.display()), e))?;
        Ok(BlockCutter {
            file,
            path: Arc::new(path),
            index,
            quoted,
            header,
            carry: Vec::new(),
            line: 1,
            read: 0,
        })
    }

    /// The path of the file being cut.
    pub fn path(&self) -> &Arc<PathBuf> {
        &self.path
    }

    /// The next block. Without `follow`, the end of the file ends the last record; with it,
    /// a last line without its newline waits for the writer to finish it.
    pub fn next(&mut self, follow: bool) -> Result<Cut> {
        let mut want = BLOCK_BYTES;
        loop {
            let at_end = self.fill(want)?;
            if self.header && !self.drop_header(at_end) {
                if at_end && !follow {
                    return Ok(Cut::End);
                }
                if at_end {
                    return Ok(Cut::Waiting);
                }
                want += BLOCK_BYTES;
                continue;
            }
            if let Some(end) = last_record_end(&self.carry, self.quoted) {
                if !at_end || follow || end == self.carry.len() {
                    return Ok(Cut::Block(self.take(end)));
                }
            }
            if at_end {
                if follow {
                    return Ok(Cut::Waiting);
                }
                if self.carry.is_empty() {
                    return Ok(Cut::End);
                }
                // The end of the file ends the last record (or a stray quote's run).
                self.carry.push(b'\n');
                let end = self.carry.len();
                return Ok(Cut::Block(self.take(end)));
            }
            if self.carry.len() >= MAX_QUOTED_BYTES {
                if let Some(i) = memrchr(b'\n', &self.carry) {
                    return Ok(Cut::Block(self.take(i + 1)));
                }
            }
            // One record longer than what is read so far: read on.
            want = self.carry.len() + BLOCK_BYTES;
        }
    }

    /// Reads until `carry` holds `want` bytes; true when the file has no more for now.
    fn fill(&mut self, want: usize) -> Result<bool> {
        while self.carry.len() < want {
            let missing = (want - self.carry.len()) as u64;
            self.carry.reserve(missing as usize);
            let n = (&mut self.file)
                .take(missing)
                .read_to_end(&mut self.carry)
                .map_err(|e| VeloError::io(format!("reading {}", self.path.display()), e))?;
            self.read += n as u64;
            if n == 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Drops the header line once it is complete; false while it is not.
    fn drop_header(&mut self, at_end: bool) -> bool {
        let end = match memchr(b'\n', &self.carry) {
            Some(i) => i + 1,
            None if at_end && !self.carry.is_empty() => self.carry.len(),
            None => return false,
        };
        self.carry.drain(..end);
        self.line += 1;
        self.header = false;
        true
    }

    /// Hands out `carry[..end]` as a block and keeps the rest.
    fn take(&mut self, end: usize) -> Block {
        let rest = self.carry[end..].to_vec();
        let mut data = std::mem::replace(&mut self.carry, rest);
        data.truncate(end);
        let first_line = self.line;
        self.line += memchr_iter(b'\n', &data).count() as u64;
        Block {
            file: self.index,
            path: Arc::clone(&self.path),
            data,
            first_line,
            bytes: std::mem::take(&mut self.read),
        }
    }
}

/// The end (after its newline) of the last whole record in `data`, which starts at a
/// record's start; with `quoted`, newlines inside double quotes do not count.
pub fn last_record_end(data: &[u8], quoted: bool) -> Option<usize> {
    if !quoted || memchr(b'"', data).is_none() {
        return memrchr(b'\n', data).map(|i| i + 1);
    }
    let mut in_quotes = false;
    let mut last = None;
    for i in memchr2_iter(b'"', b'\n', data) {
        if data[i] == b'"' {
            in_quotes = !in_quotes;
        } else if !in_quotes {
            last = Some(i + 1);
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn cut_all(text: &[u8], quoted: bool, header: bool) -> Vec<(u64, String)> {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text).expect("write");
        let mut cutter =
            BlockCutter::open(file.path().to_path_buf(), 0, quoted, header).expect("open");
        let mut blocks = Vec::new();
        loop {
            match cutter.next(false).expect("cut") {
                Cut::Block(b) => {
                    blocks.push((b.first_line, String::from_utf8(b.data).expect("utf8")))
                }
                Cut::Waiting => panic!("a bounded file never waits"),
                Cut::End => return blocks,
            }
        }
    }

    #[test]
    fn a_quoted_newline_does_not_end_a_record() {
        assert_eq!(last_record_end(b"a,\"x\ny\"\nb,\"z\n", true), Some(8));
        assert_eq!(last_record_end(b"a,\"x\ny\"\nb,\"z\n", false), Some(13));
        assert_eq!(last_record_end(b"a,\"x\n", true), None);
    }

    #[test]
    fn the_last_record_ends_with_the_file_and_the_header_is_dropped() {
        let blocks = cut_all(b"h1,h2\n1,2\n3,4", true, true);
        assert_eq!(blocks, vec![(2, "1,2\n3,4\n".to_string())]);
    }

    #[test]
    fn blocks_are_whole_records_and_know_their_first_line() {
        let mut text = Vec::new();
        for i in 0..200_000 {
            writeln!(text, "{i},\"a\nb\",{i}").expect("write");
        }
        let blocks = cut_all(&text, true, false);
        assert!(blocks.len() > 2, "{} blocks", blocks.len());
        let mut line = 1;
        for (first, data) in &blocks {
            assert_eq!(*first, line);
            assert!(
                data.starts_with(|c: char| c.is_ascii_digit()),
                "{}",
                &data[..20]
            );
            line += data.matches('\n').count() as u64;
        }
        let joined: String = blocks.into_iter().map(|(_, d)| d).collect();
        assert_eq!(joined.as_bytes(), &text[..]);
    }

    #[test]
    fn a_stray_quote_does_not_hold_the_rest_of_the_file() {
        let mut text = b"1,\"stray\n".to_vec();
        while text.len() < 3 * MAX_QUOTED_BYTES {
            text.extend_from_slice(b"2,plain\n");
        }
        let blocks = cut_all(&text, true, false);
        assert!(blocks.len() >= 3, "{} blocks", blocks.len());
        assert!(blocks
            .iter()
            .all(|(_, d)| d.len() <= MAX_QUOTED_BYTES + BLOCK_BYTES));
    }
}
