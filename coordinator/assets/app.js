// The dashboard: hash routing, API access (with the optional token), live
// updates over server-sent events, and the four pages. Chart drawing lives in
// charts.js; this file decides what to draw and when.

import * as C from './charts.js';

const TOKEN_KEY = 'hpo-token';
const THEME_KEY = 'hpo-theme';
const app = {
  config: { auth: 'none', version: '' },
  token: readStorage(TOKEN_KEY),
  studiesFilter: '',
  tables: new Map(), // per-study trials table state, kept across navigation
  brushes: new Map(), // per-study parallel-coordinates selection
};

function readStorage(k) { try { return localStorage.getItem(k) || ''; } catch { return ''; } }
function writeStorage(k, v) { try { v ? localStorage.setItem(k, v) : localStorage.removeItem(k); } catch { /* private mode */ } }

// ------------------------------------------------------------------ DOM

function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else if (k === 'class') e.className = v;
      else if (k === 'style' && typeof v === 'object') {
        for (const [sk, sv] of Object.entries(v)) {
          if (sv == null) continue;
          if (sk.startsWith('--')) e.style.setProperty(sk, sv); else e.style[sk] = sv;
        }
      }
      else e.setAttribute(k, v === true ? '' : v);
    }
  }
  for (const c of kids.flat(Infinity)) if (c != null && c !== false) e.append(c instanceof Node ? c : String(c));
  return e;
}
const $ = sel => document.querySelector(sel);
// replaceChildren, skipping the null/false an optional part leaves behind.
function fill(el, ...kids) {
  el.replaceChildren(...kids.flat(Infinity).filter(k => k != null && k !== false));
  return el;
}
const esc = C.escapeHtml;

function badge(state, text) { return h('span', { class: `badge ${state}` }, text || state); }

function fmtValue(v) { return C.fmtNum(v, 5); }
function fmtParam(v) { return typeof v === 'number' ? C.fmtNum(v, 4) : v == null ? '—' : String(v); }
function dirArrow(direction) { return direction === 'minimize' ? '↓' : '↑'; }
function trialHref(study, n) { return `#/study/${study}/trial/${n}`; }

// Leading and trailing: the first event refreshes at once, a burst refreshes
// once more at the end, never more often than every `ms`.
function throttle(fn, ms) {
  let last = -Infinity, timer = null;
  const run = () => { timer = null; last = performance.now(); fn(); };
  const t = () => {
    if (timer) return;
    const wait = last + ms - performance.now();
    if (wait <= 0) run(); else timer = setTimeout(run, wait);
  };
  t.cancel = () => { clearTimeout(timer); timer = null; };
  return t;
}

// ------------------------------------------------------------------ API

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, { method = 'GET' } = {}) {
  const headers = { Accept: 'application/json' };
  if (app.token) headers.Authorization = `Bearer ${app.token}`;
  let res;
  try {
    res = await fetch(path, { method, headers });
  } catch (e) {
    throw new ApiError(0, `cannot reach the coordinator (${e.message})`);
  }
  const text = await res.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!res.ok) throw new ApiError(res.status, (body && body.error) || `${res.status} ${res.statusText || 'error'}`);
  return body;
}

// EventSource and download links cannot carry a header.
function withToken(url) {
  if (!app.token) return url;
  return `${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(app.token)}`;
}

// ------------------------------------------------------------------ errors & token

function showError(msg) {
  const box = $('#error');
  box.querySelector('.msg').textContent = msg;
  box.hidden = false;
}
function clearError() { $('#error').hidden = true; }

let tokenWaiters = [];
function askToken(why) {
  const form = $('#token-dialog');
  $('#token-why').textContent = why || 'This coordinator needs its dashboard token for this.';
  $('#token-input').value = app.token;
  form.hidden = false;
  setTimeout(() => $('#token-input').focus(), 0);
  return new Promise(resolve => tokenWaiters.push(resolve));
}
function closeToken(saved) {
  $('#token-dialog').hidden = true;
  $('#token-button').querySelector('span').textContent = app.token ? 'Token set' : 'Token';
  const w = tokenWaiters; tokenWaiters = [];
  w.forEach(r => r(saved));
}

// A read refused for the token: ask once, then redraw the page with it.
let reauth = null;
function handleError(e, what) {
  if (e.status === 401) {
    showError(`${what}: ${e.message}`);
    if (!reauth) {
      reauth = askToken('Reading this dashboard needs the token the coordinator was started with.').then(ok => {
        reauth = null;
        if (ok) route();
      });
    }
    return;
  }
  showError(`${what}: ${e.message}`);
}

// Actions (cancel, stop) need the token; on 401/403 ask for it and retry once.
async function action(what, path, retried = false) {
  try {
    const r = await api(path, { method: 'POST' });
    clearError();
    return r;
  } catch (e) {
    showError(`${what} refused: ${e.message}`);
    const tokenMayHelp = e.status === 401 || (e.status === 403 && app.config.auth !== 'none');
    if (tokenMayHelp && !retried) {
      const ok = await askToken(`To ${what}, enter the dashboard token (--dashboard-token).`);
      if (ok) return action(what, path, true);
    }
    return null;
  }
}

// ------------------------------------------------------------------ pages & routing

// Everything a page starts (event stream, observers, timers) is registered
// here so navigating away stops it.
class Page {
  constructor() { this.alive = true; this.cleanups = []; this.redraws = []; }
  onClose(fn) { this.cleanups.push(fn); }
  close() {
    this.alive = false;
    for (const f of this.cleanups) { try { f(); } catch { /* already gone */ } }
    this.cleanups = [];
  }
  throttle(fn, ms) {
    const t = throttle(() => { if (this.alive) fn(); }, ms);
    this.onClose(t.cancel);
    return t;
  }
  events(study, handlers) {
    const url = withToken(study != null ? `/api/events?study=${study}` : '/api/events');
    const es = new EventSource(url);
    setLive('connecting');
    // After a dropped connection, events were missed: the page catches up once.
    let dropped = false;
    es.onopen = () => {
      if (!this.alive) return;
      setLive('open');
      if (dropped && handlers.reconnect) handlers.reconnect();
      dropped = false;
    };
    es.onerror = () => {
      if (!this.alive) return;
      dropped = true;
      setLive(es.readyState === EventSource.CLOSED ? 'closed' : 'error');
    };
    for (const [kind, fn] of Object.entries(handlers)) {
      if (kind === 'reconnect') continue;
      es.addEventListener(kind, ev => {
        if (!this.alive) return;
        let d;
        try { d = JSON.parse(ev.data); } catch { return; }
        fn(d);
      });
    }
    this.onClose(() => es.close());
  }
  // Redraw a chart when its container changes width (and on theme change).
  chart(el, draw) {
    let w = el.clientWidth, raf = 0;
    const ro = new ResizeObserver(() => {
      const nw = el.clientWidth;
      if (nw === w || !nw) return;
      w = nw;
      cancelAnimationFrame(raf);
      raf = requestAnimationFrame(() => this.alive && draw());
    });
    ro.observe(el);
    this.onClose(() => { ro.disconnect(); cancelAnimationFrame(raf); });
    this.redraws.push(draw);
  }
}

function setLive(s) {
  const el = $('#live');
  el.dataset.state = s;
  el.querySelector('span').textContent = { open: 'live', connecting: 'connecting…', error: 'reconnecting…', closed: 'offline', idle: 'idle' }[s] || s;
}

function setCrumbs(items) {
  const box = $('#crumbs');
  fill(box);
  items.forEach((it, i) => {
    if (i) box.append(h('span', { class: 'sep' }, '/'));
    box.append(it.href ? h('a', { href: it.href }, it.label) : h('span', { class: 'here' }, it.label));
  });
}

function setNav(which) {
  document.querySelectorAll('.nav a').forEach(a => a.classList.toggle('active', a.dataset.nav === which));
}

let page = null;
function route() {
  if (page) page.close();
  C.hideTip();
  clearError();
  // A token asked for by the page being left (an action) no longer applies.
  if (!$('#token-dialog').hidden) closeToken(false);
  delete document.body.dataset.ready;
  const pg = page = new Page();
  const path = (location.hash.replace(/^#/, '') || '/').replace(/\?.*$/, '');
  let m, run;
  if ((m = path.match(/^\/study\/(\d+)\/trial\/(\d+)\/?$/))) { setNav('studies'); run = () => trialPage(pg, +m[1], +m[2]); }
  else if ((m = path.match(/^\/study\/(\d+)\/?$/))) { setNav('studies'); run = () => studyPage(pg, +m[1]); }
  else if (path === '/workers' || path === '/workers/') { setNav('workers'); run = () => workersPage(pg); }
  else if (path === '/' || path === '') { setNav('studies'); run = () => studiesPage(pg); }
  else { setNav(''); run = async () => notFound(path); }
  fill($('#view'), h('div', { class: 'loading' }, h('span', { class: 'spinner' }), 'Loading…'));
  window.scrollTo(0, 0);
  Promise.resolve().then(run).catch(e => {
    if (!pg.alive) return;
    handleError(e, 'loading the page');
    if (!$('#view').querySelector('.card')) fill($('#view'), emptyPage('Could not load this page', e.message));
  }).finally(() => {
    if (pg.alive) document.body.dataset.ready = '1';
  });
}

function notFound(path) {
  setCrumbs([{ label: 'Not found' }]);
  fill($('#view'), emptyPage('Nothing here', `No page at #${path}.`));
}

function emptyPage(title, text) {
  return h('div', { class: 'card' }, h('div', { class: 'empty' }, h('div', { style: { fontWeight: 600, color: 'var(--text)', marginBottom: '4px' } }, title), text, h('div', { style: { marginTop: '12px' } }, h('a', { href: '#/' }, '← All studies'))));
}

// A card holding one plot: header (title, hint, tools), legend, the drawing
// area, and a footer line.
function plotCard(id, title, span, hint) {
  const tools = h('div', { class: 'tools' });
  const legend = h('div', { class: 'legend-box' });
  const body = h('div', { class: 'plot-body' });
  const foot = h('div', { class: 'plot-foot' });
  const card = h('section', { class: `card ${span}`, id },
    h('div', { class: 'card-head' }, h('h2', null, title), hint ? h('span', { class: 'hint' }, hint) : null, h('div', { class: 'grow' }), tools, legend),
    body, foot);
  return { card, tools, legend, body, foot };
}

function markDrawn(el, points) { el.dataset.points = String(points); }

function emptyPlot(pc, text) {
  fill(pc.body, h('div', { class: 'empty' }, text));
  pc.body.style.height = '';
  fill(pc.legend);
  markDrawn(pc.card, 0);
}

function trialTip(n, state, rows, params) {
  const tr = ([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`;
  const ps = params ? Object.entries(params).map(([k, v]) => [k, fmtParam(v)]) : [];
  return `<div class="tt-head"><b>Trial #${n}</b><span class="badge ${esc(state)}">${esc(state)}</span></div>` +
    `<table>${rows.map(tr).join('')}${ps.map(tr).join('')}</table>`;
}

// ------------------------------------------------------------------ studies list

async function studiesPage(pg) {
  setCrumbs([{ label: 'Studies' }]);
  const filters = [['', 'All'], ['running', 'Running'], ['completed', 'Completed'], ['cancelled', 'Cancelled']];
  const seg = h('div', { class: 'seg-group', id: 'study-filter', role: 'group' },
    filters.map(([v, label]) => h('button', {
      type: 'button', 'data-filter': v || 'all', class: app.studiesFilter === v ? 'on' : '',
      onclick: () => {
        app.studiesFilter = v;
        seg.querySelectorAll('button').forEach(b => b.classList.toggle('on', b.dataset.filter === (v || 'all')));
        load();
      },
    }, label)));
  const tiles = h('div', { class: 'tiles', style: { marginBottom: '16px' } });
  const tbody = h('tbody');
  const table = h('table', { id: 'studies', class: 'data' },
    h('thead', null, h('tr', null,
      h('th', null, 'Study'), h('th', null, 'State'), h('th', null, 'Trials by state'),
      h('th', { class: 'num' }, 'Best value'), h('th', null, 'Sampler · scheduler'),
      h('th', null, 'Started'), h('th', { class: 'num' }, 'Duration'))),
    tbody);
  fill($('#view'),
    h('div', { class: 'page-head' }, h('h1', null, 'Studies'), h('div', { class: 'grow' }), seg),
    tiles,
    h('div', { class: 'card', style: { padding: '0' } }, h('div', { class: 'table-wrap', style: { border: '0' } }, table)));

  const render = studies => {
    const sum = k => studies.reduce((a, s) => a + (s.counts[k] || 0), 0);
    fill(tiles,
      tile('Studies', studies.length, `${studies.filter(s => s.state === 'running').length} running`),
      tile('Trials running', sum('running'), `${sum('paused')} paused · ${sum('waiting')} waiting`),
      tile('Trials finished', sum('completed') + sum('stopped'), `${sum('completed')} completed · ${sum('stopped')} stopped early`),
      tile('Trials failed', sum('failed'), `${sum('cancelled')} cancelled`));
    fill(tbody);
    if (!studies.length) {
      tbody.append(h('tr', null, h('td', { colspan: 7, class: 'muted', style: { textAlign: 'center', padding: '36px' } },
        app.studiesFilter ? `No ${app.studiesFilter} studies.` : 'No studies yet: start one with hpo run study.toml.')));
      return;
    }
    for (const s of studies) {
      const done = s.trials;
      const target = s.max_trials || done;
      const go = () => { location.hash = `#/study/${s.id}`; };
      tbody.append(h('tr', { 'data-study': s.id, class: 'clickable', onclick: e => { if (!e.target.closest('a')) go(); } },
        h('td', null, h('div', { class: 'name-cell' },
          h('a', { class: 'name', href: `#/study/${s.id}` }, s.name),
          h('span', { class: 'meta' }, `#${s.id} · ${s.metric} ${dirArrow(s.direction)}`))),
        h('td', { title: s.end_reason || null }, badge(s.state)),
        h('td', null, h('div', { class: 'progress-cell' }, C.stateBar(s.counts, s.max_trials), h('span', null, `${done} / ${target}`))),
        h('td', { class: 'num' }, s.best_value == null ? h('span', { class: 'muted' }, '—')
          : h('span', null, fmtValue(s.best_value), h('span', { class: 'muted', style: { marginLeft: '6px', fontSize: '12px' } }, `#${s.best_trial}`))),
        h('td', { class: 'muted' }, `${s.sampler} · ${s.scheduler}`),
        h('td', { class: 'muted' }, C.fmtTime(s.created_at_ms)),
        h('td', { class: 'num' }, C.fmtDuration(s.duration_ms))));
    }
  };
  let seq = 0;
  const load = async () => {
    const my = ++seq;
    const q = app.studiesFilter ? `?state=${app.studiesFilter}` : '';
    try {
      const d = await api(`/api/studies${q}`);
      if (pg.alive && my === seq) render(d.studies);
    } catch (e) {
      if (pg.alive && my === seq) handleError(e, 'studies');
    }
  };
  await load();
  const refresh = pg.throttle(load, 500);
  pg.events(null, { trial: refresh, study: refresh, reconnect: refresh });
}

function tile(k, v, d) {
  return h('div', { class: 'tile' }, h('div', { class: 'k' }, k), h('div', { class: 'v' }, v), d != null ? h('div', { class: 'd' }, d) : null);
}

// ------------------------------------------------------------------ study page

async function studyPage(pg, id) {
  setCrumbs([{ label: 'Studies', href: '#/' }, { label: `Study ${id}` }]);
  let detail;
  try {
    detail = await api(`/api/studies/${id}`);
  } catch (e) {
    if (e.status === 404) {
      showError(`study ${id}: ${e.message}`);
      fill($('#view'), emptyPage('Study not found', `There is no study ${id} on this coordinator.`));
      return;
    }
    throw e;
  }
  if (!pg.alive) return;
  const params = detail.params || [];
  const metric = detail.study.metric;
  const direction = detail.study.direction;
  setCrumbs([{ label: 'Studies', href: '#/' }, { label: detail.study.name }]);

  // ---- skeleton
  const head = h('div', { class: 'page-head' });
  const summary = h('section', { id: 'summary', class: 'card span-12' });
  const hist = plotCard('plot-history', 'Optimisation history', 'span-6');
  const curves = plotCard('plot-curves', 'Learning curves', 'span-6');
  const par = plotCard('plot-parallel', 'Parallel coordinates', 'span-8');
  const imp = plotCard('plot-importance', 'Parameter importance', 'span-4');
  const slices = plotCard('plot-slices', 'Slices', 'span-12', `${metric} against each parameter`);
  const trialsCard = h('section', { class: 'card span-12', id: 'trials-card' });
  fill($('#view'), head, h('div', { class: 'grid' }, summary, hist.card, curves.card, imp.card, par.card, slices.card, trialsCard));

  // ---- summary
  const renderSummary = d => {
    detail = d;
    const s = d.study;
    const tomlOpen = !!summary.querySelector('details[open]');
    setCrumbs([{ label: 'Studies', href: '#/' }, { label: s.name }]);
    const cancel = s.state === 'running'
      ? h('button', {
        id: 'cancel-study', class: 'danger', type: 'button',
        onclick: async ev => {
          const b = ev.currentTarget;
          b.disabled = true;
          const r = await action('cancel', `/api/studies/${id}/cancel`);
          if (!pg.alive) return;
          if (r) refreshAll(); else b.disabled = false;
        },
      }, 'Cancel study')
      : null;
    fill(head,
      h('h1', null, s.name), badge(s.state),
      h('span', { class: 'sub' }, `#${s.id}${s.end_reason ? ' · ' + s.end_reason : ''}`),
      h('div', { class: 'grow' }), cancel);
    const r = d.resource || {};
    const savedPct = r.full ? Math.round((100 * r.saved) / r.full) : 0;
    const best = d.best;
    const paramSpec = new Map(params.map(p => [p.name, p]));
    fill(summary,
      h('div', { class: 'tiles' },
        tile('Objective', h('span', null, s.metric, ' ', h('span', { class: 'dir' }, `${dirArrow(s.direction)} ${s.direction}`)), `${s.sampler} sampler · ${s.scheduler} scheduler`),
        tile('Best value', s.best_value == null ? '—' : fmtValue(s.best_value),
          s.best_trial == null ? 'no completed trial yet' : h('a', { href: trialHref(id, s.best_trial) }, `trial #${s.best_trial}`)),
        (() => {
          const t = tile('Trials', h('span', null, s.trials, h('small', null, s.max_trials ? ` / ${s.max_trials}` : '')), null);
          t.append(C.stateBar(s.counts, s.max_trials));
          return t;
        })(),
        tile('Resource used', h('span', null, C.fmtNum(r.used ?? s.resource_used), h('small', null, ` ${r.unit || ''}`)),
          r.full ? `${C.fmtNum(r.saved)} ${r.unit || ''} saved by early stopping (${savedPct}%)` : 'nothing to save yet'),
        tile('Duration', C.fmtDuration(s.duration_ms), `started ${C.fmtTime(s.created_at_ms)}`),
        tile('Seed', d.seed ?? '—', s.max_total_resource ? `budget ${C.fmtNum(s.max_total_resource)} ${r.unit || ''}` : null)),
      h('div', { class: 'summary-body' },
        h('div', null,
          h('div', { class: 'subhead' }, 'Trials by state'),
          h('div', { class: 'state-list', id: 'state-counts' }, C.STATES.map(st => {
            const c = s.counts[st] || 0;
            return h('div', { class: 'state-row', 'data-state': st, style: { '--c': C.stateColor(st) } },
              h('i'), h('span', { class: 'name' }, st),
              h('span', { class: 'track' }, h('span', { style: { width: `${s.trials ? (100 * c) / s.trials : 0}%` } })),
              h('span', { class: 'n' }, c));
          }))),
        h('div', null,
          h('div', { class: 'subhead' }, 'Details'),
          h('dl', { class: 'kv' },
            h('dt', null, 'Sampler'), h('dd', null, s.sampler),
            h('dt', null, 'Scheduler'), h('dd', null, s.scheduler),
            h('dt', null, 'Full budget'), h('dd', null, r.max_resource != null ? `${r.max_resource} ${r.unit || ''} per trial` : '—'),
            h('dt', null, 'Started'), h('dd', null, C.fmtTime(s.created_at_ms, true)),
            h('dt', null, 'Ended'), h('dd', null, s.ended_at_ms ? C.fmtTime(s.ended_at_ms, true) : '—'),
            s.end_reason ? [h('dt', null, 'End reason'), h('dd', null, s.end_reason)] : null),
          d.study_toml ? h('details', { class: 'toml', open: tomlOpen }, h('summary', null, 'study.toml'), h('pre', null, d.study_toml)) : null),
        h('div', null,
          h('div', { class: 'subhead' }, best ? ['Best trial ', h('a', { href: trialHref(id, best.number) }, `#${best.number}`)] : 'Best trial'),
          best ? h('dl', { class: 'kv', id: 'best-params' },
            h('dt', null, s.metric), h('dd', null, h('b', null, fmtValue(best.value))),
            Object.entries(best.params || {}).map(([k, v]) => [
              h('dt', { class: 'mono' }, k),
              h('dd', null, fmtParam(v), paramSpec.get(k)?.log ? h('span', { class: 'muted', style: { marginLeft: '6px', fontSize: '11px' } }, 'log') : null)]))
            : h('div', { class: 'muted' }, 'No completed trial yet.'))));
    renderStateFilter();
  };

  // ---- optimisation history
  const histState = { data: null, x: 'number' };
  const xToggle = h('div', { class: 'seg-group', id: 'history-x' },
    [['number', 'Trial'], ['time', 'Time']].map(([v, label]) => h('button', {
      type: 'button', class: 'small' + (v === 'number' ? ' on' : ''), 'data-x': v,
      onclick: () => {
        histState.x = v;
        xToggle.querySelectorAll('button').forEach(b => b.classList.toggle('on', b.dataset.x === v));
        drawHistory();
      },
    }, label)));
  hist.tools.append(xToggle);
  const better = (a, b) => (direction === 'minimize' ? a < b : a > b);
  function drawHistory() {
    const d = histState.data;
    if (!d || !d.trial.length) return emptyPlot(hist, 'No finished trials yet.');
    fill(hist.legend, C.legend([
      { label: 'completed', color: C.stateColor('completed') },
      { label: 'stopped early', color: C.stateColor('stopped') },
      { label: 'best so far', color: C.cssVar('--accent'), shape: 'line' }]));
    const byTime = histState.x === 'time';
    const x = byTime ? d.ended_at_ms : d.trial;
    const idx = [...d.trial.keys()].sort((a, b) => x[a] - x[b]);
    const bx = [], by = [];
    let best = null;
    for (const i of idx) {
      if (d.state[i] !== 'completed' || d.value[i] == null) continue;
      if (best === null || better(d.value[i], best)) best = d.value[i];
      bx.push(x[i]); by.push(best);
    }
    const xMax = Math.max(...x);
    const r = C.scatterChart(hist.body, {
      x, y: d.value, colors: d.state.map(C.stateColor),
      xType: byTime ? 'time' : 'linear', xLabel: byTime ? 'finished at' : 'trial',
      yType: C.autoScaleType(d.value), yLabel: metric, height: 320,
      lines: [{ x: bx, y: by, color: C.cssVar('--accent'), step: true, width: 2, cls: 'best-line overlay-line', extendTo: xMax }],
      tip: i => trialTip(d.trial[i], d.state[i], [[metric, fmtValue(d.value[i])], ['finished', C.fmtTime(d.ended_at_ms[i], true)]]),
      click: i => { location.hash = trialHref(id, d.trial[i]); },
    });
    hist.foot.textContent = `${d.trial.length} finished trials · click a point to open the trial`;
    hist.card.dataset.canvas = r.canvas ? '1' : '0';
    markDrawn(hist.card, r.points);
  }
  pg.chart(hist.body, drawHistory);

  // ---- learning curves
  const curveState = { data: null, byTrial: new Map() };
  const curveStyle = {
    running: { width: 2, opacity: 1, z: 4 },
    paused: { width: 1.8, opacity: 0.95, dash: '5 4', z: 3 },
    completed: { width: 1.3, opacity: 0.7, z: 2 },
    stopped: { width: 1.1, opacity: 0.55, dash: '2 3', z: 1 },
  };
  function drawCurves() {
    const d = curveState.data;
    if (!d || !d.curves.length) { curves.body.dataset.curves = ''; curves.card.dataset.curves = ''; return emptyPlot(curves, 'No reports yet.'); }
    fill(curves.legend, C.legend([
      { label: 'running', color: C.stateColor('running'), shape: 'line' },
      { label: 'paused', color: C.stateColor('paused'), shape: 'dash' },
      { label: 'completed', color: C.stateColor('completed'), shape: 'line' },
      { label: 'stopped', color: C.stateColor('stopped'), shape: 'dash' }]));
    const list = [...d.curves].sort((a, b) => (curveStyle[a.state]?.z ?? 0) - (curveStyle[b.state]?.z ?? 0));
    const series = list.map(c => {
      const st = curveStyle[c.state] || { width: 1.2, opacity: 0.6 };
      return {
        key: c.trial, x: c.steps, y: c.values, color: C.stateColor(c.state),
        width: st.width, dash: st.dash, opacity: st.opacity, curve: c,
        attrs: { 'data-trial': c.trial, 'data-state': c.state },
      };
    });
    const r = C.lineChart(curves.body, {
      series, xLabel: 'step', yLabel: metric, height: 320, xInteger: true,
      yType: C.autoScaleType(series.flatMap(s => s.y)),
      tip: (s, i) => {
        const c = s.curve;
        return trialTip(c.trial, c.state, [['step', c.steps[i]], [metric, fmtValue(c.values[i])],
          ...(c.value != null ? [['final', fmtValue(c.value)]] : [])], c.params);
      },
      click: s => { location.hash = trialHref(id, s.curve.trial); },
    });
    const shownTrials = d.curves.map(c => c.trial).join(',');
    curves.card.dataset.curves = shownTrials;
    curves.foot.textContent = `${d.curves.length} of ${d.total} curves (running and paused, the best, a sample of the rest) · hover to highlight`;
    markDrawn(curves.card, r.points);
  }
  pg.chart(curves.body, drawCurves);
  const redrawCurvesSoon = pg.throttle(drawCurves, 250);

  // ---- parallel coordinates & slices (one fetch)
  const parState = { data: null };
  if (!app.brushes.has(id)) app.brushes.set(id, {});
  const brushes = app.brushes.get(id);
  const clearBrush = h('button', {
    type: 'button', class: 'small ghost', id: 'clear-brush', hidden: true,
    onclick: () => { for (const k of Object.keys(brushes)) delete brushes[k]; drawParallel(); },
  }, 'Clear selection');
  par.tools.append(clearBrush);
  const dimType = p => (p.type === 'categorical' ? 'cat' : p.log ? 'log' : 'linear');
  function drawParallel() {
    const d = parState.data;
    if (!d || !d.trial.length) { clearBrush.hidden = true; return emptyPlot(par, 'No finished trials yet.'); }
    const [lo, hi] = C.extent(d.value);
    const yType = C.autoScaleType(d.value);
    // Colour on the same scale as the axis, so a log-spread loss still grades.
    const tf = yType === 'log' ? Math.log10 : v => v;
    const t = d.value.map(v => (hi > lo ? (tf(v) - tf(lo)) / (tf(hi) - tf(lo)) : 0.5));
    const goodness = direction === 'minimize' ? t.map(x => 1 - x) : t;
    const colors = goodness.map(C.ramp);
    const order = [...d.trial.keys()].sort((a, b) => goodness[a] - goodness[b]);
    const dims = d.params.map(p => ({
      key: p.name, label: p.name, type: dimType(p), values: d.columns[p.name], choices: p.choices, integer: p.type === 'int',
      domain: p.type === 'categorical' ? null : [p.low, p.high],
    }));
    dims.push({ key: '__objective', label: metric, type: yType, values: d.value });
    C.colorLegend(par.legend, { domain: [lo, hi], label: metric, lowerIsBetter: direction === 'minimize', type: yType });
    const r = C.parallelCoords(par.body, {
      dims, colors, order, brushes, trials: d.trial, height: 380,
      onBrush: (count, any) => {
        clearBrush.hidden = !any;
        par.foot.textContent = any
          ? `${count} of ${d.trial.length} trials selected · click an axis to clear its filter`
          : `${d.trial.length} of ${d.total} finished trials · drag along an axis to filter`;
        par.card.dataset.selected = count;
      },
      tip: i => trialTip(d.trial[i], d.state[i], [[metric, fmtValue(d.value[i])]], Object.fromEntries(d.params.map(p => [p.name, d.columns[p.name][i]]))),
      click: i => { location.hash = trialHref(id, d.trial[i]); },
    });
    par.card.dataset.canvas = r.canvas ? '1' : '0';
    markDrawn(par.card, r.points);
  }
  pg.chart(par.body, drawParallel);

  function drawSlices() {
    const d = parState.data;
    if (!d || !d.trial.length) return emptyPlot(slices, 'No finished trials yet.');
    fill(slices.legend, C.legend([
      { label: 'completed', color: C.stateColor('completed') },
      { label: 'stopped early', color: C.stateColor('stopped') }]));
    const grid = h('div', { class: 'slices' });
    fill(slices.body, grid);
    slices.body.style.height = '';
    const colors = d.state.map(C.stateColor);
    const yType = C.autoScaleType(d.value);
    const [ylo, yhi] = C.padDomain(C.extent(d.value), yType, 0.06);
    let total = 0;
    for (const p of d.params) {
      const box = h('div', { class: 'plot-slot' });
      grid.append(h('div', { class: 'slice', 'data-param': p.name },
        h('h3', null, p.name, h('small', null, p.type === 'categorical' ? 'categorical' : p.log ? 'log scale' : p.type)), box));
      const type = dimType(p);
      const xDomain = type === 'cat' ? null : C.padDomain([p.low, p.high], type, 0.03);
      const r = C.scatterChart(box, {
        x: d.columns[p.name], y: d.value, colors, xType: type, xChoices: p.choices, xDomain, xInteger: p.type === 'int',
        yDomain: [ylo, yhi], yType, height: 210, r: d.trial.length > 600 ? 2 : 3,
        margin: { top: 8, right: 12, bottom: 26, left: 46 },
        tip: i => trialTip(d.trial[i], d.state[i], [[p.name, fmtParam(d.columns[p.name][i])], [metric, fmtValue(d.value[i])]]),
        click: i => { location.hash = trialHref(id, d.trial[i]); },
      });
      total += r.points;
    }
    slices.foot.textContent = `${d.trial.length} of ${d.total} finished trials`;
    markDrawn(slices.card, total);
  }
  pg.chart(slices.body, drawSlices);

  // ---- importance
  const impState = { data: null };
  function drawImportance() {
    const d = impState.data;
    if (!d || !d.importances.length) {
      imp.foot.textContent = '';
      return emptyPlot(imp, 'Needs more completed trials.');
    }
    const r = C.barChartH(imp.body, {
      items: d.importances.map(x => ({ label: x.param, value: x.importance, color: C.cssVar('--accent') })),
      // As tall as parallel coordinates when beside it, compact when stacked.
      xLabel: 'importance', minHeight: imp.card.offsetTop === par.card.offsetTop ? 400 : 0,
      format: v => `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`, tickFormat: v => `${+(v * 100).toFixed(1)}%`,
      tip: it => `<b>${esc(it.label)}</b><br>importance ${(it.value * 100).toFixed(1)}%`,
    });
    imp.foot.textContent = `${d.method} over ${d.trials} trials`;
    markDrawn(imp.card, r.points);
  }
  pg.chart(imp.body, drawImportance);

  // ---- trials table
  if (!app.tables.has(id)) app.tables.set(id, { sort: 'number', order: 'asc', states: [], page: 1, per_page: 10 });
  const ts = app.tables.get(id);
  const columns = [
    { label: '#', sort: 'number', cls: 'num' },
    { label: 'State', sort: 'state' },
    { label: metric, sort: 'value', cls: 'num param' },
    ...params.map(p => ({ label: p.name, sort: `param.${p.name}`, cls: p.type === 'categorical' ? 'param' : 'num param' })),
    { label: 'Last step', sort: 'last_step', cls: 'num' },
    { label: 'Rung', cls: 'num' },
    { label: 'Worker' },
    { label: 'Duration', sort: 'duration', cls: 'num' },
    { label: 'Started', sort: 'started' },
    { label: 'Reason' },
  ];
  const thead = h('tr');
  const tbody = h('tbody');
  const table = h('table', { id: 'trials', class: 'data' }, h('thead', null, thead), tbody);
  for (const c of columns) {
    const th = h('th', { class: c.cls || null, 'data-sort': c.sort || null, title: c.sort ? 'sort' : null }, c.label, c.sort ? h('span', { class: 'arrow' }) : null);
    if (c.sort) {
      th.addEventListener('click', () => {
        if (ts.sort === c.sort) ts.order = ts.order === 'asc' ? 'desc' : 'asc';
        else { ts.sort = c.sort; ts.order = 'asc'; }
        ts.page = 1;
        loadTrials();
      });
    }
    thead.append(th);
  }
  const stateFilter = h('div', { class: 'counts', id: 'trial-states' });
  function renderStateFilter() {
    const counts = detail.study.counts;
    fill(stateFilter, ...C.STATES.map(st => h('button', {
      type: 'button', class: `chip${ts.states.includes(st) ? ' on' : ''}`, 'data-state': st, style: { '--c': C.stateColor(st) },
      onclick: () => {
        ts.states = ts.states.includes(st) ? ts.states.filter(x => x !== st) : [...ts.states, st];
        ts.page = 1;
        renderStateFilter();
        loadTrials();
      },
    }, h('i'), st, h('span', { class: 'n' }, counts[st] || 0))));
  }
  const perPage = h('select', { id: 'per-page', 'aria-label': 'trials per page' },
    [10, 25, 50, 100, 200, 500].map(n => h('option', { value: n, selected: n === ts.per_page }, `${n} per page`)));
  perPage.addEventListener('change', () => { ts.per_page = +perPage.value; ts.page = 1; loadTrials(); });
  const prev = h('button', { id: 'page-prev', type: 'button', class: 'small', onclick: () => { if (ts.page > 1) { ts.page--; loadTrials(); } } }, '‹ Prev');
  const next = h('button', { id: 'page-next', type: 'button', class: 'small', onclick: () => { ts.page++; loadTrials(); } }, 'Next ›');
  const pageInfo = h('span', { id: 'page-info' }, 'page 1 of 1');
  const countInfo = h('span', { class: 'count-info' });
  const csv = h('a', { class: 'btn small', id: 'export-csv', download: `study-${id}-trials.csv` }, 'CSV');
  const json = h('a', { class: 'btn small', id: 'export-json', download: `study-${id}-trials.json` }, 'JSON');
  trialsCard.append(
    h('div', { class: 'card-head' }, h('h2', null, 'Trials'), countInfo, h('div', { class: 'grow' }), h('span', { class: 'hint' }, 'export'), csv, json),
    h('div', { class: 'toolbar' }, stateFilter),
    h('div', { class: 'table-wrap' }, table),
    h('div', { class: 'pager' }, perPage, h('div', { class: 'grow' }), prev, pageInfo, next));

  const tableQuery = () => {
    const q = new URLSearchParams({ sort: ts.sort, order: ts.order });
    if (ts.states.length) q.set('state', ts.states.join(','));
    return q;
  };
  let trialSeq = 0;
  async function loadTrials() {
    const my = ++trialSeq;
    const q = tableQuery();
    csv.href = withToken(`/api/studies/${id}/trials.csv?${q}`);
    json.href = withToken(`/api/studies/${id}/trials.json?${q}`);
    q.set('page', ts.page); q.set('per_page', ts.per_page);
    // Lets a test (or a style) tell a table that is being refetched.
    table.dataset.loading = '1';
    let d;
    try { d = await api(`/api/studies/${id}/trials?${q}`); } catch (e) { if (pg.alive && my === trialSeq) { delete table.dataset.loading; handleError(e, 'trials'); } return; }
    if (!pg.alive || my !== trialSeq) return;
    delete table.dataset.loading;
    const pages = Math.max(1, Math.ceil(d.total / d.per_page));
    if (ts.page > pages) { ts.page = pages; return loadTrials(); }
    renderTrials(d, pages);
  }
  function renderTrials(d, pages) {
    for (const th of thead.children) {
      const on = th.dataset.sort && th.dataset.sort === ts.sort;
      th.classList.toggle('sorted', !!on);
      if (on) th.setAttribute('aria-sort', ts.order === 'asc' ? 'ascending' : 'descending'); else th.removeAttribute('aria-sort');
      const a = th.querySelector('.arrow');
      if (a) a.textContent = on ? (ts.order === 'asc' ? '▲' : '▼') : '';
    }
    fill(tbody);
    if (!d.rows.length) {
      tbody.append(h('tr', null, h('td', { colspan: columns.length, class: 'muted', style: { textAlign: 'center', padding: '28px' } }, 'No trials match.')));
    }
    for (const t of d.rows) {
      const best = t.number === detail.study.best_trial;
      tbody.append(h('tr', {
        'data-trial': t.number, class: 'clickable',
        onclick: e => { if (!e.target.closest('a')) location.hash = trialHref(id, t.number); },
      },
      h('td', { class: 'num' }, h('a', { href: trialHref(id, t.number) }, `#${t.number}`)),
      h('td', null, badge(t.state)),
      h('td', { class: 'num', style: best ? { fontWeight: 700 } : null, title: best ? 'best trial' : null }, fmtValue(t.value), best ? ' ★' : ''),
      params.map(p => h('td', { class: p.type === 'categorical' ? 'cat' : 'num' }, fmtParam(t.params?.[p.name]))),
      h('td', { class: 'num' }, t.last_step ?? '—'),
      h('td', { class: 'num muted' }, t.rung ?? '—'),
      h('td', { class: 'muted' }, t.worker || '—'),
      h('td', { class: 'num' }, C.fmtDuration(t.duration_ms)),
      h('td', { class: 'muted' }, C.fmtTime(t.started_at_ms)),
      h('td', { class: 'muted', title: t.reason || null, style: { maxWidth: '260px', overflow: 'hidden', textOverflow: 'ellipsis' } }, t.reason || '')));
    }
    pageInfo.textContent = `page ${d.page} of ${pages}`;
    countInfo.textContent = `${d.total} ${ts.states.length ? 'matching' : 'in total'}`;
    prev.disabled = d.page <= 1;
    next.disabled = d.page >= pages;
    table.dataset.total = d.total;
  }

  // ---- loaders
  const mk = (what, url, render) => {
    let seq = 0;
    return async () => {
      const my = ++seq;
      let d;
      try { d = await api(url()); } catch (e) { if (pg.alive && my === seq) handleError(e, what); return; }
      if (pg.alive && my === seq) render(d);
    };
  };
  const loadSummary = mk('study', () => `/api/studies/${id}`, renderSummary);
  const loadHistory = mk('history', () => `/api/studies/${id}/history`, d => { histState.data = d; drawHistory(); });
  const loadCurves = mk('curves', () => `/api/studies/${id}/curves?max=200`, d => {
    curveState.data = d;
    curveState.byTrial = new Map(d.curves.map(c => [c.trial, c]));
    drawCurves();
  });
  const loadParams = mk('parameters', () => `/api/studies/${id}/params?max=2000`, d => { parState.data = d; drawParallel(); drawSlices(); });
  const loadImportance = mk('importance', () => `/api/studies/${id}/importance`, d => { impState.data = d; drawImportance(); });

  // ---- live updates (defined before the first load: the cancel button may call them)
  const refreshSummary = pg.throttle(loadSummary, 500);
  const refreshHistory = pg.throttle(loadHistory, 500);
  const refreshCurves = pg.throttle(loadCurves, 500);
  const refreshTrials = pg.throttle(loadTrials, 500);
  // Parameters and importance change only when a trial finishes and cost the
  // coordinator more to compute, so refresh them less often.
  const refreshParams = pg.throttle(loadParams, 2000);
  const refreshImportance = pg.throttle(loadImportance, 2000);
  function refreshAll() { refreshSummary(); refreshHistory(); refreshCurves(); refreshTrials(); refreshParams(); refreshImportance(); }

  renderSummary(detail);
  await Promise.all([loadHistory(), loadCurves(), loadParams(), loadImportance(), loadTrials()]);
  if (!pg.alive) return;
  pg.events(id, {
    report: ev => {
      if (ev.study !== id) return;
      const c = curveState.byTrial.get(ev.trial);
      if (!c) { refreshCurves(); return; }
      const last = c.steps.length - 1;
      if (last >= 0 && ev.step <= c.steps[last]) {
        const i = c.steps.indexOf(ev.step);
        if (i >= 0) c.values[i] = ev.value;
      } else {
        c.steps.push(ev.step);
        c.values.push(ev.value);
      }
      redrawCurvesSoon();
    },
    trial: ev => {
      if (ev.study !== id) return;
      refreshSummary(); refreshHistory(); refreshCurves(); refreshTrials();
      if (ev.state === 'completed' || ev.state === 'stopped') { refreshParams(); refreshImportance(); }
    },
    study: ev => {
      if (ev.study !== id) return;
      refreshSummary(); refreshTrials(); refreshCurves();
    },
    reconnect: refreshAll,
  });
}

// ------------------------------------------------------------------ trial page

const EVENT_COLOR = {
  created: 'waiting', started: 'running', resumed: 'running', requeued: 'waiting', paused: 'paused',
  promoted: 'running', completed: 'completed', stopped: 'stopped', failed: 'failed', cancelled: 'cancelled',
};

async function trialPage(pg, id, n) {
  setCrumbs([{ label: 'Studies', href: '#/' }, { label: `Study ${id}`, href: `#/study/${id}` }, { label: `Trial #${n}` }]);
  const [first, studyDetail] = await Promise.all([
    api(`/api/studies/${id}/trials/${n}`).catch(e => {
      if (e.status === 404) return null;
      throw e;
    }),
    api(`/api/studies/${id}`).catch(() => null),
  ]);
  if (!pg.alive) return;
  if (!first) {
    showError(`trial ${n} of study ${id}: not found`);
    fill($('#view'), emptyPage('Trial not found', `Study ${id} has no trial ${n}.`));
    return;
  }
  const spec = new Map(((studyDetail && studyDetail.params) || []).map(p => [p.name, p]));
  const totalTrials = studyDetail ? studyDetail.study.trials : null;

  const head = h('div', { class: 'page-head' });
  const overview = h('section', { class: 'card span-4', id: 'trial-overview' });
  const paramsCard = h('section', { class: 'card span-4', id: 'trial-params' });
  const eventsCard = h('section', { class: 'card span-4' });
  const eventsList = h('ol', { class: 'timeline', id: 'trial-events' });
  eventsCard.append(h('div', { class: 'card-head' }, h('h2', null, 'Events')), eventsList);
  const metricsCard = h('section', { class: 'card span-12', id: 'trial-metrics' });
  const metricsCharts = h('div', { class: 'metrics-grid' });
  const metricsTable = h('div', { class: 'metrics-table table-wrap' });
  metricsCard.append(h('div', { class: 'card-head' }, h('h2', null, 'Metrics per step'), h('span', { class: 'hint' }, 'the latest attempt\'s value at each step')), metricsCharts, metricsTable);
  const logCard = h('section', { class: 'card span-12', id: 'trial-log-card', hidden: true });
  const container = h('div', { id: 'trial' }, head, h('div', { class: 'grid' }, overview, paramsCard, eventsCard, metricsCard, logCard));
  fill($('#view'), container);

  let data = first;
  function render(d) {
    data = d;
    const t = d.trial, s = d.study;
    container.dataset.state = t.state;
    setCrumbs([{ label: 'Studies', href: '#/' }, { label: s.name, href: `#/study/${id}` }, { label: `Trial #${n}` }]);
    const stoppable = ['running', 'paused', 'waiting'].includes(t.state);
    const stop = stoppable ? h('button', {
      id: 'stop-trial', class: 'danger', type: 'button',
      onclick: async ev => {
        const b = ev.currentTarget;
        b.disabled = true;
        const r = await action('stop', `/api/studies/${id}/trials/${n}/stop`);
        if (!pg.alive) return;
        if (r) { render({ ...data, trial: r }); refresh(); } else b.disabled = false;
      },
    }, t.state === 'running' ? 'Stop trial' : 'Stop trial now') : null;
    const nav = h('div', { class: 'seg-group' },
      h('button', { type: 'button', class: 'small', id: 'trial-prev', disabled: n <= 0, onclick: () => { location.hash = trialHref(id, n - 1); } }, '‹ #' + Math.max(0, n - 1)),
      h('button', { type: 'button', class: 'small', id: 'trial-next', disabled: totalTrials != null && n >= totalTrials - 1, onclick: () => { location.hash = trialHref(id, n + 1); } }, '#' + (n + 1) + ' ›'));
    fill(head,
      h('h1', null, `Trial #${t.number}`), badge(t.state),
      t.value != null ? h('span', { class: 'sub' }, `${s.metric} = `, h('b', { style: { color: 'var(--text)' } }, fmtValue(t.value)), ` ${dirArrow(s.direction)}`) : null,
      h('div', { class: 'grow' }), nav, stop);

    // Worker and device: the slot of the latest placement.
    const placed = [...d.events].reverse().find(e => e.kind === 'started' || e.kind === 'resumed');
    const kv = (k, v) => [h('dt', null, k), h('dd', null, v)];
    fill(overview,
      h('div', { class: 'card-head' }, h('h2', null, 'Overview')),
      h('dl', { class: 'kv' },
        kv('State', badge(t.state)),
        kv(s.metric, t.value == null ? '—' : h('b', null, fmtValue(t.value))),
        kv('Study', h('a', { href: `#/study/${id}` }, s.name)),
        kv('Worker', h('span', { id: 'trial-worker' }, t.worker || (placed && placed.worker) || '—')),
        kv('Device', h('span', { id: 'trial-device', class: 'mono' }, (placed && placed.slot) || '—')),
        kv('Attempt', t.attempt ?? '—'),
        kv('Last step', t.last_step ?? '—'),
        kv('Rung · budget', `${t.rung ?? '—'} · ${t.budget ?? '—'}`),
        kv('Started', C.fmtTime(t.started_at_ms, true)),
        kv('Ended', t.ended_at_ms ? C.fmtTime(t.ended_at_ms, true) : '—'),
        kv('Duration', t.duration_ms ? C.fmtDuration(t.duration_ms)
          : t.started_at_ms && !t.ended_at_ms ? `${C.fmtDuration(Date.now() - t.started_at_ms)} so far` : '—'),
        t.reason ? kv('Reason', h('span', { class: t.state === 'failed' ? 'reason-text' : '' }, t.reason)) : null));

    const entries = Object.entries(t.params || {});
    fill(paramsCard,
      h('div', { class: 'card-head' }, h('h2', null, 'Parameters')),
      entries.length ? h('div', { class: 'table-wrap' }, h('table', { class: 'data params-table' },
        h('thead', null, h('tr', null, h('th', null, 'name'), h('th', { class: 'num' }, 'value'), h('th', null, 'space'))),
        h('tbody', null, entries.map(([k, v]) => {
          const p = spec.get(k);
          const space = !p ? '' : p.type === 'categorical' ? p.choices.join(' | ') : `${fmtParam(p.low)} … ${fmtParam(p.high)}${p.log ? ' log' : ''}`;
          return h('tr', { 'data-param': k }, h('td', null, k), h('td', { class: 'num' }, h('b', null, fmtParam(v))), h('td', { class: 'muted wrap', style: { fontSize: '12px' } }, space));
        }))))
        : h('div', { class: 'empty' }, 'No parameters.'));

    fill(eventsList, ...d.events.map(e => {
      const where = [e.worker && `on ${e.worker}`, e.slot && e.slot].filter(Boolean).join(' · ');
      const what = [
        e.step != null ? `at step ${e.step}` : null,
        e.rung != null ? `rung ${e.rung}` : null,
        e.budget != null ? `budget ${e.budget}` : null,
        e.attempt > 1 ? `attempt ${e.attempt}` : null,
      ].filter(Boolean).join(', ');
      return h('li', { 'data-kind': e.kind },
        h('span', { class: 'dot', style: { '--c': C.stateColor(EVENT_COLOR[e.kind] || 'waiting') } }),
        h('div', null, h('span', { class: 'what' }, e.kind), h('span', { class: 'when' }, C.fmtTime(e.at_ms, true))),
        where ? h('div', { class: 'detail' }, where) : null,
        what ? h('div', { class: 'detail' }, what) : null,
        e.reason ? h('div', { class: e.kind === 'failed' ? 'reason' : 'detail' }, e.reason) : null);
    }));
    if (!d.events.length) eventsList.append(h('li', { class: 'detail' }, 'No events.'));

    drawMetrics();

    // The log has its own reads (below); a refreshed trial that shows more
    // of it than the page has means events were missed.
    if (d.log && d.log.total > log.total) refreshLog();
  }

  // The log: its end comes with the trial, then new output is read on from
  // the last total whenever the trial's `log` event arrives.
  const LOG_KEEP = 512 * 1024; // characters the page keeps
  const logPre = h('pre', { class: 'log', id: 'trial-log' });
  const logNote = h('span', { class: 'hint', id: 'trial-log-note' });
  fill(logCard, h('div', { class: 'card-head' }, h('h2', null, 'Log'), logNote), logPre);
  const log = { total: 0, start: 0, dropped: 0, shown: false, cut: false };
  const fmtBytes = b => (b < 1024 ? `${b} B` : b < 1 << 20 ? `${(b / 1024).toFixed(1)} KiB` : `${(b / (1 << 20)).toFixed(1)} MiB`);
  function appendLog(r) {
    if (!r || (log.shown && !r.text)) { if (r) log.total = Math.max(log.total, r.total); return; }
    const follow = !log.shown || logPre.scrollHeight - logPre.scrollTop - logPre.clientHeight < 24;
    let text = r.text;
    if (!log.shown) log.start = r.start;
    // Fell behind the log's bound between two reads: say what was missed
    // (a read from before what is kept starts with the server's marker).
    else if (r.start > log.total && !text.startsWith('[hpo: ')) text = `[hpo: ${r.start - log.total} bytes of output dropped]\n${text}`;
    let all = (log.shown ? logPre.textContent : '') + text;
    if (all.length > LOG_KEEP) {
      const at = all.indexOf('\n', all.length - LOG_KEEP);
      all = all.slice(at >= 0 && at < all.length - 1 ? at + 1 : all.length - LOG_KEEP);
      log.cut = true;
    }
    logPre.textContent = all;
    log.total = r.total; log.dropped = r.dropped; log.shown = true;
    logCard.hidden = false;
    logCard.dataset.total = String(r.total);
    const notes = [`${fmtBytes(log.total)} logged`];
    if (log.dropped > 0) notes.push(`older output dropped (${fmtBytes(log.dropped)}) to keep the log within its bound, [trainer] max_log_kib`);
    else if (log.start > 0 || log.cut) notes.push('showing its end');
    fill(logNote, notes.join(' · '));
    logNote.classList.toggle('log-dropped', log.dropped > 0);
    if (follow) logPre.scrollTop = logPre.scrollHeight;
  }
  let logBusy = false, logAgain = false;
  async function loadLog() {
    if (logBusy) { logAgain = true; return; }
    logBusy = true;
    try {
      do {
        logAgain = false;
        const r = await api(`/api/studies/${id}/trials/${n}/log?offset=${log.total}`);
        if (!pg.alive) return;
        appendLog(r);
      } while (logAgain && pg.alive);
    } catch (e) {
      if (pg.alive) handleError(e, `the log of trial ${n}`);
    } finally {
      logBusy = false;
    }
  }
  const refreshLog = pg.throttle(loadLog, 500);
  if (first.log) appendLog(first.log);

  function drawMetrics() {
    const m = data.metrics || { steps: [], names: [], values: {} };
    const names = m.names || [];
    if (!m.steps.length || !names.length) {
      fill(metricsCharts, h('div', { class: 'empty' }, 'No metrics reported yet.'));
      fill(metricsTable);
      metricsTable.hidden = true;
      markDrawn(metricsCard, 0);
      return;
    }
    // The objective first, then the rest: small multiples, since metrics
    // rarely share a scale (a loss of 2.3 beside a learning rate of 1e-4).
    const objective = data.study.metric;
    const ordered = [...names].sort((a, b) => (b === objective) - (a === objective));
    fill(metricsCharts);
    let points = 0;
    const palette = ['--accent', '--st-completed', '--st-stopped', '--st-paused', '--st-failed', '--st-running'];
    ordered.forEach((name, k) => {
      const ys = m.values[name] || [];
      const xs = [], vs = [];
      ys.forEach((v, i) => { if (v != null && Number.isFinite(v)) { xs.push(m.steps[i]); vs.push(v); } });
      const box = h('div', { class: 'plot-slot' });
      metricsCharts.append(h('div', { 'data-metric': name }, h('h3', null, name, name === objective ? h('span', { class: 'muted', style: { fontFamily: 'var(--font)', fontWeight: 500 } }, ` · objective ${dirArrow(data.study.direction)}`) : null), box));
      const colour = C.cssVar(name === objective ? '--accent' : palette[(k % (palette.length - 1)) + 1]);
      const r = C.lineChart(box, {
        series: [{ key: name, x: xs, y: vs, color: colour, width: 2 }],
        xLabel: 'step', height: 220, yType: C.autoScaleType(vs), xInteger: true,
        margin: { top: 8, right: 14, bottom: 40, left: 54 },
        tip: (s, i) => `<b>${esc(name)}</b><table><tr><td>step</td><td>${s.x[i]}</td></tr><tr><td>value</td><td>${esc(C.fmtNum(s.y[i], 5))}</td></tr></table>`,
      });
      points += r.points;
    });
    markDrawn(metricsCard, points);
    metricsCard.dataset.metrics = ordered.join(',');

    metricsTable.hidden = false;
    const rows = m.steps.map((st, i) => h('tr', null, h('td', { class: 'num' }, st), ordered.map(nm => h('td', { class: 'num' }, C.fmtNum((m.values[nm] || [])[i], 5)))));
    fill(metricsTable, h('table', { class: 'data', id: 'trial-metrics-table' },
      h('thead', null, h('tr', null, h('th', { class: 'num' }, 'step'), ordered.map(nm => h('th', { class: 'num param' }, nm)))),
      h('tbody', null, rows.reverse())));
  }
  pg.chart(metricsCharts, drawMetrics);

  let seq = 0;
  async function load() {
    const my = ++seq;
    let d;
    try { d = await api(`/api/studies/${id}/trials/${n}`); } catch (e) { if (pg.alive && my === seq) handleError(e, `trial ${n}`); return; }
    if (pg.alive && my === seq) render(d);
  }
  const refresh = pg.throttle(load, 500);
  render(first);
  pg.events(id, {
    report: ev => { if (ev.study === id && ev.trial === n) refresh(); },
    trial: ev => { if (ev.study === id && ev.trial === n) refresh(); },
    study: ev => { if (ev.study === id) refresh(); },
    log: ev => { if (ev.study === id && ev.trial === n) refreshLog(); },
    reconnect: () => { refresh(); refreshLog(); },
  });
}

// ------------------------------------------------------------------ workers

async function workersPage(pg) {
  setCrumbs([{ label: 'Workers' }]);
  const tiles = h('div', { class: 'tiles', style: { marginBottom: '16px' } });
  const tbody = h('tbody');
  const table = h('table', { id: 'workers', class: 'data' },
    h('thead', null, h('tr', null,
      h('th', null, 'Worker'), h('th', null, 'Status'), h('th', { class: 'num' }, 'Slots'),
      h('th', null, 'Running now'), h('th', null, 'Utilisation (1 h)'), h('th', null, 'Last seen'))),
    tbody);
  fill($('#view'),
    h('div', { class: 'page-head' }, h('h1', null, 'Workers'), h('span', { class: 'sub' }, 'processes that run trials, one trial per slot')),
    tiles,
    h('div', { class: 'card', style: { padding: '0' } }, h('div', { class: 'table-wrap', style: { border: '0' } }, table)));

  const names = new Map();
  const render = workers => {
    const connected = workers.filter(w => w.connected);
    const slots = connected.reduce((a, w) => a + w.slots.length, 0);
    const busy = connected.reduce((a, w) => a + w.running.length, 0);
    const util = connected.length ? connected.reduce((a, w) => a + (w.utilisation_1h || 0), 0) / connected.length : 0;
    fill(tiles,
      tile('Workers connected', h('span', null, connected.length, h('small', null, ` / ${workers.length}`))),
      tile('Slots busy', h('span', null, busy, h('small', null, ` / ${slots}`)), slots ? `${Math.round((100 * busy) / slots)}% in use now` : 'no slots'),
      tile('Utilisation, last hour', `${Math.round(util * 100)}%`, 'mean over connected workers'));
    fill(tbody);
    if (!workers.length) {
      tbody.append(h('tr', null, h('td', { colspan: 6, class: 'muted', style: { textAlign: 'center', padding: '36px' } }, 'No worker has registered: start one with hpo worker.')));
      return;
    }
    for (const w of workers) {
      const bySlot = new Map(w.running.map(r => [r.slot, r]));
      tbody.append(h('tr', { 'data-worker': w.id },
        h('td', null, h('div', { class: 'name-cell' }, h('span', { class: 'name' }, w.hostname), h('span', { class: 'meta mono' }, w.id))),
        h('td', null, badge(w.connected ? 'connected' : 'disconnected')),
        h('td', { class: 'num' }, w.slots.length),
        h('td', null, h('div', { class: 'slots' }, w.slots.map(slot => {
          const r = bySlot.get(slot);
          return h('div', { class: 'slot', 'data-slot': slot }, h('code', null, slot),
            r ? [h('a', { href: trialHref(r.study, r.trial) }, `${names.get(r.study) || 'study ' + r.study} · trial #${r.trial}`),
              h('span', { class: 'muted', style: { fontSize: '12px' } }, r.since_ms ? `for ${C.fmtDuration(Date.now() - r.since_ms)}` : '')]
              : h('span', { class: 'idle' }, 'idle'));
        }))),
        h('td', null, h('div', { class: 'util' }, C.meter(w.utilisation_1h, `${Math.round((w.utilisation_1h || 0) * 100)}% of slot time busy`), h('span', null, `${Math.round((w.utilisation_1h || 0) * 100)}%`))),
        h('td', { class: 'muted' }, w.connected ? C.fmtAgo(w.last_seen_ms) : C.fmtTime(w.last_seen_ms))));
    }
  };
  let seq = 0;
  const load = async () => {
    const my = ++seq;
    try {
      const [w, s] = await Promise.all([api('/api/workers'), api('/api/studies').catch(() => ({ studies: [] }))]);
      for (const st of s.studies) names.set(st.id, st.name);
      if (pg.alive && my === seq) render(w.workers);
    } catch (e) {
      if (pg.alive && my === seq) handleError(e, 'workers');
    }
  };
  await load();
  const refresh = pg.throttle(load, 1000);
  pg.events(null, { trial: refresh, study: refresh, reconnect: refresh });
}

// ------------------------------------------------------------------ boot

function setupChrome() {
  $('#error-close').addEventListener('click', clearError);
  const form = $('#token-dialog');
  form.addEventListener('submit', e => {
    e.preventDefault();
    app.token = $('#token-input').value.trim();
    writeStorage(TOKEN_KEY, app.token);
    clearError();
    closeToken(true);
  });
  $('#token-cancel').addEventListener('click', () => closeToken(false));
  $('#token-forget').addEventListener('click', () => {
    app.token = '';
    writeStorage(TOKEN_KEY, '');
    $('#token-input').value = '';
    closeToken(false);
  });
  form.addEventListener('keydown', e => { if (e.key === 'Escape') closeToken(false); });
  $('#token-button').addEventListener('click', async () => {
    const had = app.token;
    const ok = await askToken('The token the coordinator was started with (--dashboard-token). It is kept in this browser.');
    if (ok && app.token !== had) route();
  });
  $('#theme-button').addEventListener('click', () => {
    const dark = document.documentElement.dataset.theme !== 'dark';
    if (dark) document.documentElement.dataset.theme = 'dark'; else delete document.documentElement.dataset.theme;
    writeStorage(THEME_KEY, dark ? 'dark' : '');
    C.themeChanged();
    if (page) page.redraws.forEach(f => f());
  });
}

async function boot() {
  setupChrome();
  try {
    app.config = await api('/api/config');
  } catch (e) {
    showError(`cannot load /api/config: ${e.message}`);
  }
  $('#version').textContent = app.config.version ? `coordinator v${app.config.version}` : '';
  $('#token-button').querySelector('span').textContent = app.token ? 'Token set' : 'Token';
  if (app.config.auth === 'read' && !app.token) {
    await askToken('This coordinator requires its dashboard token to read anything.');
  }
  window.addEventListener('hashchange', route);
  route();
}

boot();
