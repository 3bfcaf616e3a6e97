//! Kafka from the benchmark tool: `produce` writes generated records to a topic (a demo feed
//! for `velo-sql deploy-app`), and `kafka` measures a job end to end through librdkafka's
//! mock cluster: a 4-partition input topic → the job → an output topic, beside the producer's
//! and a bare consumer's rates on the same cluster.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use velostream::connectors::kafka::MockKafka;
use velostream::server::{deploy_app, AppOptions};

use crate::generators::{write_records, Format, Stream, BASE_TIME_MS};
use crate::BenchResult;

/// A `Write` that sends every line as one message (the header line of CSV is skipped).
struct TopicWriter {
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
    line: Vec<u8>,
    sent: u64,
    /// Spread messages evenly over this many partitions (None: librdkafka's partitioner).
    partitions: Option<i32>,
}

impl TopicWriter {
    /// A writer to `topic` (round-robin over `partitions` when given).
    fn open(brokers: &str, topic: &str, partitions: Option<i32>) -> BenchResult<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .create()?;
        Ok(TopicWriter {
            producer,
            topic: topic.to_string(),
            line: Vec::new(),
            sent: 0,
            partitions,
        })
    }

    /// Waits until every message is acknowledged; returns how many were sent.
    fn finish(self) -> BenchResult<u64> {
        self.producer.flush(Duration::from_secs(60))?;
        Ok(self.sent)
    }

    fn send_line(&mut self) -> std::io::Result<()> {
        let mut record: BaseRecord<'_, (), [u8]> = BaseRecord::to(&self.topic).payload(&self.line);
        if let Some(p) = self.partitions {
            record = record.partition((self.sent % p as u64) as i32);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    // The local queue is full: let acknowledgements drain it.
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
            }
        }
        self.sent += 1;
        Ok(())
    }
}

impl Write for TopicWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                self.send_line()?;
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Produces `rows` generated JSON records of `stream` to `topic` (round-robin over
/// `partitions` when given); returns how many.
pub fn produce(
    brokers: &str,
    topic: &str,
    stream: Stream,
    workload: (u64, u64, u64),
    partitions: Option<i32>,
) -> BenchResult<u64> {
    let (rows, keys, seed) = workload;
    let mut writer = TopicWriter::open(brokers, topic, partitions)?;
    write_records(stream, rows, keys, Format::Jsonl, seed, &mut writer)?;
    writer.finish()
}

/// The jobs `kafka` can measure: name and SQL (reading topic `trades`, writing `out`).
pub const KAFKA_JOBS: &[(&str, &str)] = &[
    (
        "filter",
        "CREATE STREAM out AS SELECT symbol, price * quantity AS notional, ts FROM trades \
         WHERE quantity > 500 WITH ('out.type' = 'kafka_sink', 'out.topic.name' = 'out');",
    ),
    (
        "tumbling",
        "CREATE STREAM out AS SELECT symbol, _window_start, COUNT(*) AS n, SUM(quantity) AS qty, \
         AVG(price) AS avg_price FROM trades GROUP BY symbol WINDOW TUMBLING(ts, INTERVAL '1' MINUTE) \
         EMIT FINAL WITH ('out.type' = 'kafka_sink', 'out.topic.name' = 'out');",
    ),
];

/// Measures `job` end to end on a mock cluster, in three timed phases over the same `rows`
/// trades on a 4-partition topic: the producer filling the topic, a bare consumer reading it
/// (the broker's ceiling for any client), and the job reading it and writing its output topic
/// (the clock runs from the job's start, group join included, until it is done: for `filter`,
/// every input offset committed, so every output acknowledged; for `tumbling`, every window
/// in the output topic). Up to 200,000 rows: the mock stalls consumers of a larger backlog.
pub fn measure(
    job: &str,
    (rows, keys, seed): (u64, u64, u64),
    partitions: usize,
    decode_threads: Option<usize>,
) -> BenchResult<()> {
    let sql = KAFKA_JOBS
        .iter()
        .find(|(name, _)| *name == job)
        .map(|(_, sql)| *sql)
        .ok_or_else(|| format!("unknown Kafka job '{job}' (filter, tumbling)"))?;
    if rows > 200_000 {
        // Past about 60,000 messages per partition, consumers of the mock stall on the backlog.
        return Err(
            "the mock cluster serves a backlog of up to 200,000 rows: use --rows 200000 or fewer"
                .into(),
        );
    }
    let mock = MockKafka::start(1)?;
    mock.create_topic("trades", INPUT_PARTITIONS)?;
    mock.create_topic("out", INPUT_PARTITIONS)?;
    let brokers = mock.bootstrap_servers().to_string();

    let started = Instant::now();
    let trades = produce(
        &brokers,
        "trades",
        Stream::Trades,
        (rows, keys, seed),
        Some(INPUT_PARTITIONS),
    )?;
    let produce_seconds = started.elapsed().as_secs_f64();
    // On every partition, a trade an hour later (quantity 0: the filter drops it) moves the
    // watermark past every window of the generated trades, so the tumbling job emits them all.
    let mut clocks = TopicWriter::open(&brokers, "trades", Some(INPUT_PARTITIONS))?;
    for _ in 0..INPUT_PARTITIONS {
        writeln!(
            clocks,
            r#"{{"symbol":"clock","price":1.00,"quantity":0,"ts":{}}}"#,
            BASE_TIME_MS + 3_600_000
        )?;
    }
    let input = trades + clocks.finish()?;

    let bare: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "velo-bench-bare")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    bare.subscribe(&["trades"])?;
    let mut read = 0u64;
    let mut first_read = None;
    let deadline = Instant::now() + WAIT_LIMIT;
    while read < input && Instant::now() < deadline {
        if let Some(m) = bare.poll(Duration::from_millis(100)) {
            m?;
            first_read.get_or_insert_with(Instant::now);
            read += 1;
        }
    }
    let bare_seconds = first_read.map_or(0.0, |t| t.elapsed().as_secs_f64());
    drop(bare);

    let threads = decode_threads
        .map(|n| format!(", 'trades.decode.threads' = '{n}'"))
        .unwrap_or_default();
    let app = format!(
        "CREATE STREAM trades (symbol VARCHAR, price DOUBLE, quantity BIGINT, ts BIGINT) \
         WITH ('trades.type' = 'kafka_source', 'trades.topic.name' = 'trades', \
         'trades.group.id' = 'bench', 'trades.commit.interval' = '100ms', \
         'trades.event.time.field' = 'ts', 'trades.watermark.max_out_of_orderness' = '2s'{threads});\n{sql}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let options = AppOptions {
        brokers: Some(brokers.clone()),
        partitions,
        queue_depth: 0,
        state: None,
    };
    // Counted before the clock starts: regenerating the trades takes a while.
    let windows = match job {
        "tumbling" => Some(trade_windows(rows, keys, seed)?),
        _ => None,
    };
    let flag = Arc::clone(&stop);
    let started = Instant::now();
    let app_thread = std::thread::spawn(move || deploy_app(&app, &options, flag));
    let done = || app_thread.is_finished();
    // The filter job commits a source offset only after the outputs of the records before it
    // are acknowledged by the output topic, so it is done when its group's committed offsets
    // reach the end of every input partition; watching them (rather than reading the output
    // topic meanwhile) keeps a reader's fetches off the single-threaded mock broker. The
    // tumbling job holds the offsets of its last (clock) windows, so it is done when its
    // output holds every window of the trades.
    let finished = match windows {
        Some(windows) => wait_for_messages(&brokers, "out", windows, done)?,
        None => wait_for_commits(&brokers, "bench-out", "trades", input, done)?,
    };
    let seconds = finished.map(|t| (t - started).as_secs_f64());
    stop.store(true, Ordering::SeqCst);
    let outcomes = app_thread.join().map_err(|_| "the app panicked")??;
    let seconds = seconds.ok_or("the job did not finish its input within 300s")?;
    let records_in = outcomes
        .iter()
        .map(|(_, r)| r.as_ref().map(|s| s.records_in).unwrap_or(0))
        .sum::<u64>();
    let records_out = outcomes
        .iter()
        .map(|(_, r)| r.as_ref().map(|s| s.records_out).unwrap_or(0))
        .sum::<u64>();
    let rate = |n: u64, s: f64| n as f64 / s.max(f64::EPSILON);
    println!(
        "kafka {job} ({trades} JSON trades on {INPUT_PARTITIONS} partitions; {partitions} job partitions; decode threads: {})",
        decode_threads.map_or("one per core".to_string(), |n| n.to_string())
    );
    println!(
        "  producer fills the topic:   {:>9.0} records/s ({produce_seconds:.2}s)",
        rate(trades, produce_seconds)
    );
    println!(
        "  bare consumer reads it:     {:>9.0} records/s ({bare_seconds:.2}s from the first message)",
        rate(read, bare_seconds)
    );
    println!(
        "  job, start to done:         {:>9.0} records/s ({seconds:.2}s, group join included; read {records_in}, wrote {records_out} rows)",
        rate(trades, seconds)
    );
    for (name, outcome) in outcomes {
        if let Err(e) = outcome {
            return Err(format!("job {name} failed: {e}").into());
        }
    }
    Ok(())
}

/// How many (symbol, minute) windows the generated trades fill: the tumbling job's output rows.
fn trade_windows(rows: u64, keys: u64, seed: u64) -> BenchResult<u64> {
    let mut lines = Vec::new();
    write_records(Stream::Trades, rows, keys, Format::Jsonl, seed, &mut lines)?;
    let mut windows = std::collections::HashSet::new();
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let trade: serde_json::Value = serde_json::from_slice(line)?;
        let ts = trade["ts"].as_i64().ok_or("a generated trade without ts")?;
        windows.insert((trade["symbol"].to_string(), ts.div_euclid(60_000)));
    }
    Ok(windows.len() as u64)
}

/// How long to wait for a reader to see the whole topic, or a job to finish its input.
const WAIT_LIMIT: Duration = Duration::from_secs(300);

/// Partitions of the input topic (and of the output topic).
const INPUT_PARTITIONS: i32 = 4;

/// When `group` has committed `records` offsets over `topic`'s `INPUT_PARTITIONS`
/// partitions; None if `stopped` or the limit came first.
fn wait_for_commits(
    brokers: &str,
    group: &str,
    topic: &str,
    records: u64,
    stopped: impl Fn() -> bool,
) -> BenchResult<Option<Instant>> {
    let watcher: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()?;
    let mut partitions = TopicPartitionList::new();
    for p in 0..INPUT_PARTITIONS {
        partitions.add_partition(topic, p);
    }
    let deadline = Instant::now() + WAIT_LIMIT;
    while Instant::now() < deadline && !stopped() {
        let committed: i64 = watcher
            .committed_offsets(partitions.clone(), Duration::from_secs(5))?
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        if committed as u64 >= records {
            return Ok(Some(Instant::now()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(None)
}

/// When `topic` holds `messages` messages; None if `stopped` or the limit came first.
fn wait_for_messages(
    brokers: &str,
    topic: &str,
    messages: u64,
    stopped: impl Fn() -> bool,
) -> BenchResult<Option<Instant>> {
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "velo-bench-reader")
        .set("auto.offset.reset", "earliest")
        // Not half a second parked in a fetch when the last messages arrive.
        .set("fetch.wait.max.ms", "5")
        .create()?;
    reader.subscribe(&[topic])?;
    let deadline = Instant::now() + WAIT_LIMIT;
    let mut seen = 0u64;
    while Instant::now() < deadline && !stopped() {
        if let Some(m) = reader.poll(Duration::from_millis(100)) {
            m?;
            seen += 1;
            if seen >= messages {
                return Ok(Some(Instant::now()));
            }
        }
    }
    Ok(None)
}
