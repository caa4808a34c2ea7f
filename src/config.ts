import { z } from "zod";
import { Secret } from "./secret.ts";

export type Env = Record<string, string | undefined>;

/**
 * A credential in config is either a literal or `env:NAME`, so that files can
 * be committed without secrets. Resolution happens once, at boot.
 */
function secretRef(env: Env) {
  return z.string().min(1).transform((ref, ctx) => {
    if (!ref.startsWith("env:")) return new Secret(ref);
    const value = env[ref.slice(4)];
    if (value === undefined || value === "") {
      ctx.addIssue({ code: "custom", message: `environment variable ${ref.slice(4)} is not set` });
      return z.NEVER;
    }
    return new Secret(value);
  });
}

const positiveInt = z.number().int().positive();
const nonNegativeInt = z.number().int().nonnegative();

export const ROLE_NAMES = ["admin", "tenant_admin", "user"] as const;
export type Role = (typeof ROLE_NAMES)[number];
export const ModeSchema = z.enum(["byok", "managed"]);
export type Mode = z.infer<typeof ModeSchema>;

const mockProvider = z.strictObject({
  protocol: z.literal("mock"),
  first_token_ms: nonNegativeInt.default(0),
  inter_token_ms: nonNegativeInt.default(0),
  /** What an injected failure looks like. */
  fail: z.enum(["none", "unavailable", "rate_limited", "timeout", "mid_stream"]).default("none"),
  /** Fail every Nth call (1 = every call); deterministic so tests and demos repeat. */
  fail_every: positiveInt.default(1),
});

const usd = z.number().nonnegative();
const planFields = {
  rpm: positiveInt,
  tpm: positiveInt,
  /** Per-user burst limits; a user gets the tenant's when unset. */
  user_rpm: positiveInt,
  user_tpm: positiveInt,
  daily_budget_usd: usd,
  monthly_budget_usd: usd,
  /** Per-user spend budgets; none when unset. */
  user_daily_budget_usd: usd,
  user_monthly_budget_usd: usd,
};
/** Plans and tenant overrides name only what they change: no defaults here. */
export const PlanOverrideSchema = z.strictObject(planFields).partial();
export type PlanOverride = z.infer<typeof PlanOverrideSchema>;

export const PriceSchema = z.strictObject({
  input_per_1m: z.number().nonnegative(),
  output_per_1m: z.number().nonnegative(),
});
export const DeploymentSchema = z.strictObject({
  provider: z.string().min(1),
  model: z.string().min(1),
  /** What this deployment costs the house, for cheapest routing; the alias price when unset. */
  cost: PriceSchema.optional(),
});
const planLimits = z.strictObject({
  ...planFields,
  rpm: positiveInt.default(600),
  tpm: positiveInt.default(200_000),
  user_rpm: positiveInt.optional(),
  user_tpm: positiveInt.optional(),
  daily_budget_usd: usd.default(5),
  monthly_budget_usd: usd.default(20),
  user_daily_budget_usd: usd.optional(),
  user_monthly_budget_usd: usd.optional(),
});
export type PlanLimits = z.infer<typeof planLimits>;

/** The demo realtime (voice) provider: a transcript and audio for every turn. */
const realtimeMockProvider = z.strictObject({
  protocol: z.literal("realtime_mock"),
  first_audio_ms: nonNegativeInt.default(0),
  /** `connect`: opening a session fails; `midstream`: the first turn fails. */
  fail: z.enum(["none", "connect", "midstream"]).default("none"),
  fail_every: positiveInt.default(1),
});
export type RealtimeMockConfig = z.infer<typeof realtimeMockProvider>;

export function buildConfigSchema(env: Env) {
  const secret = secretRef(env);
  const openaiProvider = z.strictObject({
    protocol: z.literal("openai"),
    base_url: z.url(),
    api_key: secret.optional(),
    /** `azure` switches to deployment URLs, `api-version` and the `api-key` header. */
    flavor: z.enum(["openai", "azure"]).default("openai"),
    api_version: z.string().optional(),
  }).refine((p) => p.flavor !== "azure" || p.api_version, {
    message: "api_version is required when flavor is azure",
    path: ["api_version"],
  });
  const anthropicProvider = z.strictObject({
    protocol: z.literal("anthropic"),
    base_url: z.url().default("https://api.anthropic.com"),
    api_key: secret.optional(),
    anthropic_version: z.string().default("2023-06-01"),
  });

  const realtimeOpenaiProvider = z.strictObject({
    protocol: z.literal("realtime_openai"),
    /** The OpenAI Realtime WebSocket endpoint. */
    base_url: z.url().default("wss://api.openai.com/v1/realtime"),
    api_key: secret.optional(),
  });

  const provider = z.discriminatedUnion("protocol", [
    openaiProvider,
    anthropicProvider,
    mockProvider,
    realtimeOpenaiProvider,
    realtimeMockProvider,
  ]);

  const modelAlias = z.strictObject({
    deployments: z.array(DeploymentSchema).min(1),
    price: PriceSchema,
    /** Output cap used when a request sets no `max_tokens`. */
    max_output_tokens: positiveInt.default(4096),
  });

  return z.strictObject({
    server: z.strictObject({
      host: z.string().min(1).default("127.0.0.1"),
      port: z.number().int().min(0).max(65535).default(8080),
      max_body_bytes: positiveInt.default(1_048_576),
    }).prefault({}),
    data_dir: z.string().min(1).default("./data"),
    /** edge: public API; aggregator: ledger and admin; all: both in one process. */
    role: z.enum(["edge", "aggregator", "all"]).default("all"),
    /** Postgres for the aggregator; embedded PGlite under data_dir when unset. */
    database_url: secret.optional(),
    metering: z.strictObject({
      /** Where edges send batches; this process itself when the role is all. */
      aggregator_url: z.url().optional(),
      /** Shared edge/aggregator HMAC secret; generated under data_dir when unset and role is all. */
      secret: secret.optional(),
      batch_size: positiveInt.default(200),
      flush_interval_ms: positiveInt.default(1_000),
      spool_max_events: positiveInt.default(100_000),
      /** Journal unacknowledged batches under data_dir (self-hosted); off on Deno Deploy. */
      spool_file: z.boolean().default(true),
      retry_base_ms: positiveInt.default(250),
      retry_max_ms: positiveInt.default(30_000),
      shutdown_flush_ms: positiveInt.default(10_000),
      reconcile_interval_ms: positiveInt.default(60_000),
      retention_business_months: z.number().int().min(24).max(84).default(84),
      retention_interval_ms: positiveInt.default(6 * 3_600_000),
    }).prefault({}),
    auth: z.strictObject({
      /** HS256 secret for tokens this gateway signs; generated under data_dir when absent. */
      jwt_secret: secret.optional(),
      issuer: z.string().min(1).default("convergio-gateway"),
      audience: z.string().min(1).optional(),
      jwks_url: z.url().optional(),
      jwks_file: z.string().min(1).optional(),
      /** Required `iss` of external (JWKS) tokens, when set. */
      jwks_issuer: z.string().min(1).optional(),
      /** Algorithms accepted from the external JWKS. `none` and HS* are never accepted there. */
      jwks_algorithms: z.array(z.enum(["RS256", "ES256", "EdDSA"])).min(1).default([
        "RS256",
        "ES256",
        "EdDSA",
      ]),
      clock_skew_s: nonNegativeInt.default(30),
      login_ttl_s: positiveInt.default(900),
    }).prefault({}),
    routing: z.strictObject({
      timeout_ms: positiveInt.default(30_000),
      first_byte_timeout_ms: positiveInt.default(10_000),
      /** Attempts per request across all deployments of an alias. */
      max_attempts: positiveInt.default(3),
      backoff_ms: nonNegativeInt.default(100),
      breaker: z.strictObject({
        failure_threshold: positiveInt.default(5),
        cooldown_ms: positiveInt.default(30_000),
      }).prefault({}),
    }).prefault({}),
    providers: z.record(z.string().min(1), provider),
    /** Alias used when a V7 request names none; the first alias when unset. */
    default_model: z.string().min(1).optional(),
    models: z.record(z.string().min(1), modelAlias),
    /** Limits of tenants with no plan; named plans and tenant overrides start from these. */
    tenant_defaults: planLimits.prefault({}),
    plans: z.record(z.string().min(1), PlanOverrideSchema).default({}),
    tenants: z.record(
      z.string().min(1),
      z.strictObject({
        byok_keys: z.record(z.string().min(1), secret).default({}),
        plan: z.string().min(1).optional(),
        /** Per-tenant overrides of the plan's limits. */
        limits: PlanOverrideSchema.default({}),
        /** Cheaper alias served once spend passes 90% of a budget. */
        downgrade_model: z.string().min(1).optional(),
      }),
    ).default({}),
    voice: z.strictObject({
      /** The model alias whose deployments are realtime providers, tried in order. */
      model: z.string().min(1).default("convergio-voice"),
      max_audio_seconds: positiveInt.default(600),
      /** After this many reconnects of one session, the server advises text. */
      reconnects_before_text: positiveInt.default(3),
    }).prefault({}),
    ws: z.strictObject({
      /** How long a dropped session waits for its client to resume it. */
      resume_window_ms: positiveInt.default(60_000),
      /** Frames kept per session for resume. */
      replay_frames: positiveInt.default(2_000),
      /** Unsent bytes a slow reader may pile up before its streams are ended. */
      max_buffered_bytes: positiveInt.default(1_048_576),
      max_frame_bytes: positiveInt.default(262_144),
      /** Pings; a peer that misses the pong this long is closed. */
      ping_timeout_s: positiveInt.default(30),
      /** A socket with no frames and nothing in flight this long is closed. */
      idle_timeout_ms: positiveInt.default(300_000),
      max_inflight: positiveInt.default(16),
    }).prefault({}),
    observability: z.strictObject({
      /** Metrics and tracing; off only to measure what they cost. */
      enabled: z.boolean().default(true),
      log_level: z.enum(["debug", "info", "warn", "error"]).default("info"),
      /** Tenants with their own label on per-tenant metrics; the rest are "other". */
      tenant_label_top_n: positiveInt.default(20),
      slo: z.strictObject({
        availability: z.number().gt(0).lt(1).default(0.995),
        latency: z.number().gt(0).lt(1).default(0.95),
        latency_ms: positiveInt.default(800),
        ttft: z.number().gt(0).lt(1).default(0.95),
        ttft_ms: positiveInt.default(1_500),
        window_days: positiveInt.max(90).default(30),
        budget_alert_per_day: z.number().gt(0).lte(1).default(0.25),
        alert_min_events: positiveInt.default(100),
      }).prefault({}),
    }).prefault({}),
    /** Where tenants' own provider keys (BYOK) set through the admin API are kept. */
    byok: z.strictObject({
      /** `local`: envelope-encrypted in the ledger database; `azure_key_vault`: secrets in a vault. */
      store: z.enum(["local", "azure_key_vault"]).default("local"),
      /** `v1:<base64url 32 bytes>,v2:…`; generated under data_dir when unset (one process only). */
      master_keys: secret.optional(),
      azure: z.strictObject({
        vault_url: z.url(),
        auth: z.enum(["managed_identity", "client_credentials"]).default("managed_identity"),
        tenant_id: z.string().min(1).optional(),
        client_id: z.string().min(1).optional(),
        client_secret: secret.optional(),
        authority_url: z.url().default("https://login.microsoftonline.com"),
        imds_url: z.url().default("http://169.254.169.254/metadata/identity/oauth2/token"),
        api_version: z.string().default("7.4"),
      }).refine(
        (a) => a.auth !== "client_credentials" || (a.tenant_id && a.client_id && a.client_secret),
        {
          message: "client_credentials needs tenant_id, client_id and client_secret",
        },
      ).optional(),
    }).refine((b) => b.store !== "azure_key_vault" || b.azure, {
      message: "byok.azure is required when byok.store is azure_key_vault",
      path: ["azure"],
    }).prefault({}),
    control: z.strictObject({
      /** How often an edge polls the control snapshot (ETag: unchanged costs a 304). */
      poll_interval_ms: positiveInt.default(2_000),
      /** How long the aggregator serves a built snapshot before reading the tables again. */
      snapshot_cache_ms: positiveInt.default(1_000),
      /** How often a down database is probed, to leave read-only mode by itself. */
      db_probe_ms: positiveInt.default(2_000),
      /** Runbook detectors that apply their mitigation unattended; each off by default. */
      autopilot: z.strictObject({
        interval_ms: positiveInt.default(10_000),
        /** RB-1: a provider's attempt error ratio over the window → avoid_provider. */
        provider_failover: z.strictObject({
          enabled: z.boolean().default(false),
          threshold: z.number().gt(0).lt(1).default(0.02),
          window_ms: positiveInt.default(300_000),
          min_events: positiveInt.default(20),
        }).prefault({}),
        /** RB-3: managed spend over this fraction of the global daily cap → enforce_downgrade. */
        spend_downgrade: z.strictObject({
          enabled: z.boolean().default(false),
          threshold: z.number().gt(0).lt(1).default(0.8),
          clear_below: z.number().gt(0).lt(1).default(0.7),
        }).prefault({}),
        /** RB-4: abnormal voice closes over the window → voice_text. */
        voice_text: z.strictObject({
          enabled: z.boolean().default(false),
          threshold: z.number().gt(0).lt(1).default(0.05),
          window_ms: positiveInt.default(600_000),
          min_events: positiveInt.default(20),
        }).prefault({}),
      }).prefault({}),
    }).prefault({}),
    guardrails: z.strictObject({
      store: z.enum(["memory", "redis"]).default("memory"),
      redis: z.strictObject({
        /** Upstash REST URL: Upstash itself, or a REST bridge in front of Redis. */
        url: z.url().optional(),
        token: secret.optional(),
        /** Per call; past it the store counts as down and the lane's policy applies. */
        timeout_ms: positiveInt.default(300),
        prefix: z.string().min(1).default("cvg"),
      }).prefault({}),
      /**
       * Admit far-from-the-limit requests on the store's last answer, without a
       * round trip before the provider call (redis store only; see LocalAdmission).
       */
      local_admission: z.strictObject({
        enabled: z.boolean().default(true),
        fresh_ms: positiveInt.default(1000),
        max_in_flight: positiveInt.default(32),
      }).prefault({}),
      /** Global daily spend cap of the managed lane, in USD; 0 turns it off. */
      global_daily_cap_usd: z.number().nonnegative().default(100),
      /** What a lane does while the store is unreachable: refuse (closed) or serve unguarded (open). */
      failure_policy: z.strictObject({
        managed: z.enum(["open", "closed"]).default("closed"),
        byok: z.enum(["open", "closed"]).default("open"),
      }).prefault({}),
      /** Downgrade alias for tenants that name none. */
      downgrade_model: z.string().min(1).optional(),
      alert_webhook_url: z.url().optional(),
      /** Longest an admin budget override may last. */
      override_max_ttl_s: positiveInt.default(7 * 86_400),
    }).prefault({}),
  }).superRefine((cfg, ctx) => {
    for (const [alias, model] of Object.entries(cfg.models)) {
      model.deployments.forEach((d, i) => {
        if (!cfg.providers[d.provider]) {
          ctx.addIssue({
            code: "custom",
            path: ["models", alias, "deployments", i, "provider"],
            message: `unknown provider "${d.provider}"`,
          });
        }
      });
    }
    if (cfg.default_model && !cfg.models[cfg.default_model]) {
      ctx.addIssue({
        code: "custom",
        path: ["default_model"],
        message: `unknown model "${cfg.default_model}"`,
      });
    }
    for (const [id, tenant] of Object.entries(cfg.tenants)) {
      if (tenant.plan && !cfg.plans[tenant.plan]) {
        ctx.addIssue({
          code: "custom",
          path: ["tenants", id, "plan"],
          message: `unknown plan "${tenant.plan}"`,
        });
      }
      if (tenant.downgrade_model && !cfg.models[tenant.downgrade_model]) {
        ctx.addIssue({
          code: "custom",
          path: ["tenants", id, "downgrade_model"],
          message: `unknown model "${tenant.downgrade_model}"`,
        });
      }
    }
    const g = cfg.guardrails;
    if (g.downgrade_model && !cfg.models[g.downgrade_model]) {
      ctx.addIssue({
        code: "custom",
        path: ["guardrails", "downgrade_model"],
        message: `unknown model "${g.downgrade_model}"`,
      });
    }
    if (g.store === "redis" && (!g.redis.url || !g.redis.token)) {
      ctx.addIssue({
        code: "custom",
        path: ["guardrails", "redis", g.redis.url ? "token" : "url"],
        message: "the redis store needs REDIS_REST_URL and REDIS_REST_TOKEN",
      });
    }
    const isRealtime = (name: string) => cfg.providers[name]?.protocol.startsWith("realtime_");
    for (const [alias, model] of Object.entries(cfg.models)) {
      const realtime = model.deployments.filter((d) => isRealtime(d.provider)).length;
      if (realtime && realtime !== model.deployments.length) {
        ctx.addIssue({
          code: "custom",
          path: ["models", alias, "deployments"],
          message: "a model's deployments are all chat providers or all realtime (voice) providers",
        });
      }
    }
    if (
      cfg.models[cfg.voice.model] &&
      !isRealtime(cfg.models[cfg.voice.model].deployments[0].provider)
    ) {
      ctx.addIssue({
        code: "custom",
        path: ["voice", "model"],
        message: `model "${cfg.voice.model}" has no realtime (voice) deployments`,
      });
    }
    if (cfg.role !== "all" && !cfg.metering.secret) {
      ctx.addIssue({
        code: "custom",
        path: ["metering", "secret"],
        message: `METERING_SECRET is required when the role is ${cfg.role}`,
      });
    }
    if (cfg.role === "edge" && !cfg.metering.aggregator_url) {
      ctx.addIssue({
        code: "custom",
        path: ["metering", "aggregator_url"],
        message: "AGGREGATOR_URL is required when the role is edge",
      });
    }
    if (cfg.auth.jwks_url && cfg.auth.jwks_file) {
      ctx.addIssue({
        code: "custom",
        path: ["auth", "jwks_file"],
        message: "set jwks_url or jwks_file, not both",
      });
    }
  });
}

export type Config = z.infer<ReturnType<typeof buildConfigSchema>>;
export type ProviderConfig = Config["providers"][string];
export type ModelConfig = Config["models"][string];
export type MockProviderConfig = z.infer<typeof mockProvider>;

/** The embedded defaults: the demo provider, so `deno task start` needs nothing else. */
export const EMBEDDED_DEFAULTS = {
  providers: {
    demo: { protocol: "mock", first_token_ms: 40, inter_token_ms: 15 },
    "demo-voice": { protocol: "realtime_mock", first_audio_ms: 120 },
  },
  models: {
    "convergio-demo": {
      deployments: [{ provider: "demo", model: "demo-large" }],
      price: { input_per_1m: 2.5, output_per_1m: 10 },
    },
    "convergio-demo-mini": {
      deployments: [{ provider: "demo", model: "demo-mini" }],
      price: { input_per_1m: 0.15, output_per_1m: 0.6 },
    },
    "convergio-voice": {
      deployments: [{ provider: "demo-voice", model: "demo-realtime" }],
      price: { input_per_1m: 32, output_per_1m: 64 },
      max_output_tokens: 2048,
    },
  },
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Env vars that override config fields; the README's configuration table mirrors this. */
const ENV_FIELDS: Array<[string, string[], (v: string) => unknown]> = [
  ["HOST", ["server", "host"], String],
  ["PORT", ["server", "port"], Number],
  ["MAX_BODY_BYTES", ["server", "max_body_bytes"], Number],
  ["DATA_DIR", ["data_dir"], String],
  ["JWT_SECRET", ["auth", "jwt_secret"], String],
  ["JWT_ISSUER", ["auth", "issuer"], String],
  ["JWT_AUDIENCE", ["auth", "audience"], String],
  ["JWKS_URL", ["auth", "jwks_url"], String],
  ["JWKS_FILE", ["auth", "jwks_file"], String],
  ["JWKS_ISSUER", ["auth", "jwks_issuer"], String],
  ["JWT_ALGORITHMS", ["auth", "jwks_algorithms"], (v) => v.split(",").map((s) => s.trim())],
  ["ROLE", ["role"], String],
  ["LOG_LEVEL", ["observability", "log_level"], String],
  ["OBSERVABILITY", ["observability", "enabled"], (v) => v !== "off" && v !== "false"],
  ["DATABASE_URL", ["database_url"], String],
  ["AGGREGATOR_URL", ["metering", "aggregator_url"], String],
  ["METERING_SECRET", ["metering", "secret"], String],
  ["METERING_SPOOL_FILE", ["metering", "spool_file"], (v) => v !== "false" && v !== "0"],
  // Deno Deploy has no durable disk: the spool is memory-only there.
  ["DENO_DEPLOYMENT_ID", ["metering", "spool_file"], () => false],
  ["BUDGET_STORE", ["guardrails", "store"], String],
  ["REDIS_REST_URL", ["guardrails", "redis", "url"], String],
  ["REDIS_REST_TOKEN", ["guardrails", "redis", "token"], String],
  [
    "LOCAL_ADMISSION",
    ["guardrails", "local_admission", "enabled"],
    (v) => v !== "off" && v !== "false",
  ],
  ["GLOBAL_DAILY_CAP_USD", ["guardrails", "global_daily_cap_usd"], Number],
  ["ALERT_WEBHOOK_URL", ["guardrails", "alert_webhook_url"], String],
  ["BYOK_STORE", ["byok", "store"], String],
  ["BYOK_MASTER_KEYS", ["byok", "master_keys"], String],
  ["BYOK_AZURE_VAULT_URL", ["byok", "azure", "vault_url"], String],
  ["BYOK_AZURE_AUTH", ["byok", "azure", "auth"], String],
  ["BYOK_AZURE_TENANT_ID", ["byok", "azure", "tenant_id"], String],
  ["BYOK_AZURE_CLIENT_ID", ["byok", "azure", "client_id"], String],
  ["BYOK_AZURE_CLIENT_SECRET", ["byok", "azure", "client_secret"], String],
];

function setPath(target: Record<string, unknown>, path: string[], value: unknown) {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    node[key] = typeof next === "object" && next !== null ? next : {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]] = value;
}

/**
 * Builds the config from the optional JSON file named by GATEWAY_CONFIG, then
 * env overrides, then embedded defaults for providers and models. Throws one
 * ConfigError naming every offending field.
 */
export function loadConfig(env: Env, readFile: (path: string) => string): Config {
  let raw: Record<string, unknown> = {};
  const file = env.GATEWAY_CONFIG;
  if (file) {
    let text: string;
    try {
      text = readFile(file);
    } catch (err) {
      throw new ConfigError(`config error: cannot read GATEWAY_CONFIG file ${file}: ${err}`);
    }
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new ConfigError(`config error: GATEWAY_CONFIG file ${file} is not valid JSON: ${err}`);
    }
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
      throw new ConfigError(`config error: GATEWAY_CONFIG file ${file} must hold a JSON object`);
    }
  }
  raw.providers ??= EMBEDDED_DEFAULTS.providers;
  raw.models ??= EMBEDDED_DEFAULTS.models;
  for (const [name, path, convert] of ENV_FIELDS) {
    const value = env[name];
    if (value !== undefined && value !== "") setPath(raw, path, convert(value));
  }
  const parsed = buildConfigSchema(env).safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((issue) =>
      `${issue.path.join(".") || "(root)"}: ${issue.message}`
    );
    throw new ConfigError(`config error: ${lines.join("; ")}`);
  }
  return parsed.data;
}
