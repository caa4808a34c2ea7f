import { Chart, epochSeconds } from "../components.tsx";
import { count, ms, utc } from "../format.ts";
import { choice, type View } from "../page.ts";
import { HOUR_OPTIONS, HOURS, PeriodForm } from "./period_form.tsx";

/** What the view reads from `GET /admin/stats/latency`. */
interface LatencyReply {
  bucket: "minute" | "hour";
  series: Array<{
    t: string;
    requests: number;
    p50_ms: number | null;
    p95_ms: number | null;
    p99_ms: number | null;
    ttft_p50_ms: number | null;
    ttft_p95_ms: number | null;
  }>;
}

export const latencyView: View = async (ctx) => {
  const hours = choice(ctx, "hours", HOURS, "24");
  const { bucket, series } = await ctx.api.get<LatencyReply>(`/admin/stats/latency?hours=${hours}`);
  const x = series.map((r) => epochSeconds(r.t));
  const xFormat = (s: number) => utc(s * 1000);
  return {
    title: "Latency",
    section: "latency",
    body: (
      <>
        <p class="lede">
          Percentiles per {bucket}{" "}
          from the ledger, so every edge's requests count. Whole-request latency covers non-streamed
          requests; first-token latency covers streams.
        </p>
        <PeriodForm name="hours" value={hours} action="/console/latency" options={HOUR_OPTIONS} />
        {series.length === 0 ? <p>No requests in this period.</p> : (
          <>
            <Chart
              id="latency"
              title="Request latency (non-streamed)"
              xFormat={xFormat}
              yFormat={ms}
              spec={{
                unit: "ms",
                xLabel: "Time (UTC)",
                daily: false,
                x,
                series: [
                  { label: "P50", values: series.map((r) => r.p50_ms) },
                  { label: "P95", values: series.map((r) => r.p95_ms) },
                  { label: "P99", values: series.map((r) => r.p99_ms) },
                ],
              }}
            />
            <Chart
              id="ttft"
              title="Time to first token (streams)"
              xFormat={xFormat}
              yFormat={ms}
              spec={{
                unit: "ms",
                xLabel: "Time (UTC)",
                daily: false,
                x,
                series: [
                  { label: "First token P50", values: series.map((r) => r.ttft_p50_ms) },
                  { label: "First token P95", values: series.map((r) => r.ttft_p95_ms) },
                ],
              }}
            />
            <p>
              {count(series.reduce((n, r) => n + r.requests, 0))} requests in {series.length}{" "}
              {bucket}s.
            </p>
          </>
        )}
      </>
    ),
  };
};
