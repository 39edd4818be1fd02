// Chart primitives for the dashboard: scales (linear, log, time, categorical),
// axes, a shared tooltip, and the plots the pages need (scatter, lines,
// horizontal bars, parallel coordinates). Hand-written so the coordinator can
// serve the whole dashboard from its binary with nothing fetched from outside.
//
// Every plot draws into a container element, sized by the container's width,
// and returns what it drew ({points}) so the page can expose it to tests.
// Dense layers switch from SVG to canvas above a threshold: thousands of SVG
// nodes make hovering and redrawing sluggish, a canvas does not care.

const SVGNS = 'http://www.w3.org/2000/svg';
let uid = 0;

export function svgEl(tag, attrs = {}, parent = null) {
  const e = document.createElementNS(SVGNS, tag);
  for (const k in attrs) if (attrs[k] != null) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

// ---------------------------------------------------------------- theme

// Colours live in style.css as custom properties so the light and dark themes
// are defined in one place; canvas layers need them as strings, so read them.
const colourCache = new Map();
export function cssVar(name) {
  let v = colourCache.get(name);
  if (v === undefined) {
    v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    colourCache.set(name, v);
  }
  return v;
}
export function themeChanged() { colourCache.clear(); }

export const STATES = ['completed', 'stopped', 'paused', 'running', 'waiting', 'failed', 'cancelled'];
export function stateColor(state) { return cssVar('--st-' + state) || '#888'; }

// ---------------------------------------------------------------- formatting

function trimExp(s) { return s.replace(/\.?0+e/, 'e').replace('e+', 'e'); }

// Values and parameters span many orders of magnitude (a learning rate of
// 3e-5 next to an accuracy of 0.91), so pick the notation by magnitude.
export function fmtNum(v, digits = 4) {
  if (v == null || (typeof v === 'number' && Number.isNaN(v))) return '—';
  if (typeof v !== 'number') return String(v);
  if (!Number.isFinite(v)) return v > 0 ? '∞' : '−∞';
  if (Number.isInteger(v) && Math.abs(v) < 1e7) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e7)) return trimExp(v.toExponential(digits - 1));
  return String(+v.toPrecision(digits));
}

export function fmtDuration(ms) {
  if (ms == null || ms <= 0) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const p2 = n => String(n).padStart(2, '0');

export function fmtTime(ms, withSeconds = false) {
  if (!ms) return '—';
  const d = new Date(ms);
  const now = new Date();
  const hm = `${p2(d.getHours())}:${p2(d.getMinutes())}${withSeconds ? ':' + p2(d.getSeconds()) : ''}`;
  if (d.toDateString() === now.toDateString()) return `today ${hm}`;
  const year = d.getFullYear() === now.getFullYear() ? '' : ` ${d.getFullYear()}`;
  return `${d.getDate()} ${MONTHS[d.getMonth()]}${year} ${hm}`;
}

export function fmtAgo(ms) {
  if (!ms) return '—';
  const d = Date.now() - ms;
  if (d < 5000) return 'just now';
  return `${fmtDuration(d).split(' ')[0]} ago`;
}

function tickFormatter(step) {
  const dec = Math.max(0, Math.min(12, -Math.floor(Math.log10(step) + 1e-9)));
  return v => {
    if (Math.abs(v) < step * 1e-6) return '0';
    const a = Math.abs(v);
    // Small steps read better as 2.5e-4 than as 0.00025, and fit the margin.
    if (step < 1e-3 || a >= 1e9) {
      const digits = Math.max(1, Math.min(4, Math.ceil(Math.log10(a / step) + 1e-9) + 1));
      return trimExp(v.toExponential(digits - 1));
    }
    if (a >= 1e4 && step >= 1000) return `${+(v / 1000).toFixed(Math.max(0, dec - 3))}k`;
    return v.toFixed(dec);
  };
}

function fmtLogTick(v) {
  if (v >= 1e-3 && v < 1e4) return String(+v.toPrecision(6));
  return trimExp(v.toExponential(1));
}

// ---------------------------------------------------------------- scales

function niceStep(span, n) {
  const raw = span / Math.max(1, n);
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}

function linearTicks(lo, hi, n) {
  if (!(hi > lo)) return [{ v: lo, label: fmtNum(lo) }];
  const step = niceStep(hi - lo, n);
  const fmt = tickFormatter(step);
  const out = [];
  const i0 = Math.ceil(lo / step - 1e-9);
  for (let i = i0; (i * step) <= hi + step * 1e-9; i++) {
    const v = +(i * step).toPrecision(12);
    out.push({ v, label: fmt(v) });
  }
  return out;
}

function logTicks(lo, hi, n) {
  const a = Math.log10(lo), b = Math.log10(hi);
  const decades = b - a;
  const within = v => v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9);
  if (decades <= 3) {
    // Round multiples inside each decade, as many as fit.
    for (const mult of [[1, 2, 5], [1, 3], [1]]) {
      const out = [];
      for (let e = Math.floor(a); e <= Math.ceil(b); e++) {
        for (const m of mult) {
          const v = +(m * 10 ** e).toPrecision(6);
          if (within(v)) out.push({ v, label: fmtLogTick(v) });
        }
      }
      // Less than a decade with no round numbers inside: linear ticks read better.
      if (out.length < 2) return linearTicks(lo, hi, n).filter(t => t.v > 0);
      if (out.length <= Math.max(3, n * 1.5) || mult.length === 1) return out;
    }
  }
  const out = [];
  // Generous: a horizontal axis thins colliding labels itself.
  const every = Math.max(1, Math.floor(decades / Math.max(1, n)));
  for (let e = Math.ceil(a - 1e-9); e <= Math.floor(b + 1e-9); e++) {
    if (e % every !== 0) continue;
    const v = 10 ** e;
    out.push({ v, label: fmtLogTick(v) });
  }
  return out;
}

const TIME_STEPS = [1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5, 36e5, 72e5, 108e5, 216e5, 432e5, 864e5, 1728e5, 6048e5];

function timeTicks(lo, hi, n) {
  const span = hi - lo;
  const step = TIME_STEPS.find(s => span / s <= n) || TIME_STEPS[TIME_STEPS.length - 1];
  // Align ticks to local wall-clock boundaries (10:00, not 09:47).
  const tz = new Date(lo).getTimezoneOffset() * 60000;
  const out = [];
  const multiDay = new Date(lo).toDateString() !== new Date(hi).toDateString();
  for (let v = Math.ceil((lo - tz) / step) * step + tz; v <= hi; v += step) {
    const d = new Date(v);
    let label;
    if (step >= 864e5) label = `${d.getDate()} ${MONTHS[d.getMonth()]}`;
    else if (step < 6e4) label = `${p2(d.getHours())}:${p2(d.getMinutes())}:${p2(d.getSeconds())}`;
    else if (multiDay && d.getHours() === 0 && d.getMinutes() === 0) label = `${d.getDate()} ${MONTHS[d.getMonth()]}`;
    else label = `${p2(d.getHours())}:${p2(d.getMinutes())}`;
    out.push({ v, label });
  }
  return out;
}

// A scale maps a value to a pixel (map), back (invert), and proposes ticks.
// type: 'linear' | 'log' | 'time' | 'cat' (domain is then the list of choices).
export function makeScale(type, domain, range, { integer = false } = {}) {
  const sc = makeScaleRaw(type, domain, range);
  if (integer && type !== 'cat') {
    // Integer quantities (steps, layers) get no ticks between the integers.
    const raw = sc.ticks;
    sc.ticks = n => {
      let t = raw(n).filter(x => Number.isInteger(x.v));
      if (t.length < 2 && sc.domain[1] - sc.domain[0] >= 1) t = raw(Math.max(1, Math.floor(sc.domain[1] - sc.domain[0]))).filter(x => Number.isInteger(x.v));
      return t.map(x => ({ v: x.v, label: /[.e]/.test(x.label) ? fmtNum(x.v) : x.label }));
    };
  }
  return sc;
}

function makeScaleRaw(type, domain, range) {
  const [r0, r1] = range;
  if (type === 'cat') {
    const choices = domain;
    const k = Math.max(1, choices.length);
    const band = (r1 - r0) / k;
    const index = new Map(choices.map((c, i) => [String(c), i]));
    const sc = v => r0 + ((index.get(String(v)) ?? 0) + 0.5) * band;
    sc.type = 'cat'; sc.domain = choices; sc.range = range; sc.band = band;
    sc.index = v => index.get(String(v));
    sc.invert = px => choices[Math.max(0, Math.min(k - 1, Math.floor((px - r0) / band)))];
    sc.ticks = () => choices.map(c => ({ v: c, label: String(c) }));
    return sc;
  }
  let [d0, d1] = domain;
  if (type === 'log') {
    d0 = Math.max(d0, 1e-300); d1 = Math.max(d1, d0 * 1.0001);
    const l0 = Math.log10(d0), l1 = Math.log10(d1);
    const sc = v => r0 + (Math.log10(Math.max(v, 1e-300)) - l0) / (l1 - l0) * (r1 - r0);
    sc.invert = px => 10 ** (l0 + (px - r0) / (r1 - r0) * (l1 - l0));
    sc.ticks = n => logTicks(d0, d1, n);
    Object.assign(sc, { type, domain: [d0, d1], range });
    return sc;
  }
  if (!(d1 > d0)) { d0 -= 1; d1 += 1; }
  const sc = v => r0 + (v - d0) / (d1 - d0) * (r1 - r0);
  sc.invert = px => d0 + (px - r0) / (r1 - r0) * (d1 - d0);
  sc.ticks = n => (type === 'time' ? timeTicks : linearTicks)(d0, d1, n);
  Object.assign(sc, { type, domain: [d0, d1], range });
  return sc;
}

// Positive values spanning orders of magnitude (a loss from 2e5 down to 0.3)
// read better on a log axis.
export function autoScaleType(values, ratio = 100) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    if (v == null || !Number.isFinite(v)) continue;
    if (v <= 0) return 'linear';
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo < hi && hi / lo > ratio ? 'log' : 'linear';
}

export function extent(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    if (v == null || typeof v !== 'number' || !Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : [0, 1];
}

// Leave a little air so points do not sit on the frame.
export function padDomain([lo, hi], type, frac = 0.05) {
  if (type === 'log') {
    lo = Math.max(lo, 1e-300);
    if (hi <= lo) return [lo / 2, lo * 2];
    const f = (hi / lo) ** frac;
    return [lo / f, hi * f];
  }
  if (type === 'time') {
    const pad = Math.max((hi - lo) * frac, 1000);
    return [lo - pad, hi + pad];
  }
  if (hi <= lo) { const d = Math.abs(lo) * 0.1 || 1; return [lo - d, hi + d]; }
  const pad = (hi - lo) * frac;
  return [lo - pad, hi + pad];
}

// ---------------------------------------------------------------- text measure

let measureCtx = null;
export function textWidth(text, font = '12px system-ui, sans-serif') {
  if (!measureCtx) measureCtx = document.createElement('canvas').getContext('2d');
  measureCtx.font = font;
  return measureCtx.measureText(text).width;
}

function ellipsize(text, maxWidth, font) {
  if (textWidth(text, font) <= maxWidth) return text;
  let s = text;
  while (s.length > 1 && textWidth(s + '…', font) > maxWidth) s = s.slice(0, -1);
  return s + '…';
}

// ---------------------------------------------------------------- tooltip

let tipEl = null;
export function showTip(html, clientX, clientY) {
  if (!tipEl) {
    tipEl = document.createElement('div');
    tipEl.className = 'tooltip';
    tipEl.setAttribute('role', 'tooltip');
    document.body.appendChild(tipEl);
  }
  tipEl.innerHTML = html;
  tipEl.style.display = 'block';
  const w = tipEl.offsetWidth, h = tipEl.offsetHeight;
  let x = clientX + 14, y = clientY + 14;
  if (x + w > window.innerWidth - 8) x = clientX - w - 14;
  if (y + h > window.innerHeight - 8) y = clientY - h - 14;
  tipEl.style.left = `${Math.max(4, x)}px`;
  tipEl.style.top = `${Math.max(4, y)}px`;
}
export function hideTip() { if (tipEl) tipEl.style.display = 'none'; }

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

// ---------------------------------------------------------------- frame & axes

// Build the SVG (and optionally a canvas under it, covering the plot area) for
// one plot; the SVG stays on top to carry axes, highlights and pointer events.
export function plotFrame(el, { height, margin, canvas = false, minWidth = 160 }) {
  el.replaceChildren();
  el.classList.add('plot');
  // Wider than the container only when asked (many parallel axes): it scrolls.
  const width = Math.max(minWidth, Math.floor(el.clientWidth || el.getBoundingClientRect().width || 600));
  const iw = Math.max(20, width - margin.left - margin.right);
  const ih = Math.max(20, height - margin.top - margin.bottom);
  el.style.height = `${height}px`;
  let ctx = null;
  if (canvas) {
    const cv = document.createElement('canvas');
    const dpr = window.devicePixelRatio || 1;
    cv.width = Math.round(iw * dpr); cv.height = Math.round(ih * dpr);
    Object.assign(cv.style, { position: 'absolute', left: `${margin.left}px`, top: `${margin.top}px`, width: `${iw}px`, height: `${ih}px` });
    el.appendChild(cv);
    ctx = cv.getContext('2d');
    ctx.scale(dpr, dpr);
  }
  const svg = svgEl('svg', { width, height, class: 'chart-svg' }, el);
  const g = svgEl('g', { transform: `translate(${margin.left},${margin.top})` }, svg);
  const clipId = `clip${++uid}`;
  const defs = svgEl('defs', {}, svg);
  const clip = svgEl('clipPath', { id: clipId }, defs);
  svgEl('rect', { x: -4, y: -4, width: iw + 8, height: ih + 8 }, clip);
  return { el, svg, g, ctx, defs, width, height, iw, ih, margin, clipUrl: `url(#${clipId})` };
}

// orient: 'bottom' (at y = f.ih) or 'left' (at x = 0). Grid lines span the plot.
export function drawAxis(f, sc, { orient, label, grid = true, n, format } = {}) {
  const g = svgEl('g', { class: `axis axis-${orient}`, 'data-scale': sc.type }, f.g);
  const horizontal = orient === 'bottom';
  const len = horizontal ? f.iw : f.ih;
  n = n ?? Math.max(2, Math.floor(len / (horizontal ? (sc.type === 'log' ? 50 : 60) : 42)));
  const font = '11px system-ui, sans-serif';
  let ticks = sc.ticks(n).filter(t => { const p = sc(t.v); return p >= -0.5 && p <= len + 0.5; });
  if (format) ticks = ticks.map(t => ({ v: t.v, label: format(t.v) }));
  let maxLabel = Infinity;
  if (horizontal) g.setAttribute('transform', `translate(0,${f.ih})`);
  if (sc.type === 'cat') {
    // Choices share the axis evenly: shorten each to its band, thin only if tiny.
    const band = len / Math.max(1, ticks.length);
    const minBand = horizontal ? 28 : 14;
    const every = Math.ceil(minBand / Math.max(1, band));
    ticks = ticks.filter((_, i) => i % every === 0);
    if (horizontal) maxLabel = Math.max(24, band * every - 6);
  } else if (horizontal) {
    // Drop every other label until neighbours no longer collide.
    const widthOf = t => textWidth(t.label, font) + 10;
    for (let guard = 0; guard < 6 && ticks.length > 2; guard++) {
      const px = ticks.map(t => sc(t.v));
      let ok = true;
      for (let i = 1; i < ticks.length && ok; i++) {
        if (px[i] - px[i - 1] < (widthOf(ticks[i]) + widthOf(ticks[i - 1])) / 2) ok = false;
      }
      if (ok) break;
      ticks = ticks.filter((_, i) => i % 2 === 0);
    }
  }
  svgEl('line', horizontal ? { x1: 0, x2: f.iw, class: 'domain' } : { y1: 0, y2: f.ih, class: 'domain' }, g);
  for (const t of ticks) {
    const p = sc(t.v);
    if (horizontal) {
      if (grid) svgEl('line', { x1: p, x2: p, y1: 0, y2: -f.ih, class: 'grid' }, g);
      svgEl('line', { x1: p, x2: p, y1: 0, y2: 5, class: 'tick' }, g);
      svgEl('text', { x: p, y: 18, 'text-anchor': 'middle' }, g).textContent = ellipsize(t.label, maxLabel, font);
    } else {
      if (grid) svgEl('line', { x1: 0, x2: f.iw, y1: p, y2: p, class: 'grid' }, g);
      svgEl('line', { x1: -5, x2: 0, y1: p, y2: p, class: 'tick' }, g);
      svgEl('text', { x: -8, y: p, dy: '0.32em', 'text-anchor': 'end' }, g).textContent =
        ellipsize(t.label, f.margin.left - (label ? 34 : 12), font);
    }
  }
  if (label) {
    const t = horizontal
      ? svgEl('text', { x: f.iw / 2, y: 36, 'text-anchor': 'middle', class: 'axis-label' }, g)
      : svgEl('text', { transform: `translate(${-f.margin.left + 13},${f.ih / 2}) rotate(-90)`, 'text-anchor': 'middle', class: 'axis-label' }, g);
    t.textContent = label;
  }
  return g;
}

// Fit the left margin to the widest y tick label (and the rotated axis label).
function fitMargin(o, yType, yDomain, height, yInteger) {
  const m = { top: 12, right: 16, bottom: o.xLabel ? 44 : 28, left: 40, ...(o.margin || {}) };
  const ih = height - m.top - m.bottom;
  const sc = makeScale(yType, yDomain, [ih, 0], { integer: yInteger });
  const w = Math.max(10, ...sc.ticks(Math.max(2, Math.floor(ih / 42))).map(t => textWidth(t.label, '11px system-ui, sans-serif')));
  m.left = Math.max(m.left, Math.ceil(w) + 14 + (o.yLabel ? 22 : 0));
  return m;
}

function domainFor(type, values, choices, pad = 0.05) {
  if (type === 'cat') return choices;
  return padDomain(extent(values), type, pad);
}

// Pointer position inside the plot area of a frame.
function local(f, e) {
  const r = f.svg.getBoundingClientRect();
  return [e.clientX - r.left - f.margin.left, e.clientY - r.top - f.margin.top];
}

function overlay(f, { move, leave, click }) {
  const rect = svgEl('rect', { x: 0, y: 0, width: f.iw, height: f.ih, class: 'hover-layer' }, f.g);
  rect.addEventListener('pointermove', e => move(...local(f, e), e));
  rect.addEventListener('pointerleave', () => { hideTip(); leave && leave(); });
  if (click) rect.addEventListener('click', e => click(...local(f, e), e));
  return rect;
}

// Deterministic jitter for categorical x positions, so redraws do not shuffle.
function jitter(i) {
  const x = Math.sin(i * 12.9898 + 78.233) * 43758.5453;
  return (x - Math.floor(x)) - 0.5;
}

// ---------------------------------------------------------------- scatter

// o: {x, y: arrays; colors: array or string; xType, yType ('linear'|'log'|'time'|'cat');
//     xChoices; xDomain, yDomain; xLabel, yLabel; height; margin; r;
//     lines: [{x, y, color, width, dash, step, cls}]; tip(i) -> html; click(i);
//     canvasAbove (default 1000)}
export function scatterChart(el, o) {
  const n = o.x.length;
  const useCanvas = n > (o.canvasAbove ?? 1000);
  const xType = o.xType || 'linear', yType = o.yType || 'linear';
  const yDomain = o.yDomain || domainFor(yType, o.y, null, 0.06);
  const height = o.height || 300;
  const margin = fitMargin(o, yType, yDomain, height);
  const f = plotFrame(el, { height, margin, canvas: useCanvas });
  const xs = makeScale(xType, o.xDomain || domainFor(xType, o.x, o.xChoices, 0.03), [0, f.iw], { integer: o.xInteger });
  const ys = makeScale(yType, yDomain, [f.ih, 0]);
  drawAxis(f, xs, { orient: 'bottom', label: o.xLabel });
  drawAxis(f, ys, { orient: 'left', label: o.yLabel });

  const px = new Float32Array(n), py = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let x = xs(o.x[i]);
    if (xType === 'cat') x += jitter(i) * xs.band * 0.5;
    px[i] = x; py[i] = ys(o.y[i]);
  }
  const colorOf = typeof o.colors === 'string' ? () => o.colors : i => o.colors[i];
  const r = o.r ?? (n > 2000 ? 2 : n > 300 ? 3 : 4);
  const data = svgEl('g', { 'clip-path': f.clipUrl, class: 'dots' }, f.g);
  if (useCanvas) {
    // Group by colour: one fill per colour is much faster than one per dot.
    const groups = new Map();
    for (let i = 0; i < n; i++) {
      const c = colorOf(i);
      if (!groups.has(c)) groups.set(c, []);
      groups.get(c).push(i);
    }
    const ctx = f.ctx;
    ctx.globalAlpha = 0.75;
    for (const [c, idx] of groups) {
      ctx.fillStyle = c;
      ctx.beginPath();
      for (const i of idx) { ctx.moveTo(px[i] + r, py[i]); ctx.arc(px[i], py[i], r, 0, Math.PI * 2); }
      ctx.fill();
    }
    ctx.globalAlpha = 1;
  } else {
    for (let i = 0; i < n; i++) {
      svgEl('circle', { cx: px[i].toFixed(1), cy: py[i].toFixed(1), r, fill: colorOf(i), class: 'dot' }, data);
    }
  }
  for (const l of o.lines || []) {
    if (!l.x.length) continue;
    let d = '';
    for (let i = 0; i < l.x.length; i++) {
      const x = xs(l.x[i]).toFixed(1), y = ys(l.y[i]).toFixed(1);
      d += i === 0 ? `M${x},${y}` : l.step ? `H${x}V${y}` : `L${x},${y}`;
    }
    if (l.step && l.extendTo != null) d += `H${xs(l.extendTo).toFixed(1)}`;
    svgEl('path', { d, fill: 'none', stroke: l.color, 'stroke-width': l.width || 2, 'stroke-dasharray': l.dash, class: l.cls || 'overlay-line' }, data);
  }

  const ring = svgEl('circle', { r: r + 3, class: 'hover-ring', visibility: 'hidden' }, f.g);
  let hover = -1;
  const nearest = (x, y) => {
    let best = -1, bd = 144; // within 12 px
    for (let i = 0; i < n; i++) {
      const dx = px[i] - x, dy = py[i] - y, d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = i; }
    }
    return best;
  };
  overlay(f, {
    move: (x, y, e) => {
      hover = nearest(x, y);
      if (hover < 0) { ring.setAttribute('visibility', 'hidden'); hideTip(); f.svg.style.cursor = ''; return; }
      ring.setAttribute('cx', px[hover]); ring.setAttribute('cy', py[hover]);
      ring.setAttribute('stroke', colorOf(hover));
      ring.setAttribute('visibility', 'visible');
      f.svg.style.cursor = o.click ? 'pointer' : '';
      if (o.tip) showTip(o.tip(hover), e.clientX, e.clientY);
    },
    leave: () => { ring.setAttribute('visibility', 'hidden'); hover = -1; },
    click: () => { if (hover >= 0 && o.click) { hideTip(); o.click(hover); } },
  });
  return { points: n, canvas: useCanvas };
}

// ---------------------------------------------------------------- lines

// o: {series: [{key, x, y, color, width, dash, opacity, attrs}], xType, yType,
//     xLabel, yLabel, height, xDomain, yDomain, tip(series, i) -> html,
//     click(series), highlight (default true), margin}
export function lineChart(el, o) {
  const series = o.series;
  const xType = o.xType || 'linear', yType = o.yType || 'linear';
  const allX = [], allY = [];
  for (const s of series) { for (const v of s.x) allX.push(v); for (const v of s.y) allY.push(v); }
  let xd = o.xDomain || extent(allX);
  if (!o.xDomain && xType !== 'log' && xd[0] === xd[1]) xd = [xd[0] - 1, xd[1] + 1];
  const yDomain = o.yDomain || padDomain(extent(allY), yType, 0.05);
  const height = o.height || 300;
  const f = plotFrame(el, { height, margin: fitMargin(o, yType, yDomain, height) });
  const xs = makeScale(xType, xd, [0, f.iw], { integer: o.xInteger });
  const ys = makeScale(yType, yDomain, [f.ih, 0]);
  drawAxis(f, xs, { orient: 'bottom', label: o.xLabel });
  drawAxis(f, ys, { orient: 'left', label: o.yLabel });

  const data = svgEl('g', { 'clip-path': f.clipUrl, class: 'lines' }, f.g);
  const pix = [];
  let points = 0;
  const paths = series.map(s => {
    const xp = new Float32Array(s.x.length), yp = new Float32Array(s.x.length);
    let d = '';
    for (let i = 0; i < s.x.length; i++) {
      xp[i] = xs(s.x[i]); yp[i] = ys(s.y[i]);
      d += `${i ? 'L' : 'M'}${xp[i].toFixed(1)},${yp[i].toFixed(1)}`;
    }
    if (s.x.length === 1) d += 'l0,0'; // round caps turn a lone point into a dot
    points += s.x.length;
    pix.push([xp, yp]);
    const p = svgEl('path', {
      d, class: 'series', stroke: s.color, 'stroke-width': s.width || 1.5,
      'stroke-dasharray': s.dash, 'stroke-opacity': s.opacity ?? 1,
    }, data);
    for (const k in s.attrs || {}) p.setAttribute(k, s.attrs[k]);
    return p;
  });
  const marker = svgEl('circle', { r: 4, class: 'hover-ring', visibility: 'hidden' }, f.g);
  let hi = -1;
  const setHi = k => {
    if (k === hi) return;
    if (hi >= 0) paths[hi].classList.remove('hi');
    hi = k;
    if (o.highlight !== false) f.svg.classList.toggle('dim', k >= 0 && series.length > 1);
    if (k >= 0) { paths[k].classList.add('hi'); data.appendChild(paths[k]); }
  };
  overlay(f, {
    move: (x, y, e) => {
      let best = -1, bi = -1, bd = 400; // within 20 px
      for (let k = 0; k < pix.length; k++) {
        const [xp, yp] = pix[k];
        for (let i = 0; i < xp.length; i++) {
          const dx = xp[i] - x, dy = yp[i] - y, d = dx * dx + dy * dy;
          if (d < bd) { bd = d; best = k; bi = i; }
        }
        // Between two points the segment may be close even if both ends are far.
        for (let i = 1; i < xp.length; i++) {
          if ((xp[i - 1] - x) * (xp[i] - x) > 0) continue;
          const t = (x - xp[i - 1]) / ((xp[i] - xp[i - 1]) || 1);
          const yy = yp[i - 1] + t * (yp[i] - yp[i - 1]);
          const d = (yy - y) ** 2;
          if (d < bd) { bd = d; best = k; bi = t < 0.5 ? i - 1 : i; }
        }
      }
      setHi(best);
      if (best < 0) { marker.setAttribute('visibility', 'hidden'); hideTip(); f.svg.style.cursor = ''; return; }
      marker.setAttribute('cx', pix[best][0][bi]); marker.setAttribute('cy', pix[best][1][bi]);
      marker.setAttribute('stroke', series[best].color);
      marker.setAttribute('visibility', 'visible');
      f.svg.style.cursor = o.click ? 'pointer' : '';
      if (o.tip) showTip(o.tip(series[best], bi), e.clientX, e.clientY);
    },
    leave: () => { setHi(-1); marker.setAttribute('visibility', 'hidden'); },
    click: () => { if (hi >= 0 && o.click) { hideTip(); o.click(series[hi]); } },
  });
  return { points, curves: series.length };
}

// ---------------------------------------------------------------- bars

// o: {items: [{label, value, color}], xLabel, format, tip(item) -> html, height per bar}
export function barChartH(el, o) {
  const items = o.items;
  const font = '12px system-ui, sans-serif';
  const labelW = Math.min(180, Math.max(40, ...items.map(it => textWidth(it.label, font))));
  const margin = { top: 6, right: 56, bottom: o.xLabel ? 44 : 28, left: labelW + 18 };
  // Spread the bars to a minimum height so the card lines up with its neighbour.
  const bar = Math.max(24, Math.min(40, o.minHeight ? (o.minHeight - margin.top - margin.bottom) / Math.max(1, items.length) : 26));
  const f = plotFrame(el, { height: items.length * bar + margin.top + margin.bottom, margin });
  // All zero (too few trials to tell): keep a readable 0..1 axis.
  const top = Math.max(0, ...items.map(it => it.value));
  const max = top > 1e-9 ? top : 1;
  const xs = makeScale('linear', [0, max * 1.02], [0, f.iw]);
  drawAxis(f, xs, { orient: 'bottom', label: o.xLabel, format: o.tickFormat });
  const fmt = o.format || fmtNum;
  items.forEach((it, i) => {
    const y = i * bar + (bar - Math.min(bar - 8, 22)) / 2;
    const g = svgEl('g', { class: 'bar', 'data-label': it.label }, f.g);
    const r = svgEl('rect', { x: 0, y, width: Math.max(1, xs(it.value)), height: Math.min(bar - 8, 22), rx: 3, fill: it.color || cssVar('--accent') }, g);
    const mid = y + Math.min(bar - 8, 22) / 2;
    svgEl('text', { x: -10, y: mid, dy: '0.32em', 'text-anchor': 'end', class: 'bar-label' }, g).textContent = ellipsize(it.label, labelW, font);
    svgEl('text', { x: xs(it.value) + 6, y: mid, dy: '0.32em', class: 'bar-value' }, g).textContent = fmt(it.value);
    if (o.tip) {
      r.addEventListener('pointermove', e => showTip(o.tip(it), e.clientX, e.clientY));
      r.addEventListener('pointerleave', hideTip);
    }
  });
  return { points: items.length };
}

// ---------------------------------------------------------------- colour ramp

function parseHex(c) {
  const m = /^#?([0-9a-f]{6})$/i.exec(c.trim());
  if (!m) return [128, 128, 128];
  const v = parseInt(m[1], 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

// A sequential ramp (worst to best) from three theme colours; the best lines
// come out darkest on the light theme and brightest on the dark one.
export function ramp(t) {
  const stops = ['--ramp-0', '--ramp-1', '--ramp-2'].map(v => parseHex(cssVar(v) || '#888888'));
  t = Math.max(0, Math.min(1, t));
  const seg = t < 0.5 ? 0 : 1, u = t < 0.5 ? t * 2 : (t - 0.5) * 2;
  const a = stops[seg], b = stops[seg + 1];
  const c = a.map((x, i) => Math.round(x + (b[i] - x) * u));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

// A horizontal gradient legend: values from low to high, shaded as the plot
// shades them (reversed when lower is better).
export function colorLegend(el, { domain, label, lowerIsBetter, type = 'linear' }) {
  el.replaceChildren();
  const w = 180, h = 10;
  const svg = svgEl('svg', { width: w + 24 + textWidth(label, '12px system-ui') + 8, height: 34, class: 'color-legend' }, el);
  const id = `grad${++uid}`;
  const grad = svgEl('linearGradient', { id, x1: 0, x2: 1, y1: 0, y2: 0 }, svgEl('defs', {}, svg));
  for (let i = 0; i <= 10; i++) svgEl('stop', { offset: i / 10, 'stop-color': ramp(lowerIsBetter ? 1 - i / 10 : i / 10) }, grad);
  const lw = textWidth(label, '12px system-ui') + 8;
  svgEl('text', { x: 0, y: 13, class: 'legend-text' }, svg).textContent = label;
  svgEl('rect', { x: lw, y: 4, width: w, height: h, rx: 2, fill: `url(#${id})` }, svg);
  const sc = makeScale(type, domain, [lw, lw + w]);
  const ticks = sc.ticks(3).filter(t => sc(t.v) >= lw - 1 && sc(t.v) <= lw + w + 1);
  for (const t of ticks) {
    const x = sc(t.v);
    svgEl('line', { x1: x, x2: x, y1: 14, y2: 18, class: 'tick' }, svg);
    svgEl('text', { x, y: 30, 'text-anchor': 'middle', class: 'legend-tick' }, svg).textContent = t.label;
  }
}

// ---------------------------------------------------------------- parallel coordinates

// o: {dims: [{key, label, type: 'linear'|'log'|'cat', values, choices, domain}],
//     colors: per-row css colours; order: row indices to draw, back to front;
//     brushes: {key: [u0, u1]} in axis units (0 bottom, 1 top), kept by the
//     caller so a redraw keeps the selection; onBrush(selectedCount);
//     tip(i) -> html; click(i); height; canvasAbove (default 1000)}
export function parallelCoords(el, o) {
  const dims = o.dims;
  const n = dims.length ? dims[0].values.length : 0;
  const useCanvas = n > (o.canvasAbove ?? 1000);
  const margin = { top: 40, right: 36, bottom: 16, left: 56 };
  const k = dims.length;
  const f = plotFrame(el, { height: o.height || 360, margin, canvas: useCanvas, minWidth: margin.left + margin.right + 84 * Math.max(1, k - 1) });
  const ax = dims.map((_, j) => (k === 1 ? f.iw / 2 : (j * f.iw) / (k - 1)));
  const scales = dims.map(d => makeScale(d.type, d.type === 'cat' ? d.choices : (d.domain || padDomain(extent(d.values), d.type, 0.03)), [f.ih, 0], { integer: d.integer }));
  // py[j][i]: pixel height of row i on axis j.
  const py = dims.map((d, j) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const v = d.values[i];
      a[i] = v == null ? NaN : scales[j](v);
    }
    return a;
  });
  const brushes = o.brushes || {};
  const selected = new Uint8Array(n);
  const computeSelection = () => {
    let count = 0;
    for (let i = 0; i < n; i++) {
      let ok = 1;
      for (let j = 0; j < k && ok; j++) {
        const b = brushes[dims[j].key];
        if (!b) continue;
        const u = 1 - py[j][i] / f.ih;
        if (!(u >= b[0] - 1e-9 && u <= b[1] + 1e-9)) ok = 0;
      }
      selected[i] = ok; count += ok;
    }
    return count;
  };
  const order = o.order || [...Array(n).keys()];
  const muted = cssVar('--pc-muted') || '#ccc';

  const dataG = svgEl('g', { 'clip-path': f.clipUrl, class: 'pc-lines' }, f.g);
  const pathD = i => {
    let d = '';
    for (let j = 0; j < k; j++) if (!Number.isNaN(py[j][i])) d += `${d ? 'L' : 'M'}${ax[j].toFixed(1)},${py[j][i].toFixed(1)}`;
    return d;
  };
  let svgPaths = null;
  const drawLines = () => {
    const count = computeSelection();
    const anyBrush = Object.keys(brushes).length > 0;
    const alpha = n > 3000 ? 0.3 : n > 1000 ? 0.4 : n > 400 ? 0.45 : n > 100 ? 0.6 : 0.8;
    if (useCanvas) {
      const ctx = f.ctx;
      ctx.clearRect(0, 0, f.iw, f.ih);
      ctx.lineWidth = 1;
      const stroke = (i, colour) => {
        ctx.strokeStyle = colour;
        ctx.beginPath();
        let started = false;
        for (let j = 0; j < k; j++) {
          const y = py[j][i];
          if (Number.isNaN(y)) continue;
          if (!started) { ctx.moveTo(ax[j], y); started = true; } else ctx.lineTo(ax[j], y);
        }
        ctx.stroke();
      };
      if (anyBrush) {
        ctx.globalAlpha = 0.25;
        for (const i of order) if (!selected[i]) stroke(i, muted);
      }
      ctx.globalAlpha = alpha;
      for (const i of order) if (selected[i]) stroke(i, o.colors[i]);
      ctx.globalAlpha = 1;
    } else {
      if (!svgPaths) {
        svgPaths = new Array(n);
        for (const i of order) svgPaths[i] = svgEl('path', { d: pathD(i), class: 'pc-line', 'data-trial': o.trials ? o.trials[i] : null }, dataG);
      }
      for (const i of order) {
        const p = svgPaths[i];
        p.setAttribute('stroke', selected[i] ? o.colors[i] : muted);
        p.setAttribute('stroke-opacity', selected[i] ? alpha : 0.25);
      }
      // Keep the selected lines on top of the muted ones.
      for (const i of order) if (selected[i]) dataG.appendChild(svgPaths[i]);
    }
    el.dataset.selected = count;
    o.onBrush && o.onBrush(count, anyBrush);
    return count;
  };

  // Hover: the line nearest the pointer at its x, interpolated between axes.
  const hiPath = svgEl('path', { class: 'pc-hi', visibility: 'hidden' }, f.g);
  let hover = -1;
  overlay(f, {
    move: (x, y, e) => {
      let j = 0;
      while (j < k - 2 && x > ax[j + 1]) j++;
      const t = k > 1 ? Math.max(0, Math.min(1, (x - ax[j]) / (ax[j + 1] - ax[j]))) : 0;
      let best = -1, bd = 64;
      for (let i = 0; i < n; i++) {
        if (!selected[i]) continue;
        const y0 = py[j][i], y1 = k > 1 ? py[j + 1][i] : y0;
        if (Number.isNaN(y0) || Number.isNaN(y1)) continue;
        const d = (y0 + (y1 - y0) * t - y) ** 2;
        if (d < bd) { bd = d; best = i; }
      }
      hover = best;
      if (best < 0) { hiPath.setAttribute('visibility', 'hidden'); hideTip(); f.svg.style.cursor = ''; return; }
      hiPath.setAttribute('d', pathD(best));
      hiPath.setAttribute('stroke', o.colors[best]);
      hiPath.setAttribute('visibility', 'visible');
      f.svg.style.cursor = o.click ? 'pointer' : '';
      if (o.tip) showTip(o.tip(best), e.clientX, e.clientY);
    },
    leave: () => { hiPath.setAttribute('visibility', 'hidden'); hover = -1; },
    click: () => { if (hover >= 0 && o.click) { hideTip(); o.click(hover); } },
  });

  // Axes, each with a brush: drag vertically to select, click to clear.
  const font = '12px system-ui, sans-serif';
  const spacing = k > 1 ? f.iw / (k - 1) : f.iw;
  dims.forEach((d, j) => {
    const g = svgEl('g', { class: 'pc-axis', transform: `translate(${ax[j]},0)`, 'data-param': d.key, 'data-scale': d.type }, f.g);
    svgEl('line', { y1: 0, y2: f.ih, class: 'domain' }, g);
    const sc = scales[j];
    let ticks = sc.ticks(Math.max(2, Math.floor(f.ih / 40)));
    if (sc.type === 'cat') {
      const every = Math.ceil(ticks.length / Math.max(1, Math.floor(f.ih / 16)));
      ticks = ticks.filter((_, i) => i % every === 0);
    }
    const tickW = Math.min(spacing - 12, j === 0 ? margin.left - 10 : spacing * 0.6);
    for (const t of ticks) {
      const y = sc(t.v);
      svgEl('line', { x1: -4, x2: 0, y1: y, y2: y, class: 'tick' }, g);
      const tx = svgEl('text', { x: -7, y, dy: '0.32em', 'text-anchor': 'end', class: 'pc-tick' }, g);
      tx.textContent = ellipsize(t.label, tickW, '11px system-ui, sans-serif');
    }
    const edge = k > 1 && (j === 0 || j === k - 1);
    const title = svgEl('text', { y: -24, 'text-anchor': !edge ? 'middle' : j === 0 ? 'start' : 'end', x: !edge ? 0 : j === 0 ? -8 : 8, class: 'pc-title' }, g);
    // End titles hang outwards, middle ones are centred: budget so neighbours never touch.
    title.textContent = ellipsize(d.label, Math.max(36, edge ? spacing / 2 + 4 : spacing - 8), font);
    svgEl('title', {}, title).textContent = d.label + (d.type === 'log' ? ' (log scale)' : '');
    if (d.type === 'log') {
      svgEl('text', { y: -10, x: title.getAttribute('x'), 'text-anchor': title.getAttribute('text-anchor'), class: 'pc-sub' }, g).textContent = 'log';
    }
    const brushRect = svgEl('rect', { x: -8, width: 16, class: 'pc-brush', visibility: 'hidden' }, g);
    const showBrush = () => {
      const b = brushes[d.key];
      if (!b) { brushRect.setAttribute('visibility', 'hidden'); return; }
      brushRect.setAttribute('y', (1 - b[1]) * f.ih);
      brushRect.setAttribute('height', Math.max(1, (b[1] - b[0]) * f.ih));
      brushRect.setAttribute('visibility', 'visible');
    };
    showBrush();
    const hit = svgEl('rect', { x: -12, y: -4, width: 24, height: f.ih + 8, class: 'pc-hit' }, g);
    let y0 = null, raf = 0;
    hit.addEventListener('pointerdown', e => {
      hit.setPointerCapture(e.pointerId);
      y0 = local(f, e)[1];
      e.preventDefault();
    });
    hit.addEventListener('pointermove', e => {
      if (y0 == null) return;
      const y1 = local(f, e)[1];
      if (Math.abs(y1 - y0) < 3) return;
      const a = Math.max(0, Math.min(f.ih, Math.min(y0, y1))), b = Math.max(0, Math.min(f.ih, Math.max(y0, y1)));
      brushes[d.key] = [1 - b / f.ih, 1 - a / f.ih];
      showBrush();
      if (!raf) raf = requestAnimationFrame(() => { raf = 0; drawLines(); });
    });
    hit.addEventListener('pointerup', e => {
      const y1 = local(f, e)[1];
      if (y0 != null && Math.abs(y1 - y0) < 3) { delete brushes[d.key]; showBrush(); drawLines(); }
      y0 = null;
    });
  });
  drawLines();
  return { points: n, canvas: useCanvas };
}

// ---------------------------------------------------------------- HTML bits

// Trials by state as a stacked bar against the planned number of trials.
export function stateBar(counts, total) {
  const bar = document.createElement('div');
  bar.className = 'statebar';
  const sum = STATES.reduce((a, s) => a + (counts[s] || 0), 0);
  const denom = Math.max(total || 0, sum, 1);
  const parts = [];
  for (const s of STATES) {
    const c = counts[s] || 0;
    if (!c) continue;
    const seg = document.createElement('span');
    seg.className = `seg st-${s}`;
    seg.style.width = `${(100 * c) / denom}%`;
    seg.style.background = stateColor(s);
    seg.title = `${s}: ${c}`;
    bar.appendChild(seg);
    parts.push(`${s} ${c}`);
  }
  bar.title = parts.join(', ') + (total ? ` (of ${total})` : '');
  return bar;
}

export function meter(frac, label) {
  const m = document.createElement('div');
  m.className = 'meter';
  const f = document.createElement('span');
  f.style.width = `${Math.round(Math.max(0, Math.min(1, frac || 0)) * 100)}%`;
  m.appendChild(f);
  if (label) m.title = label;
  return m;
}

// items: [{label, color, shape: 'dot' | 'line' | 'dash'}]
export function legend(items) {
  const box = document.createElement('div');
  box.className = 'legend';
  for (const it of items) {
    const span = document.createElement('span');
    span.className = 'legend-item';
    const sw = document.createElement('i');
    sw.className = `sw sw-${it.shape || 'dot'}`;
    sw.style.setProperty('--c', it.color);
    span.append(sw, document.createTextNode(it.label));
    box.appendChild(span);
  }
  return box;
}
