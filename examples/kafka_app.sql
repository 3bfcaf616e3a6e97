-- A Kafka app: big trades passed through, and per-symbol one-minute statistics.
-- Try it without a broker:
--   cargo run --release --bin velo-sql -- deploy-app --file examples/kafka_app.sql --mock-kafka
-- then feed it from another terminal (the bootstrap address is printed on stderr):
--   cargo run --release --bin velo-bench -- produce --brokers HOST:PORT --topic trades --rows 100000

CREATE STREAM trades (symbol VARCHAR, price DOUBLE, quantity BIGINT, ts BIGINT)
WITH (
  'trades.type' = 'kafka_source',
  'trades.topic.name' = 'trades',
  'trades.group.id' = 'velostream-example',
  'trades.event.time.field' = 'ts',
  'trades.watermark.max_out_of_orderness' = '5s',
  'trades.dlq.topic' = 'trades_bad'
);

CREATE STREAM big_trades AS
  SELECT symbol, price, quantity, ts FROM trades WHERE quantity > 900
  WITH ('big_trades.type' = 'kafka_sink', 'big_trades.topic.name' = 'big_trades');

CREATE STREAM trades_1m AS
  SELECT symbol, _window_start, COUNT(*) AS n, SUM(quantity) AS qty, AVG(price) AS avg_price
  FROM trades
  GROUP BY symbol
  WINDOW TUMBLING(ts, INTERVAL '1' MINUTE)
  EMIT FINAL
  WITH ('trades_1m.type' = 'kafka_sink', 'trades_1m.topic.name' = 'trades_1m');
