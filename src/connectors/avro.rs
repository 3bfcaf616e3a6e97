//! Avro payloads for Kafka: one Avro datum per message, read against the writer schema given in
//! `avro.schema.file` and decoded in batches with `arrow-avro`; result rows are encoded back the
//! same way. Messages may carry Confluent's 5-byte header (`avro.framing = confluent`).

use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef};
use arrow::compute::cast;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, SchemaStore, SCHEMA_METADATA_KEY};
use arrow_avro::writer::format::AvroBinaryFormat;
use arrow_avro::writer::{Encoder, WriterBuilder};

use crate::error::{Result, VeloError};
use crate::sql::key_spec::{KeyDefault, KeyKind, KeySpec, Keys};

/// How each message frames its Avro datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// The message is the bare datum.
    None,
    /// Confluent's wire format: a zero byte and a 4-byte schema id, then the datum. The id is
    /// not looked up: the datum is read with the schema file's schema.
    Confluent,
}

/// The Avro settings of a source or sink: the writer schema and the message framing.
#[derive(Debug, Clone, PartialEq)]
pub struct AvroFormat {
    /// The Avro schema, as JSON.
    pub schema_json: String,
    pub framing: Framing,
}

/// `'<name>.avro.schema.file'`.
pub const SCHEMA_FILE: KeySpec = KeySpec {
    name: "avro.schema.file",
    kind: KeyKind::Text,
    default: KeyDefault::Note(
        "required for an Avro source; a sink derives the schema from its result columns",
    ),
    doc: "The Avro schema (`.avsc` JSON): the writer schema a source's datums were written with, \
          or the schema a sink writes (result columns matched to its fields by name).",
};
/// `'<name>.avro.framing'`.
pub const FRAMING: KeySpec = KeySpec {
    name: "avro.framing",
    kind: KeyKind::Choice(&["none", "confluent"]),
    default: KeyDefault::Value("none"),
    doc: "`none`: a message is the bare datum; `confluent`: Confluent's wire format (a zero byte \
          and a 4-byte schema id before the datum; the id is not looked up).",
};

impl AvroFormat {
    /// Reads `'<name>.avro.schema.file'` and `'<name>.avro.framing'` of a Kafka connector. A
    /// source needs the schema file; a sink without one writes the schema derived from its
    /// result columns.
    pub fn from_properties(keys: &Keys<'_>, need_schema: bool) -> Result<Self> {
        let framing = match keys.choice(&FRAMING)? {
            Some("confluent") => Framing::Confluent,
            _ => Framing::None,
        };
        let schema_key = keys.full_name(&SCHEMA_FILE);
        let schema_json = match keys.text(&SCHEMA_FILE) {
            Some(path) => std::fs::read_to_string(&path).map_err(|e| {
                VeloError::Config(format!("'{schema_key}' = '{path}' cannot be read: {e}"))
            })?,
            None if need_schema => {
                let name = keys.name().unwrap_or_default();
                return Err(VeloError::Config(format!(
                    "'{name}.format' = 'avro' needs the writer schema: \
                     '{schema_key}' = 'path/to/schema.avsc'"
                )));
            }
            None => String::new(),
        };
        let format = AvroFormat {
            schema_json,
            framing,
        };
        if !format.schema_json.is_empty() {
            // Parse now, so a bad schema is a configuration error before the job starts.
            format
                .arrow_schema()
                .map_err(|e| VeloError::Config(format!("'{schema_key}': {e}")))?;
        }
        Ok(format)
    }

    /// The format of a topic written with the Avro schema derived from `schema`'s columns.
    pub fn derived(schema: &Schema) -> Result<Self> {
        let avro = AvroSchema::try_from(schema)
            .map_err(|e| VeloError::Config(format!("no Avro schema for these columns: {e}")))?;
        Ok(AvroFormat {
            schema_json: avro.json_string,
            framing: Framing::None,
        })
    }

    /// The Arrow columns the Avro schema decodes to.
    pub fn arrow_schema(&self) -> std::result::Result<SchemaRef, String> {
        Ok(AvroDecoder::build(&self.schema_json, 1)?.0.schema())
    }
}

/// Decodes Avro messages into batches of a target schema (columns matched by name and cast;
/// columns the Avro schema lacks are NULL).
pub struct AvroDecoder {
    format: AvroFormat,
    decoder: Decoder,
    /// The single-object prefix of the schema, put before each datum for `arrow-avro`.
    prefix: Vec<u8>,
    framed: Vec<u8>,
    target: SchemaRef,
}

impl AvroDecoder {
    /// A decoder of `format`'s datums into `target` columns, up to `batch_size` at a time.
    pub fn new(format: &AvroFormat, target: SchemaRef, batch_size: usize) -> Result<Self> {
        let (decoder, prefix) = Self::build(&format.schema_json, batch_size)
            .map_err(|e| VeloError::Config(format!("Avro schema: {e}")))?;
        Ok(AvroDecoder {
            format: format.clone(),
            decoder,
            prefix,
            framed: Vec::new(),
            target,
        })
    }

    /// Decodes into `target` columns from now on.
    pub fn set_target(&mut self, target: SchemaRef) {
        self.target = target;
    }

    fn build(
        schema_json: &str,
        batch_size: usize,
    ) -> std::result::Result<(Decoder, Vec<u8>), String> {
        let mut store = SchemaStore::new();
        let fingerprint = store
            .register(AvroSchema::new(schema_json.to_string()))
            .map_err(|e| e.to_string())?;
        let Fingerprint::Rabin(fp) = fingerprint else {
            return Err("unexpected schema fingerprint kind".to_string());
        };
        let decoder = ReaderBuilder::new()
            .with_writer_schema_store(store)
            .with_batch_size(batch_size.max(1))
            .build_decoder()
            .map_err(|e| e.to_string())?;
        let mut prefix = vec![0xC3, 0x01];
        prefix.extend_from_slice(&fp.to_le_bytes());
        Ok((decoder, prefix))
    }

    /// Decodes the messages laid out back to back in `data` (message `i` ends at `ends[i]`;
    /// at most the batch size) into one batch. The error is the reason, for a bad-record
    /// report.
    pub fn decode(
        &mut self,
        data: &[u8],
        ends: &[usize],
    ) -> std::result::Result<RecordBatch, String> {
        let result = self.decode_all(data, ends);
        if result.is_err() {
            // A failed decode can leave partial rows behind: start over with a fresh decoder.
            let (decoder, _) = Self::build(&self.format.schema_json, self.decoder.batch_size())?;
            self.decoder = decoder;
        }
        result
    }

    fn decode_all(
        &mut self,
        data: &[u8],
        ends: &[usize],
    ) -> std::result::Result<RecordBatch, String> {
        self.framed.clear();
        let mut start = 0;
        for &end in ends {
            let mut datum = &data[start..end];
            start = end;
            if self.format.framing == Framing::Confluent {
                match datum {
                    [0, _, _, _, _, body @ ..] => datum = body,
                    _ => return Err("no Confluent header (zero byte and schema id)".to_string()),
                }
            }
            self.framed.extend_from_slice(&self.prefix);
            self.framed.extend_from_slice(datum);
        }
        let consumed = self
            .decoder
            .decode(&self.framed)
            .map_err(|e| e.to_string())?;
        let decoded = self.decoder.flush().map_err(|e| e.to_string())?;
        if consumed != self.framed.len() {
            return Err("the message is not one Avro datum of the schema".to_string());
        }
        let Some(decoded) = decoded else {
            return Ok(RecordBatch::new_empty(SchemaRef::clone(&self.target)));
        };
        if decoded.num_rows() != ends.len() {
            return Err("the message is not one Avro datum of the schema".to_string());
        }
        conform(&decoded, &self.target)
    }
}

/// `batch`'s columns matched by name to `target`'s fields and cast to their types; a field
/// `batch` lacks is NULL.
fn conform(batch: &RecordBatch, target: &SchemaRef) -> std::result::Result<RecordBatch, String> {
    let columns = target
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(c) if c.data_type() == field.data_type() => Ok(Arc::clone(c)),
            Some(c) => {
                cast(c, field.data_type()).map_err(|e| format!("column '{}': {e}", field.name()))
            }
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<std::result::Result<Vec<ArrayRef>, String>>()?;
    RecordBatch::try_new_with_options(
        SchemaRef::clone(target),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| e.to_string())
}

/// Encodes result rows as one bare Avro datum each, with the format's schema.
pub struct AvroEncoder {
    /// The Arrow columns the schema takes, carrying the schema itself as metadata.
    target: SchemaRef,
    encoder: Encoder,
}

impl AvroEncoder {
    /// An encoder writing `format`'s schema (the sink's schema file, or the one the planner
    /// derived from the result columns).
    pub fn new(format: &AvroFormat) -> Result<Self> {
        let columns = format
            .arrow_schema()
            .map_err(|e| VeloError::Config(format!("Avro schema: {e}")))?;
        let metadata = [(SCHEMA_METADATA_KEY.to_string(), format.schema_json.clone())].into();
        let target = Arc::new(Schema::new_with_metadata(
            columns.fields().clone(),
            metadata,
        ));
        let encoder = WriterBuilder::new(target.as_ref().clone())
            .build_encoder::<AvroBinaryFormat>()
            .map_err(|e| VeloError::Config(format!("Avro schema for the result rows: {e}")))?;
        Ok(AvroEncoder { target, encoder })
    }

    /// One datum per row of `batch`, each as a byte range of the returned buffer.
    pub fn encode(&mut self, batch: &RecordBatch) -> Result<arrow_avro::writer::EncodedRows> {
        let batch = conform(batch, &self.target).map_err(|e| {
            VeloError::Execution(format!("result rows do not fit the Avro schema: {e}"))
        })?;
        self.encoder
            .encode(&batch)
            .map_err(|e| VeloError::Execution(format!("encoding Avro: {e}")))?;
        Ok(self.encoder.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field};

    const TRADE: &str = r#"{"type":"record","name":"Trade","fields":[
        {"name":"symbol","type":"string"},
        {"name":"qty","type":"long"},
        {"name":"price","type":["null","double"]}]}"#;

    /// Avro's zigzag varint, written by hand so the test does not trust the library it checks.
    fn long(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }

    fn trade(symbol: &str, qty: i64, price: Option<f64>) -> Vec<u8> {
        let mut out = Vec::new();
        long(&mut out, symbol.len() as i64);
        out.extend_from_slice(symbol.as_bytes());
        long(&mut out, qty);
        match price {
            None => long(&mut out, 0),
            Some(p) => {
                long(&mut out, 1);
                out.extend_from_slice(&p.to_le_bytes());
            }
        }
        out
    }

    fn format(framing: Framing) -> AvroFormat {
        AvroFormat {
            schema_json: TRADE.to_string(),
            framing,
        }
    }

    fn target() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, true),
            Field::new("qty", DataType::Int64, true),
            Field::new("price", DataType::Float64, true),
            Field::new("venue", DataType::Utf8, true),
        ]))
    }

    fn concat(messages: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for m in messages {
            data.extend_from_slice(m);
            ends.push(data.len());
        }
        (data, ends)
    }

    #[test]
    fn decodes_bare_datums_into_the_declared_columns() {
        let mut decoder = AvroDecoder::new(&format(Framing::None), target(), 16).unwrap();
        let (data, ends) = concat(&[trade("AAPL", 10, Some(1.5)), trade("MSFT", -3, None)]);
        let batch = decoder.decode(&data, &ends).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let symbols = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(symbols.value(1), "MSFT");
        let qty = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(qty.values().to_vec(), vec![10, -3]);
        let price = batch
            .column(2)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(price.value(0), 1.5);
        assert!(price.is_null(1));
        assert_eq!(
            batch.column(3).null_count(),
            2,
            "venue is not in the Avro schema"
        );
    }

    #[test]
    fn a_truncated_or_padded_message_is_an_error_and_the_decoder_recovers() {
        let mut decoder = AvroDecoder::new(&format(Framing::None), target(), 16).unwrap();
        let good = trade("AAPL", 10, Some(1.5));
        let short = good[..good.len() - 3].to_vec();
        let (data, ends) = concat(&[short]);
        assert!(decoder.decode(&data, &ends).is_err());
        let mut padded = good.clone();
        padded.push(7);
        let (data, ends) = concat(&[padded]);
        assert!(decoder.decode(&data, &ends).is_err());
        let (data, ends) = concat(&[good]);
        assert_eq!(decoder.decode(&data, &ends).unwrap().num_rows(), 1);
    }

    #[test]
    fn confluent_framing_strips_the_header() {
        let mut decoder = AvroDecoder::new(&format(Framing::Confluent), target(), 16).unwrap();
        let mut framed = vec![0, 0, 0, 0, 42];
        framed.extend(trade("IBM", 7, Some(2.0)));
        let (data, ends) = concat(&[framed]);
        assert_eq!(decoder.decode(&data, &ends).unwrap().num_rows(), 1);
        let (data, ends) = concat(&[trade("IBM", 7, Some(2.0))]);
        let err = decoder.decode(&data, &ends).unwrap_err();
        assert!(err.contains("Confluent"), "{err}");
    }

    #[test]
    fn encoded_rows_are_the_datums_a_reader_expects() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, false),
            Field::new("qty", DataType::Int64, false),
            Field::new("price", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["AAPL", "MSFT"])),
                Arc::new(Int64Array::from(vec![10, -3])),
                Arc::new(Float64Array::from(vec![Some(1.5), None])),
            ],
        )
        .unwrap();
        let mut encoder = AvroEncoder::new(&format(Framing::None)).unwrap();
        let rows = encoder.encode(&batch).unwrap();
        let rows: Vec<Vec<u8>> = rows.iter().map(|r| r.to_vec()).collect();
        assert_eq!(
            rows,
            vec![trade("AAPL", 10, Some(1.5)), trade("MSFT", -3, None)]
        );
    }

    #[test]
    fn a_schema_derived_from_the_columns_round_trips() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("A"), None])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let format = AvroFormat::derived(&schema).unwrap();
        let rows = AvroEncoder::new(&format).unwrap().encode(&batch).unwrap();
        let (data, ends) = concat(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>());
        let back = AvroDecoder::new(&format, schema, 16)
            .unwrap()
            .decode(&data, &ends)
            .unwrap();
        assert_eq!(back, batch);
    }
}
