//! Nexmark's person and auction streams, beside the bid stream in `generators.rs`, with the
//! same event numbering: event `n` is a person when `n % 50 == 0`, an auction when `n % 50` is
//! 1..=3, else a bid; event time is `base + n * 100 µs`; ids start at 1000. Also a small
//! `symbols` table for the trades stream to join.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, StringBuilder, TimestampMillisecondArray};
use arrow::datatypes::TimestampMillisecondType;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use velostream::exec::join::{latest_per_key, LookupTable};
use velostream::sql::PlannedQuery;

use crate::generators::{SplitMix, Stream, BASE_TIME_MS};
use crate::BenchResult;

const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 8] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie",
];
const LAST_NAMES: [&str; 8] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones",
];
/// Sellers are among the most recently registered people.
const ACTIVE_SELLERS: u64 = 1000;

fn timestamp(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Millisecond, None), true)
}

/// `person(id, name, email_address, credit_card, city, state, date_time, extra)`, plus
/// `_event_time` (the date_time in ms) for the engine-only runs.
pub fn person_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("email_address", DataType::Utf8, true),
        Field::new("credit_card", DataType::Utf8, true),
        Field::new("city", DataType::Utf8, true),
        Field::new("state", DataType::Utf8, true),
        timestamp("date_time"),
        Field::new("extra", DataType::Utf8, true),
        Field::new("_event_time", DataType::Int64, true),
    ]))
}

/// `auction(id, item_name, description, initial_bid, reserve, date_time, expires, seller,
/// category, extra)`, plus `_event_time`.
pub fn auction_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("item_name", DataType::Utf8, true),
        Field::new("description", DataType::Utf8, true),
        Field::new("initial_bid", DataType::Int64, true),
        Field::new("reserve", DataType::Int64, true),
        timestamp("date_time"),
        timestamp("expires"),
        Field::new("seller", DataType::Int64, true),
        Field::new("category", DataType::Int64, true),
        Field::new("extra", DataType::Utf8, true),
        Field::new("_event_time", DataType::Int64, true),
    ]))
}

/// `symbols(symbol, sector)`: one row per symbol of the trades stream.
pub fn symbols_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, true),
        Field::new("sector", DataType::Utf8, true),
    ]))
}

/// The time of Nexmark event `n`.
fn event_time(n: u64) -> i64 {
    BASE_TIME_MS + (n / 10) as i64
}

/// `rows` people as batches of `batch_size`: person `i` is event `50 i`.
pub fn people(rows: u64, seed: u64, batch_size: usize) -> BenchResult<Vec<RecordBatch>> {
    let mut rng = SplitMix(seed ^ 0x9E0_91E);
    let schema = person_schema();
    let mut out = Vec::new();
    let mut i = 0u64;
    while i < rows {
        let n = (rows - i).min(batch_size.max(1) as u64) as usize;
        let mut id = Vec::with_capacity(n);
        let mut name = StringBuilder::new();
        let mut email = StringBuilder::new();
        let mut card = StringBuilder::new();
        let mut city = StringBuilder::new();
        let mut state = StringBuilder::new();
        let mut time = Vec::with_capacity(n);
        let mut extra = StringBuilder::new();
        for _ in 0..n {
            let first = FIRST_NAMES[(rng.next() % 8) as usize];
            let last = LAST_NAMES[(rng.next() % 8) as usize];
            id.push(1000 + i as i64);
            name.append_value(format!("{first} {last}"));
            email.append_value(format!("{first}@{last}.com"));
            card.append_value(format!(
                "{:04} {:04} {:04} {:04}",
                rng.next() % 10_000,
                rng.next() % 10_000,
                rng.next() % 10_000,
                rng.next() % 10_000
            ));
            city.append_value(CITIES[(rng.next() % 10) as usize]);
            state.append_value(STATES[(rng.next() % 6) as usize]);
            time.push(event_time(50 * i));
            extra.append_value("");
            i += 1;
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(id)),
            Arc::new(name.finish()),
            Arc::new(email.finish()),
            Arc::new(card.finish()),
            Arc::new(city.finish()),
            Arc::new(state.finish()),
            Arc::new(TimestampMillisecondArray::from(time.clone())),
            Arc::new(extra.finish()),
            Arc::new(Int64Array::from(time)),
        ];
        out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
    }
    Ok(out)
}

/// `rows` auctions as batches of `batch_size`: auction `j` is event `50 (j / 3) + 1 + j % 3`,
/// sold by one of the most recent people, in one of 5 categories (10 to 14).
pub fn auctions(rows: u64, seed: u64, batch_size: usize) -> BenchResult<Vec<RecordBatch>> {
    let mut rng = SplitMix(seed ^ 0xA0C7);
    let schema = auction_schema();
    let mut out = Vec::new();
    let mut j = 0u64;
    while j < rows {
        let n = (rows - j).min(batch_size.max(1) as u64) as usize;
        let mut id = Vec::with_capacity(n);
        let mut item = StringBuilder::new();
        let mut description = StringBuilder::new();
        let (mut initial, mut reserve) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut time, mut expires) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut seller, mut category) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut extra = StringBuilder::new();
        for _ in 0..n {
            let block = j / 3;
            let people = block + 1;
            let t = event_time(50 * block + 1 + j % 3);
            let bid = (rng.next() % 10_000) as i64 + 100;
            id.push(1000 + j as i64);
            item.append_value(format!("item-{}", rng.next() % 1000));
            description.append_value("");
            initial.push(bid);
            reserve.push(bid + (rng.next() % 1000) as i64);
            time.push(t);
            expires.push(t + 10_000 + (rng.next() % 10_000) as i64);
            // A quarter of the auctions come from the newest seller, the rest from recent ones.
            let s = if rng.next().is_multiple_of(4) {
                people - 1
            } else {
                people - 1 - rng.next() % ACTIVE_SELLERS.min(people)
            };
            seller.push(1000 + s as i64);
            category.push(10 + (rng.next() % 5) as i64);
            extra.append_value("");
            j += 1;
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(id)),
            Arc::new(item.finish()),
            Arc::new(description.finish()),
            Arc::new(Int64Array::from(initial)),
            Arc::new(Int64Array::from(reserve)),
            Arc::new(TimestampMillisecondArray::from(time.clone())),
            Arc::new(TimestampMillisecondArray::from(expires)),
            Arc::new(Int64Array::from(seller)),
            Arc::new(Int64Array::from(category)),
            Arc::new(extra.finish()),
            Arc::new(Int64Array::from(time)),
        ];
        out.push(RecordBatch::try_new(Arc::clone(&schema), columns)?);
    }
    Ok(out)
}

/// The symbols table: each of `keys` symbols with one of 11 sectors.
pub fn symbols(keys: u64) -> BenchResult<Vec<RecordBatch>> {
    let sectors = [
        "energy",
        "materials",
        "industrials",
        "consumer",
        "staples",
        "health",
        "financials",
        "tech",
        "telecom",
        "utilities",
        "realty",
    ];
    let mut symbol = StringBuilder::new();
    let mut sector = StringBuilder::new();
    for k in 0..keys.max(1) {
        symbol.append_value(format!("SYM{k:04}"));
        sector.append_value(sectors[(k % 11) as usize]);
    }
    let columns: Vec<ArrayRef> = vec![Arc::new(symbol.finish()), Arc::new(sector.finish())];
    Ok(vec![RecordBatch::try_new(symbols_schema(), columns)?])
}

/// The rows of `side` that span the same Nexmark events as `rows` rows of `main`.
pub fn rows_beside(main: Stream, side: Stream, rows: u64) -> u64 {
    let per_block = |s: Stream| match s {
        Stream::Person => 1,
        Stream::Auction => 3,
        _ => 46,
    };
    rows * per_block(side) / per_block(main)
}

/// The first event time of a Nexmark batch (its `date_time`).
fn first_time(batch: &RecordBatch) -> i64 {
    batch
        .column_by_name("date_time")
        .and_then(|c| {
            c.as_primitive_opt::<TimestampMillisecondType>()
                .map(|t| t.value(0))
        })
        .unwrap_or(i64::MAX)
}

/// Input 0's and input 1's batches in the order of their first event time, as two sources
/// read side by side would hand them over.
#[allow(clippy::type_complexity)]
pub fn by_time(
    main: Vec<RecordBatch>,
    side: Vec<RecordBatch>,
) -> BenchResult<
    Vec<(
        usize,
        RecordBatch,
        Option<velostream::partition::PartitionRun>,
    )>,
> {
    let mut events: Vec<(i64, usize, RecordBatch)> = main
        .into_iter()
        .map(|b| (first_time(&b), 0, b))
        .chain(side.into_iter().map(|b| (first_time(&b), 1, b)))
        .collect();
    events.sort_by_key(|(t, input, _)| (*t, *input));
    Ok(events
        .into_iter()
        .map(|(_, input, b)| (input, b, None))
        .collect())
}

/// Each table of `plan` from `rows` (untimed), as the job would load it: through the table's
/// side of the query, then indexed by the join key.
pub fn load_tables(
    plan: &PlannedQuery,
    rows: Vec<RecordBatch>,
) -> BenchResult<Vec<Arc<LookupTable>>> {
    let mut tables = Vec::new();
    for table in &plan.tables {
        let schema = rows
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(symbols_schema);
        let whole = latest_per_key(&schema, &rows, &[])?;
        tables.push(Arc::new(LookupTable::load(table, whole)?));
    }
    Ok(tables)
}
