import type { DaySpend } from "../../metering/stats.ts";
import { Chart, type ChartSpec, epochSeconds, type Series } from "../components.tsx";
import { usd } from "../format.ts";
import { choice, type View } from "../page.ts";
import { PeriodForm } from "./period_form.tsx";

/** What the view reads from `GET /admin/stats/spend`. */
interface SpendReply {
  from: string;
  tenants: DaySpend[];
  models: DaySpend[];
  global_daily_cap_usd: number;
}

const DAY_OPTIONS: Array<[string, string]> = [
  ["7", "Last 7 days"],
  ["30", "Last 30 days"],
  ["90", "Last 90 days"],
];
const CAP_COLOR = "#9b1418";

/** One series per key over the days any row has; a day without a row spent nothing. */
function bySeries(rows: DaySpend[], cap: number, managedTotal: boolean): ChartSpec {
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const keys = [...new Set(rows.map((r) => r.key))].sort();
  const at = new Map(rows.map((r) => [`${r.day}\u0000${r.key}`, r]));
  const series: Series[] = keys.map((key) => ({
    label: key,
    values: days.map((d) => at.get(`${d}\u0000${key}`)?.cost_usd ?? 0),
  }));
  if (managedTotal) {
    series.push({
      label: "Managed lane, all tenants",
      values: days.map((d) =>
        rows.filter((r) => r.day === d).reduce((sum, r) => sum + r.managed_cost_usd, 0)
      ),
    });
  }
  if (cap > 0) {
    series.push({
      label: "Global managed cap",
      values: days.map(() => cap),
      dashed: true,
      color: CAP_COLOR,
    });
  }
  return { unit: "USD", xLabel: "Day (UTC)", daily: true, x: days.map(epochSeconds), series };
}

const day = (seconds: number) => new Date(seconds * 1000).toISOString().slice(0, 10);

export const spendView: View = async (ctx) => {
  const days = choice(ctx, "days", DAY_OPTIONS.map(([v]) => v), "30");
  const spend = await ctx.api.get<SpendReply>(`/admin/stats/spend?days=${days}`);
  const cap = spend.global_daily_cap_usd;
  return {
    title: "Spend",
    section: "spend",
    body: (
      <>
        <p class="lede">
          Cost per UTC day from the ledger's rollups, per tenant and per model, against the global
          cap on managed-lane spend ({cap > 0 ? `${usd(cap)} a day` : "off"}). The cap bounds the
          managed lane of all tenants together.
        </p>
        <PeriodForm name="days" value={days} action="/console/spend" options={DAY_OPTIONS} />
        {spend.tenants.length === 0 ? <p>No spend since {spend.from}.</p> : (
          <>
            <Chart
              id="spend-tenants"
              title="Spend per tenant per day"
              spec={bySeries(spend.tenants, cap, true)}
              xFormat={day}
              yFormat={usd}
            />
            <Chart
              id="spend-models"
              title="Spend per model per day"
              spec={bySeries(spend.models, cap, false)}
              xFormat={day}
              yFormat={usd}
            />
          </>
        )}
      </>
    ),
  };
};
