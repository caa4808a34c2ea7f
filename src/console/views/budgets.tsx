import { EmptyRow, StateBadge } from "../components.tsx";
import { percent, usd } from "../format.ts";
import type { View } from "../page.ts";

/** What the view reads from `GET /admin/stats/budgets`. */
interface BudgetsReply {
  day: string;
  thresholds: { alert: number; downgrade: number; block: number };
  tenants: Array<{
    tenant_id: string;
    day_usd: number;
    month_usd: number;
    daily_budget_usd: number;
    monthly_budget_usd: number;
    day_fraction: number;
    month_fraction: number;
    state: string;
  }>;
}

export const budgetsView: View = async ({ api }) => {
  const { day, thresholds: t, tenants } = await api.get<BudgetsReply>("/admin/stats/budgets");
  return {
    title: "Budgets",
    section: "budgets",
    body: (
      <>
        <p class="lede">
          Managed-lane spend of each tenant against its daily and monthly budgets on{" "}
          {day}, most used first. The guard alerts at {percent(t.alert, 0)}, downgrades at{" "}
          {percent(t.downgrade, 0)} and blocks at {percent(t.block, 0)}.
        </p>
        <table id="budgets-table">
          <caption class="visually-hidden">Tenants by budget used</caption>
          <thead>
            <tr>
              <th scope="col">Tenant</th>
              <th scope="col" class="num">Today</th>
              <th scope="col" class="num">Daily budget</th>
              <th scope="col" class="num">Used</th>
              <th scope="col" class="num">This month</th>
              <th scope="col" class="num">Monthly budget</th>
              <th scope="col" class="num">Used</th>
              <th scope="col">State</th>
            </tr>
          </thead>
          <tbody>
            {tenants.length === 0
              ? <EmptyRow columns={8}>No managed spend this month.</EmptyRow>
              : tenants.map((r) => (
                <tr data-tenant={r.tenant_id}>
                  <th scope="row">
                    <a href={`/console/tenant?tenant=${encodeURIComponent(r.tenant_id)}`}>
                      {r.tenant_id}
                    </a>
                  </th>
                  <td class="num">{usd(r.day_usd)}</td>
                  <td class="num">{usd(r.daily_budget_usd)}</td>
                  <td class="num">{percent(r.day_fraction)}</td>
                  <td class="num">{usd(r.month_usd)}</td>
                  <td class="num">{usd(r.monthly_budget_usd)}</td>
                  <td class="num">{percent(r.month_fraction)}</td>
                  <td>
                    <StateBadge state={r.state} />
                  </td>
                </tr>
              ))}
          </tbody>
        </table>
      </>
    ),
  };
};
