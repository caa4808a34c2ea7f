// Draws the console's charts with uPlot from the JSON blocks the server embeds
// next to each chart; without JS the data table under each chart remains.
(function () {
  "use strict";
  // Red is last: the cap line is red.
  const PALETTE = ["#0a4fb3", "#13652b", "#7b2cbf", "#8a5a00", "#00727a", "#4a5058", "#b3261e"];
  const HEIGHT = 260;
  const MAX_DAY_TICKS = 10;

  const pad = (n) => String(n).padStart(2, "0");
  const day = (d) => `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
  const time = (d) => `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;

  function formatter(unit) {
    if (unit === "USD") return (v) => "$" + v.toFixed(Math.abs(v) < 1 && v !== 0 ? 3 : 2);
    return (v) => (Math.round(v * 10) / 10) + " " + unit;
  }

  // The server speaks UTC days and hours, and so does the x axis: 24-hour
  // times, with the date under the first tick of each day.
  function xAxis(spec) {
    if (spec.daily) {
      const step = Math.ceil(spec.x.length / MAX_DAY_TICKS);
      return {
        splits: () => spec.x.filter((_, i) => i % step === 0),
        values: (_, ticks) => ticks.map((ts) => day(new Date(ts * 1e3)).slice(5)),
      };
    }
    return {
      values: (_, ticks) =>
        ticks.map((ts, i) => {
          const d = new Date(ts * 1e3);
          const newDay = i === 0 || new Date(ticks[i - 1] * 1e3).getUTCDate() !== d.getUTCDate();
          return newDay ? `${time(d)}\n${day(d).slice(5)}` : time(d);
        }),
    };
  }

  function draw(holder) {
    const source = document.getElementById(holder.dataset.chart);
    if (!source) return;
    const spec = JSON.parse(source.textContent);
    const fmt = formatter(spec.unit);
    const width = () => Math.max(320, holder.clientWidth);
    const plot = new uPlot(
      {
        width: width(),
        height: HEIGHT,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
        scales: { x: { time: true } },
        axes: [xAxis(spec), { size: 72, values: (_, ticks) => ticks.map(fmt) }],
        series: [
          {
            label: spec.xLabel,
            value: (_, ts) => {
              if (ts == null) return "–";
              const d = new Date(ts * 1e3);
              return spec.daily ? day(d) : `${day(d)} ${time(d)}`;
            },
          },
          ...spec.series.map((s, i) => ({
            label: s.label,
            stroke: s.color || PALETTE[i % PALETTE.length],
            width: 2,
            dash: s.dashed ? [8, 5] : undefined,
            spanGaps: true,
            points: { show: !s.dashed && spec.x.length < 60 },
            value: (_, v) => (v == null ? "–" : fmt(v)),
          })),
        ],
      },
      [spec.x, ...spec.series.map((s) => s.values)],
      holder,
    );
    // uPlot's legend rows are headed by the series name; say so to screen readers.
    holder.querySelectorAll(".u-legend th").forEach((th) => th.setAttribute("scope", "row"));
    let drawnWidth = width();
    new ResizeObserver(() => {
      if (width() === drawnWidth) return;
      drawnWidth = width();
      plot.setSize({ width: drawnWidth, height: HEIGHT });
    }).observe(holder);
  }

  document.querySelectorAll("[data-chart]").forEach(draw);
})();
