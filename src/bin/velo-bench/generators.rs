//! Deterministic input generators: the trades stream, Nexmark's bid stream and the One Billion
//! Row Challenge's measurements, as in-memory
//! Arrow batches (engine-only runs) or as CSV / JSON-lines files (end-to-end runs). Both forms
//! come from the same row generator, so a file and its batches hold the same records.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringBuilder, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;

use crate::BenchResult;

/// 2024-01-01T00:00:00Z in epoch milliseconds: the start of every generated stream.
pub const BASE_TIME_MS: i64 = 1_704_067_200_000;

/// A small, fast deterministic generator (SplitMix64).
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Which generated stream a scenario reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `trades(symbol, price, quantity, ts)`.
    Trades,
    /// Nexmark's `bid(auction, bidder, price, channel, url, date_time, extra)`.
    Bid,
    /// Nexmark's `person` stream (engine-only runs).
    Person,
    /// Nexmark's `auction` stream (engine-only runs).
    Auction,
    /// `symbols(symbol, sector)`, a table for the trades stream (engine-only runs).
    Symbols,
    /// The One Billion Row Challenge's `measurements(station, temperature)`.
    Measurements,
}

impl Stream {
    /// The source name the scenarios' SQL reads.
    pub fn source_name(self) -> &'static str {
        match self {
            Stream::Trades => "trades",
            Stream::Bid => "bid",
            Stream::Person => "person",
            Stream::Auction => "auction",
            Stream::Symbols => "symbols",
            Stream::Measurements => "measurements",
        }
    }

    /// The schema of the in-memory batches. Trades match what the file source infers from the
    /// CSV (price as DOUBLE), so one SQL text serves both modes; bids match the declaration
    /// `declaration` gives the end-to-end script, and so do measurements.
    pub fn schema(self) -> SchemaRef {
        let fields = match self {
            Stream::Person => return crate::nexmark::person_schema(),
            Stream::Auction => return crate::nexmark::auction_schema(),
            Stream::Symbols => return crate::nexmark::symbols_schema(),
            Stream::Trades => vec![
                Field::new("symbol", DataType::Utf8, true),
                Field::new("price", DataType::Float64, true),
                Field::new("quantity", DataType::Int64, true),
                Field::new("ts", DataType::Int64, true),
            ],
            Stream::Bid => vec![
                Field::new("auction", DataType::Int64, true),
                Field::new("bidder", DataType::Int64, true),
                Field::new("price", DataType::Int64, true),
                Field::new("channel", DataType::Utf8, true),
                Field::new("url", DataType::Utf8, true),
                Field::new(
                    "date_time",
                    DataType::Timestamp(TimeUnit::Millisecond, None),
                    true,
                ),
                Field::new("extra", DataType::Utf8, true),
            ],
            Stream::Measurements => vec![
                Field::new("station", DataType::Utf8, true),
                Field::new("temperature", DataType::Float64, true),
            ],
        };
        Arc::new(Schema::new(fields))
    }

    /// The `CREATE STREAM` an end-to-end script needs before its query over a `format` file
    /// (None: inferred).
    pub fn declaration(self, format: Format) -> Option<String> {
        match self {
            Stream::Trades | Stream::Symbols => None,
            // Inference would read date_time as text; the declaration keeps it a timestamp.
            Stream::Bid => Some(
                "CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
                 url VARCHAR, date_time TIMESTAMP, extra VARCHAR);\n"
                    .to_string(),
            ),
            // 1BRC's file has no header and `;` between the fields.
            Stream::Measurements => Some(format!(
                "CREATE STREAM measurements (station VARCHAR, temperature DOUBLE){};\n",
                match format {
                    Format::Csv =>
                        " WITH ('measurements.header' = 'false', \
                                    'measurements.delimiter' = ';')",
                    Format::Jsonl => "",
                }
            )),
            // The engine-only batches carry `_event_time`; a file's comes from date_time.
            Stream::Person | Stream::Auction => {
                let schema = file_schema(self);
                let columns: Vec<String> = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let sql = match f.data_type() {
                            DataType::Int64 => "BIGINT",
                            DataType::Timestamp(_, _) => "TIMESTAMP",
                            _ => "VARCHAR",
                        };
                        format!("{} {sql}", f.name())
                    })
                    .collect();
                let name = self.source_name();
                Some(format!(
                    "CREATE STREAM {name} ({}) WITH ('{name}.event.time.field' = 'date_time');\n",
                    columns.join(", ")
                ))
            }
        }
    }
}

/// The columns of `stream`'s file form: its batches' without `_event_time`.
fn file_schema(stream: Stream) -> SchemaRef {
    let schema = stream.schema();
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != "_event_time")
        .cloned()
        .collect();
    Arc::new(Schema::new(fields))
}

/// One trade.
struct Trade {
    symbol: usize,
    cents: u64,
    quantity: i64,
    ts: i64,
}

/// The trades generator: ~1000 trades per second of event time, up to 2 s out of order,
/// prices with two decimals, `keys` symbols.
struct Trades {
    rng: SplitMix,
    keys: u64,
    i: i64,
}

impl Trades {
    fn new(keys: u64, seed: u64) -> Self {
        Trades {
            rng: SplitMix(seed),
            keys: keys.max(1),
            i: 0,
        }
    }

    fn next(&mut self) -> Trade {
        // The draw order is that of the original file generator: files stay byte-identical.
        let symbol = (self.rng.next() % self.keys) as usize;
        let cents = 1_000 + self.rng.next() % 49_000;
        let quantity = (1 + self.rng.next() % 1000) as i64;
        let jitter = (self.rng.next() % 2000) as i64;
        let ts = BASE_TIME_MS + self.i - jitter;
        self.i += 1;
        Trade {
            symbol,
            cents,
            quantity,
            ts,
        }
    }
}

fn symbol_names(keys: u64) -> Vec<String> {
    (0..keys.max(1)).map(|k| format!("SYM{k:04}")).collect()
}

/// The One Billion Row Challenge's weather stations.
pub const STATIONS: usize = 400;

/// The measurements generator (1BRC): a uniformly drawn station of `STATIONS`, and its mean
/// temperature plus Gaussian noise (σ = 10 °C, as 1BRC's generator draws), in tenths of a
/// degree within ±99.9.
struct Measurements {
    rng: SplitMix,
    means: Vec<f64>,
}

impl Measurements {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix(seed ^ 0x1B8C);
        let means = (0..STATIONS).map(|_| -20.0 + rng.unit() * 50.0).collect();
        Measurements {
            rng: SplitMix(seed),
            means,
        }
    }

    /// The next (station, tenths of a degree).
    fn next(&mut self) -> (usize, i64) {
        let station = (self.rng.next() % STATIONS as u64) as usize;
        // Box–Muller: 1 - u is in (0, 1], so its logarithm is finite.
        let (u, v) = (self.rng.unit(), self.rng.unit());
        let normal = (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos();
        let tenths = ((self.means[station] + 10.0 * normal) * 10.0).round() as i64;
        (station, tenths.clamp(-999, 999))
    }
}

/// `STATIONS` distinct pronounceable names (2 to 4 syllables, some of them two words), drawn
/// from `seed`.
fn station_names(seed: u64) -> Vec<String> {
    const SYLLABLES: [&str; 32] = [
        "ba", "ka", "lo", "mi", "ra", "ten", "vi", "zu", "an", "dor", "el", "fa", "gu", "ho", "is",
        "jo", "ku", "lan", "mar", "no", "os", "pe", "qui", "ri", "san", "to", "ul", "ve", "wa",
        "xo", "ya", "ze",
    ];
    let mut rng = SplitMix(seed ^ 0x57A7_1045);
    let mut names = Vec::with_capacity(STATIONS);
    let mut seen = std::collections::HashSet::new();
    while names.len() < STATIONS {
        let mut name = String::new();
        for i in 0..2 + rng.next() % 3 {
            if i == 2 && rng.next().is_multiple_of(4) {
                name.push(' ');
            }
            name.push_str(SYLLABLES[(rng.next() % SYLLABLES.len() as u64) as usize]);
        }
        // Capitalise each word.
        let name: String = name
            .split(' ')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" ");
        if seen.insert(name.clone()) {
            names.push(name);
        }
    }
    names
}

/// Tenths of a degree as text with one decimal (`-5` → `-0.5`).
fn tenths_text(t: i64) -> String {
    let sign = if t < 0 { "-" } else { "" };
    format!("{sign}{}.{}", t.abs() / 10, t.abs() % 10)
}

/// One Nexmark bid.
struct Bid {
    auction: i64,
    bidder: i64,
    price: i64,
    channel: usize,
    date_time: i64,
    extra: usize,
}

/// Nexmark's event numbering and id rules, for the bid events only (see docs/benchmarks.md):
/// event `n` is a person when `n % 50 == 0`, an auction when `n % 50` is 1..=3, else a bid;
/// event time is `base + n * 100 µs` (10 000 events/s); ids start at 1000.
struct Bids {
    rng: SplitMix,
    n: u64,
}

/// Bids go to one of the most recent auctions (Nexmark's "in flight" auctions).
const IN_FLIGHT_AUCTIONS: u64 = 100;
/// Bidders are among the most recently registered people.
const ACTIVE_PEOPLE: u64 = 1000;
/// Distinct channels (each with its own URL).
const CHANNELS: usize = 1024;
/// Distinct `extra` paddings.
const EXTRAS: usize = 256;
const CHANNEL_NAMES: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

impl Bids {
    fn new(seed: u64) -> Self {
        Bids {
            rng: SplitMix(seed),
            n: 0,
        }
    }

    fn next(&mut self) -> Bid {
        if self.n % 50 < 4 {
            // Skip the person and auction events: this stream carries bids only.
            self.n += 4 - self.n % 50;
        }
        let n = self.n;
        self.n += 1;
        let block = n / 50;
        let auctions = block * 3 + 3;
        let people = block + 1;
        let rng = &mut self.rng;
        // Half the bids go to the newest (hot) auction, the rest to a recent one.
        let auction = if rng.next().is_multiple_of(2) {
            auctions - 1
        } else {
            auctions - 1 - rng.next() % IN_FLIGHT_AUCTIONS.min(auctions)
        };
        // A quarter of the bids come from the newest (hot) bidder, the rest from recent people.
        let bidder = if rng.next().is_multiple_of(4) {
            people - 1
        } else {
            people - 1 - rng.next() % ACTIVE_PEOPLE.min(people)
        };
        // Nexmark's price: 10^(6u) dollars' worth of cents, heavy-tailed.
        let price = (10f64.powf(rng.unit() * 6.0) * 100.0).round() as i64;
        Bid {
            auction: 1000 + auction as i64,
            bidder: 1000 + bidder as i64,
            price,
            channel: (rng.next() % CHANNELS as u64) as usize,
            date_time: BASE_TIME_MS + (n / 10) as i64,
            extra: (rng.next() % EXTRAS as u64) as usize,
        }
    }
}

/// Per-channel name and URL, and the `extra` paddings (bids average ~100 bytes).
struct BidText {
    urls: Vec<String>,
    extras: Vec<String>,
}

impl BidText {
    fn new(seed: u64) -> Self {
        let mut rng = SplitMix(seed ^ 0x5EED);
        let urls = (0..CHANNELS)
            .map(|c| format!("https://www.nexmark.com/item.htm?query=1&channel_id={c}"))
            .collect();
        let extras = (0..EXTRAS)
            .map(|_| {
                let len = rng.next() % 24;
                (0..len)
                    .map(|_| char::from(b'a' + (rng.next() % 26) as u8))
                    .collect()
            })
            .collect();
        BidText { urls, extras }
    }

    fn channel(&self, c: usize) -> &'static str {
        CHANNEL_NAMES[c % CHANNEL_NAMES.len()]
    }
}

/// Generates `rows` records of `stream` as batches of `batch_size` rows.
pub fn batches(
    stream: Stream,
    rows: u64,
    keys: u64,
    seed: u64,
    batch_size: usize,
) -> BenchResult<Vec<RecordBatch>> {
    let batch_size = batch_size.max(1);
    let schema = stream.schema();
    let mut out = Vec::with_capacity((rows as usize).div_ceil(batch_size));
    let mut left = rows as usize;
    match stream {
        Stream::Person => return crate::nexmark::people(rows, seed, batch_size),
        Stream::Auction => return crate::nexmark::auctions(rows, seed, batch_size),
        Stream::Symbols => return crate::nexmark::symbols(keys),
        Stream::Measurements => {
            let names = station_names(seed);
            let mut generator = Measurements::new(seed);
            while left > 0 {
                let n = left.min(batch_size);
                left -= n;
                let mut station = StringBuilder::with_capacity(n, n * 8);
                let mut temperature = Vec::with_capacity(n);
                for _ in 0..n {
                    let (s, t) = generator.next();
                    station.append_value(&names[s]);
                    temperature.push(t as f64 / 10.0);
                }
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(station.finish()),
                    Arc::new(Float64Array::from(temperature)),
                ];
                out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
            }
        }
        Stream::Trades => {
            let names = symbol_names(keys);
            let mut generator = Trades::new(keys, seed);
            while left > 0 {
                let n = left.min(batch_size);
                left -= n;
                let mut symbol = StringBuilder::with_capacity(n, n * 7);
                let mut price = Vec::with_capacity(n);
                let mut quantity = Vec::with_capacity(n);
                let mut ts = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = generator.next();
                    symbol.append_value(&names[t.symbol]);
                    price.push(t.cents as f64 / 100.0);
                    quantity.push(t.quantity);
                    ts.push(t.ts);
                }
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(symbol.finish()),
                    Arc::new(Float64Array::from(price)),
                    Arc::new(Int64Array::from(quantity)),
                    Arc::new(Int64Array::from(ts)),
                ];
                out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
            }
        }
        Stream::Bid => {
            let text = BidText::new(seed);
            let mut generator = Bids::new(seed);
            while left > 0 {
                let n = left.min(batch_size);
                left -= n;
                let mut auction = Vec::with_capacity(n);
                let mut bidder = Vec::with_capacity(n);
                let mut price = Vec::with_capacity(n);
                let mut channel = StringBuilder::with_capacity(n, n * 6);
                let mut url = StringBuilder::with_capacity(n, n * 56);
                let mut date_time = Vec::with_capacity(n);
                let mut extra = StringBuilder::with_capacity(n, n * 12);
                for _ in 0..n {
                    let b = generator.next();
                    auction.push(b.auction);
                    bidder.push(b.bidder);
                    price.push(b.price);
                    channel.append_value(text.channel(b.channel));
                    url.append_value(&text.urls[b.channel]);
                    date_time.push(b.date_time);
                    extra.append_value(&text.extras[b.extra]);
                }
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(Int64Array::from(auction)),
                    Arc::new(Int64Array::from(bidder)),
                    Arc::new(Int64Array::from(price)),
                    Arc::new(channel.finish()),
                    Arc::new(url.finish()),
                    Arc::new(TimestampMillisecondArray::from(date_time)),
                    Arc::new(extra.finish()),
                ];
                out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
            }
        }
    }
    Ok(out)
}

/// A generated file's format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
}

impl Format {
    /// The file extension the file source recognises.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}

/// ISO-8601 UTC text of epoch milliseconds (what the declared TIMESTAMP column parses).
fn iso_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

/// Writes `rows` records of `stream` to `output`, streaming (nothing is held in memory).
pub fn write_file(
    stream: Stream,
    rows: u64,
    keys: u64,
    format: Format,
    seed: u64,
    output: &Path,
) -> BenchResult<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(output)?);
    write_records(stream, rows, keys, format, seed, &mut out)?;
    out.flush()?;
    Ok(())
}

/// Writes `rows` records of `stream` to `out`, one per line (CSV with a header line, except
/// measurements: 1BRC's `station;temperature` lines).
pub fn write_records(
    stream: Stream,
    rows: u64,
    keys: u64,
    format: Format,
    seed: u64,
    out: &mut impl Write,
) -> BenchResult<()> {
    match stream {
        Stream::Person | Stream::Auction | Stream::Symbols => {
            let schema = file_schema(stream);
            let rows: Vec<RecordBatch> = batches(stream, rows, keys, seed, 8192)?
                .into_iter()
                .map(|b| b.project(&(0..schema.fields().len()).collect::<Vec<_>>()))
                .collect::<Result<_, _>>()?;
            match format {
                Format::Csv => {
                    let mut writer = arrow::csv::WriterBuilder::new()
                        .with_header(true)
                        .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.3f".to_string())
                        .build(&mut *out);
                    for batch in &rows {
                        writer.write(batch)?;
                    }
                }
                Format::Jsonl => {
                    let mut writer = arrow::json::LineDelimitedWriter::new(&mut *out);
                    writer.write_batches(&rows.iter().collect::<Vec<_>>())?;
                    writer.finish()?;
                }
            }
        }
        Stream::Measurements => {
            let names = station_names(seed);
            let mut generator = Measurements::new(seed);
            for _ in 0..rows {
                let (s, t) = generator.next();
                let (station, temperature) = (&names[s], tenths_text(t));
                match format {
                    Format::Csv => writeln!(out, "{station};{temperature}")?,
                    Format::Jsonl => writeln!(
                        out,
                        r#"{{"station":"{station}","temperature":{temperature}}}"#
                    )?,
                }
            }
        }
        Stream::Trades => {
            let names = symbol_names(keys);
            let mut generator = Trades::new(keys, seed);
            if format == Format::Csv {
                writeln!(out, "symbol,price,quantity,ts")?;
            }
            for _ in 0..rows {
                let t = generator.next();
                let (symbol, whole, frac) = (&names[t.symbol], t.cents / 100, t.cents % 100);
                let (quantity, ts) = (t.quantity, t.ts);
                match format {
                    Format::Csv => writeln!(out, "{symbol},{whole}.{frac:02},{quantity},{ts}")?,
                    Format::Jsonl => writeln!(
                        out,
                        r#"{{"symbol":"{symbol}","price":{whole}.{frac:02},"quantity":{quantity},"ts":{ts}}}"#
                    )?,
                }
            }
        }
        Stream::Bid => {
            let text = BidText::new(seed);
            let mut generator = Bids::new(seed);
            if format == Format::Csv {
                writeln!(out, "auction,bidder,price,channel,url,date_time,extra")?;
            }
            for _ in 0..rows {
                let b = generator.next();
                let (auction, bidder, price) = (b.auction, b.bidder, b.price);
                let (channel, url) = (text.channel(b.channel), &text.urls[b.channel]);
                let (date_time, extra) = (iso_millis(b.date_time), &text.extras[b.extra]);
                match format {
                    Format::Csv => writeln!(
                        out,
                        "{auction},{bidder},{price},{channel},{url},{date_time},{extra}"
                    )?,
                    Format::Jsonl => writeln!(
                        out,
                        r#"{{"auction":{auction},"bidder":{bidder},"price":{price},"channel":"{channel}","url":"{url}","date_time":"{date_time}","extra":"{extra}"}}"#
                    )?,
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_deterministic_and_sized() -> BenchResult<()> {
        for stream in [Stream::Trades, Stream::Bid, Stream::Measurements] {
            let a = batches(stream, 20_000, 10, 7, 8192)?;
            let b = batches(stream, 20_000, 10, 7, 8192)?;
            assert_eq!(a, b);
            assert_eq!(
                a.iter().map(|b| b.num_rows()).collect::<Vec<_>>(),
                [8192, 8192, 3616]
            );
            assert_eq!(a[0].schema(), stream.schema());
        }
        Ok(())
    }

    #[test]
    fn measurements_are_1brc_lines() -> BenchResult<()> {
        let names = station_names(42);
        assert_eq!(names.len(), STATIONS);
        assert!(names.iter().all(|n| !n.is_empty() && !n.contains(';')));
        let mut text = Vec::new();
        write_records(Stream::Measurements, 50_000, 0, Format::Csv, 42, &mut text)?;
        let text = String::from_utf8(text)?;
        let batch = &batches(Stream::Measurements, 50_000, 0, 42, 50_000)?[0];
        let temperatures = batch
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or("temperature is not a double")?;
        let mut stations = std::collections::HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let (station, temperature) = line.split_once(';').ok_or("no ';'")?;
            let (_, decimals) = temperature.split_once('.').ok_or("no decimal point")?;
            assert_eq!(decimals.len(), 1, "{line}");
            let t: f64 = temperature.parse()?;
            assert!((-99.9..=99.9).contains(&t), "{line}");
            // The file and the batches hold the same values.
            assert_eq!(t, temperatures.value(i));
            stations.insert(station.to_string());
        }
        assert_eq!(stations.len(), STATIONS);
        assert_eq!(tenths_text(-5), "-0.5");
        assert_eq!(tenths_text(-999), "-99.9");
        assert_eq!(tenths_text(7), "0.7");
        Ok(())
    }

    #[test]
    fn bid_ids_follow_nexmark_numbering() {
        let mut bids = Bids::new(1);
        let first = bids.next();
        // Event 4 is the first bid: one person (1000) and three auctions (1000..=1002) exist.
        assert_eq!(first.bidder, 1000);
        assert!((1000..=1002).contains(&first.auction));
        for _ in 0..10_000 {
            let b = bids.next();
            assert!(b.auction >= 1000 && b.bidder >= 1000 && b.price >= 100);
        }
    }
}
