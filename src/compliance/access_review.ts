import type { Sql } from "../db/client.ts";
import { csvCell, NON_BUSINESS_RETENTION_MONTHS } from "../metering/gdpr.ts";

/**
 * The quarterly compliance review (spec `convergio-v7-ops.md` §7): who holds
 * access, what each tenant may spend, and how long its usage events are kept.
 * One set of rows renders to Markdown for people and CSV for spreadsheets, so
 * the two can never disagree.
 */

export interface Quarter {
  year: number;
  /** 1 to 4. */
  q: number;
}

export interface AccessReviewOptions {
  quarter: Quarter;
  now: Date;
  /** `metering.retention_business_months`: businesses that chose no retention keep this long. */
  defaultBusinessRetentionMonths: number;
}

export interface AccessReviewCounts {
  admin_keys: number;
  audit_actors: number;
  admin_actions: number;
  api_keys: number;
  active_keys: number;
  stale_keys: number;
  budget_tenants: number;
  active_overrides: number;
  budget_override_actions: number;
  retention_tenants: number;
}

export interface AccessReview {
  markdown: string;
  csv: string;
  counts: AccessReviewCounts;
}

/** An active key unused for longer than this is flagged for revocation. */
const STALE_AFTER_MS = 90 * 86_400_000;

type Section = "admins" | "api_keys" | "budgets" | "retention";
type Row = Record<string, string>;

interface Table {
  section: Section;
  /** Tells apart the tables of one section in the CSV. */
  kind: string;
  title: string;
  columns: string[];
  rows: Row[];
}

const SECTION_TITLES: Record<Section, string> = {
  admins: "Admins",
  api_keys: "API keys",
  budgets: "Budgets",
  retention: "Retention",
};

export function parseQuarter(text: string): Quarter {
  const match = /^(\d{4})-Q([1-4])$/.exec(text);
  if (!match) throw new Error(`--quarter must look like 2026-Q3, not "${text}"`);
  return { year: Number(match[1]), q: Number(match[2]) };
}

export function quarterLabel({ year, q }: Quarter): string {
  return `${year}-Q${q}`;
}

/** The last quarter that has fully ended at `now` (UTC). */
export function previousQuarter(now: Date): Quarter {
  const current = Math.floor(now.getUTCMonth() / 3) + 1;
  return current === 1
    ? { year: now.getUTCFullYear() - 1, q: 4 }
    : { year: now.getUTCFullYear(), q: current - 1 };
}

/** Half-open UTC range [start, end). */
export function quarterRange({ year, q }: Quarter): { start: Date; end: Date } {
  if (!Number.isInteger(q) || q < 1 || q > 4) throw new RangeError(`quarter must be 1-4, not ${q}`);
  return {
    start: new Date(Date.UTC(year, (q - 1) * 3, 1)),
    end: new Date(Date.UTC(year, q * 3, 1)),
  };
}

const iso = (d: Date | null): string => d?.toISOString() ?? "";
const roles = (r: string[]): string => r.join(" ");
const usd = (limits: unknown, field: string): string | undefined => {
  const value = (limits as Record<string, unknown> | null)?.[field];
  return typeof value === "number" ? String(value) : undefined;
};

async function adminTables(sql: Sql, start: Date, end: Date): Promise<Table[]> {
  const keys = await sql`
    SELECT id, tenant_id, user_id, roles, created_at, last_used_at FROM api_keys
    WHERE revoked_at IS NULL AND roles && ARRAY['admin', 'tenant_admin']
    ORDER BY tenant_id, user_id, id`;
  const actors = await sql`
    SELECT actor, actor_tenant, count(*)::int AS actions, max(at) AS last_at FROM audit_log
    WHERE at >= ${start} AND at < ${end}
    GROUP BY actor, actor_tenant ORDER BY actions DESC, actor, actor_tenant`;
  return [{
    section: "admins",
    kind: "admin_key",
    title: "Active keys with an admin role",
    columns: ["key_id", "tenant", "user", "roles", "created_at", "last_used_at"],
    rows: keys.map((k) => ({
      key_id: k.id,
      tenant: k.tenant_id,
      user: k.user_id,
      roles: roles(k.roles),
      created_at: iso(k.created_at),
      last_used_at: iso(k.last_used_at) || "never",
    })),
  }, {
    section: "admins",
    kind: "audit_actor",
    title: "Admin actions in the quarter, by actor (audit log)",
    columns: ["user", "tenant", "admin_actions", "last_action_at"],
    rows: actors.map((a) => ({
      user: a.actor,
      tenant: a.actor_tenant ?? "",
      admin_actions: String(a.actions),
      last_action_at: iso(a.last_at),
    })),
  }];
}

interface KeyRow {
  id: string;
  tenant_id: string;
  user_id: string;
  roles: string[];
  mode: string;
  created_at: Date;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

function isStale(key: KeyRow, now: Date): boolean {
  const lastSeen = key.last_used_at ?? key.created_at;
  return key.revoked_at === null && now.getTime() - lastSeen.getTime() > STALE_AFTER_MS;
}

async function keyTable(sql: Sql, now: Date): Promise<Table> {
  const keys = await sql<KeyRow[]>`
    SELECT id, tenant_id, user_id, roles, mode, created_at, last_used_at, revoked_at
    FROM api_keys ORDER BY tenant_id, user_id, id`;
  return {
    section: "api_keys",
    kind: "api_key",
    title: "All API keys (stale: active and unused for more than 90 days)",
    columns: [
      "key_id",
      "tenant",
      "user",
      "roles",
      "mode",
      "created_at",
      "last_used_at",
      "revoked_at",
      "stale",
    ],
    rows: keys.map((k) => ({
      key_id: k.id,
      tenant: k.tenant_id,
      user: k.user_id,
      roles: roles(k.roles),
      mode: k.mode,
      created_at: iso(k.created_at),
      last_used_at: iso(k.last_used_at) || "never",
      revoked_at: iso(k.revoked_at),
      stale: isStale(k, now) ? "yes" : "no",
    })),
  };
}

async function budgetTables(sql: Sql, start: Date, end: Date, now: Date): Promise<Table[]> {
  // Tenants with an override but no tenant row are listed too: the override still lifts a block.
  const tenants = await sql`
    SELECT coalesce(t.id, o.tenant_id) AS tenant_id, t.plan, t.limits, p.limits AS plan_limits,
      o.reason, o.by_user, o.expires_at
    FROM tenants t
    LEFT JOIN plans p ON p.name = t.plan
    FULL JOIN (SELECT * FROM budget_overrides WHERE expires_at > ${now}) o ON o.tenant_id = t.id
    ORDER BY 1`;
  // Audit targets are counted as written: the review shows what the log says.
  const actions = await sql`
    SELECT target, count(*)::int AS actions, count(DISTINCT actor)::int AS actors
    FROM audit_log
    WHERE starts_with(action, 'budget_override') AND at >= ${start} AND at < ${end}
    GROUP BY target ORDER BY target`;
  const budget = (t: Record<string, unknown>, field: string) =>
    usd(t.limits, field) ?? usd(t.plan_limits, field) ?? "default";
  return [{
    section: "budgets",
    kind: "tenant_budget",
    title: "Budgets per tenant (tenant limits over plan limits; default: the configured ones)",
    columns: [
      "tenant",
      "plan",
      "daily_budget_usd",
      "monthly_budget_usd",
      "tenant_limits",
      "override_reason",
      "override_by",
      "override_expires_at",
    ],
    rows: tenants.map((t) => ({
      tenant: t.tenant_id,
      plan: t.plan ?? "",
      daily_budget_usd: budget(t, "daily_budget_usd"),
      monthly_budget_usd: budget(t, "monthly_budget_usd"),
      tenant_limits: t.limits ? JSON.stringify(t.limits) : "",
      override_reason: t.reason ?? "",
      override_by: t.by_user ?? "",
      override_expires_at: iso(t.expires_at),
    })),
  }, {
    section: "budgets",
    kind: "override_actions",
    title: "Budget override actions in the quarter, by target (audit log)",
    columns: ["target", "override_actions", "actors"],
    rows: actions.map((a) => ({
      target: a.target,
      override_actions: String(a.actions),
      actors: String(a.actors),
    })),
  }];
}

async function retentionTable(sql: Sql, businessMonths: number): Promise<Table> {
  // Tenants with keys or usage but no row are still subject to deletion, as consumers.
  const tenants = await sql`
    SELECT id AS tenant_id, type, retention_months, true AS registered FROM tenants
    UNION ALL
    SELECT u.tenant_id, NULL, NULL, false FROM (
      SELECT tenant_id FROM api_keys UNION SELECT tenant_id FROM usage_daily_tenant
    ) u WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = u.tenant_id)
    ORDER BY tenant_id`;
  const basis = (t: Record<string, unknown>): [string, number] => {
    if (!t.registered) return ["no tenant row: as a consumer", NON_BUSINESS_RETENTION_MONTHS];
    if (t.type !== "business") return [`fixed for ${t.type}`, NON_BUSINESS_RETENTION_MONTHS];
    return t.retention_months === null
      ? ["business default", businessMonths]
      : ["tenant setting", t.retention_months as number];
  };
  return {
    section: "retention",
    kind: "tenant_retention",
    title: "Usage-event retention per tenant",
    columns: ["tenant", "type", "retention_months", "basis"],
    rows: tenants.map((t) => {
      const [why, months] = basis(t);
      return {
        tenant: t.tenant_id,
        type: t.type ?? "consumer",
        retention_months: String(months),
        basis: why,
      };
    }),
  };
}

function countRows(tables: Table[], kind: string, keep: (r: Row) => boolean = () => true) {
  return tables.find((t) => t.kind === kind)!.rows.filter(keep).length;
}

function sumColumn(tables: Table[], kind: string, column: string): number {
  return tables.find((t) => t.kind === kind)!.rows.reduce((n, r) => n + Number(r[column]), 0);
}

function summarise(tables: Table[]): AccessReviewCounts {
  return {
    admin_keys: countRows(tables, "admin_key"),
    audit_actors: countRows(tables, "audit_actor"),
    admin_actions: sumColumn(tables, "audit_actor", "admin_actions"),
    api_keys: countRows(tables, "api_key"),
    active_keys: countRows(tables, "api_key", (r) => r.revoked_at === ""),
    stale_keys: countRows(tables, "api_key", (r) => r.stale === "yes"),
    budget_tenants: countRows(tables, "tenant_budget"),
    active_overrides: countRows(tables, "tenant_budget", (r) => r.override_expires_at !== ""),
    budget_override_actions: sumColumn(tables, "override_actions", "override_actions"),
    retention_tenants: countRows(tables, "tenant_retention"),
  };
}

/** One header for every table: a spreadsheet filter on `section` and `kind` splits it again. */
function toCsv(tables: Table[]): string {
  const columns = [...new Set(tables.flatMap((t) => t.columns))];
  const lines = [["section", "kind", ...columns].join(",")];
  for (const t of tables) {
    for (const row of t.rows) {
      lines.push([t.section, t.kind, ...columns.map((c) => row[c])].map(csvCell).join(","));
    }
  }
  return lines.join("\n") + "\n";
}

const mdCell = (text: string) => text.replaceAll("|", "\\|").replace(/\r?\n|\r/g, "<br>");

function mdTable(t: Table): string {
  if (t.rows.length === 0) return `### ${t.title}\n\nNone.\n`;
  return [
    `### ${t.title}`,
    "",
    `| ${t.columns.join(" | ")} |`,
    `| ${t.columns.map(() => "---").join(" | ")} |`,
    ...t.rows.map((r) => `| ${t.columns.map((c) => mdCell(r[c])).join(" | ")} |`),
    "",
  ].join("\n");
}

function toMarkdown(
  tables: Table[],
  counts: AccessReviewCounts,
  opts: AccessReviewOptions,
  range: { start: Date; end: Date },
): string {
  const lastDay = new Date(range.end.getTime() - 86_400_000).toISOString().slice(0, 10);
  const parts = [
    `# Access review ${quarterLabel(opts.quarter)}`,
    "",
    `Generated ${opts.now.toISOString()} for ${range.start.toISOString().slice(0, 10)} to ` +
    `${lastDay} (UTC). Spec \`convergio-v7-ops.md\` §7: quarterly review of access, budgets ` +
    `and retention. Key state and budgets are as of generation; audit counts cover the quarter.`,
    "",
    "| count | value |",
    "| --- | --- |",
    ...Object.entries(counts).map(([k, v]) => `| ${k} | ${v} |`),
    "",
  ];
  for (const section of Object.keys(SECTION_TITLES) as Section[]) {
    parts.push(`## ${SECTION_TITLES[section]}`, "");
    for (const t of tables.filter((t) => t.section === section)) parts.push(mdTable(t));
  }
  return parts.join("\n");
}

export async function buildAccessReview(
  sql: Sql,
  opts: AccessReviewOptions,
): Promise<AccessReview> {
  const range = quarterRange(opts.quarter);
  const tables = [
    ...await adminTables(sql, range.start, range.end),
    await keyTable(sql, opts.now),
    ...await budgetTables(sql, range.start, range.end, opts.now),
    await retentionTable(sql, opts.defaultBusinessRetentionMonths),
  ];
  const counts = summarise(tables);
  return { markdown: toMarkdown(tables, counts, opts, range), csv: toCsv(tables), counts };
}
