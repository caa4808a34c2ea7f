-- The metering ledger: usage events exactly once, daily rollups, tenants,
-- users and API keys. Money is numeric(18,6): exact micro-dollars.

CREATE TABLE tenants (
  id text PRIMARY KEY,
  type text NOT NULL DEFAULT 'consumer' CHECK (type IN ('consumer', 'school', 'business')),
  plan text,
  daily_budget_usd numeric(18, 6),
  monthly_budget_usd numeric(18, 6),
  downgrade_model text,
  -- Business tenants choose their usage-event retention (24 to 84 months).
  retention_months integer CHECK (retention_months BETWEEN 24 AND 84),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  tenant_id text NOT NULL,
  id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz,
  PRIMARY KEY (tenant_id, id)
);

CREATE TABLE api_keys (
  id text PRIMARY KEY,
  hash text NOT NULL UNIQUE,
  tenant_id text NOT NULL,
  user_id text NOT NULL,
  roles text[] NOT NULL DEFAULT ARRAY['user'],
  mode text NOT NULL DEFAULT 'byok' CHECK (mode IN ('byok', 'managed')),
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz
);

-- Keyed by tenant and request id: a client may name its request ids, and one
-- tenant's ids must never collide with (and so suppress) another's.
CREATE TABLE usage_events (
  request_id text NOT NULL,
  tenant_id text NOT NULL,
  user_id text NOT NULL,
  session_id text,
  provider text,
  model text,
  input_tokens integer NOT NULL,
  output_tokens integer NOT NULL,
  tool_calls_count integer NOT NULL,
  audio_seconds_in double precision NOT NULL,
  audio_seconds_out double precision NOT NULL,
  latency_ms integer NOT NULL,
  success boolean NOT NULL,
  error_code text,
  mode text NOT NULL CHECK (mode IN ('byok', 'managed')),
  cost_usd numeric(18, 6) NOT NULL,
  occurred_at timestamptz NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  batch_id text NOT NULL,
  PRIMARY KEY (tenant_id, request_id)
);
CREATE INDEX usage_events_tenant_time ON usage_events (tenant_id, occurred_at);
CREATE INDEX usage_events_time ON usage_events (occurred_at);

-- Events that failed validation, kept so that nothing is lost silently.
CREATE TABLE usage_events_rejected (
  id bigserial PRIMARY KEY,
  batch_id text NOT NULL,
  position integer NOT NULL,
  reason text NOT NULL,
  payload jsonb NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (batch_id, position)
);

-- Rollups count managed cost only where a lane's spend is billed, but keep
-- tokens, tools and audio for both lanes.
CREATE TABLE usage_daily_tenant (
  day date NOT NULL,
  tenant_id text NOT NULL,
  requests bigint NOT NULL,
  errors bigint NOT NULL,
  input_tokens bigint NOT NULL,
  output_tokens bigint NOT NULL,
  tool_calls bigint NOT NULL,
  audio_seconds double precision NOT NULL,
  cost_usd numeric(18, 6) NOT NULL,
  managed_cost_usd numeric(18, 6) NOT NULL,
  PRIMARY KEY (day, tenant_id)
);

CREATE TABLE usage_daily_model (
  day date NOT NULL,
  model text NOT NULL,
  requests bigint NOT NULL,
  errors bigint NOT NULL,
  input_tokens bigint NOT NULL,
  output_tokens bigint NOT NULL,
  tool_calls bigint NOT NULL,
  audio_seconds double precision NOT NULL,
  cost_usd numeric(18, 6) NOT NULL,
  managed_cost_usd numeric(18, 6) NOT NULL,
  PRIMARY KEY (day, model)
);
