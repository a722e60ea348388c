// SVG charts drawn from plain data: a histogram and a multi-series line chart.
// Each chart is an <svg role="img"> with a text label, and every bar/point carries a <title>.

import { svg } from "./dom.js";

/** llama-swap's HistogramData {bins, min, max, binSize, p50, p95, p99} as an SVG bar chart. */
export function histogram(data, { label, unit = "tokens/s", width = 360, height = 120 } = {}) {
  const pad = { left: 8, right: 8, top: 8, bottom: 20 };
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart histogram",
                            role: "img", "aria-label": label });
  if (!data || !data.bins || !data.bins.length) {
    chart.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" },
      "no data yet"));
    return chart;
  }
  const top = Math.max(...data.bins, 1);
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const barW = plotW / data.bins.length;
  const size = data.binSize || (data.max - data.min) / data.bins.length || 0;
  data.bins.forEach((count, i) => {
    const h = (plotH * count) / top;
    const from = data.min + i * size;
    chart.append(svg("rect", { x: pad.left + i * barW + 0.5, y: pad.top + plotH - h,
                               width: Math.max(barW - 1, 1), height: Math.max(h, count ? 1 : 0),
                               class: "bar" },
      svg("title", {}, `${from.toFixed(1)}–${(from + size).toFixed(1)} ${unit}: ${count} requests`)));
  });
  const xOf = (v) => pad.left + (size ? ((v - data.min) / (size * data.bins.length)) * plotW : 0);
  for (const [name, value] of [["p50", data.p50], ["p95", data.p95], ["p99", data.p99]]) {
    if (value === undefined || value === null) continue;
    const x = xOf(value);
    chart.append(svg("line", { x1: x, x2: x, y1: pad.top, y2: pad.top + plotH, class: "marker marker-" + name },
      svg("title", {}, `${name}: ${value.toFixed(1)} ${unit}`)));
  }
  chart.append(svg("text", { x: pad.left, y: height - 5, class: "axis" }, data.min.toFixed(1)));
  chart.append(svg("text", { x: width - pad.right, y: height - 5, "text-anchor": "end", class: "axis" },
    `${data.max.toFixed(1)} ${unit}`));
  return chart;
}

/**
 * Lines over time: series = [{name, points: [[tMs, value]], className}], y from 0 to yMax
 * (or the largest value). Labels the last value of each series in the legend.
 */
export function lineChart(series, { label, yMax, unit = "", width = 560, height = 160, from, to } = {}) {
  const pad = { left: 40, right: 8, top: 8, bottom: 20 };
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart line-chart",
                            role: "img", "aria-label": label });
  const all = series.flatMap((s) => s.points);
  if (!all.length) {
    chart.append(svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" },
      "no samples yet"));
    return chart;
  }
  const t0 = from ?? Math.min(...all.map((p) => p[0]));
  const t1 = Math.max(to ?? Math.max(...all.map((p) => p[0])), t0 + 1);
  const top = yMax ?? Math.max(...all.map((p) => p[1]), 1);
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * plotW;
  const y = (v) => pad.top + plotH - (Math.min(v, top) / top) * plotH;
  chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: pad.top + plotH, y2: pad.top + plotH, class: "gridline" }));
  chart.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: pad.top, y2: pad.top, class: "gridline" }));
  chart.append(svg("text", { x: pad.left - 4, y: pad.top + 8, "text-anchor": "end", class: "axis" }, formatTick(top) + unit));
  chart.append(svg("text", { x: pad.left - 4, y: pad.top + plotH, "text-anchor": "end", class: "axis" }, "0"));
  chart.append(svg("text", { x: pad.left, y: height - 4, class: "axis" }, new Date(t0).toLocaleTimeString()));
  chart.append(svg("text", { x: width - pad.right, y: height - 4, "text-anchor": "end", class: "axis" }, new Date(t1).toLocaleTimeString()));
  series.forEach((s, index) => {
    if (!s.points.length) return;
    const d = s.points.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join(" ");
    const last = s.points[s.points.length - 1];
    chart.append(svg("path", { d, class: "series series-" + (s.className || index) },
      svg("title", {}, `${s.name}: ${formatTick(last[1])}${unit} at ${new Date(last[0]).toLocaleTimeString()}`)));
  });
  return chart;
}

function formatTick(value) {
  return value >= 100 ? Math.round(value).toString() : value.toFixed(1);
}
