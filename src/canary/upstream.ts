/**
 * The weighted nginx upstream file a gateway version canary writes in place
 * of infra/selfhost/nginx-upstream.conf: the stable replica at weight 100-p,
 * the canary at p. nginx has no weight 0, so a side at 0% is left out.
 */

export interface UpstreamSpec {
  /** The upstream block's name, as nginx.conf's proxy_pass names it. */
  name: string;
  /** `host:port` of each side, as nginx reaches it. */
  stable: string;
  canary: string;
  /** Appended to each `server` line (passive health checks). */
  serverParams: string;
  /** Idle upstream connections kept open; 0 leaves the directive out. */
  keepalive: number;
}

export const DEFAULT_UPSTREAM = {
  name: "convergio_gateway",
  serverParams: "max_fails=3 fail_timeout=10s",
  keepalive: 64,
};

/** Anything else could end the directive early and inject nginx config. */
const ADDRESS = /^[\w.\-:[\]]+$/;
const NAME = /^\w+$/;
const PARAMS = /^[\w=. -]*$/;

/** Problems with a spec, empty when it renders safely. */
export function checkUpstream(spec: UpstreamSpec): string[] {
  const problems: string[] = [];
  if (!NAME.test(spec.name)) problems.push(`upstream name "${spec.name}" must be a single word`);
  for (const side of ["stable", "canary"] as const) {
    if (!ADDRESS.test(spec[side])) {
      problems.push(`--${side} "${spec[side]}" must look like host:port`);
    }
  }
  if (spec.stable === spec.canary) problems.push("--stable and --canary are the same server");
  if (!PARAMS.test(spec.serverParams)) {
    problems.push(`server params "${spec.serverParams}" may hold words, '=', '.', '-' only`);
  }
  if (!Number.isInteger(spec.keepalive) || spec.keepalive < 0) {
    problems.push("keepalive must be a whole number ≥ 0");
  }
  return problems;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** nginx weights for a canary share: 95/5 → 19/1; a side at 0 gets none. */
export function weightsFor(percent: number): { stable: number; canary: number } {
  if (!Number.isInteger(percent) || percent < 0 || percent > 100) {
    throw new RangeError(`canary percent must be a whole number 0..100, not ${percent}`);
  }
  const stable = 100 - percent;
  const d = gcd(stable, percent) || 1;
  return { stable: stable / d, canary: percent / d };
}

/** The upstream file for `percent` of requests on the canary. */
export function renderUpstream(spec: UpstreamSpec, percent: number, note: string): string {
  const w = weightsFor(percent);
  const params = spec.serverParams.trim();
  const server = (addr: string, weight: number, side: string) =>
    `    server ${addr} weight=${weight}${params ? ` ${params}` : ""};  # ${side}`;
  const lines = [
    `# Written by scripts/canary.ts (docs/canary.md): ${note}.`,
    `# Canary ${percent}% of requests, stable ${100 - percent}%. Weights apply per request,`,
    `# not per tenant. Restore infra/selfhost/nginx-upstream.conf by hand if abandoned.`,
    `upstream ${spec.name} {`,
  ];
  if (w.stable > 0) lines.push(server(spec.stable, w.stable, "stable"));
  if (w.canary > 0) lines.push(server(spec.canary, w.canary, "canary"));
  if (spec.keepalive > 0) lines.push(``, `    keepalive ${spec.keepalive};`);
  lines.push(`}`, ``);
  return lines.join("\n");
}

/** The weights of a file this module rendered (for tests and for checking what nginx runs). */
export function parseWeights(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^\s*server (\S+) weight=(\d+)[^;]*;/gm)) out[m[1]] = Number(m[2]);
  return out;
}
