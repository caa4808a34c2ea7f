import { Notice } from "../components.tsx";
import type { View, ViewContext } from "../page.ts";
import type { AuditRow, AuditVerdict as Verdict } from "../../control/audit.ts";
import { AuditTable } from "./audit_table.tsx";

const FILTERS = [
  ["actor", "Actor"],
  ["action", "Action (prefix)"],
  ["target", "Target"],
] as const;
const PAGE = "50";

function filterQuery(ctx: ViewContext, beforeId?: number) {
  const q = new URLSearchParams();
  for (const [name] of FILTERS) {
    const v = ctx.query(name)?.trim();
    if (v) q.set(name, v);
  }
  if (beforeId) q.set("before_id", String(beforeId));
  return q;
}

function VerdictNotice(props: { verdict: Verdict }) {
  const v = props.verdict;
  if (!v.ok) {
    return (
      <Notice kind="bad">
        Hash chain broken at entry #{v.broken?.id} ({v.broken?.reason === "link"
          ? "an entry before it was removed or reordered"
          : "its content was changed"}). {v.rows} entries before it check out.
      </Notice>
    );
  }
  return (
    <Notice kind="good">
      Hash chain verified: all {v.rows} entries check out.
      {v.head && (
        <>
          {" "}Head hash{" "}
          <span class="mono">{v.head}</span>; keep a copy elsewhere to detect a truncated tail.
        </>
      )}
    </Notice>
  );
}

export const auditView: View = async (ctx) => {
  const before = Number(ctx.query("before_id")) || undefined;
  const query = filterQuery(ctx, before);
  query.set("limit", PAGE);
  const [verdict, { entries, next_before_id }] = await Promise.all([
    ctx.api.get<Verdict>("/admin/audit/verify"),
    ctx.api.get<{ entries: AuditRow[]; next_before_id: number | null }>(`/admin/audit?${query}`),
  ]);
  const older = entries.length === Number(PAGE) && next_before_id
    ? `/console/audit?${filterQuery(ctx, next_before_id)}`
    : undefined;
  return {
    title: "Audit log",
    section: "audit",
    body: (
      <>
        <p class="lede">
          Every admin change, append-only and hash-chained, newest first. The chain is recomputed
          from the first entry each time this page loads.
        </p>
        <VerdictNotice verdict={verdict} />
        <form class="inline" method="get" action="/console/audit">
          {FILTERS.map(([name, label]) => (
            <div class="field">
              <label for={`filter-${name}`}>{label}</label>
              <input id={`filter-${name}`} name={name} value={ctx.query(name) ?? ""} size={18} />
            </div>
          ))}
          <button type="submit" class="secondary">Filter</button>
        </form>
        <AuditTable id="audit-table" caption="Audit log entries" rows={entries} />
        {older && <a href={older}>Older entries</a>}
      </>
    ),
  };
};
