/** Shared by the deploy tests: a minimal deployable mapping and the (test) secrets it reads. */

export const SECRETS = {
  CVG_METERING_SECRET: "test-metering-0123456789-abcdef",
  CVG_JWT_SECRET: "test-jwt-0123456789-abcdef-0123456789",
  CVG_REDIS_REST_TOKEN: "test-redis-token-0123456789-abcdef",
};

export type Var = { target: string; value?: string; secret?: boolean; console?: boolean };

/** The smallest deployable mapping: the required variables only. */
export function minimalMapping(extra: Var[] = []): { org: string; app: string; vars: Var[] } {
  return {
    org: "convergio",
    app: "convergio-edge",
    vars: [
      { target: "AGGREGATOR_URL", value: "https://aggregator.example.com" },
      { target: "METERING_SECRET", value: "env:CVG_METERING_SECRET", secret: true },
      { target: "JWT_SECRET", value: "env:CVG_JWT_SECRET", secret: true },
      { target: "REDIS_REST_URL", value: "https://edge.upstash.io" },
      { target: "REDIS_REST_TOKEN", value: "env:CVG_REDIS_REST_TOKEN", secret: true },
      { target: "BYOK_MASTER_KEYS", secret: true, console: true },
      ...extra,
    ],
  };
}
