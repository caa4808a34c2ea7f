-- Time to first token of streamed requests, for the console's latency charts.
-- Its own migration: 002 had already run on existing ledgers.
ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS ttft_ms integer;
