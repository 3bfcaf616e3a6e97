//! Decoding of JSON records into Arrow batches, shared by the file and Kafka sources.

use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

/// Decodes `rows` whitespace-separated JSON objects from `data` into one batch of `schema`
/// (fields missing from a record are NULL; fields not in the schema are ignored). The error is
/// the decoder's reason, for a bad-record report.
pub fn decode_json(
    schema: &SchemaRef,
    data: &[u8],
    rows: usize,
) -> std::result::Result<RecordBatch, String> {
    let mut decoder = arrow::json::ReaderBuilder::new(SchemaRef::clone(schema))
        .with_batch_size(rows.max(1))
        .build_decoder()
        .map_err(|e| e.to_string())?;
    let mut batches = Vec::new();
    let mut offset = 0;
    loop {
        let read = decoder.decode(&data[offset..]).map_err(|e| e.to_string())?;
        offset += read;
        if let Some(b) = decoder.flush().map_err(|e| e.to_string())? {
            batches.push(b);
        }
        if read == 0 || offset >= data.len() {
            break;
        }
    }
    match batches.len() {
        1 => Ok(batches.remove(0)),
        _ => concat_batches(schema, &batches).map_err(|e| e.to_string()),
    }
}

/// A chunk of records decoded with [`decode_with_fallback`].
pub struct Decoded {
    /// The records that decoded, in order.
    pub batch: RecordBatch,
    /// The chunk index of each row of `batch`.
    pub kept: Vec<usize>,
    /// The chunk index and reason of each record that did not decode.
    pub failed: Vec<(usize, String)>,
}

/// Decodes the records laid out back to back in `data` (record `i` ends at `ends[i]`) with
/// `decode(bytes, ends)`: all in one go, and if that fails or miscounts, one by one, so only
/// the bad ones drop out. A record that decodes to no row or to several fails with
/// `not_one_record` as its reason.
pub fn decode_with_fallback(
    schema: &SchemaRef,
    data: &[u8],
    ends: &[usize],
    not_one_record: &str,
    mut decode: impl FnMut(&[u8], &[usize]) -> std::result::Result<RecordBatch, String>,
) -> crate::error::Result<Decoded> {
    let n = ends.len();
    if let Ok(batch) = decode(data, ends) {
        if batch.num_rows() == n {
            return Ok(Decoded {
                batch,
                kept: (0..n).collect(),
                failed: Vec::new(),
            });
        }
    }
    let mut batches = Vec::new();
    let mut kept = Vec::new();
    let mut failed = Vec::new();
    for i in 0..n {
        let start = if i == 0 { 0 } else { ends[i - 1] };
        match decode(&data[start..ends[i]], &[ends[i] - start]) {
            Ok(b) if b.num_rows() == 1 => {
                kept.push(i);
                batches.push(b);
            }
            Ok(_) => failed.push((i, not_one_record.to_string())),
            Err(reason) => failed.push((i, reason)),
        }
    }
    Ok(Decoded {
        batch: concat_batches(schema, &batches)?,
        kept,
        failed,
    })
}

/// Decodes like [`decode_with_fallback`], but cut into one contiguous run of records per
/// decoder (of at least `min_run` records), the runs decoded at once on scoped threads and
/// joined back in order. The result is the same as decoding all of `data` with one decoder;
/// a bad record still costs only itself, found within its run.
pub fn decode_in_runs<D: Send>(
    schema: &SchemaRef,
    data: &[u8],
    ends: &[usize],
    not_one_record: &str,
    decoders: &mut [D],
    min_run: usize,
    decode: impl Fn(&mut D, &[u8], &[usize]) -> std::result::Result<RecordBatch, String> + Sync,
) -> crate::error::Result<Decoded> {
    let n = ends.len();
    let runs = decoders.len().min(n / min_run.max(1)).max(1);
    let Some((first, others)) = decoders.split_first_mut() else {
        return Err(crate::error::VeloError::Execution(
            "no decoder to decode with".into(),
        ));
    };
    if runs == 1 {
        return decode_with_fallback(schema, data, ends, not_one_record, |d, e| {
            decode(first, d, e)
        });
    }
    // Run r holds records bounds[r]..bounds[r + 1].
    let bounds: Vec<usize> = (0..=runs).map(|r| r * n / runs).collect();
    let run = |decoder: &mut D, r: usize| {
        let (lo, hi) = (bounds[r], bounds[r + 1]);
        let base = if lo == 0 { 0 } else { ends[lo - 1] };
        let local: Vec<usize> = ends[lo..hi].iter().map(|e| e - base).collect();
        decode_with_fallback(
            schema,
            &data[base..ends[hi - 1]],
            &local,
            not_one_record,
            |d, e| decode(decoder, d, e),
        )
    };
    let decoded: Vec<crate::error::Result<Decoded>> = std::thread::scope(|scope| {
        let run = &run;
        let handles: Vec<_> = others
            .iter_mut()
            .take(runs - 1)
            .enumerate()
            .map(|(i, decoder)| scope.spawn(move || run(decoder, i + 1)))
            .collect();
        let mut decoded = vec![run(first, 0)];
        for handle in handles {
            decoded.push(handle.join().unwrap_or_else(|_| {
                Err(crate::error::VeloError::Execution(
                    "a decoder thread panicked".into(),
                ))
            }));
        }
        decoded
    });
    let mut batches = Vec::with_capacity(runs);
    let mut kept = Vec::with_capacity(n);
    let mut failed = Vec::new();
    for (r, part) in decoded.into_iter().enumerate() {
        let part = part?;
        let base = bounds[r];
        kept.extend(part.kept.iter().map(|i| i + base));
        failed.extend(part.failed.into_iter().map(|(i, why)| (i + base, why)));
        batches.push(part.batch);
    }
    Ok(Decoded {
        batch: concat_batches(schema, &batches)?,
        kept,
        failed,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// Records `0..n` as JSON lines, with records `bad` not JSON; and their ends.
    fn records(n: usize, bad: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for i in 0..n {
            if bad.contains(&i) {
                data.extend_from_slice(format!("{{\"id\": {i}x\n").as_bytes());
            } else {
                data.extend_from_slice(format!("{{\"id\": {i}}}\n").as_bytes());
            }
            ends.push(data.len());
        }
        (data, ends)
    }

    fn ids(schema: &SchemaRef, data: &[u8], ends: &[usize], threads: usize) -> Decoded {
        let mut decoders = vec![(); threads];
        decode_in_runs(
            schema,
            data,
            ends,
            "not one",
            &mut decoders,
            1,
            |(), d, e| decode_json(schema, d, e.len()),
        )
        .expect("decoded")
    }

    #[test]
    fn runs_decoded_at_once_give_the_rows_and_bad_records_of_one_decoder() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let bad = [0, 7, 8, 25, 49];
        let (data, ends) = records(50, &bad);
        let one = ids(&schema, &data, &ends, 1);
        for threads in [2, 3, 4, 7] {
            let many = ids(&schema, &data, &ends, threads);
            assert_eq!(many.batch, one.batch, "{threads} threads");
            assert_eq!(many.kept, one.kept, "{threads} threads");
            let at: Vec<usize> = many.failed.iter().map(|(i, _)| *i).collect();
            assert_eq!(at, bad, "{threads} threads");
        }
        let want: Vec<usize> = (0..50).filter(|i| !bad.contains(i)).collect();
        assert_eq!(one.kept, want);
    }

    #[test]
    fn fewer_records_than_runs_need_are_decoded_by_one_decoder() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let (data, ends) = records(3, &[1]);
        let mut used = [0usize; 4];
        let decoded = decode_in_runs(&schema, &data, &ends, "x", &mut used, 2, |count, d, e| {
            *count += 1;
            decode_json(&schema, d, e.len())
        })
        .expect("decoded");
        assert_eq!(decoded.kept, vec![0, 2]);
        assert_eq!(used[1..], [0, 0, 0], "only the first decoder ran");
    }
}
