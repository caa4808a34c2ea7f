// Pages are rendered once on the server, never reconciled, so lists need no keys; and with
// the precompiled JSX transform a `key` would be printed into the HTML as an attribute.
// deno-lint-ignore-file jsx-key
import type { Child } from "hono/jsx";
import { raw } from "hono/html";

export interface Series {
  label: string;
  values: Array<number | null>;
  /** Reference lines (targets, caps) are dashed. */
  dashed?: boolean;
  color?: string;
}

export interface ChartSpec {
  /** Axis unit: "ms" or "USD". */
  unit: string;
  xLabel: string;
  /** One point per UTC day rather than per minute or hour. */
  daily: boolean;
  /** Seconds since the epoch, ascending. */
  x: number[];
  series: Series[];
}

/** JSON that cannot end its <script> element early. */
const scriptJson = (value: unknown) =>
  JSON.stringify(value).replace(/</g, "\\u003c").replace(/\u2028|\u2029/g, "");

/**
 * A uPlot chart drawn by console.js from an embedded JSON block (data, never
 * executed, so the CSP allows it), and the same figures as a table for
 * screen readers, tests and browsers without JS.
 */
export function Chart(
  props: {
    id: string;
    title: string;
    spec: ChartSpec;
    xFormat: (seconds: number) => string;
    yFormat: (v: number | null) => string;
  },
) {
  const { id, title, spec } = props;
  return (
    <figure class="chart" aria-labelledby={`${id}-title`}>
      <figcaption id={`${id}-title`}>{title}</figcaption>
      <div
        class="chart-canvas"
        data-chart={`${id}-data`}
        role="img"
        aria-label={`${title}: chart; the table below holds the same figures`}
      >
      </div>
      <script type="application/json" id={`${id}-data`}>{raw(scriptJson(spec))}</script>
      <details>
        <summary>Data table: {title}</summary>
        <table id={`${id}-table`}>
          <caption class="visually-hidden">{title}</caption>
          <thead>
            <tr>
              <th scope="col">{spec.xLabel}</th>
              {spec.series.map((s) => <th scope="col" class="num">{s.label}</th>)}
            </tr>
          </thead>
          <tbody>
            {spec.x.map((x, i) => (
              <tr>
                <th scope="row">{props.xFormat(x)}</th>
                {spec.series.map((s) => <td class="num">{props.yFormat(s.values[i])}</td>)}
              </tr>
            ))}
          </tbody>
        </table>
      </details>
    </figure>
  );
}

/** A budget action as the console words it: "none" reads as "ok". */
const stateLabel = (state: string) => (state === "none" ? "ok" : state);

/** Budget states as the guard names them, each with its own colour and words. */
export function StateBadge(props: { state: string }) {
  const label = stateLabel(props.state);
  return <span class={`badge ${label}`}>{label}</span>;
}

export function Notice(props: { kind?: "good" | "bad"; children?: Child }) {
  return (
    <div class={`notice ${props.kind ?? ""}`} role={props.kind === "bad" ? "alert" : "status"}>
      {props.children}
    </div>
  );
}

/** A table's only row when there is nothing to show. */
export function EmptyRow(props: { columns: number; children?: Child }) {
  return (
    <tr>
      <td colspan={props.columns}>{props.children}</td>
    </tr>
  );
}

/** Seconds since the epoch for an ISO timestamp or a "YYYY-MM-DD" day (UTC). */
export const epochSeconds = (at: string) => Date.parse(at) / 1000;
