/**
 * Secrets of this gateway that no generic rule knows: its API keys, BYOK
 * master keys, and literal JWT or metering secrets in config or env files.
 * (`env:NAME` references are the sanctioned way to name a secret.)
 */
const PATTERNS: Array<{ id: string; pattern: RegExp; what: string }> = [
  { id: "gateway-api-key", pattern: /\bcvg_[0-9a-f]{48}\b/g, what: "a Convergio API key" },
  {
    id: "byok-master-key",
    pattern: /\bv\d+:[A-Za-z0-9_-]{43}\b/g,
    what: "a BYOK master key",
  },
  {
    id: "literal-service-secret",
    pattern:
      /["']?(?:jwt_secret|JWT_SECRET|metering_secret|METERING_SECRET|client_secret|BYOK_AZURE_CLIENT_SECRET)["']?\s*[:=]\s*["']?(?!env:)(?!\$\{)[A-Za-z0-9+/_.~-]{24,}/g,
    what: "a literal JWT, metering or client secret (use env:NAME)",
  },
];

/** Fixtures say what they are; a real secret neither says "test" nor repeats one character. */
function placeholder(text: string): boolean {
  return /test|example|dummy|fake|placeholder|changeme/i.test(text) ||
    /(.)\1{15,}/.test(text);
}

const messages = {
  Found: { en: (p: { WHAT: string }) => `found ${p.WHAT}` },
};

export const creator = {
  messages,
  meta: {
    id: "convergio/secretlint-rule-gateway",
    recommended: true,
    type: "scanner",
    supportedContentTypes: ["text"],
    docs: { url: "https://github.com/convergio/gateway/blob/main/scripts/secret_rules.ts" },
  },
  create(context: {
    createTranslator(m: typeof messages): (key: "Found", p: { WHAT: string }) => unknown;
    report(r: { message: unknown; range: [number, number] }): void;
  }) {
    const t = context.createTranslator(messages);
    return {
      file(source: { content: string }) {
        for (const { pattern, what } of PATTERNS) {
          for (const m of source.content.matchAll(pattern)) {
            if (placeholder(m[0])) continue;
            const start = m.index ?? 0;
            context.report({
              message: t("Found", { WHAT: what }),
              range: [start, start + m[0].length],
            });
          }
        }
      },
    };
  },
};

export const RULE_IDS = PATTERNS.map((p) => p.id);
