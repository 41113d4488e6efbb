// charts.js: a deployment's time series (GET /deploy/{id}/stats) drawn
// with uPlot (vendored, loaded by index.html as the global uPlot). A step
// with no data is null in the API and a gap in the chart, never a zero.
import { el } from './dom.js';

// CHARTS are the deployment page's charts: one div.chart[data-series=key]
// each, its lines from the stats points' fields.
export const CHARTS = [
  { key: 'instances', title: 'Instances', series: [['running', 'running', '#16a34a'], ['starting', 'starting', '#d97706'], ['pending', 'pending', '#dc2626']] },
  { key: 'requests', title: 'Requests per second', series: [['requests_per_second', 'req/s', '#2563eb']] },
  { key: 'held', title: 'Held requests', series: [['held', 'average', '#9333ea'], ['held_max', 'max', '#c084fc']] },
  { key: 'in_flight', title: 'In flight', series: [['in_flight', 'average', '#0891b2'], ['in_flight_max', 'max', '#67e8f9']] },
  { key: 'ttft', title: 'Time to first token (ms)', series: [['ttft_p50_ms', 'p50', '#2563eb'], ['ttft_p99_ms', 'p99', '#dc2626']] },
  { key: 'tokens', title: 'Tokens per second', series: [['tokens_per_second', 'tokens/s', '#16a34a']] },
  { key: 'cold_starts', title: 'Cold starts (longest, s)', bars: true, series: [['cold_start_seconds', 'seconds', '#d97706']] },
];

const HEIGHT = 170;

// columns turns the API's points into uPlot's columns for chart c: x in
// Unix seconds, then one column per series the API sends (a field absent
// from every point, e.g. held_max on an older thaw, is left out). drawn is
// the number of steps with at least one non-null value.
export function columns(c, points) {
  const series = c.series.filter(([f]) => points.some((p) => f in p));
  const xs = points.map((p) => Date.parse(p.at) / 1000);
  const ys = series.map(([f]) => points.map((p) => (p[f] === undefined ? null : p[f])));
  let drawn = 0;
  for (let i = 0; i < xs.length; i++) if (ys.some((col) => col[i] !== null)) drawn++;
  return { series, data: [xs, ...ys], drawn };
}

// Charts owns the #charts grid.
export class Charts {
  constructor() {
    this.root = el('div', { id: 'charts' });
    this.plots = new Map(); // key -> {box, target, plot, sig}
    for (const c of CHARTS) {
      const target = el('div', { class: 'plot' });
      const note = el('p', { class: 'nodata', text: 'no data yet' });
      const box = el('div', { class: 'chart', 'data-series': c.key, 'data-points': '0', role: 'group', 'aria-label': c.title },
        el('h3', { text: c.title }), note, target);
      this.root.append(box);
      this.plots.set(c.key, { box, target, note, plot: null, sig: '' });
    }
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(this.root);
  }

  // update draws the stats answer's points.
  update(stats) {
    const points = (stats && stats.points) || [];
    for (const c of CHARTS) {
      const p = this.plots.get(c.key);
      const { series, data, drawn } = columns(c, points);
      p.box.dataset.points = String(drawn);
      p.note.hidden = drawn > 0;
      const sig = series.map(([f]) => f).join(',');
      if (!globalThis.uPlot) continue; // the library failed to load: counts only
      if (p.plot && p.sig === sig) {
        p.plot.setData(data);
        continue;
      }
      if (p.plot) p.plot.destroy();
      p.sig = sig;
      p.plot = new globalThis.uPlot(options(c, series, this.width(p)), data, p.target);
    }
  }

  width(p) { return Math.max(240, p.box.clientWidth - 24); }

  fit() {
    for (const p of this.plots.values()) {
      if (p.plot) p.plot.setSize({ width: this.width(p), height: HEIGHT });
    }
  }

  destroy() {
    this.resize.disconnect();
    for (const p of this.plots.values()) if (p.plot) p.plot.destroy();
  }
}

// isolated picks the points uPlot should mark although it draws no
// markers at this density: values with no neighbour, which a line alone
// would not show.
export function isolated(u, seriesIdx, show) {
  if (show) return null;
  const ys = u.data[seriesIdx];
  const out = [];
  for (let i = 0; i < ys.length; i++) {
    if (ys[i] !== null && (i === 0 || ys[i - 1] === null) && (i === ys.length - 1 || ys[i + 1] === null)) out.push(i);
  }
  return out.length ? out : null;
}

function options(c, series, width) {
  const U = globalThis.uPlot;
  const dark = matchMedia('(prefers-color-scheme: dark)').matches;
  const grid = { stroke: dark ? '#30363d' : '#e5e7eb', width: 1 };
  const axis = { stroke: dark ? '#9aa5b4' : '#5b6678', grid, ticks: grid };
  return {
    width, height: HEIGHT,
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, 1) * 1.1] } },
    axes: [axis, { ...axis, size: 50 }],
    cursor: { drag: { x: false, y: false } },
    series: [{}, ...series.map(([, label, color]) => ({
      label, stroke: color, width: 2, spanGaps: false,
      fill: c.bars ? color : undefined,
      paths: c.bars ? U.paths.bars({ size: [0.6, 12] }) : undefined,
      points: c.bars ? { show: false } : { filter: isolated },
    }))],
  };
}
