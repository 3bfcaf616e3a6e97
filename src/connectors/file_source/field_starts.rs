//! Where the fields of plain CSV records start: the first step of the plain reader, and the
//! one that reads every byte. The bytes are compared 64 at a time against the delimiter and
//! the newline, giving a bit per byte; the separators are then read off those bits. A record
//! of a few short fields has a separator every few bytes, too close together for a search
//! that starts over at each.

/// The bytes compared at once.
const CHUNK: usize = 64;

/// Where each field of up to `rows` records of `data` from byte `at` starts, and then where
/// the next record starts: field `i` of the records (field `i % fields` of record
/// `i / fields`) is `data[starts[i]..starts[i + 1] - 1]`, up to the delimiter or newline
/// that ends it. `data` holds whole records from `at` on, each ending with a newline. None
/// when a record has more or fewer than `fields` fields.
pub(super) fn field_starts(
    data: &[u8],
    at: usize,
    delimiter: u8,
    fields: usize,
    rows: usize,
) -> Option<Vec<usize>> {
    let last = fields.checked_sub(1)?;
    let wanted = rows.saturating_mul(fields).saturating_add(1);
    let mut starts: Vec<usize> = Vec::with_capacity(wanted.min(data.len().saturating_sub(at) + 1));
    starts.push(at);
    let mut column = 0;
    let mut chunk = at;
    'chunks: while chunk < data.len() {
        let (mut separators, newlines) = separator_masks(data, chunk, delimiter);
        while separators != 0 {
            let bit = separators.trailing_zeros();
            separators &= separators - 1;
            // Too few fields end at a newline, too many at a delimiter.
            if (newlines >> bit & 1 != 0) != (column == last) {
                return None;
            }
            starts.push(chunk + bit as usize + 1);
            if column == last {
                column = 0;
                if starts.len() == wanted {
                    break 'chunks;
                }
            } else {
                column += 1;
            }
        }
        chunk += CHUNK;
    }
    (column == 0).then_some(starts)
}

/// One bit per byte of the (up to) [`CHUNK`] bytes of `data` from `at`, bit `i` for byte
/// `at + i`: those that are the delimiter or a newline, and those that are a newline.
fn separator_masks(data: &[u8], at: usize, delimiter: u8) -> (u64, u64) {
    if let Some(chunk) = data.get(at..).and_then(|d| d.first_chunk::<CHUNK>()) {
        return chunk_masks(chunk, delimiter);
    }
    let tail = data.get(at..).unwrap_or_default();
    let mut chunk = [0u8; CHUNK];
    chunk[..tail.len()].copy_from_slice(tail);
    let (separators, newlines) = chunk_masks(&chunk, delimiter);
    // The padding may match a NUL delimiter.
    let kept = (1u64 << tail.len()) - 1;
    (separators & kept, newlines & kept)
}

/// [`separator_masks`] of one whole chunk, with SSE2 (every x86-64 has it): four 16-byte
/// compares per byte sought.
#[cfg(target_arch = "x86_64")]
fn chunk_masks(chunk: &[u8; CHUNK], delimiter: u8) -> (u64, u64) {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    let (mut separators, mut newlines) = (0u64, 0u64);
    // SAFETY: SSE2 is part of every x86-64 target, and each load reads the 16 bytes of one
    // `sixteen`.
    unsafe {
        let delimiters = _mm_set1_epi8(delimiter as i8);
        let newline = _mm_set1_epi8(b'\n' as i8);
        for (i, sixteen) in chunk.chunks_exact(16).enumerate() {
            let bytes = _mm_loadu_si128(sixteen.as_ptr().cast());
            let nl = _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, newline)) as u16 as u64;
            let de = _mm_movemask_epi8(_mm_cmpeq_epi8(bytes, delimiters)) as u16 as u64;
            newlines |= nl << (16 * i);
            separators |= (nl | de) << (16 * i);
        }
    }
    (separators, newlines)
}

/// [`separator_masks`] of one whole chunk, a byte at a time (the compiler vectorizes it).
#[cfg(not(target_arch = "x86_64"))]
fn chunk_masks(chunk: &[u8; CHUNK], delimiter: u8) -> (u64, u64) {
    bytewise_masks(chunk, delimiter)
}

/// [`separator_masks`] of one whole chunk, a byte at a time: the other targets' masks, and
/// the reference the SSE2 masks are tested against.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn bytewise_masks(chunk: &[u8; CHUNK], delimiter: u8) -> (u64, u64) {
    let (mut separators, mut newlines) = (0u64, 0u64);
    for (i, &b) in chunk.iter().enumerate() {
        newlines |= u64::from(b == b'\n') << i;
        separators |= u64::from(b == b'\n' || b == delimiter) << i;
    }
    (separators, newlines)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The starts by a plain walk over the bytes.
    fn walked(
        data: &[u8],
        at: usize,
        delimiter: u8,
        fields: usize,
        rows: usize,
    ) -> Option<Vec<usize>> {
        let mut starts = vec![at];
        let mut column = 0;
        for (i, &b) in data.iter().enumerate().skip(at) {
            if b != b'\n' && b != delimiter {
                continue;
            }
            if (b == b'\n') != (column == fields - 1) {
                return None;
            }
            starts.push(i + 1);
            column = (column + 1) % fields;
            if column == 0 && starts.len() == rows * fields + 1 {
                break;
            }
        }
        (column == 0).then_some(starts)
    }

    #[test]
    fn fields_start_after_delimiters_and_records_after_newlines() {
        let data = b"a,1\nbb,22\nccc,333\n";
        assert_eq!(
            field_starts(data, 0, b',', 2, 10),
            Some(vec![0, 2, 4, 7, 10, 14, 18])
        );
        // Two records, then where the third starts.
        assert_eq!(
            field_starts(data, 0, b',', 2, 2),
            Some(vec![0, 2, 4, 7, 10])
        );
        assert_eq!(field_starts(data, 10, b',', 2, 10), Some(vec![10, 14, 18]));
        assert_eq!(
            field_starts(data, 18, b',', 2, 10),
            Some(vec![18]),
            "no record"
        );
        assert_eq!(
            field_starts(b"a,1,x\n", 0, b',', 2, 10),
            None,
            "too many fields"
        );
        assert_eq!(field_starts(b"a\n", 0, b',', 2, 10), None, "too few fields");
        assert_eq!(
            field_starts(b"a\0b\n", 0, 0, 2, 10),
            Some(vec![0, 2, 4]),
            "NUL delimiter"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sse2_masks_are_the_bytewise_masks() {
        let mut chunk = [0u8; CHUNK];
        for seed in 0..500u64 {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = [b'a', b',', b'\n', b';', 0, 0x80][(seed as usize * 7 + i * i) % 6];
            }
            for delimiter in [b',', b';', 0, 0x80] {
                assert_eq!(
                    chunk_masks(&chunk, delimiter),
                    bytewise_masks(&chunk, delimiter)
                );
            }
        }
    }

    proptest! {
        #[test]
        fn the_starts_are_those_a_walk_finds(
            records in proptest::collection::vec(
                proptest::collection::vec("[a-c0-9]{0,20}", 1..5), 0..60),
            fields in 1usize..5,
            rows in 1usize..40,
            at in 0usize..3,
        ) {
            let mut data = Vec::new();
            for record in &records {
                data.extend_from_slice(record.join(",").as_bytes());
                data.push(b'\n');
            }
            let at = at.min(data.len());
            prop_assert_eq!(
                field_starts(&data, at, b',', fields, rows),
                walked(&data, at, b',', fields, rows)
            );
        }
    }
}
