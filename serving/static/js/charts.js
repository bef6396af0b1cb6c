// Chart.js (vendored UMD build, window.Chart) line charts of the selected GPU, the barrier and the LLM.

const Chart = window.Chart;
const GRID = "#2a3542";
const TICKS = "#8a99a8";

Chart.defaults.color = TICKS;
Chart.defaults.borderColor = GRID;
Chart.defaults.font.size = 11;

function lineChart(canvas, datasets, { y, y2, x = "twin time (s)" } = {}) {
  const scales = {
    x: { type: "linear", title: { display: true, text: x }, ticks: { maxTicksLimit: 6 } },
    y: { title: { display: !!y, text: y }, ticks: { maxTicksLimit: 5 } },
  };
  if (y2) scales.y2 = { position: "right", title: { display: true, text: y2 }, grid: { drawOnChartArea: false } };
  return new Chart(canvas, {
    type: "line",
    data: { datasets: datasets.map((d) => ({ pointRadius: 0, borderWidth: 1.6, tension: 0.2, data: [], ...d })) },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false, parsing: false, normalized: true,
      interaction: { mode: "nearest", axis: "x", intersect: false },
      plugins: { legend: { labels: { boxWidth: 10, boxHeight: 2 } } },
      scales,
    },
  });
}

/** Sensed vs estimated true temperature with the slowdown and max operating lines; clocks and power. */
export class GpuCharts {
  constructor(tempCanvas, clockCanvas) {
    this.temp = lineChart(tempCanvas, [
      { label: "sensed °C", borderColor: "#58a6ff" },
      { label: "estimated true °C", borderColor: "#f0883e" },
      { label: "slowdown", borderColor: "#f85149", borderDash: [6, 4], borderWidth: 1 },
      { label: "max operating", borderColor: "#d29922", borderDash: [2, 3], borderWidth: 1 },
    ], { y: "°C" });
    this.clock = lineChart(clockCanvas, [
      { label: "clock MHz", borderColor: "#3fb950", yAxisID: "y" },
      { label: "power W", borderColor: "#bc8cff", yAxisID: "y2" },
    ], { y: "MHz", y2: "W" });
  }

  /** Draw `gpu` from the history rows ({ts, gpus: {name: [sensed, est, clock, power]}}). */
  show(gpu, history, facts) {
    const pts = (k) => history.filter((r) => r.gpus[gpu]).map((r) => ({ x: r.ts, y: r.gpus[gpu][k] }));
    const [sensed, est, clock, power] = [0, 1, 2, 3].map(pts);
    const span = sensed.length ? [sensed[0].x, sensed[sensed.length - 1].x] : [0, 1];
    const flat = (v) => (v == null ? [] : span.map((x) => ({ x, y: v })));
    const t = this.temp.data.datasets;
    t[0].data = sensed; t[1].data = est; t[2].data = flat(facts && facts.slowdown_c);
    t[3].data = flat(facts && facts.max_operating_c);
    this.temp.update("none");
    const c = this.clock.data.datasets;
    c[0].data = clock; c[1].data = power;
    this.clock.update("none");
  }
}

/** A rolling series chart (barrier wait per tick, LLM KV-cache and queue). */
export class Rolling {
  constructor(canvas, series, opts) {
    this.chart = lineChart(canvas, series, opts);
    this.keep = 300;
  }

  push(x, values) {
    this.chart.data.datasets.forEach((d, i) => {
      if (values[i] == null) return;
      d.data.push({ x, y: values[i] });
      if (d.data.length > this.keep) d.data.shift();
    });
    this.chart.update("none");
  }
}
