import { Notice } from "../components.tsx";
import { count, percent, ratio } from "../format.ts";
import type { View } from "../page.ts";

interface Window {
  total: number;
  bad: number;
  sli: number | null;
  burn_rate: number | null;
}

/** What the view reads from `GET /admin/slo`. */
interface SloReply {
  slos: Array<{
    name: string;
    objective: string;
    target: number;
    windows: Record<string, Window>;
    error_budget: { remaining: number; consumed_last_day: number; bad_events: number };
    alert: { firing: boolean; rule: string };
  }>;
}

/** Burn above 1 spends the budget faster than the window allows. */
const burnNote = (b: number | null) => b === null ? "no data" : b > 1 ? "burning fast" : "on pace";

export const sloView: View = async ({ api }) => {
  const { slos } = await api.get<SloReply>("/admin/slo");
  return {
    title: "SLO status",
    section: "slo",
    body: (
      <>
        <p class="lede">
          Each service level indicator against its target over 5 minutes, 1 hour, 1 day and the
          whole SLO window, the error budget left, and the burn rate (1 spends the budget exactly
          over the window). Figures are this process's, since it started.
        </p>
        {slos.map((s) => {
          const met = Object.values(s.windows).every((w) => w.sli === null || w.sli >= s.target);
          return (
            <section aria-labelledby={`slo-${s.name}`} data-slo={s.name}>
              <h2 id={`slo-${s.name}`}>
                {s.name}{" "}
                <span class={`badge ${met ? "ok" : "block"}`}>{met ? "met" : "missed"}</span>
              </h2>
              <p>
                Target {percent(s.target, 2)} of {s.objective}. Error budget remaining{" "}
                <meter min={0} max={1} value={s.error_budget.remaining} aria-hidden="true"></meter>
                {" "}
                <strong data-field="budget-remaining">{percent(s.error_budget.remaining)}</strong>
                {" "}
                ({count(s.error_budget.bad_events)} bad events; {percent(
                  s.error_budget.consumed_last_day,
                )} consumed in the last day).
              </p>
              {s.alert.firing && <Notice kind="bad">Budget alert firing: {s.alert.rule}.</Notice>}
              <table>
                <caption>{s.name}: SLI and burn rate per window</caption>
                <thead>
                  <tr>
                    <th scope="col">Window</th>
                    <th scope="col" class="num">Events</th>
                    <th scope="col" class="num">Bad</th>
                    <th scope="col" class="num">SLI</th>
                    <th scope="col" class="num">Target</th>
                    <th scope="col" class="num">Burn rate</th>
                    <th scope="col">Burn</th>
                  </tr>
                </thead>
                <tbody>
                  {Object.entries(s.windows).map(([label, w]) => (
                    <tr>
                      <th scope="row">{label}</th>
                      <td class="num">{count(w.total)}</td>
                      <td class="num">{count(w.bad)}</td>
                      <td class="num">{percent(w.sli, 2)}</td>
                      <td class="num">{percent(s.target, 2)}</td>
                      <td class="num">{ratio(w.burn_rate)}</td>
                      <td>{burnNote(w.burn_rate)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </section>
          );
        })}
      </>
    ),
  };
};
