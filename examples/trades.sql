-- The bundled example: per-symbol trade statistics over examples/data/trades.jsonl.
-- Run it with: cargo run --release --bin velo-sql-batch -- examples/trades.sql
-- @job_name: trades_by_symbol

CREATE STREAM trades (symbol VARCHAR, price DECIMAL(10,2), quantity BIGINT, ts BIGINT)
WITH (
  'trades.type' = 'file_source',
  'trades.path' = 'examples/data/trades.jsonl',
  'trades.format' = 'jsonl',
  'trades.event.time.field' = 'ts'
);

CREATE STREAM trades_by_symbol AS
  SELECT symbol,
         COUNT(*) AS n,
         SUM(quantity) AS qty,
         SUM(price * quantity) AS notional,
         AVG(price) AS avg_price,
         MIN(price) AS low,
         MAX(price) AS high
  FROM trades
  GROUP BY symbol
  EMIT FINAL
  WITH ('trades_by_symbol.type' = 'stdout');
