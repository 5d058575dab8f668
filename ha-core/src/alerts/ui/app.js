// The alerts UI: a live table of anomalies and a chart of a device's
// readings with its anomalies marked. Plain JavaScript, no dependencies.
//
// The operator token is asked for once and kept in sessionStorage (this tab
// only). It is sent as `Authorization: Bearer` on every /v1 request, the
// stream included: the stream is read with fetch() rather than EventSource,
// which cannot send headers, so the token never appears in a URL.
'use strict';

const TOKEN_KEY = 'ha-alerts-token';
const PAGE = 50;
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);

const state = {
  rows: new Map(), // key -> anomaly
  nextCursor: null,
  filters: { device: '', metric: '' },
  selected: null, // { device, metric, ts }
  streamAbort: null,
  chartTimer: null,
};

// ---------- API ----------

class Unauthorized extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

// An empty token means the server runs without authentication.
function authHeaders(extra) {
  const t = token();
  return t ? { ...extra, Authorization: 'Bearer ' + t } : { ...extra };
}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  const resp = await fetch(url, { headers: authHeaders(), cache: 'no-store' });
  if (resp.status === 401) throw new Unauthorized();
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.message || 'HTTP ' + resp.status);
  return body;
}

function handleError(err) {
  if (err instanceof Unauthorized) {
    signOut('The operator token was rejected. Enter it again.');
  } else {
    console.error(err);
  }
}

// ---------- Formatting ----------

// `/` occurs in neither device ids nor metric names.
const keyOf = (a) => a.device_id + '/' + a.seq + '/' + a.metric;

function fmtTime(iso) {
  return iso.replace('T', ' ').replace(/(\.\d+)?Z$/, '');
}

function fmtNum(v, digits) {
  if (typeof v !== 'number' || !isFinite(v)) return '—';
  const abs = Math.abs(v);
  if (abs !== 0 && (abs >= 1e6 || abs < 1e-3)) return v.toExponential(2);
  return v.toFixed(digits);
}

function ago(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.round(s / 60) + ' min ago';
  if (s < 86400) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// ---------- Anomalies table ----------

// Newest first: ts, then device, seq, metric, all descending (the API's order).
function compare(a, b) {
  if (a.ts !== b.ts) return a.ts < b.ts ? 1 : -1;
  if (a.device_id !== b.device_id) return a.device_id < b.device_id ? 1 : -1;
  if (a.seq !== b.seq) return b.seq - a.seq;
  return a.metric < b.metric ? 1 : a.metric > b.metric ? -1 : 0;
}

function matchesFilters(a) {
  const f = state.filters;
  return (!f.device || a.device_id === f.device) && (!f.metric || a.metric === f.metric);
}

function renderRow(a) {
  const conf = Math.max(0, Math.min(1, a.anomaly_score || 0));
  const fill = el('span');
  fill.style.width = (conf * 100).toFixed(1) + '%'; // CSSOM: allowed by the CSP, unlike style=""
  const bar = el('span', { class: 'conf-bar' }, fill);
  const tr = el('tr', { 'data-key': keyOf(a) },
    el('td', { class: 'time' }, fmtTime(a.ts)),
    el('td', { class: 'device' }, a.device_id),
    el('td', {}, el('span', { class: 'metric-tag' }, a.metric)),
    el('td', { class: 'num' }, fmtNum(a.value, 2)),
    el('td', { class: 'num' }, fmtNum(a.score, 1)),
    el('td', { class: 'num' }, el('span', { class: 'conf' }, bar, (conf * 100).toFixed(2) + '%')),
    el('td', {}, a.detector));
  tr.addEventListener('click', () => select(a));
  return tr;
}

function renderTable(freshKeys) {
  const tbody = $('anomalies').tBodies[0];
  const rows = [...state.rows.values()].sort(compare);
  tbody.replaceChildren(...rows.map(renderRow));
  for (const tr of tbody.rows) {
    const k = tr.dataset.key;
    if (freshKeys && freshKeys.has(k)) {
      tr.classList.add('fresh');
      setTimeout(() => tr.classList.remove('fresh'), 4000);
    }
    if (state.selected && k === keyOf(state.selected)) tr.classList.add('selected');
  }
  $('count').textContent = rows.length;
  $('empty').hidden = rows.length > 0;
  $('more').hidden = !state.nextCursor;
}

async function loadAnomalies() {
  const page = await api('/v1/anomalies', { ...state.filters, limit: PAGE });
  // Keep rows the stream delivered that are newer than this page's end.
  const keep = [...state.rows.values()].filter((a) => matchesFilters(a)
    && page.items.length === PAGE && compare(a, page.items[page.items.length - 1]) < 0);
  state.rows = new Map();
  for (const a of keep.concat(page.items)) state.rows.set(keyOf(a), a);
  state.nextCursor = page.next_cursor;
  renderTable();
  if (!state.selected && page.items.length > 0) select(page.items[0]);
}

async function loadMore() {
  if (!state.nextCursor) return;
  const page = await api('/v1/anomalies', { ...state.filters, limit: PAGE, cursor: state.nextCursor });
  for (const a of page.items) state.rows.set(keyOf(a), a);
  state.nextCursor = page.next_cursor;
  renderTable();
}

function addLive(a) {
  if (!matchesFilters(a)) return;
  const k = keyOf(a);
  if (state.rows.has(k)) return;
  state.rows.set(k, a);
  renderTable(new Set([k]));
  if (state.selected && state.selected.device === a.device_id) scheduleChart(300);
}

// ---------- Live stream (fetch + text/event-stream parsing) ----------

function setLive(cls, text) {
  const pill = $('live');
  pill.className = 'pill ' + cls;
  pill.textContent = text;
}

function dispatch(event, data) {
  if (event === 'ready' || event === 'resync') {
    setLive('pill-live', 'Live');
    // Whatever arrived while we were not listening is in the first page.
    loadAnomalies().catch(handleError);
  } else if (event === 'anomaly') {
    addLive(JSON.parse(data));
  } else if (event === 'store_error') {
    setLive('pill-warn', 'Database unavailable');
  }
}

async function readStream(signal) {
  const url = new URL('/v1/stream', location.origin);
  const resp = await fetch(url, {
    headers: authHeaders({ Accept: 'text/event-stream' }),
    cache: 'no-store',
    signal,
  });
  if (resp.status === 401) throw new Unauthorized();
  if (!resp.ok || !resp.body) throw new Error('stream: HTTP ' + resp.status);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, '\n');
    let end;
    while ((end = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue; // keep-alive comment
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') event = val;
        else if (field === 'data') data.push(val);
      }
      if (data.length) dispatch(event, data.join('\n'));
    }
  }
}

async function runStream() {
  const ctl = new AbortController();
  state.streamAbort = ctl;
  let delay = 1000;
  while (!ctl.signal.aborted) {
    const started = Date.now();
    try {
      await readStream(ctl.signal);
    } catch (err) {
      if (ctl.signal.aborted) return;
      if (err instanceof Unauthorized) return handleError(err);
    }
    if (Date.now() - started > 30000) delay = 1000;
    setLive('pill-warn', 'Reconnecting…');
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

// ---------- Chart ----------

function select(a) {
  state.selected = { device: a.device_id, metric: a.metric, ts: a.ts };
  for (const tr of $('anomalies').tBodies[0].rows) {
    tr.classList.toggle('selected', tr.dataset.key === keyOf(a));
  }
  scheduleChart(0);
}

function scheduleChart(ms) {
  clearTimeout(state.chartTimer);
  state.chartTimer = setTimeout(() => drawChart().catch(handleError), ms);
}

function chartRange() {
  const span = Number($('chart-range').value) * 1000;
  let end = Date.now();
  const focus = state.selected && state.selected.ts ? Date.parse(state.selected.ts) : NaN;
  // Keep the selected anomaly in view: centre it when "now" would cut it off.
  if (isFinite(focus) && focus < end - span * 0.9) end = Math.min(end, focus + span / 2);
  return { from: end - span, to: end };
}

function svg(tag, attrs, parent) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (parent) parent.append(node);
  return node;
}

function niceTicks(lo, hi, count) {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count) || 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(v);
  return ticks;
}

function timeLabel(ms, spanMs) {
  const iso = new Date(ms).toISOString();
  return spanMs > 2 * 86400000 ? iso.slice(5, 10) + ' ' + iso.slice(11, 16) : iso.slice(11, 16);
}

async function drawChart() {
  const sel = state.selected;
  if (!sel) return;
  const { from, to } = chartRange();
  const range = { from: new Date(from).toISOString(), to: new Date(to).toISOString() };
  const [readings, anomalies, health] = await Promise.all([
    api('/v1/devices/' + encodeURIComponent(sel.device) + '/readings', { ...range, limit: 10000 }),
    api('/v1/anomalies', { device: sel.device, ...range, limit: 1000 }),
    api('/v1/devices/' + encodeURIComponent(sel.device) + '/health').catch((e) => {
      if (e instanceof Unauthorized) throw e;
      return null;
    }),
  ]);
  const metrics = [...new Set(readings.items.map((v) => v.metric).concat([sel.metric]))].sort();
  const picker = $('chart-metric');
  picker.replaceChildren(...metrics.map((m) => el('option', { value: m }, m)));
  picker.value = sel.metric;

  const points = readings.items.filter((v) => v.metric === sel.metric)
    .map((v) => ({ t: Date.parse(v.ts), v: v.value }));
  const marks = anomalies.items.filter((a) => a.metric === sel.metric)
    .map((a) => ({ t: Date.parse(a.ts), v: a.value, a }));
  $('chart-title').textContent = sel.device + ' · ' + sel.metric;
  $('chart-sub').textContent = points.length + ' readings, ' + marks.length
    + (marks.length === 1 ? ' anomaly' : ' anomalies') + ' · ' + fmtTime(range.from) + ' – '
    + fmtTime(range.to) + (readings.truncated ? ' · truncated: pick a shorter range' : '');
  renderChart(points, marks, from, to);
  renderHealth(health);
}

function renderChart(points, marks, from, to) {
  const box = $('chart');
  const W = Math.max(320, box.clientWidth - 20);
  const H = 320;
  const m = { l: 52, r: 16, t: 14, b: 28 };
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Readings chart' });
  const defs = svg('defs', {}, root);
  const grad = svg('linearGradient', { id: 'area-fill', x1: 0, y1: 0, x2: 0, y2: 1 }, defs);
  svg('stop', { offset: '0%', 'stop-color': '#2563eb', 'stop-opacity': 0.16 }, grad);
  svg('stop', { offset: '100%', 'stop-color': '#2563eb', 'stop-opacity': 0 }, grad);

  const values = points.map((p) => p.v).concat(marks.map((p) => p.v));
  if (values.length === 0) {
    const t = svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'placeholder' }, root);
    t.textContent = 'No readings in this range';
    box.replaceChildren(root);
    return;
  }
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
  lo -= pad;
  hi += pad;
  const x = (t) => m.l + ((t - from) / (to - from)) * (W - m.l - m.r);
  const y = (v) => H - m.b - ((v - lo) / (hi - lo)) * (H - m.t - m.b);

  const grid = svg('g', { class: 'grid' }, root);
  const axis = svg('g', { class: 'axis' }, root);
  for (const v of niceTicks(lo, hi, 5)) {
    svg('line', { x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }, grid);
    const t = svg('text', { x: m.l - 8, y: y(v) + 4, 'text-anchor': 'end' }, axis);
    t.textContent = fmtNum(v, Math.abs(hi - lo) < 10 ? 1 : 0);
  }
  const span = to - from;
  const steps = [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400].map((s) => s * 1000);
  const step = steps.find((s) => span / s <= 7) || 86400000;
  for (let t = Math.ceil(from / step) * step; t <= to; t += step) {
    svg('line', { x1: x(t), x2: x(t), y1: m.t, y2: H - m.b }, grid);
    const label = svg('text', { x: x(t), y: H - 8, 'text-anchor': 'middle' }, axis);
    label.textContent = timeLabel(t, span);
  }
  svg('line', { class: 'baseline', x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b }, root);

  if (points.length > 0) {
    const d = points.map((p, i) => (i ? 'L' : 'M') + x(p.t).toFixed(1) + ' ' + y(p.v).toFixed(1)).join('');
    const first = points[0];
    const last = points[points.length - 1];
    svg('path', {
      class: 'area',
      d: d + `L${x(last.t).toFixed(1)} ${H - m.b}L${x(first.t).toFixed(1)} ${H - m.b}Z`,
    }, root);
    svg('path', { class: 'line', d }, root);
  }
  const focusTs = state.selected ? Date.parse(state.selected.ts) : NaN;
  for (const p of marks) {
    svg('line', { class: 'anomaly-rule', x1: x(p.t), x2: x(p.t), y1: m.t, y2: H - m.b }, root);
  }
  for (const p of marks) {
    const c = svg('circle', {
      class: 'anomaly-marker' + (p.t === focusTs ? ' focus' : ''),
      cx: x(p.t).toFixed(1), cy: y(p.v).toFixed(1), r: 5,
    }, root);
    const title = svg('title', {}, c);
    title.textContent = `${fmtTime(p.a.ts)}  ${p.a.metric} = ${fmtNum(p.a.value, 2)}  (score ${fmtNum(p.a.score, 1)})`;
  }
  const legend = el('div', { class: 'legend' },
    el('span', {}, el('i'), 'readings'),
    el('span', {}, el('i', { class: 'dot' }), 'anomalies'));
  box.replaceChildren(root, legend);
}

function renderHealth(h) {
  const box = $('health');
  if (!h) {
    box.replaceChildren();
    return;
  }
  const gaps = h.seq_gaps || [];
  const missing = gaps.reduce((n, g) => n + (g.to - g.from + 1), 0);
  const gapText = gaps.length === 0 ? 'none'
    : gaps.slice(0, 3).map((g) => (g.from === g.to ? g.from : g.from + '–' + g.to)).join(', ')
      + (gaps.length > 3 ? ' …' : '');
  const stat = (label, value, cls) => el('div', { class: 'stat' },
    el('div', { class: 'label' }, label), el('div', { class: 'value ' + (cls || '') }, value));
  box.replaceChildren(
    stat('Last seen', ago(Date.now() - Date.parse(h.last_seen))),
    stat('Last seq', String(h.last_seq)),
    stat('Missing seqs', String(missing) + (h.gap_search.truncated ? '+' : ''), missing ? 'bad' : 'good'),
    stat('Gaps', gapText, gaps.length ? 'bad' : 'good'));
}

// ---------- Sign-in and start ----------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.streamAbort) state.streamAbort.abort();
  state.rows = new Map();
  state.selected = null;
  $('app').hidden = true;
  $('signout').hidden = true;
  setLive('pill-off', 'Offline');
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('login-error').hidden = !message;
  $('token').value = '';
  $('token').focus();
}

function start() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('signout').hidden = !token();
  setLive('pill-warn', 'Connecting…');
  // The table loads at once, and again when the stream is ready.
  loadAnomalies().catch(handleError);
  runStream();
}

// Without a stored token: a server started with --insecure-no-auth answers
// without one, and then no token is asked for.
async function probeOpen() {
  try {
    const resp = await fetch('/v1/anomalies?limit=1', { cache: 'no-store' });
    if (resp.ok) {
      sessionStorage.setItem(TOKEN_KEY, '');
      console.warn('The alerts API runs without authentication (--insecure-no-auth).');
      return start();
    }
  } catch (err) {
    // Unreachable: the sign-in form says so when a token is entered.
  }
  signOut();
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    try {
      await api('/v1/anomalies', { limit: 1 });
      start();
    } catch (err) {
      if (err instanceof Unauthorized) signOut('That token was not accepted.');
      else signOut('The server could not be reached: ' + err.message);
    }
  });
  $('signout').addEventListener('click', () => signOut());
  $('filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    state.filters = { device: f.get('device').trim(), metric: f.get('metric').trim() };
    loadAnomalies().catch(handleError);
  });
  $('more').addEventListener('click', () => loadMore().catch(handleError));
  $('chart-range').addEventListener('change', () => scheduleChart(0));
  $('chart-metric').addEventListener('change', (ev) => {
    if (!state.selected) return;
    state.selected = { ...state.selected, metric: ev.target.value, ts: null };
    scheduleChart(0);
  });
  window.addEventListener('resize', () => scheduleChart(150));
  // Redraw the chart now and then so "last seen" and the time axis move on.
  setInterval(() => { if (!document.hidden && state.selected) scheduleChart(0); }, 30000);
  if (token() !== null) start();
  else probeOpen();
});
