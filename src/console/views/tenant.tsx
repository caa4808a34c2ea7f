import type { UsageTotals } from "../../metering/ledger.ts";
import type { UserUsage } from "../../metering/stats.ts";
import { EmptyRow, StateBadge } from "../components.tsx";
import { count, percent, usd } from "../format.ts";
import { choice, type View } from "../page.ts";

interface Budget {
  spent_usd: number;
  budget_usd: number;
  fraction: number;
  action: string;
}

/** What the view reads from `GET /v1/usage/current`. */
interface CurrentReply {
  tenant_id: string;
  day: UsageTotals & { date: string; budget: Budget };
  month: UsageTotals & { month: string; budget: Budget };
}

/** What the view reads from `GET /v1/usage/users`. */
interface UsersReply {
  tenant_id: string;
  period: "day" | "month";
  from: string;
  to: string;
  users: UserUsage[];
}

const seconds = (n: number) => `${n.toFixed(1)} s`;

function UsageCard(props: { id: string; heading: string; totals: UsageTotals; budget: Budget }) {
  const { totals: t, budget: b } = props;
  return (
    <section class="card" aria-labelledby={props.id} data-usage={props.id}>
      <h2 id={props.id}>{props.heading}</h2>
      <dl class="figures">
        <dt>Requests</dt>
        <dd data-field="requests">{count(t.requests)}</dd>
        <dt>Input tokens</dt>
        <dd data-field="input_tokens">{count(t.input_tokens)}</dd>
        <dt>Output tokens</dt>
        <dd data-field="output_tokens">{count(t.output_tokens)}</dd>
        <dt>Tool calls</dt>
        <dd data-field="tool_calls">{count(t.tool_calls)}</dd>
        <dt>Audio</dt>
        <dd data-field="audio_seconds">{seconds(t.audio_seconds)}</dd>
        <dt>Cost</dt>
        <dd data-field="cost_usd">{usd(t.cost_usd)}</dd>
        <dt>Managed-lane cost</dt>
        <dd>{usd(t.managed_cost_usd)}</dd>
      </dl>
      <p>
        Budget: {usd(b.spent_usd)} of {usd(b.budget_usd)}{" "}
        <meter min={0} max={1.1} low={0.8} high={0.9} optimum={0} value={b.fraction}>
        </meter>{" "}
        {percent(b.fraction)} <StateBadge state={b.action} />
      </p>
    </section>
  );
}

function UsersTable(props: { users: UserUsage[]; caption: string }) {
  const sum = (pick: (u: UserUsage) => number) => props.users.reduce((n, u) => n + pick(u), 0);
  return (
    <table id="users-table">
      <caption class="visually-hidden">{props.caption}</caption>
      <thead>
        <tr>
          <th scope="col">User</th>
          <th scope="col" class="num">Requests</th>
          <th scope="col" class="num">Input tokens</th>
          <th scope="col" class="num">Output tokens</th>
          <th scope="col" class="num">Tool calls</th>
          <th scope="col" class="num">Audio</th>
          <th scope="col" class="num">Cost</th>
        </tr>
      </thead>
      <tbody>
        {props.users.length === 0
          ? <EmptyRow columns={7}>No usage in this period.</EmptyRow>
          : props.users.map((u) => (
            <tr data-user={u.user_id}>
              <th scope="row">{u.user_id}</th>
              <td class="num">{count(u.requests)}</td>
              <td class="num">{count(u.input_tokens)}</td>
              <td class="num">{count(u.output_tokens)}</td>
              <td class="num">{count(u.tool_calls)}</td>
              <td class="num">{seconds(u.audio_seconds)}</td>
              <td class="num">{usd(u.cost_usd)}</td>
            </tr>
          ))}
      </tbody>
      {props.users.length > 1 && (
        <tfoot>
          <tr>
            <th scope="row">All users</th>
            <td class="num">{count(sum((u) => u.requests))}</td>
            <td class="num">{count(sum((u) => u.input_tokens))}</td>
            <td class="num">{count(sum((u) => u.output_tokens))}</td>
            <td class="num">{count(sum((u) => u.tool_calls))}</td>
            <td class="num">{seconds(sum((u) => u.audio_seconds))}</td>
            <td class="num">{usd(sum((u) => u.cost_usd))}</td>
          </tr>
        </tfoot>
      )}
    </table>
  );
}

function Downloads(props: { tenant?: string; month: string }) {
  const hidden = props.tenant && <input type="hidden" name="tenant" value={props.tenant} />;
  return (
    <>
      <h2>Downloads</h2>
      <form class="inline" method="get" action="/console/download/billing.csv">
        {hidden}
        <div class="field">
          <label for="billing-month">Billing month</label>
          <input
            id="billing-month"
            name="month"
            type="month"
            value={props.month}
            required
            pattern="\d{4}-\d{2}"
          />
        </div>
        <button type="submit">Download billing CSV</button>
      </form>
      <form class="inline" method="get" action="/console/download/export">
        {hidden}
        <div class="field">
          <label for="export-format">GDPR export format</label>
          <select id="export-format" name="format">
            <option value="csv">CSV</option>
            <option value="jsonl">JSON Lines</option>
          </select>
        </div>
        <button type="submit">Download GDPR export</button>
      </form>
      <p class="hint">
        The GDPR export holds every usage event of the tenant; its SHA-256 comes in the{" "}
        <code>x-checksum-sha256</code> response header.
      </p>
    </>
  );
}

export const tenantView: View = async (ctx) => {
  const asked = ctx.query("tenant")?.trim() || undefined;
  const period = choice(ctx, "period", ["day", "month"] as const, "day");
  const own = !asked || asked === ctx.principal.tenant_id;
  const scope = asked ? `&tenant_id=${encodeURIComponent(asked)}` : "";
  const [users, current] = await Promise.all([
    ctx.api.get<UsersReply>(`/v1/usage/users?period=${period}${scope}`),
    own ? ctx.api.get<CurrentReply>("/v1/usage/current") : undefined,
  ]);
  const tenant = users.tenant_id;
  const link = (p: string) =>
    `/console/tenant?period=${p}${asked ? `&tenant=${encodeURIComponent(asked)}` : ""}`;
  return {
    title: `Usage of ${tenant}`,
    section: own ? "tenant" : "budgets",
    body: (
      <>
        <p class="lede">
          Usage and cost of tenant <span class="mono">{tenant}</span>{" "}
          from the ledger, by UTC day and month, with the state of its managed-lane budget.
        </p>
        {current
          ? (
            <div class="cards">
              <UsageCard
                id="usage-day"
                heading={`Today (${current.day.date})`}
                totals={current.day}
                budget={current.day.budget}
              />
              <UsageCard
                id="usage-month"
                heading={`This month (${current.month.month})`}
                totals={current.month}
                budget={current.month.budget}
              />
            </div>
          )
          : <p>Day and month totals with budget state are on each tenant's own view.</p>}
        <h2>Per user</h2>
        <nav aria-label="Period of the per-user table">
          <a href={link("day")} aria-current={period === "day" ? "page" : undefined}>Today</a>
          {" · "}
          <a href={link("month")} aria-current={period === "month" ? "page" : undefined}>
            This month
          </a>
        </nav>
        <UsersTable
          users={users.users}
          caption={`Usage per user from ${users.from} to ${users.to}`}
        />
        <Downloads
          tenant={asked}
          month={new Date(ctx.clock.now()).toISOString().slice(0, 7)}
        />
      </>
    ),
  };
};
