"use strict";
/* Line plots as inline SVG, hand-written so the run page needs no build step and nothing from the internet.

   SemirlPlot.draw(figure, {series, stacked, xMax, empty}) (re)draws the plot inside `figure` (an element holding an
   <svg> and a .legend): series = [{key, label, points: [[x, y], ...]}], x ascending. With `stacked`, every series
   has the same xs and each is drawn on top of the ones before it (a time breakdown); the legend then shows each
   part's own value. Hovering shows the values at the nearest x. Each series is one <polyline data-series=key>
   with one vertex per point. */
const SemirlPlot = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const W = 520, H = 210;
  const M = {left: 54, right: 20, top: 10, bottom: 24};
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                  "#bcbd22", "#7f7f7f"];
  const MARKERS_UP_TO = 40;  // points per series; beyond that the line alone reads better

  function svgEl(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }

  function format(value) {
    if (value === null || value === undefined || !Number.isFinite(value)) return "–";
    const magnitude = Math.abs(value);
    if (magnitude >= 1000) return value.toFixed(0);
    if (magnitude >= 10) return value.toFixed(1);
    if (magnitude >= 1 || magnitude === 0) return value.toFixed(2);
    return Number(value.toPrecision(3)).toString();
  }

  /* About `count` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart). */
  function ticks(lo, hi, count) {
    if (lo === hi) {
      const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
      lo -= pad;
      hi += pad;
    }
    const raw = (hi - lo) / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(f => f * power).find(s => s >= raw);
    const values = [];
    for (let v = Math.floor(lo / step) * step; v <= hi + step * 1e-9; v += step) values.push(Number(v.toPrecision(12)));
    if (values[values.length - 1] < hi) values.push(values[values.length - 1] + step);
    return values;
  }

  /* Cumulative tops of stacked series (same xs in every series). */
  function stackedTops(series) {
    const tops = [];
    series.forEach((s, i) => {
      tops.push(s.points.map(([x, y], j) => [x, y + (i > 0 ? tops[i - 1][j][1] : 0)]));
    });
    return tops;
  }

  function nearest(points, x) {
    let lo = 0, hi = points.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (points[mid][0] < x) lo = mid; else hi = mid;
    }
    return Math.abs(points[lo][0] - x) <= Math.abs(points[hi][0] - x) ? points[lo] : points[hi];
  }

  function axes(svg, x, y, xTicks, yTicks) {
    for (const t of yTicks) {
      svgEl("line", {class: "grid", x1: M.left, x2: W - M.right, y1: y(t), y2: y(t)}, svg);
      svgEl("text", {x: M.left - 6, y: y(t) + 4, "text-anchor": "end"}, svg).textContent = format(t);
    }
    for (const t of xTicks) {
      svgEl("text", {x: x(t), y: H - 6, "text-anchor": "middle"}, svg).textContent = String(t);
    }
    svgEl("line", {class: "axis", x1: M.left, x2: W - M.right, y1: H - M.bottom, y2: H - M.bottom}, svg);
    svgEl("line", {class: "axis", x1: M.left, x2: M.left, y1: M.top, y2: H - M.bottom}, svg);
  }

  function line(svg, points, color, key, x, y, markers) {
    const vertices = points.map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`).join(" ");
    svgEl("polyline", {points: vertices, fill: "none", stroke: color, "stroke-width": 2,
                       "stroke-linejoin": "round", "data-series": key}, svg);
    if (markers && points.length <= MARKERS_UP_TO) {
      for (const [px, py] of points) svgEl("circle", {cx: x(px), cy: y(py), r: 2.6, fill: color}, svg);
    }
  }

  function area(svg, top, base, color, x, y) {
    const upper = top.map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`);
    const lower = base.map(([px, py]) => `${x(px).toFixed(1)},${y(py).toFixed(1)}`).reverse();
    svgEl("polygon", {points: upper.concat(lower).join(" "), fill: color, "fill-opacity": 0.25, stroke: "none"}, svg);
  }

  function legend(box, series, at) {
    box.replaceChildren();
    series.forEach((s, i) => {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = COLORS[i % COLORS.length];
      const value = document.createElement("b");
      const point = at === null ? s.points[s.points.length - 1] : nearest(s.points, at);
      value.textContent = format(point[1]);
      item.append(swatch, s.label, value);
      box.appendChild(item);
    });
    if (at !== null) {
      const where = document.createElement("span");
      where.className = "muted";
      where.textContent = `at ${format(nearest(series[0].points, at)[0])}`;
      box.appendChild(where);
    }
  }

  function hover(svg, box, series, x, invert) {
    const cursor = svgEl("line", {class: "cursor", y1: M.top, y2: H - M.bottom, x1: -10, x2: -10}, svg);
    svg.onmousemove = event => {
      const rect = svg.getBoundingClientRect();
      const snapped = nearest(series[0].points, invert((event.clientX - rect.left) * W / rect.width))[0];
      cursor.setAttribute("x1", x(snapped));
      cursor.setAttribute("x2", x(snapped));
      legend(box, series, snapped);
    };
    svg.onmouseleave = () => {
      cursor.setAttribute("x1", -10);
      cursor.setAttribute("x2", -10);
      legend(box, series, null);
    };
  }

  // A loop, not Math.min(...values): spreading a long run's points as arguments overflows the call stack.
  const least = values => values.reduce((a, b) => (b < a ? b : a), Infinity);
  const most = values => values.reduce((a, b) => (b > a ? b : a), -Infinity);

  /* At most MAX_POINTS per line, the same steps for every series of a plot (stacked areas stay aligned), the last
     point always kept: a 6,000-step run draws as well as a 60-step one. */
  const MAX_POINTS = 1500;
  function thinned(points) {
    const stride = Math.ceil(points.length / MAX_POINTS);
    return stride <= 1 ? points : points.filter((_, i) => i % stride === 0 || i === points.length - 1);
  }

  function draw(figure, spec) {
    const svg = figure.querySelector("svg");
    const box = figure.querySelector(".legend");
    svg.replaceChildren();
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const series = spec.series.filter(s => s.points.length > 0).map(s => ({...s, points: thinned(s.points)}));
    figure.classList.toggle("empty", series.length === 0);
    if (series.length === 0) {
      svgEl("text", {class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle"}, svg).textContent = spec.empty;
      box.replaceChildren();
      svg.onmousemove = svg.onmouseleave = null;
      return;
    }
    const tops = spec.stacked ? stackedTops(series) : series.map(s => s.points);
    const xs = series.flatMap(s => s.points.map(p => p[0]));
    const ys = tops.flatMap(points => points.map(p => p[1])).concat(spec.stacked ? [0] : []);
    const xTicks = ticks(Math.min(0, least(xs)), Math.max(spec.xMax || 0, most(xs)), 5);
    const yTicks = ticks(least(ys), most(ys), 4);
    const [x0, x1] = [xTicks[0], xTicks[xTicks.length - 1]];
    const [y0, y1] = [yTicks[0], yTicks[yTicks.length - 1]];
    const x = v => M.left + (v - x0) / (x1 - x0) * (W - M.left - M.right);
    const y = v => H - M.bottom - (v - y0) / (y1 - y0) * (H - M.top - M.bottom);
    axes(svg, x, y, xTicks, yTicks);
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      if (spec.stacked) area(svg, tops[i], i > 0 ? tops[i - 1] : tops[i].map(([px]) => [px, 0]), color, x, y);
      line(svg, tops[i], color, s.key, x, y, !spec.stacked);
    });
    legend(box, series, null);
    hover(svg, box, series, x, sx => x0 + (sx - M.left) / (W - M.left - M.right) * (x1 - x0));
  }

  return {draw, format, COLORS};
})();
