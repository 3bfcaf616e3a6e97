-- Joins over the bundled trades: each trade enriched with its company (a table read whole
-- before the stream starts), then the notional per sector. TSLA has no company row, so the
-- LEFT JOIN keeps its trades with a NULL sector.
-- Run it with: cargo run --release --bin velo-sql-batch -- examples/joins.sql
-- @job_name: notional_by_sector

CREATE STREAM trades (symbol VARCHAR, price DECIMAL(10,2), quantity BIGINT, ts BIGINT)
WITH (
  'trades.type' = 'file_source',
  'trades.path' = 'examples/data/trades.jsonl',
  'trades.format' = 'jsonl',
  'trades.event.time.field' = 'ts'
);

CREATE TABLE companies (symbol VARCHAR, name VARCHAR, sector VARCHAR, PRIMARY KEY (symbol))
WITH (
  'companies.type' = 'file_source',
  'companies.path' = 'examples/data/companies.csv',
  'companies.format' = 'csv'
);

CREATE STREAM notional_by_sector AS
  SELECT c.sector, COUNT(*) AS trades, SUM(t.price * t.quantity) AS notional
  FROM trades t LEFT JOIN companies c ON t.symbol = c.symbol
  GROUP BY c.sector
  EMIT FINAL
  WITH ('notional_by_sector.type' = 'stdout');
