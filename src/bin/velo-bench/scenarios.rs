//! The benchmark scenarios (SQL text run through the real planner and engine) and the two ways
//! of running one: engine only over pre-generated batches, and end to end from a file.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::Int32Array;
use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;
use datafusion::physical_expr::expressions::Column;
use velostream::exec::input::InputAdapter;
use velostream::job::{plan_script, JobOptions};
use velostream::partition::{
    run_partitioned, Delivery, InputEvent, PartitionOptions, PartitionRouter, PartitionRun, Routing,
};
use velostream::sql::{PlannedQuery, QueryPlanner, SourceRole};

use crate::generators::{self, Format, Stream};
use crate::report::{cpu_seconds, memory_kb, RunResult};
use crate::BenchResult;

/// One benchmark scenario.
pub struct Scenario {
    /// Its name on the command line and in reports.
    pub name: &'static str,
    /// The stream it reads (input 0).
    pub stream: Stream,
    /// The second stream of a join of two streams (engine-only).
    pub side: Option<Stream>,
    /// The table a stream–table join reads (engine-only).
    pub table: Option<Stream>,
    /// The query; the same text in both modes.
    pub sql: &'static str,
}

/// Every scenario, in report order.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "passthrough",
        stream: Stream::Trades,
        side: None,
        table: None,
        sql: "SELECT symbol, price, quantity, ts FROM trades",
    },
    Scenario {
        name: "filter_projection",
        stream: Stream::Trades,
        side: None,
        table: None,
        sql: "SELECT symbol, price * quantity AS notional, ts FROM trades WHERE quantity > 500",
    },
    Scenario {
        name: "group_by_changes",
        stream: Stream::Trades,
        side: None,
        table: None,
        sql: "SELECT symbol, COUNT(*) AS n, SUM(quantity) AS qty FROM trades GROUP BY symbol EMIT CHANGES",
    },
    Scenario {
        name: "tumbling_final",
        stream: Stream::Trades,
        side: None,
        table: None,
        sql: "SELECT symbol, _window_start, COUNT(*) AS n, SUM(quantity) AS qty, AVG(price) AS avg_price \
              FROM trades GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' MINUTE) EMIT FINAL \
              WITH ('trades.watermark.max_out_of_orderness' = '2s')",
    },
    Scenario {
        name: "sliding",
        stream: Stream::Trades,
        side: None,
        table: None,
        sql: "SELECT symbol, _window_start, COUNT(*) AS n, SUM(quantity) AS qty \
              FROM trades GROUP BY symbol WINDOW SLIDING(ts, 5m, 1m) EMIT FINAL \
              WITH ('trades.watermark.max_out_of_orderness' = '2s')",
    },
    Scenario {
        name: "session",
        stream: Stream::Trades,
        side: None,
        table: None,
        // Each symbol trades about once a second: a 5 s gap gives sessions of ~150 trades.
        sql: "SELECT symbol, _window_start, _window_end, COUNT(*) AS n, SUM(quantity) AS qty \
              FROM trades GROUP BY symbol WINDOW SESSION(ts, 5s) EMIT FINAL \
              WITH ('trades.watermark.max_out_of_orderness' = '2s')",
    },
    Scenario {
        name: "onebrc",
        stream: Stream::Measurements,
        side: None,
        table: None,
        // The One Billion Row Challenge: each station's minimum, mean and maximum.
        sql: "SELECT station, MIN(temperature) AS min_temp, AVG(temperature) AS mean_temp, \
              MAX(temperature) AS max_temp FROM measurements GROUP BY station EMIT FINAL",
    },
    Scenario {
        name: "nexmark_q0",
        stream: Stream::Bid,
        side: None,
        table: None,
        sql: "SELECT auction, bidder, price, date_time, extra FROM bid",
    },
    Scenario {
        name: "nexmark_q1",
        stream: Stream::Bid,
        side: None,
        table: None,
        sql: "SELECT auction, bidder, price * 0.908 AS price, date_time, extra FROM bid",
    },
    Scenario {
        name: "nexmark_q2",
        stream: Stream::Bid,
        side: None,
        table: None,
        sql: "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    },
    Scenario {
        name: "nexmark_q5_counts",
        stream: Stream::Bid,
        side: None,
        table: None,
        // The counting half of q5: bids per auction per HOP window (the scenario called
        // nexmark_q5 in the tables before q5 ran in full).
        sql: "SELECT auction, _window_start, COUNT(*) AS num FROM bid GROUP BY auction \
              WINDOW SLIDING(date_time, 10s, 2s) EMIT FINAL \
              WITH ('bid.watermark.max_out_of_orderness' = '4s')",
    },
    Scenario {
        name: "nexmark_q11",
        stream: Stream::Bid,
        side: None,
        table: None,
        sql: "SELECT bidder, _window_start, _window_end, COUNT(*) AS bid_count FROM bid \
              GROUP BY bidder WINDOW SESSION(date_time, 10s) EMIT FINAL \
              WITH ('bid.watermark.max_out_of_orderness' = '4s')",
    },
    Scenario {
        name: "enrich_lookup",
        stream: Stream::Trades,
        side: None,
        table: Some(Stream::Symbols),
        sql: "SELECT t.symbol, s.sector, t.price * t.quantity AS notional FROM trades t \
              JOIN symbols s ON t.symbol = s.symbol",
    },
    Scenario {
        name: "nexmark_q3",
        stream: Stream::Auction,
        side: Some(Stream::Person),
        table: None,
        // Nexmark's regular join, its state bounded by 'state.ttl' on event time.
        sql: "SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p \
              ON a.seller = p.id WHERE a.category = 10 \
              AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA') \
              WITH ('state.ttl' = '10s')",
    },
    Scenario {
        name: "nexmark_q5",
        stream: Stream::Bid,
        side: Some(Stream::Bid),
        table: None,
        // The auctions with the most bids in each HOP window: the counts joined with their
        // window's maximum, an aggregate of the counts keyed by the window's end.
        sql: "SELECT a.auction, a.num FROM (SELECT auction, COUNT(*) AS num, _window_start, \
              _window_end FROM bid GROUP BY auction, \
              HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)) a JOIN \
              (SELECT MAX(num) AS maxn, _window_end FROM (SELECT auction, COUNT(*) AS num, \
               _window_end FROM bid GROUP BY auction, \
               HOP(date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)) c \
               GROUP BY _window_end) m \
              ON a._window_end = m._window_end AND a.num >= m.maxn \
              WITH ('bid.watermark.max_out_of_orderness' = '4s')",
    },
    Scenario {
        name: "nexmark_q7",
        stream: Stream::Bid,
        side: Some(Stream::Bid),
        table: None,
        // The highest bid of each 10 s window: the window's maximum joined back to the bids
        // by an interval on its end.
        sql: "SELECT b.auction, b.price, b.bidder, b.date_time FROM bid b JOIN \
              (SELECT MAX(price) AS maxprice, _window_end FROM bid \
               GROUP BY TUMBLE(date_time, INTERVAL '10' SECOND)) m \
              ON b.price = m.maxprice AND b.date_time BETWEEN m._window_end - INTERVAL '10' SECOND \
              AND m._window_end \
              WITH ('bid.watermark.max_out_of_orderness' = '4s')",
    },
    Scenario {
        name: "nexmark_q8",
        stream: Stream::Person,
        side: Some(Stream::Auction),
        table: None,
        // People who opened an auction in the 10 s window they registered in: a window join.
        sql: "SELECT p.id, p.name, p._window_start FROM \
              (SELECT id, name, _window_start, _window_end FROM person \
               GROUP BY id, name, TUMBLE(date_time, INTERVAL '10' SECOND)) p JOIN \
              (SELECT seller, _window_start, _window_end FROM auction \
               GROUP BY seller, TUMBLE(date_time, INTERVAL '10' SECOND)) a \
              ON p.id = a.seller AND p._window_end = a._window_end",
    },
    Scenario {
        name: "auction_bids_10s",
        stream: Stream::Auction,
        side: Some(Stream::Bid),
        table: None,
        // An interval join: each bid in the first 10 s of its auction.
        sql: "SELECT a.id, a.seller, b.bidder, b.price FROM auction a JOIN bid b \
              ON a.id = b.auction AND b.date_time BETWEEN a.date_time \
              AND a.date_time + INTERVAL '10' SECOND \
              WITH ('bid.watermark.max_out_of_orderness' = '1s')",
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> BenchResult<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        format!("unknown scenario '{name}' (one of: {})", names.join(", ")).into()
    })
}

/// Generation settings shared by every run of a benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub rows: u64,
    pub keys: u64,
    pub seed: u64,
    pub batch_size: usize,
    /// Source partitions of a keyed input (0: one unkeyed stream).
    pub keyed_source: usize,
}

/// Engine only: generates the batches (untimed), plans the query, and times
/// `run_partitioned` over clones of the batches with a sink that only counts.
pub fn run_engine(
    scenario: &Scenario,
    workload: &Workload,
    partitions: usize,
) -> BenchResult<RunResult> {
    let generated = Instant::now();
    let batches = generators::batches(
        scenario.stream,
        workload.rows,
        workload.keys,
        workload.seed,
        workload.batch_size,
    )?;
    let side = match scenario.side {
        Some(stream) => {
            let rows = crate::nexmark::rows_beside(scenario.stream, stream, workload.rows);
            let side = generators::batches(
                stream,
                rows,
                workload.keys,
                workload.seed,
                workload.batch_size,
            )?;
            Some((stream, side))
        }
        None => None,
    };
    let generate_s = generated.elapsed().as_secs_f64();
    let mut planner = QueryPlanner::new();
    planner.register_source(scenario.stream.source_name(), scenario.stream.schema())?;
    if let Some((stream, _)) = &side {
        planner.register_source(stream.source_name(), stream.schema())?;
    }
    if let Some(table) = scenario.table {
        let role = SourceRole::Table {
            primary_key: Vec::new(),
        };
        planner.register_source_as(table.source_name(), table.schema(), role)?;
    }
    let plan = planner.plan_sql(scenario.sql, "bench")?;
    let tables = match scenario.table {
        Some(table) => crate::nexmark::load_tables(
            &plan,
            generators::batches(table, 0, workload.keys, workload.seed, 1)?,
        )?,
        None => Vec::new(),
    };

    let input_rows = workload.rows
        + side
            .as_ref()
            .map_or(0, |(_, b)| b.iter().map(|b| b.num_rows() as u64).sum());
    let (events, source_key) = match (workload.keyed_source, side) {
        (_, Some((_, side))) => (crate::nexmark::by_time(batches, side)?, Vec::new()),
        (0, None) => (
            batches.into_iter().map(|b| (0, b, None)).collect(),
            Vec::new(),
        ),
        (p, None) => keyed_topic(&plan, batches, p, workload.batch_size)?,
    };
    let base_rss_kb = memory_kb("VmRSS");
    let options = PartitionOptions {
        source_key,
        tables,
        ..PartitionOptions::new(partitions)
    };
    // A keyed topic's partitions are declared first, as a Kafka assignment is: none of them
    // is overtaken by the watermark before it sends.
    let declared = (workload.keyed_source > 0).then(|| InputEvent::Partitions {
        input: 0,
        ids: (0..workload.keyed_source as i32).collect(),
    });
    let mut declared = declared.into_iter();
    let mut next = events.iter();
    let mut output_rows = 0u64;
    let mut late_rows = 0u64;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let stats = run_partitioned(
        &plan,
        &options,
        // Clones share the column buffers: handing out a batch costs a few Arc increments.
        || {
            if let Some(event) = declared.next() {
                return Ok(Some(event));
            }
            Ok(next.next().map(|(input, batch, run)| match (input, run) {
                (0, Some(run)) => InputEvent::PartitionedBatch {
                    input: 0,
                    batch: batch.clone(),
                    runs: vec![*run],
                },
                (0, None) => InputEvent::Batch(batch.clone()),
                (input, _) => InputEvent::InputBatch {
                    input: *input,
                    batch: batch.clone(),
                },
            }))
        },
        |delivery| {
            match delivery {
                Delivery::Rows(b) | Delivery::Encoded { batch: b, .. } => {
                    output_rows += b.num_rows() as u64
                }
                Delivery::Late(b) => late_rows += b.num_rows() as u64,
                Delivery::Flush | Delivery::Checkpoint { .. } | Delivery::Snapshot { .. } => {}
            }
            Ok(())
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu_before;
    drop(events);
    Ok(RunResult {
        scenario: scenario.name.to_string(),
        mode: match workload.keyed_source {
            0 => "engine".into(),
            p => format!("engine, keyed source of {p}"),
        },
        partitions: stats.partitions,
        requested_partitions: partitions,
        rows: input_rows,
        output_rows,
        late_rows: late_rows.max(stats.late_records),
        seconds,
        cpu_s,
        generate_s,
        latency_p50_us: Some(stats.latency_p50.as_secs_f64() * 1e6),
        latency_p99_us: Some(stats.latency_p99.as_secs_f64() * 1e6),
        base_rss_kb,
        peak_rss_kb: memory_kb("VmHWM"),
        single_reason: stats.single_reason.map(str::to_string),
        format: None,
    })
}

/// The input as a topic of `partitions` partitions keyed by the query's routing key would
/// hold it (untimed): each row in the partition of its key's hash, a `_partition` column, and
/// the partitions read in turn, a batch at a time. Also the key columns, for the router.
/// A query without a key reads the batches as they are.
#[allow(clippy::type_complexity)]
fn keyed_topic(
    plan: &PlannedQuery,
    batches: Vec<RecordBatch>,
    partitions: usize,
    batch_size: usize,
) -> BenchResult<(Vec<(usize, RecordBatch, Option<PartitionRun>)>, Vec<String>)> {
    let Routing::Hash(key) = Routing::for_plan(plan) else {
        return Ok((
            batches.into_iter().map(|b| (0, b, None)).collect(),
            Vec::new(),
        ));
    };
    let names: Vec<String> = key
        .iter()
        .filter_map(|e| {
            e.as_ref()
                .downcast_ref::<Column>()
                .map(|c| c.name().to_string())
        })
        .collect();
    let schema = Arc::clone(&plan.input_schema);
    let mut adapter = InputAdapter::new(Arc::clone(&schema), plan.source.clone());
    let mut router = PartitionRouter::new(Routing::Hash(key), partitions, &[]);
    let mut rows: Vec<Vec<RecordBatch>> = vec![Vec::new(); partitions];
    for batch in batches {
        for (p, piece) in router.split(adapter.adapt(batch)?)?.into_iter().enumerate() {
            if let Some(piece) = piece {
                rows[p].extend(piece.into_batches()?);
            }
        }
    }
    let partition_column = schema.index_of("_partition").ok();
    let mut topic: Vec<Vec<RecordBatch>> = Vec::with_capacity(partitions);
    for (p, pieces) in rows.iter().enumerate() {
        let all = concat_batches(&schema, pieces)?;
        let mut chunks = Vec::new();
        for start in (0..all.num_rows()).step_by(batch_size.max(1)) {
            let chunk = all.slice(start, batch_size.min(all.num_rows() - start));
            let chunk = match partition_column {
                Some(i) => {
                    let mut columns = chunk.columns().to_vec();
                    columns[i] = Arc::new(Int32Array::from_value(p as i32, chunk.num_rows()));
                    RecordBatch::try_new(Arc::clone(&schema), columns)?
                }
                None => chunk,
            };
            chunks.push(chunk);
        }
        topic.push(chunks);
    }
    let mut events = Vec::new();
    let longest = topic.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for (p, chunks) in topic.iter().enumerate() {
            if let Some(chunk) = chunks.get(i) {
                let run = PartitionRun {
                    partition: p as i32,
                    rows: chunk.num_rows(),
                };
                events.push((0, chunk.clone(), Some(run)));
            }
        }
    }
    Ok((events, names))
}

/// The file an end-to-end run of `stream` reads, under `dir`.
pub fn input_path(dir: &Path, stream: Stream, rows: u64, format: Format) -> std::path::PathBuf {
    dir.join(format!(
        "{}.{rows}.{}",
        stream.source_name(),
        format.extension()
    ))
}

/// The streams a scenario reads, each with its row count: its stream, the second input
/// beside it (over the same Nexmark events) and its table.
pub fn inputs_of(scenario: &Scenario, rows: u64) -> Vec<(Stream, u64)> {
    let mut inputs = vec![(scenario.stream, rows)];
    if let Some(side) = scenario.side {
        inputs.push((
            side,
            crate::nexmark::rows_beside(scenario.stream, side, rows),
        ));
    }
    if let Some(table) = scenario.table {
        inputs.push((table, 0));
    }
    inputs.dedup();
    inputs
}

/// End to end: plans the scenario as a script over the generated file and runs the job
/// (decode → engine → JSON-lines file), timing the run.
pub fn run_e2e(
    scenario: &Scenario,
    workload_rows: u64,
    partitions: usize,
    dir: &Path,
    format: Format,
) -> BenchResult<RunResult> {
    let mut source_paths = BTreeMap::new();
    let mut declarations = String::new();
    for (stream, rows) in inputs_of(scenario, workload_rows) {
        let input = input_path(dir, stream, rows, format);
        if !input.exists() {
            return Err(format!("{} is missing (the parent generates it)", input.display()).into());
        }
        source_paths.insert(
            stream.source_name().to_string(),
            input.display().to_string(),
        );
        declarations.push_str(&stream.declaration(format).unwrap_or_default());
    }
    let output = dir.join(format!("{}.p{partitions}.out.jsonl", scenario.name));
    let options = JobOptions {
        source_paths,
        output: Some(output.clone()),
        partitions,
        queue_depth: 0,
        progress: false,
        collect_output: false,
        ..Default::default()
    };
    let script = format!("{declarations}{}", scenario.sql);
    let base_rss_kb = memory_kb("VmRSS");
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let planned = plan_script(&script, &options)?;
    let summaries = planned.run(&options)?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu_before;
    // The output file only proves the run wrote; it is not kept.
    let _ = std::fs::remove_file(&output);
    let summary = summaries
        .into_iter()
        .last()
        .ok_or("the script ran no job")?;
    Ok(RunResult {
        scenario: scenario.name.to_string(),
        mode: "e2e".into(),
        partitions: summary.partitions,
        requested_partitions: partitions,
        rows: summary.records_in,
        output_rows: summary.records_out,
        late_rows: summary.late_records,
        seconds,
        cpu_s,
        generate_s: 0.0,
        latency_p50_us: None,
        latency_p99_us: None,
        base_rss_kb,
        peak_rss_kb: memory_kb("VmHWM"),
        single_reason: None,
        format: Some(format.extension().to_string()),
    })
}
