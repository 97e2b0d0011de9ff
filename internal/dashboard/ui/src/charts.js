// Traffic charts of a service or workload page, with uPlot.
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { h } from "./dom.js";

const WIDTH = 460;
const HEIGHT = 180;

// trafficChart draws one direction's request and error rates and p95
// latency over the last spanSeconds.
export function trafficChart(title, points, spanSeconds) {
  const box = h("div", { class: "chart" }, h("h3", null, title));
  if (!points || points.length === 0) {
    box.append(h("p", { class: "muted" }, "No requests yet."));
    return box;
  }
  const t = points.map((p) => p.t / 1000);
  const rps = points.map((p) => p.rps);
  const errs = points.map((p) => p.errors);
  const p95 = points.map((p) => p.p95_ms);
  const opts = {
    width: WIDTH, height: HEIGHT,
    series: [
      {},
      { label: "requests/s", stroke: "#1976d2", width: 2, scale: "rps" },
      { label: "errors/s", stroke: "#d32f2f", width: 2, scale: "rps" },
      { label: "p95 ms", stroke: "#f9a825", width: 1, dash: [4, 4], scale: "ms" },
    ],
    axes: [{}, { scale: "rps", label: "req/s" }, { scale: "ms", side: 1, label: "ms", grid: { show: false } }],
    scales: {
      x: { time: true, range: () => { const end = Date.now() / 1000; return [end - spanSeconds, end]; } },
      rps: { range: (_, lo, hi) => [0, Math.max(hi, 1)] },
    },
  };
  const plot = h("div", { class: "plot" });
  box.append(plot);
  // uPlot measures its container: draw once it is in the document.
  queueMicrotask(() => new uPlot(opts, [t, rps, errs, p95], plot));
  return box;
}
