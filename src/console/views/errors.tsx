import type { ErrorCount } from "../../metering/stats.ts";
import { ApiError } from "../api_client.ts";
import { EmptyRow } from "../components.tsx";
import { count, percent } from "../format.ts";
import { choice, type View } from "../page.ts";
import { HOUR_OPTIONS, HOURS, PeriodForm } from "./period_form.tsx";

/** What the view reads from `GET /admin/stats/errors`. */
interface ErrorsReply {
  errors: ErrorCount[];
}

/** What the view reads from `GET /admin/providers`. */
interface ProvidersReply {
  deployments: Array<{
    alias: string;
    provider: string;
    deployment: string;
    attempts: number;
    errors: number;
    failovers: number;
    error_ratio: number;
    breaker: string;
  }>;
}

/** Provider health is an edge's own view; an aggregator-only process has none. */
async function providers(get: () => Promise<ProvidersReply>) {
  try {
    return (await get()).deployments;
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

const breakerKind = (state: string) =>
  state === "closed" ? "ok" : state === "open" ? "block" : "alert";

export const errorsView: View = async (ctx) => {
  const hours = choice(ctx, "hours", HOURS, "24");
  const [{ errors }, deployments] = await Promise.all([
    ctx.api.get<ErrorsReply>(`/admin/stats/errors?hours=${hours}`),
    providers(() => ctx.api.get<ProvidersReply>("/admin/providers")),
  ]);
  return {
    title: "Errors and providers",
    section: "errors",
    body: (
      <>
        <p class="lede">
          Failed requests by stable error code and provider, from the ledger; then each provider
          deployment's attempts, errors, failovers and circuit breaker as this process sees them.
        </p>
        <PeriodForm name="hours" value={hours} action="/console/errors" options={HOUR_OPTIONS} />
        <h2>Errors by code</h2>
        <table id="errors-table">
          <caption class="visually-hidden">Failed requests by error code and provider</caption>
          <thead>
            <tr>
              <th scope="col">Error code</th>
              <th scope="col">Provider</th>
              <th scope="col" class="num">Requests</th>
            </tr>
          </thead>
          <tbody>
            {errors.length === 0
              ? <EmptyRow columns={3}>No failed requests in this period.</EmptyRow>
              : errors.map((e) => (
                <tr>
                  <th scope="row">
                    <code>{e.error_code}</code>
                  </th>
                  <td>{e.provider ?? "–"}</td>
                  <td class="num">{count(e.count)}</td>
                </tr>
              ))}
          </tbody>
        </table>
        <h2>Provider health and failovers</h2>
        {deployments === null
          ? <p>This process serves no edge traffic, so it has no provider counters.</p>
          : (
            <table id="providers-table">
              <caption class="visually-hidden">
                Provider deployments since this process started
              </caption>
              <thead>
                <tr>
                  <th scope="col">Deployment</th>
                  <th scope="col">Model alias</th>
                  <th scope="col" class="num">Attempts</th>
                  <th scope="col" class="num">Errors</th>
                  <th scope="col" class="num">Error ratio</th>
                  <th scope="col" class="num">Failovers</th>
                  <th scope="col">Breaker</th>
                </tr>
              </thead>
              <tbody>
                {deployments.map((d) => (
                  <tr>
                    <th scope="row">
                      <span class="mono">{d.provider}/{d.deployment}</span>
                    </th>
                    <td>{d.alias}</td>
                    <td class="num">{count(d.attempts)}</td>
                    <td class="num">{count(d.errors)}</td>
                    <td class="num">{percent(d.error_ratio)}</td>
                    <td class="num">{count(d.failovers)}</td>
                    <td>
                      <span class={`badge ${breakerKind(d.breaker)}`}>{d.breaker}</span>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
      </>
    ),
  };
};
