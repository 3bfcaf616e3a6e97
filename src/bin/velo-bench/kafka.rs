//! Kafka from the benchmark tool: `produce` writes generated records to a topic (a demo feed
//! for `velo-sql deploy-app`), and `kafka` measures a job end to end through librdkafka's
//! mock cluster: a 4-partition input topic → the job → an output topic.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use velostream::connectors::kafka::MockKafka;
use velostream::server::{deploy_app, AppOptions};

use crate::generators::{write_records, Format, Stream};
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
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()?;
    let mut writer = TopicWriter {
        producer,
        topic: topic.to_string(),
        line: Vec::new(),
        sent: 0,
        partitions,
    };
    write_records(stream, rows, keys, Format::Jsonl, seed, &mut writer)?;
    writer.producer.flush(Duration::from_secs(60))?;
    Ok(writer.sent)
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

/// Measures `job` end to end on a mock cluster: `rows` trades are produced evenly over a
/// 4-partition topic first (untimed), then the job runs; the clock stops at its last output
/// message. The mock keeps at most 100,000 messages per partition, so up to 400,000 rows.
pub fn measure(job: &str, rows: u64, keys: u64, seed: u64, partitions: usize) -> BenchResult<()> {
    let sql = KAFKA_JOBS
        .iter()
        .find(|(name, _)| *name == job)
        .map(|(_, sql)| *sql)
        .ok_or_else(|| format!("unknown Kafka job '{job}' (filter, tumbling)"))?;
    let mock = MockKafka::start(1)?;
    mock.create_topic("trades", 4)?;
    mock.create_topic("out", 4)?;
    let brokers = mock.bootstrap_servers().to_string();
    if rows > 400_000 {
        return Err(
            "the mock cluster keeps 100,000 messages per partition: use --rows 400000 or fewer"
                .into(),
        );
    }
    let app = format!(
        "CREATE STREAM trades (symbol VARCHAR, price DOUBLE, quantity BIGINT, ts BIGINT) \
         WITH ('trades.type' = 'kafka_source', 'trades.topic.name' = 'trades', \
         'trades.event.time.field' = 'ts', 'trades.watermark.max_out_of_orderness' = '2s');\n{sql}"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let options = AppOptions {
        brokers: Some(brokers.clone()),
        partitions,
        queue_depth: 0,
    };
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "velo-bench-reader")
        .set("auto.offset.reset", "earliest")
        .create()?;
    reader.subscribe(&["out"])?;
    let flag = Arc::clone(&stop);
    let app_thread = std::thread::spawn(move || deploy_app(&app, &options, flag));
    // Let the job join its group, then feed it while it runs (the mock serves a consumer
    // that reads as the data arrives best; the rate is then the slower of producer and job).
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    let feed_brokers = brokers.clone();
    let feeder = std::thread::spawn(move || {
        produce(
            &feed_brokers,
            "trades",
            Stream::Trades,
            (rows, keys, seed),
            Some(4),
        )
        .map_err(|e| e.to_string())
    });
    // The job has caught up when its output has been quiet for a while after the last message.
    let mut outputs = 0u64;
    let mut last_output = started;
    loop {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => {
                outputs += 1;
                last_output = Instant::now();
            }
            Some(Err(e)) => return Err(e.into()),
            None if outputs > 0 && last_output.elapsed() > Duration::from_secs(5) => break,
            None if started.elapsed() > Duration::from_secs(600) => break,
            None => {}
        }
    }
    let produced = feeder.join().map_err(|_| "the feeder panicked")??;
    stop.store(true, Ordering::SeqCst);
    let outcomes = app_thread.join().map_err(|_| "the app panicked")??;
    let seconds = (last_output - started).as_secs_f64();
    let records_in = outcomes
        .iter()
        .map(|(_, r)| r.as_ref().map(|s| s.records_in).unwrap_or(0))
        .sum::<u64>();
    println!(
        "kafka {job}: {produced} records produced while the job ran; job read {records_in}, \
         wrote {outputs} messages; {:.0} records/s end to end ({partitions} partitions, {seconds:.2}s to the last output)",
        produced as f64 / seconds.max(f64::EPSILON)
    );
    for (name, outcome) in outcomes {
        if let Err(e) = outcome {
            return Err(format!("job {name} failed: {e}").into());
        }
    }
    Ok(())
}
