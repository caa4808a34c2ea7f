-- The control plane: tenant settings, plans, model overrides, budget
-- overrides, feature flags, runbook mitigations, plugins and the audit log.

-- Tenant limits live with the tenant as one document, checked by the same
-- schema as the config file's; the per-column budgets were never read.
ALTER TABLE tenants DROP COLUMN daily_budget_usd;
ALTER TABLE tenants DROP COLUMN monthly_budget_usd;
ALTER TABLE tenants ADD COLUMN limits jsonb NOT NULL DEFAULT '{}';
-- NULL: no allow-list (a client's own function tools pass; plugin tools still
-- need their permissions granted).
ALTER TABLE tenants ADD COLUMN tools text[];
ALTER TABLE tenants ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

CREATE TABLE plans (
  name text PRIMARY KEY,
  limits jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Price and deployment changes to a configured model alias. Providers and
-- their credentials stay in config; a deployment may only name one of them.
CREATE TABLE model_overrides (
  alias text PRIMARY KEY,
  price jsonb,
  deployments jsonb,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE budget_overrides (
  tenant_id text PRIMARY KEY,
  reason text NOT NULL,
  by_user text NOT NULL,
  expires_at timestamptz NOT NULL
);

ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;

-- Tenants' own provider keys, by reference. A local key store keeps the
-- envelope-encrypted key here; a vault keeps it itself (envelope NULL).
CREATE TABLE byok_keys (
  tenant_id text NOT NULL,
  provider text NOT NULL,
  key_ref text NOT NULL UNIQUE,
  envelope jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, provider)
);

CREATE TABLE flags (
  name text PRIMARY KEY,
  default_value jsonb NOT NULL,
  overrides jsonb NOT NULL DEFAULT '{}',
  canary_percent integer NOT NULL DEFAULT 0 CHECK (canary_percent BETWEEN 0 AND 100),
  canary_value jsonb,
  killed boolean NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- A row is an active mitigation. `sources` are the autopilots (edge ids) that
-- asked for it; a mitigation an operator applied has none.
CREATE TABLE mitigations (
  name text PRIMARY KEY,
  params jsonb NOT NULL DEFAULT '{}',
  actor text NOT NULL,
  reason text NOT NULL,
  sources text[] NOT NULL DEFAULT '{}',
  activated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE plugins (
  name text PRIMARY KEY,
  version text NOT NULL,
  description text NOT NULL DEFAULT '',
  tools text[] NOT NULL,
  permissions text[] NOT NULL,
  status text NOT NULL CHECK (status IN ('pending_approval', 'approved')),
  installed_by text NOT NULL,
  approved_by text,
  installed_at timestamptz NOT NULL DEFAULT now()
);

-- Append-only and hash-chained: each row's hash covers its content and the
-- previous row's hash, so an edit anywhere breaks every later link.
CREATE TABLE audit_log (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL,
  actor text NOT NULL,
  actor_tenant text,
  action text NOT NULL,
  target text NOT NULL,
  before jsonb,
  after jsonb,
  request_id text,
  reason text,
  prev_hash text NOT NULL,
  hash text NOT NULL UNIQUE
);
CREATE INDEX audit_log_target ON audit_log (target, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_log is append-only';
END $$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
