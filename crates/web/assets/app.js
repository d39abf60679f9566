// pmon web UI: plain JS, no build step. Views are hash routes of one page; live data comes
// from /api/live (Server-Sent Events, reconnected by EventSource itself), history from the
// historian through /api/history/*, charts with the vendored uPlot.
const $ = (sel, el = document) => el.querySelector(sel);
const h = (tag, attrs = {}, ...kids) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) el.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) if (kid != null) el.append(kid.nodeType ? kid : String(kid));
  return el;
};
const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
const QUANTITIES = {
  voltage: ['Voltage', 'V', 1], current: ['Current', 'A', 2], frequency: ['Frequency', 'Hz', 2],
  real_power: ['Real power', 'W', 0], apparent_power: ['Apparent power', 'VA', 0],
  reactive_power: ['Reactive power', 'var', 0], power_factor: ['Power factor', '', 3],
  current_crest_factor: ['Crest factor', '', 2], phase_angle: ['Phase angle', '°', 1],
  energy_import_kwh: ['Energy import', 'kWh', 3], energy_export_kwh: ['Energy export', 'kWh', 3],
};
const COLORS = ['#1769e0', '#e0531f', '#1a8f4a', '#9c27b0', '#c27c00', '#00838f', '#d81b60', '#5d4037'];
const fmt = (v, d = 1) => (v == null || !isFinite(v) ? '–' : Number(v).toFixed(d));
const power = (w) => (w == null ? '–' : Math.abs(w) >= 1000 ? `${(w / 1000).toFixed(2)} kW` : `${w.toFixed(0)} W`);

// ---- live store ------------------------------------------------------------------------
const live = { circuits: new Map(), staleAfter: 5, lastEvent: 0, connected: false, listeners: new Set() };
function upsert(c) {
  c.receivedAt = c.age_ms == null ? null : Date.now() - c.age_ms;
  const old = live.circuits.get(c.id);
  c.history = old ? old.history : [];
  if (c.state && (!old || !old.state || old.state.seq !== c.state.seq)) {
    c.history.push(c.state);
    if (c.history.length > 600) c.history.shift();
  }
  live.circuits.set(c.id, c);
}
function status(c) {
  if (c.availability === 'offline') return 'offline';
  if (c.receivedAt == null || Date.now() - c.receivedAt > live.staleAfter * 1000) return 'stale';
  return 'online';
}
function notify(id) { for (const f of live.listeners) f(id); }
let source;
function connect() {
  source = new EventSource('/api/live');
  source.addEventListener('snapshot', (e) => {
    const snap = JSON.parse(e.data);
    live.staleAfter = snap.stale_after_s || 5;
    live.brokerConnected = snap.broker_connected;
    for (const c of snap.circuits) upsert(c);
    live.lastEvent = Date.now();
    notify(null);
  });
  source.addEventListener('circuit', (e) => { const c = JSON.parse(e.data); upsert(c); live.lastEvent = Date.now(); notify(c.id); });
  source.addEventListener('tick', (e) => { live.brokerConnected = JSON.parse(e.data).broker_connected; live.lastEvent = Date.now(); });
  source.onopen = () => { live.connected = true; };
  source.onerror = () => { live.connected = false; };
}
setInterval(() => {
  const el = $('#conn'); const banner = $('#banner');
  const fresh = live.connected && Date.now() - live.lastEvent < 6000;
  el.className = 'conn ' + (fresh ? 'ok' : 'bad');
  el.textContent = fresh ? (live.brokerConnected ? 'live' : 'live (broker down)') : 'reconnecting…';
  const problem = !fresh ? 'Live connection lost: reconnecting… values shown may be stale.'
    : live.brokerConnected === false ? 'The web service is not connected to the MQTT broker: values are stale.' : '';
  banner.hidden = !problem; banner.textContent = problem;
  notify('tick');
}, 1000);

async function api(path, opts = {}) {
  const r = await fetch(path, opts);
  const text = await r.text();
  let body; try { body = JSON.parse(text); } catch { body = text; }
  if (!r.ok) throw new Error(body && body.detail ? `${body.error}: ${body.detail}` : `HTTP ${r.status}`);
  return body;
}

// ---- router --------------------------------------------------------------------------------
let cleanup = () => {};
function route() {
  cleanup(); cleanup = () => {};
  const [, view = '', arg] = location.hash.split('/');
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.nav === (view || 'overview'));
  const main = $('#view'); main.replaceChildren();
  const views = { '': overview, circuit, history, table, health, settings };
  (views[view] || overview)(main, arg && decodeURIComponent(arg));
}
function onLive(f) { live.listeners.add(f); const prev = cleanup; cleanup = () => { prev(); live.listeners.delete(f); }; }

// ---- overview ----------------------------------------------------------------------------
function spark(values) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 100 30'); svg.setAttribute('preserveAspectRatio', 'none');
  if (values.length > 1) {
    const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
    const pts = values.map((v, i) => `${(i / (values.length - 1)) * 100},${28 - ((v - lo) / span) * 26}`).join(' ');
    const line = document.createElementNS(svg.namespaceURI, 'polyline');
    line.setAttribute('points', pts); line.setAttribute('fill', 'none'); line.setAttribute('stroke', 'currentColor');
    line.setAttribute('stroke-width', '1.5'); line.setAttribute('vector-effect', 'non-scaling-stroke');
    svg.append(line);
  }
  return svg;
}
function overview(main) {
  const filter = h('input', { type: 'search', placeholder: 'Filter by name, id or label', id: 'filter', value: sessionStorage.filter || '' });
  const sort = h('select', { id: 'sort' }, ['name', 'power', 'current', 'status'].map((s) => h('option', { value: s }, `Sort by ${s}`)));
  sort.value = sessionStorage.sort || 'name';
  const total = h('div', { class: 'total', id: 'total' });
  const tiles = h('div', { class: 'tiles', id: 'tiles' });
  main.append(h('div', { class: 'toolbar' }, total, filter, sort), tiles);
  const render = () => {
    sessionStorage.filter = filter.value; sessionStorage.sort = sort.value;
    const q = filter.value.trim().toLowerCase();
    let list = [...live.circuits.values()].filter((c) => !q || [c.name, c.id, ...(c.labels || [])].join(' ').toLowerCase().includes(q));
    const key = { name: (c) => c.name.toLowerCase(), power: (c) => -(c.state ? c.state.real_power : -Infinity), current: (c) => -(c.state ? c.state.current : -Infinity), status: (c) => status(c) }[sort.value];
    list.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : a.name.localeCompare(b.name)));
    let sum = 0; for (const c of live.circuits.values()) if (c.state && status(c) !== 'offline') sum += c.state.real_power;
    total.replaceChildren('Site total ', h('b', { id: 'site-total' }, power(sum)), ` · ${live.circuits.size} circuits`);
    tiles.replaceChildren(...list.map((c) => {
      const st = status(c), s = c.state || {};
      return h('a', { class: `tile ${st}`, href: `#/circuit/${encodeURIComponent(c.id)}`, 'data-circuit': c.id },
        h('h3', {}, h('span', { class: 'name' }, c.name), h('span', { class: `badge ${st}` }, st)),
        h('div', { class: 'p', 'data-q': 'real_power' }, power(s.real_power)),
        h('div', { class: 'sub' }, `${fmt(s.current, 2)} A · PF ${fmt(s.power_factor, 2)} · ${fmt(s.voltage, 1)} V`),
        h('div', {}, (c.labels || []).map((l) => h('span', { class: 'label' }, l))),
        spark(c.spark || []));
    }));
    if (!live.circuits.size) tiles.append(h('p', { class: 'muted' }, 'Waiting for the first circuit…'));
  };
  let pending = false;
  const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; render(); }); } };
  filter.addEventListener('input', render); sort.addEventListener('change', render);
  onLive(schedule); render();
}

// ---- circuit page --------------------------------------------------------------------------
const LIVE_CHARTS = [
  ['Voltage (V)', ['voltage']], ['Current (A)', ['current']],
  ['Power (W, var, VA)', ['real_power', 'reactive_power', 'apparent_power']],
  ['Power factor', ['power_factor']], ['Frequency (Hz)', ['frequency']], ['Crest factor', ['current_crest_factor']],
];
function chartWidth(el) { return Math.max(280, (el.clientWidth || 400) - 4); }
function circuit(main, id) {
  const c0 = live.circuits.get(id);
  const title = h('h2', {}, c0 ? c0.name : id);
  const energy = h('div', { class: 'kv', id: 'energy' }, 'loading…');
  const values = h('div', { class: 'kv', id: 'values' });
  const phasor = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  phasor.setAttribute('viewBox', '-110 -110 220 220'); phasor.setAttribute('class', 'phasor');
  const grid = h('div', { class: 'grid2' });
  main.append(title, h('div', { class: 'grid2' },
    h('div', { class: 'card' }, h('h3', {}, 'Now'), values),
    h('div', { class: 'card' }, h('h3', {}, 'Phasor (current vs. voltage)'), phasor),
    h('div', { class: 'card' }, h('h3', {}, `Energy today (${TZ})`), energy),
    h('div', { class: 'card' }, h('h3', {}, 'Links'), h('a', { href: `#/history/${encodeURIComponent(id)}` }, 'History'), ' · ', h('a', { href: `#/table/${encodeURIComponent(id)}` }, 'Table'))), h('br'), grid);
  const charts = LIVE_CHARTS.map(([name, keys]) => {
    const card = h('div', { class: 'card' }); grid.append(card);
    const opts = { title: name, width: chartWidth(card), height: 180, legend: { show: keys.length > 1 },
      series: [{}, ...keys.map((k, i) => ({ label: QUANTITIES[k][0], stroke: COLORS[i], width: 1.5 }))], axes: [{}, { size: 60 }] };
    return { keys, plot: new uPlot(opts, [[], ...keys.map(() => [])], card), card };
  });
  const draw = () => {
    const c = live.circuits.get(id); if (!c) return;
    title.textContent = `${c.name} · ${status(c)}`;
    const s = c.state; if (!s) return;
    values.replaceChildren(...Object.entries(QUANTITIES).flatMap(([k, [n, u, d]]) => [h('span', {}, n), h('b', { 'data-q': k }, `${fmt(s[k], d)} ${u}`)]));
    const xs = c.history.map((r) => Date.parse(r.ts) / 1000);
    for (const ch of charts) ch.plot.setData([xs, ...ch.keys.map((k) => c.history.map((r) => r[k]))]);
    const a = (s.phase_angle * Math.PI) / 180, mag = Math.min(1, Math.abs(s.power_factor) > 0 ? 1 : 0.5) * 90;
    phasor.innerHTML = `<circle r="95" fill="none" stroke="currentColor" stroke-opacity=".2"/>
      <line x1="-100" y1="0" x2="100" y2="0" stroke="currentColor" stroke-opacity=".2"/><line x1="0" y1="-100" x2="0" y2="100" stroke="currentColor" stroke-opacity=".2"/>
      <line x1="0" y1="0" x2="95" y2="0" stroke="${COLORS[0]}" stroke-width="3"/><text x="60" y="-6" fill="${COLORS[0]}" font-size="12">V</text>
      <line x1="0" y1="0" x2="${mag * Math.cos(-a)}" y2="${-mag * Math.sin(-a)}" stroke="${COLORS[1]}" stroke-width="3"/>
      <text x="${mag * 0.7 * Math.cos(-a)}" y="${-mag * 0.7 * Math.sin(-a) - 6}" fill="${COLORS[1]}" font-size="12">I</text>
      <text x="-105" y="105" fill="currentColor" font-size="11">φ ${fmt(s.phase_angle, 1)}° · PF ${fmt(s.power_factor, 3)}</text>`;
  };
  onLive((changed) => { if (changed === id || changed === null) draw(); });
  const resize = () => { for (const ch of charts) ch.plot.setSize({ width: chartWidth(ch.card), height: 180 }); };
  window.addEventListener('resize', resize);
  const prev = cleanup; cleanup = () => { prev(); window.removeEventListener('resize', resize); for (const ch of charts) ch.plot.destroy(); };
  draw();
  const midnight = new Date(); midnight.setHours(0, 0, 0, 0);
  api(`/api/history/energy?circuit=${encodeURIComponent(id)}&period=day&tz=${encodeURIComponent(TZ)}&from=${midnight.getTime()}`)
    .then((e) => energy.replaceChildren(h('span', {}, 'Import'), h('b', {}, `${fmt(e.import_kwh, 3)} kWh`), h('span', {}, 'Export'), h('b', {}, `${fmt(e.export_kwh, 3)} kWh`)))
    .catch((e) => energy.replaceChildren(h('span', { class: 'err' }, e.message)));
}

// ---- history -------------------------------------------------------------------------------
const PRESETS = { hour: 3600e3, day: 86400e3, week: 7 * 86400e3, month: 30 * 86400e3, year: 365 * 86400e3 };
const hist = { circuits: [], quantities: ['real_power'], resolution: 'auto', preset: 'hour', from: null, to: null, zoom: null };
function range() {
  if (hist.zoom) return hist.zoom;
  if (hist.preset === 'custom' && hist.from && hist.to) return [hist.from, hist.to];
  const to = Date.now(); return [to - PRESETS[hist.preset || 'hour'], to];
}
function localInput(ms) { const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60e3); return d.toISOString().slice(0, 16); }
function csvHref() {
  const [from, to] = range();
  const p = new URLSearchParams({ from: String(Math.round(from)), to: String(Math.round(to)), resolution: hist.resolution === 'auto' ? 'raw' : hist.resolution, tz: TZ, units: 'comment' });
  if (hist.circuits.length) p.set('circuits', hist.circuits.join(','));
  if (hist.quantities.length) p.set('quantities', hist.quantities.join(','));
  return `/api/history/export.csv?${p}`;
}
async function knownCircuits() {
  try { return (await api('/api/history/circuits')).circuits.map((c) => ({ id: c.id, name: (live.circuits.get(c.id) || {}).name || c.name || c.id })); }
  catch { return [...live.circuits.values()].map((c) => ({ id: c.id, name: c.name })); }
}
function rangeControls(onChange, withResolution) {
  const presetBtns = Object.keys(PRESETS).map((p) => h('button', { class: hist.preset === p && !hist.zoom ? 'on' : '', 'data-preset': p, onclick: () => { hist.preset = p; hist.zoom = null; onChange(); } }, p));
  const from = h('input', { type: 'datetime-local', value: localInput(range()[0]) });
  const to = h('input', { type: 'datetime-local', value: localInput(range()[1]) });
  const apply = h('button', { onclick: () => { hist.preset = 'custom'; hist.zoom = null; hist.from = new Date(from.value).getTime(); hist.to = new Date(to.value).getTime(); onChange(); } }, 'Apply');
  const reset = h('button', { id: 'reset', onclick: () => { hist.zoom = null; onChange(); } }, 'Reset zoom');
  const res = h('select', { id: 'resolution', onchange: () => { hist.resolution = res.value; onChange(); } }, ['auto', 'raw', '1m', '15m', '1h', '1d'].map((r) => h('option', { value: r }, `resolution ${r}`)));
  res.value = hist.resolution;
  return h('div', { class: 'toolbar' }, presetBtns, from, '→', to, apply, reset, withResolution ? res : null,
    h('a', { href: csvHref(), id: 'csv', download: '' }, 'Download CSV'), h('span', { class: 'muted' }, TZ));
}
async function pickers(onChange) {
  const circuits = await knownCircuits();
  if (!hist.circuits.length && circuits.length) hist.circuits = [circuits[0].id];
  const box = (list, sel, key) => h('fieldset', { class: 'checks' }, list.map(([v, n]) => h('label', {}, h('input', { type: 'checkbox', value: v, checked: sel.includes(v), onchange: (e) => {
    hist[key] = e.target.checked ? [...hist[key], v] : hist[key].filter((x) => x !== v); onChange(); } }), ' ', n)));
  return h('div', {}, box(circuits.map((c) => [c.id, c.name]), hist.circuits, 'circuits'), box(Object.entries(QUANTITIES).map(([k, [n]]) => [k, n]), hist.quantities, 'quantities'));
}
async function history(main, id) {
  if (id) hist.circuits = [id];
  const top = h('div'), picks = h('div'), msg = h('div', { class: 'err' }), card = h('div', { class: 'card', id: 'history-chart' }), info = h('div', { class: 'muted', id: 'history-info' });
  main.append(h('h2', {}, 'History'), top, picks, msg, card, info);
  let plot; let seq = 0;
  const load = async () => {
    const mine = ++seq;
    top.replaceChildren(rangeControls(load, true));
    msg.textContent = '';
    if (!hist.circuits.length || !hist.quantities.length) { msg.textContent = 'Choose at least one circuit and one quantity.'; return; }
    const [from, to] = range(), width = chartWidth(card);
    const p = new URLSearchParams({ circuits: hist.circuits.join(','), quantities: hist.quantities.join(','), from: String(Math.round(from)), to: String(Math.round(to)), max_points: String(width), resolution: hist.resolution });
    const t0 = performance.now();
    let data;
    try { data = await api(`/api/history/series?${p}`); } catch (e) { if (mine === seq) msg.textContent = e.message; return; }
    if (mine !== seq) return;
    const tables = data.series.map((s) => [s.points.map((q) => q[0] / 1000), s.points.map((q) => q[1]), s.points.map((q) => q[2]), s.points.map((q) => q[3])]);
    const joined = tables.length ? uPlot.join(tables) : [[]];
    const units = [...new Set(data.series.map((s) => s.unit || '1'))];
    const series = [{}], bands = [];
    data.series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length], base = series.length, scale = s.unit || '1';
      const name = `${s.name || s.circuit} ${QUANTITIES[s.quantity] ? QUANTITIES[s.quantity][0] : s.quantity}`;
      series.push({ label: `${name} min`, stroke: color, width: 0, scale, points: { show: false } });
      series.push({ label: `${name} max`, stroke: color, width: 0, scale, points: { show: false } });
      series.push({ label: `${name} (${s.unit || '–'})`, stroke: color, width: 1.5, scale, spanGaps: false });
      bands.push({ series: [base + 1, base], fill: color + '33' });
    });
    if (plot) plot.destroy();
    plot = new uPlot({ width, height: 380, series, bands, scales: { x: { time: true, range: () => [from / 1000, to / 1000] } },
      axes: [{}, ...units.map((u, i) => ({ scale: u, label: u, side: i % 2 ? 1 : 3, grid: { show: i === 0 }, size: 60 }))],
      cursor: { drag: { x: true, y: false } },
      hooks: { setSelect: [(u) => { if (u.select.width > 5) { const a = u.posToVal(u.select.left, 'x') * 1000, b = u.posToVal(u.select.left + u.select.width, 'x') * 1000; hist.zoom = [a, b]; load(); } }] },
    }, joined, card);
    info.textContent = `${data.series.reduce((n, s) => n + s.points.length, 0)} points, resolution ${data.resolution}, ${Math.round(performance.now() - t0)} ms · drag to zoom`;
    card.dataset.points = String(data.series.reduce((n, s) => n + s.points.length, 0));
    card.dataset.from = String(Math.round(from)); card.dataset.to = String(Math.round(to));
  };
  picks.replaceChildren(await pickers(load));
  const prev = cleanup; cleanup = () => { prev(); if (plot) plot.destroy(); seq++; };
  load();
}

// ---- table ---------------------------------------------------------------------------------
async function table(main, id) {
  if (id) hist.circuits = [id];
  const circuits = await knownCircuits();
  if (!hist.circuits.length && circuits.length) hist.circuits = [circuits[0].id];
  const st = { pages: [null], page: 0, size: 100, sortKey: null, sortDir: 1, rows: [], next: null };
  const top = h('div'), msg = h('div', { class: 'err' }), wrap = h('div', { class: 'scroll' }), pager = h('div', { class: 'toolbar' });
  const pick = h('select', { id: 'table-circuit', onchange: () => { hist.circuits = [pick.value]; restart(); } }, circuits.map((c) => h('option', { value: c.id }, c.name)));
  pick.value = hist.circuits[0] || '';
  const size = h('select', { onchange: () => { st.size = Number(size.value); restart(); } }, [50, 100, 500, 1000].map((n) => h('option', { value: n }, `${n} rows`)));
  size.value = String(st.size);
  main.append(h('h2', {}, 'Table'), h('div', { class: 'toolbar' }, pick, size), top, msg, wrap, pager);
  const restart = () => { st.pages = [null]; st.page = 0; load(); };
  const render = (cols) => {
    const rows = [...st.rows];
    if (st.sortKey) rows.sort((a, b) => (a[st.sortKey] < b[st.sortKey] ? -st.sortDir : a[st.sortKey] > b[st.sortKey] ? st.sortDir : 0));
    const head = h('tr', {}, cols.map(([k, n]) => h('th', { onclick: () => { st.sortDir = st.sortKey === k ? -st.sortDir : 1; st.sortKey = k; render(cols); } }, n + (st.sortKey === k ? (st.sortDir > 0 ? ' ▲' : ' ▼') : ''))));
    wrap.replaceChildren(h('table', { id: 'data-table' }, h('thead', {}, head), h('tbody', {}, rows.map((r) => h('tr', {}, cols.map(([k]) => h('td', {}, k === 'ts_ms' ? new Date(r[k]).toLocaleString() : r[k])))))));
    pager.replaceChildren(h('button', { id: 'prev', disabled: st.page === 0, onclick: () => { st.page--; load(); } }, '‹ Previous'),
      h('span', { id: 'page' }, `page ${st.page + 1}`), h('button', { id: 'next', disabled: !st.next, onclick: () => { st.page++; st.pages[st.page] = st.next; load(); } }, 'Next ›'));
  };
  const load = async () => {
    top.replaceChildren(rangeControls(restart, true)); msg.textContent = '';
    const [from, to] = range(), circuit = hist.circuits[0];
    if (!circuit) { msg.textContent = 'No circuit has history yet.'; return; }
    try {
      if (hist.resolution === 'raw' || hist.resolution === 'auto') {
        const p = new URLSearchParams({ circuit, from: String(Math.round(from)), to: String(Math.round(to)), limit: String(st.size) });
        if (st.pages[st.page] != null) p.set('after_seq', String(st.pages[st.page]));
        const d = await api(`/api/history/raw?${p}`);
        st.rows = d.records; st.next = d.next_after_seq;
        render([['ts_ms', `time (${TZ})`], ['seq', 'seq'], ...Object.entries(QUANTITIES).map(([k, [n, u]]) => [k, u ? `${n} (${u})` : n])]);
      } else {
        const p = new URLSearchParams({ circuits: circuit, quantities: hist.quantities.join(',') || 'real_power', from: String(Math.round(from)), to: String(Math.round(to)), resolution: hist.resolution, max_points: '100000' });
        const d = await api(`/api/history/series?${p}`);
        const byTs = new Map();
        for (const s of d.series) for (const [t, mn, mx, mean] of s.points) { const r = byTs.get(t) || { ts_ms: t }; r[`${s.quantity}_min`] = mn; r[`${s.quantity}_max`] = mx; r[`${s.quantity}_mean`] = mean; byTs.set(t, r); }
        const all = [...byTs.values()].sort((a, b) => a.ts_ms - b.ts_ms);
        st.rows = all.slice(st.page * st.size, (st.page + 1) * st.size); st.next = (st.page + 1) * st.size < all.length ? st.page + 1 : null;
        render([['ts_ms', `time (${TZ})`], ...d.series.flatMap((s) => ['min', 'mean', 'max'].map((m) => [`${s.quantity}_${m}`, `${s.quantity} ${m} (${s.unit || '–'})`]))]);
      }
    } catch (e) { msg.textContent = e.message; }
  };
  load();
}

// ---- health --------------------------------------------------------------------------------
function health(main) {
  const wrap = h('div', { class: 'scroll' });
  main.append(h('h2', {}, 'Slave health'), wrap);
  const cols = [['polls', 'polls'], ['crc_errors', 'CRC errors'], ['nacks', 'NACKs'], ['bus_errors', 'bus errors'], ['retries', 'retries'], ['lost_records', 'lost records'], ['fifo_overflows', 'FIFO overflows'], ['restarts', 'restarts']];
  const render = () => {
    const rows = [...live.circuits.values()].sort((a, b) => a.name.localeCompare(b.name)).map((c) => {
      const hh = c.health || {}, i = c.info || {};
      const ok = hh.polls ? (100 * (hh.polls - (hh.crc_errors || 0) - (hh.nacks || 0))) / hh.polls : null;
      return h('tr', {}, h('td', {}, h('a', { href: `#/circuit/${c.id}` }, c.name), h('br'), h('span', { class: 'muted' }, `${c.id} · ${i.bus || '?'} @ 0x${(i.address || 0).toString(16)}`)),
        h('td', {}, h('span', { class: `badge ${status(c)}` }, status(c))), h('td', {}, i.firmware || '–'),
        h('td', {}, ok == null ? '–' : `${Math.max(0, ok).toFixed(2)} %`), cols.map(([k]) => h('td', {}, hh[k] ?? '–')),
        h('td', {}, hh.last_seen ? new Date(hh.last_seen).toLocaleString() : '–'));
    });
    wrap.replaceChildren(h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'circuit'), h('th', {}, 'status'), h('th', {}, 'firmware'), h('th', {}, 'poll success'), cols.map(([, n]) => h('th', {}, n)), h('th', {}, 'last seen'))), h('tbody', {}, rows)));
  };
  onLive((id) => { if (id === 'tick' || id === null) render(); }); render();
}

// ---- settings ------------------------------------------------------------------------------
async function settings(main) {
  const msg = h('div', { class: 'err', id: 'settings-msg' });
  main.append(h('h2', {}, 'Settings'), msg);
  let session;
  try { session = await api('/api/session'); } catch (e) { msg.textContent = e.message; return; }
  const post = (path, body) => api(path, { method: 'POST', headers: { 'content-type': 'application/json', 'x-csrf-token': session.csrf || '' }, body: JSON.stringify(body) });
  if (!session.logged_in) {
    const pw = h('input', { type: 'password', id: 'password', placeholder: 'password', autocomplete: 'current-password' });
    const form = h('form', { class: 'toolbar', onsubmit: async (e) => { e.preventDefault(); try { await post('/api/login', { password: pw.value }); route(); } catch (err) { msg.textContent = err.message; } } },
      pw, h('button', { class: 'primary', type: 'submit', id: 'login' }, 'Log in'));
    main.append(session.password_set ? form : h('p', {}, 'No password is set: run ', h('code', {}, 'pmon web --set-password'), ' on the host to allow changes.'),
      h('p', { class: 'muted' }, 'Reading is open to the LAN; changing names or calibration needs the password.'));
  } else {
    main.append(h('div', { class: 'toolbar' }, h('span', {}, 'Logged in.'), h('button', { id: 'logout', onclick: async () => { await post('/api/logout', {}); route(); } }, 'Log out')));
  }
  const ro = !session.logged_in;
  for (const c of [...live.circuits.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    const name = h('input', { value: c.name, disabled: ro, 'data-name': c.id, maxlength: 64 });
    const labels = h('input', { value: (c.labels || []).join(', '), disabled: ro, placeholder: 'labels, comma separated' });
    const cal = c.calibration || { voltage_gain: 1, current_gain: 1, phase_correction_deg: 0 };
    const num = (v) => h('input', { type: 'number', step: '0.001', value: v, disabled: ro, style: 'width:7em' });
    const vg = num(cal.voltage_gain), ig = num(cal.current_gain), ph = num(cal.phase_correction_deg);
    const out = h('span', { class: 'muted' });
    main.append(h('div', { class: 'card' }, h('h3', {}, c.id),
      h('div', { class: 'toolbar' }, 'Name', name, 'Labels', labels, h('button', { disabled: ro, 'data-save': c.id, onclick: async () => {
        try { await post(`/api/settings/circuits/${c.id}`, { name: name.value, labels: labels.value.split(',').map((s) => s.trim()).filter(Boolean) }); out.textContent = 'saved'; msg.textContent = ''; } catch (e) { msg.textContent = e.message; } } }, 'Save')),
      h('div', { class: 'toolbar' }, 'Voltage gain', vg, 'Current gain', ig, 'Phase correction (°)', ph, h('button', { disabled: ro, onclick: async () => {
        try { await post(`/api/settings/circuits/${c.id}/calibrate`, { voltage_gain: Number(vg.value), current_gain: Number(ig.value), phase_correction_deg: Number(ph.value) }); out.textContent = 'calibration sent'; msg.textContent = ''; } catch (e) { msg.textContent = e.message; } } }, 'Send calibration'), out)));
  }
}

window.addEventListener('hashchange', route);
connect();
route();
