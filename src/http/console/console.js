// monserv operator console. Plain script, no libraries: it must work on a plant
// network with no internet, and it is built into the binary.
//
// Data: `/ws` (metrics_update every poll round, alert on every transition) and the
// REST API (history for trends, active alerts, alert history, silences, rules).
// Every string that comes from a host, a rule or a user is put into the page as
// text (textContent, attribute values), never parsed as HTML.
"use strict";

// ---- small helpers ----------------------------------------------------------

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "onclick") e.addEventListener("click", v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
function setText(node, text) {
  text = String(text);
  if (node.textContent !== text) node.textContent = text;
}
const pct = (v) => (typeof v === "number" && isFinite(v) ? v.toFixed(1) + "%" : "–");
function bytes(b) {
  if (typeof b !== "number" || !isFinite(b)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return (i ? b.toFixed(1) : String(b)) + " " + units[i];
}
function duration(s) {
  if (typeof s !== "number" || !isFinite(s) || s < 0) return "–";
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m + "m " + Math.floor(s % 60) + "s";
}
const clock = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "–");
const stamp = (ms) => (ms ? new Date(ms).toLocaleString() : "–");
// The target an alert key belongs to: keys are `<target key>/<check>`, and target
// keys (URLs) have slashes of their own, so the longest known prefix wins.
function targetOf(key) {
  key = String(key);
  for (let i = key.lastIndexOf("/"); i > 0; i = key.lastIndexOf("/", i - 1)) {
    if (S.hosts.has(key.slice(0, i))) return key.slice(0, i);
  }
  return null;
}

// ---- state ------------------------------------------------------------------

const S = {
  token: "",
  interval: 4, // seconds between poll rounds (from /api/v1/health)
  hosts: new Map(), // target key -> record (see upsert)
  list: [], // the fleet as shown: filtered and sorted
  dirty: true, // the list must be rebuilt before the next render
  sort: { by: "problem", dir: 1 },
  active: [], // alerts firing now (REST)
  alerting: new Set(), // target keys with an active alert
  lastMessage: 0, // Date.now() of the last metrics_update
  ws: null,
  retryTimer: null,
  attempt: 0,
  retryAt: 0,
  view: "fleet",
  detail: null, // host detail: { key, times, series: Map(name -> values), errors }
  perf: { firstRender: null, updates: 0, lastUpdateMs: 0, maxUpdateMs: 0, totalUpdateMs: 0, rowsInDom: 0 },
};
window.__console = S.perf; // read by the browser tests and the benchmark

// The token: from `?token=` once (then dropped from the address bar), else from
// this tab's session storage. Never in localStorage: it ends with the tab.
(function initToken() {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("token");
  if (fromUrl) {
    sessionStorage.setItem("monserv.token", fromUrl);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }
  S.token = sessionStorage.getItem("monserv.token") || "";
})();

class ApiError extends Error {}

// One REST call: the token as a Bearer header, `{success, data}` unwrapped, the
// server's error message kept. A 401 asks for the token.
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (S.token) headers.Authorization = "Bearer " + S.token;
  let r;
  try {
    r = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  } catch (e) {
    throw new ApiError("monserv cannot be reached");
  }
  if (r.status === 401) {
    askToken();
    throw new ApiError("this needs the access token");
  }
  let body = null;
  try { body = await r.json(); } catch (e) { /* not JSON: the status says it */ }
  if (!r.ok || !body || body.success === false) {
    throw new ApiError((body && body.error) || "HTTP " + r.status);
  }
  return body.data;
}

// ---- theme ------------------------------------------------------------------

const THEMES = ["auto", "dark", "light"];
let colours = null; // chart colours of the current theme, read from the CSS
function applyTheme(theme) {
  if (theme === "auto") document.documentElement.removeAttribute("data-theme");
  else document.documentElement.setAttribute("data-theme", theme);
  setText($("theme"), "Theme: " + theme);
  colours = null;
  redrawCharts();
  S.dirty = true;
  renderFleet();
}
function themeColours() {
  if (!colours) {
    const css = getComputedStyle(document.documentElement);
    const v = (n) => css.getPropertyValue(n).trim();
    colours = { grid: v("--grid"), muted: v("--muted"), line: v("--line"), line2: v("--line2"), bad: v("--bad") };
  }
  return colours;
}

// ---- charts (canvas, hand-written) --------------------------------------------

// A line chart of one series: `times` in ms, `values` numbers or null (a gap).
// The y axis runs from 0 to `max` (or the data's maximum, rounded up).
function drawChart(canvas, times, values, opts) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const c = canvas.getContext("2d");
  c.setTransform(dpr, 0, 0, dpr, 0, 0);
  c.clearRect(0, 0, w, h);
  const col = themeColours();
  const small = opts.spark;
  const left = small ? 1 : 38, right = small ? 1 : 6, top = small ? 2 : 8, bottom = small ? 2 : 18;
  let max = opts.max;
  if (!max) {
    max = 0;
    for (const v of values) if (v !== null && v > max) max = v;
    max = max > 0 ? niceCeil(max) : 1;
  }
  const t1 = opts.end || (times.length ? times[times.length - 1] : Date.now());
  const t0 = opts.start || (times.length ? times[0] : t1 - 3600e3);
  const span = Math.max(1, t1 - t0);
  const x = (t) => left + ((t - t0) / span) * (w - left - right);
  const y = (v) => top + (1 - Math.min(v, max) / max) * (h - top - bottom);
  if (!small) {
    c.font = "11px system-ui, sans-serif";
    c.strokeStyle = col.grid;
    c.fillStyle = col.muted;
    c.lineWidth = 1;
    c.textAlign = "right";
    c.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4, yy = Math.round(y(v)) + 0.5;
      c.beginPath(); c.moveTo(left, yy); c.lineTo(w - right, yy); c.stroke();
      c.fillText(opts.format ? opts.format(v) : String(v), left - 4, yy);
    }
    c.textAlign = "center";
    c.textBaseline = "bottom";
    for (let i = 0; i <= 3; i++) {
      const t = t0 + (span * i) / 3;
      c.textAlign = i === 0 ? "left" : i === 3 ? "right" : "center";
      c.fillText(new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }), x(t), h);
    }
  }
  c.strokeStyle = opts.colour || col.line;
  c.lineWidth = small ? 1.2 : 1.6;
  c.beginPath();
  let pen = false;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || v === undefined || !isFinite(v)) { pen = false; continue; }
    const xx = x(times[i]), yy = y(v);
    if (pen) c.lineTo(xx, yy); else c.moveTo(xx, yy);
    pen = true;
  }
  c.stroke();
}
function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// ---- the fleet --------------------------------------------------------------

const SPARK_POINTS = 90; // CPU values kept per host for the fleet's sparklines

function upsert(key, m, newestMs) {
  let h = S.hosts.get(key);
  if (!h) {
    h = { key, spark: [], sparkTimes: [] };
    S.hosts.set(key, h);
  }
  h.m = m;
  h.name = String(m.hostname || key);
  h.lname = h.name.toLowerCase();
  h.lkey = key.toLowerCase();
  h.err = m.error ? String(m.error) : "";
  h.seen = Date.parse(m.generatedAtUtc) || 0;
  h.cpu = m.cpu && typeof m.cpu.usedPercent === "number" ? m.cpu.usedPercent : null;
  h.mem = m.memory && typeof m.memory.usedPercent === "number" ? m.memory.usedPercent : null;
  h.disk = null;
  h.diskMount = "";
  for (const d of Array.isArray(m.disks) ? m.disks : []) {
    if (typeof d.usedPercent === "number" && (h.disk === null || d.usedPercent > h.disk)) {
      h.disk = d.usedPercent;
      h.diskMount = String(d.mountpoint);
    }
  }
  h.uptime = typeof m.uptimeSeconds === "number" ? m.uptimeSeconds : null;
  const offline = m.status === "offline";
  if (offline && !h.uptime) {
    // Never answered: no values to show (a host that answered before keeps its last).
    h.cpu = h.mem = h.disk = h.uptime = null;
  }
  // Stale: the host's newest data is three rounds older than the fleet's newest
  // (both by the server's clock, so the browser's clock does not matter).
  const stale = !offline && newestMs - h.seen > 3 * S.interval * 1000 + 1000;
  h.state = offline ? "offline" : stale ? "stale" : "online";
  if (h.state === "online" && h.cpu !== null && h.seen !== h.sparkTimes[h.sparkTimes.length - 1]) {
    h.spark.push(h.cpu);
    h.sparkTimes.push(h.seen);
    if (h.spark.length > SPARK_POINTS) { h.spark.shift(); h.sparkTimes.shift(); }
  }
}

function rank(h) {
  if (h.state === "offline") return 0;
  if (h.state === "stale") return 1;
  if (S.alerting.has(h.key)) return 2;
  if (Math.max(h.cpu || 0, h.mem || 0, h.disk || 0) >= 90) return 3;
  return 4;
}

const SORTS = {
  problem: (a, b) => a.rank - b.rank || cmp(a.lname, b.lname) || cmp(a.key, b.key),
  name: (a, b) => cmp(a.lname, b.lname) || cmp(a.key, b.key),
  cpu: (a, b) => num(a.cpu, b.cpu),
  mem: (a, b) => num(a.mem, b.mem),
  disk: (a, b) => num(a.disk, b.disk),
  uptime: (a, b) => num(a.uptime, b.uptime),
  seen: (a, b) => a.seen - b.seen,
};
const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
const num = (a, b) => (a === null ? -1 : a) - (b === null ? -1 : b);

function rebuildList() {
  const q = $("filter").value.trim().toLowerCase();
  const which = $("state-filter").value;
  const out = [];
  let online = 0, offline = 0, stale = 0, alerting = 0;
  for (const h of S.hosts.values()) {
    h.rank = rank(h);
    if (h.state === "online") online++;
    else if (h.state === "offline") offline++;
    else stale++;
    if (S.alerting.has(h.key)) alerting++;
    if (which === "problems" && h.rank > 3) continue;
    if ((which === "online" || which === "offline" || which === "stale") && h.state !== which) continue;
    if (q && !h.lname.includes(q) && !h.lkey.includes(q) && !h.err.toLowerCase().includes(q)) continue;
    out.push(h);
  }
  const by = SORTS[S.sort.by] || SORTS.problem;
  const dir = S.sort.dir;
  out.sort((a, b) => dir * by(a, b) || SORTS.name(a, b));
  S.list = out;
  S.dirty = false;
  setText($("fleet-summary"), S.hosts.size + " targets · " + online + " online · " + offline + " offline · " + stale +
    " stale · " + alerting + " with active alerts" + (out.length !== S.hosts.size ? " · " + out.length + " shown" : ""));
  $("fleet").setAttribute("aria-rowcount", String(out.length + 1));
  $("fleet-empty").hidden = out.length > 0 || S.hosts.size === 0;
}

let rowPx = 36;
const pool = [];
function makeRow() {
  const cells = {};
  const row = el("div", { role: "row", class: "frow" });
  const cell = (name, cls, ...kids) => { const c = el("span", { role: "cell", class: cls }, ...kids); cells[name] = c; row.append(c); return c; };
  cells.badge = el("span", { class: "badge" });
  cell("state", "c-state", cells.badge);
  cells.link = el("a", {});
  cells.sub = el("small", {});
  cell("name", "c-name", cells.link, cells.sub);
  cell("cpu", "c-num");
  cells.spark = el("canvas", { "aria-hidden": "true" });
  cell("sparkCell", "c-spark", cells.spark);
  cell("mem", "c-num");
  cell("disk", "c-num");
  cell("uptime", "c-up");
  cell("seen", "c-seen");
  cell("err", "c-err");
  row._cells = cells;
  return row;
}
function fillRow(row, h, index) {
  const c = row._cells;
  if (row._key !== h.key) {
    row._key = h.key;
    c.link.href = "#host/" + encodeURIComponent(h.key);
  }
  row.setAttribute("aria-rowindex", String(index + 2));
  row.style.transform = "translateY(" + index * rowPx + "px)";
  const state = h.rank === 2 ? "alerting" : h.state;
  setText(c.badge, state);
  if (c.badge.className !== "badge " + state) c.badge.className = "badge " + state;
  setText(c.link, h.name);
  setText(c.sub, h.key !== h.name ? h.key : "");
  setText(c.cpu, pct(h.cpu));
  c.cpu.classList.toggle("hot", (h.cpu || 0) >= 90);
  setText(c.mem, pct(h.mem));
  c.mem.classList.toggle("hot", (h.mem || 0) >= 90);
  setText(c.disk, h.disk === null ? "–" : pct(h.disk) + " " + h.diskMount);
  c.disk.classList.toggle("hot", (h.disk || 0) >= 90);
  setText(c.uptime, duration(h.uptime));
  setText(c.seen, clock(h.seen));
  setText(c.err, h.err || (h.state === "stale" ? "no new data for " + duration((S.newest - h.seen) / 1000) : ""));
  if (c.err.title !== h.err) c.err.title = h.err;
  if (row._sparkAt !== h.sparkTimes[h.sparkTimes.length - 1] || row._sparkKey !== h.key || row._theme !== colours) {
    drawChart(c.spark, h.sparkTimes, h.spark, { spark: true, max: 100 });
    row._sparkAt = h.sparkTimes[h.sparkTimes.length - 1];
    row._sparkKey = h.key;
    row._theme = themeColours();
  }
}

// Only the rows in view (and a few around them) are in the DOM: 1000 targets cost
// about as much as 40.
function renderFleet() {
  if (S.view !== "fleet") return;
  if (S.dirty) rebuildList();
  const scroller = $("fleet-scroll"), rows = $("fleet-rows");
  const list = S.list;
  rows.style.height = list.length * rowPx + "px";
  const top = scroller.scrollTop, height = scroller.clientHeight || 600;
  const first = Math.max(0, Math.floor(top / rowPx) - 8);
  const last = Math.min(list.length, Math.ceil((top + height) / rowPx) + 8);
  const need = last - first;
  while (pool.length < need) pool.push(makeRow());
  for (let i = 0; i < need; i++) {
    const row = pool[i];
    fillRow(row, list[first + i], first + i);
    if (!row.isConnected) rows.append(row);
  }
  for (let i = need; i < pool.length; i++) if (pool[i].isConnected) pool[i].remove();
  S.perf.rowsInDom = need;
}
let scrollQueued = false;
function onScroll() {
  if (scrollQueued) return;
  scrollQueued = true;
  requestAnimationFrame(() => { scrollQueued = false; renderFleet(); });
}

function onMetrics(data) {
  const t0 = performance.now();
  S.lastMessage = Date.now();
  let newest = 0;
  const entries = Object.entries(data || {});
  for (const [, m] of entries) {
    const t = m && Date.parse(m.generatedAtUtc);
    if (t > newest) newest = t;
  }
  S.newest = newest;
  const seen = new Set();
  for (const [key, m] of entries) {
    if (!m || typeof m !== "object") continue;
    upsert(key, m, newest);
    seen.add(key);
  }
  // Targets no longer configured (a reload of monserv) leave the fleet.
  let gone = false;
  for (const key of S.hosts.keys()) if (!seen.has(key)) { S.hosts.delete(key); gone = true; }
  if (gone || S.alertingStale) updateAlerting();
  S.dirty = true;
  renderFleet();
  if (S.detail && S.hosts.has(S.detail.key)) detailLive(S.hosts.get(S.detail.key));
  const ms = performance.now() - t0;
  const p = S.perf;
  p.updates++;
  p.lastUpdateMs = ms;
  p.totalUpdateMs += ms;
  if (ms > p.maxUpdateMs) p.maxUpdateMs = ms;
  if (p.firstRender === null && S.hosts.size) p.firstRender = performance.now();
  p.targets = S.hosts.size;
  tick();
}

// ---- host detail ------------------------------------------------------------

const DETAIL_POINTS = 2000;

async function openHost(key) {
  S.detail = { key, times: [], series: new Map(), errors: [], charts: new Map() };
  const d = S.detail;
  const h = S.hosts.get(key);
  setText($("host-title"), h ? h.name : key);
  setText($("host-key"), key);
  $("charts").replaceChildren();
  setText($("trend-note"), "Loading the history…");
  if (h) detailLive(h);
  try {
    const data = await api("/api/v1/history?target=" + encodeURIComponent(key));
    if (S.detail !== d) return;
    const t = (data.targets || []).find((x) => x.key === key);
    const minutes = Math.round((data.window_seconds || 3600) / 60);
    if (t) {
      d.times = t.times_ms.slice();
      for (const [name, values] of Object.entries(t.series)) d.series.set(name, values.slice());
      d.errors = t.times_ms.map((ms, i) => [ms, t.errors[i]]).filter((x) => x[1]);
      setText($("trend-note"), "The last " + minutes + " minutes kept by monserv, then live.");
    } else {
      setText($("trend-note"), "No history for this target yet; live from now.");
    }
  } catch (e) {
    if (S.detail !== d) return;
    setText($("trend-note"), "History unavailable (" + e.message + "); live from now.");
  }
  const live = S.hosts.get(key);
  if (live) detailLive(live, true);
  renderErrors();
  renderHostAlerts();
}

// A new round for the host on screen: the facts, the tables and a point per chart.
function detailLive(h, force) {
  const d = S.detail;
  const m = h.m;
  setText($("host-title"), h.name);
  facts(h);
  fillTable($("host-disks"), (m.disks || []).map((x) => [x.mountpoint, { text: x.device, cls: "opt" }, { text: x.fstype, cls: "opt" },
    { text: pct(x.usedPercent), cls: "num" + (x.usedPercent >= 90 ? " hot" : "") },
    { text: bytes(x.free), cls: "num opt" }, { text: bytes(x.total), cls: "num" }]));
  fillTable($("host-procs"), (m.topProcsByMem || []).map((p) => [{ text: p.pid, cls: "num" }, p.name, { text: p.username, cls: "opt" },
    { text: bytes(p.rssBytes), cls: "num" }, { text: p.cmdline, title: p.cmdline, cls: "clip" }]));
  if (h.state !== "offline" && h.seen && h.seen > (d.times[d.times.length - 1] || 0)) {
    d.times.push(h.seen);
    const point = new Map([["cpu.used_percent", h.cpu], ["memory.used_percent", h.mem]]);
    for (const x of m.disks || []) point.set("disk.used_percent:" + x.mountpoint, x.usedPercent);
    for (const name of new Set([...d.series.keys(), ...point.keys()])) {
      if (!d.series.has(name)) d.series.set(name, new Array(d.times.length - 1).fill(null));
      const v = point.get(name);
      d.series.get(name).push(typeof v === "number" ? v : null);
    }
    if (d.times.length > DETAIL_POINTS) {
      const cut = d.times.length - DETAIL_POINTS;
      d.times.splice(0, cut);
      for (const v of d.series.values()) v.splice(0, cut);
    }
    force = true;
  } else if (h.state === "offline" && h.err && (!d.errors.length || d.errors[d.errors.length - 1][0] < h.seen)) {
    d.errors.push([Date.now(), h.err]);
    renderErrors();
  }
  if (force) redrawCharts();
}

function facts(h) {
  const m = h.m;
  const rows = [
    ["Status", h.state + (h.err ? ": " + h.err : "")],
    ["CPU", m.cpu && m.cpu.modelName ? m.cpu.modelName : "–"],
    ["Cores", m.cpu && m.cpu.cores ? m.cpu.cores : "–"],
    ["CPU used", pct(h.cpu)],
    ["Memory", pct(h.mem) + " of " + bytes(m.memory && m.memory.total)],
    ["Uptime", duration(h.uptime)],
    ["Last poll", stamp(h.seen)],
  ];
  const dl = $("host-facts");
  if (dl.children.length !== rows.length) {
    dl.replaceChildren(...rows.map(() => el("div", {}, el("dt"), el("dd"))));
  }
  rows.forEach(([k, v], i) => {
    setText(dl.children[i].firstChild, k);
    setText(dl.children[i].lastChild, v);
  });
}

// Cells are text, or {text, cls, title}.
function fillTable(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows.map((r) => el("tr", {}, ...r.map((c) =>
    typeof c === "object" && c !== null ? el("td", { class: c.cls, title: c.title }, c.text) : el("td", {}, c)))));
}

const CHARTS = [
  ["cpu.used_percent", "CPU used"],
  ["memory.used_percent", "Memory used"],
];
function redrawCharts() {
  const d = S.detail;
  if (!d || S.view !== "host") return;
  const names = CHARTS.slice();
  for (const name of d.series.keys()) {
    if (name.startsWith("disk.used_percent:")) names.push([name, "Disk " + name.slice("disk.used_percent:".length)]);
  }
  const box = $("charts");
  const end = d.times[d.times.length - 1] || Date.now();
  const start = Math.min(d.times[0] || end, end - 5 * 60e3);
  for (const [name, title] of names) {
    let chart = d.charts.get(name);
    if (!chart) {
      const canvas = el("canvas", { role: "img" });
      const now = el("span");
      const fig = el("figure", { class: "chart", "data-series": name }, el("figcaption", {}, title, now), canvas);
      chart = { fig, canvas, now };
      d.charts.set(name, chart);
      box.append(fig);
    }
    const values = d.series.get(name) || [];
    let last = null, lo = null, hi = null;
    for (const v of values) {
      if (v === null) continue;
      last = v;
      lo = lo === null || v < lo ? v : lo;
      hi = hi === null || v > hi ? v : hi;
    }
    setText(chart.now, last === null ? "no data" : "now " + pct(last));
    chart.canvas.setAttribute("aria-label", title + " over " + duration((end - start) / 1000) + ": " +
      (last === null ? "no data" : "now " + pct(last) + ", min " + pct(lo) + ", max " + pct(hi)));
    chart.canvas.dataset.points = String(values.filter((v) => v !== null).length);
    drawChart(chart.canvas, d.times, values, { max: 100, start, end, format: (v) => v + "%" });
  }
}

function renderErrors() {
  const d = S.detail;
  if (!d) return;
  // Runs of the same error become one line: from, to, how many rounds.
  const runs = [];
  for (const [ms, err] of d.errors) {
    const r = runs[runs.length - 1];
    if (r && r.err === err && ms - r.to <= 3 * S.interval * 1000 + 1000) { r.to = ms; r.n++; }
    else runs.push({ from: ms, to: ms, err, n: 1 });
  }
  const items = runs.reverse().slice(0, 50).map((r) => el("li", {}, el("strong", {}, r.err), " ",
    el("small", {}, stamp(r.from) + (r.n > 1 ? " – " + clock(r.to) + " (" + r.n + " rounds)" : ""))));
  $("host-errors").replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "No errors in the history.")]));
}

async function renderHostAlerts() {
  const d = S.detail;
  if (!d) return;
  const items = S.active.filter((a) => targetOf(a.key) === d.key).map((a) =>
    el("li", { class: "alert" }, el("strong", {}, a.subject), " ", a.message, " ", el("small", {}, "since " + stamp(a.since * 1000))));
  $("host-alerts").replaceChildren(...(items.length ? items : [el("li", { class: "empty" }, "No active alert on this host.")]));
}

// ---- alerts and silences ------------------------------------------------------

async function loadActive() {
  try {
    const data = await api("/api/v1/alerts/active");
    S.active = data.alerts || [];
  } catch (e) {
    return;
  }
  updateAlerting();
  setText($("active-count"), S.active.length ? String(S.active.length) : "");
  const body = $("active").tBodies[0];
  body.replaceChildren(...S.active.map((a) => el("tr", { class: "alert" },
    el("td", {}, stamp(a.since * 1000)),
    el("td", {}, el("strong", {}, a.subject), el("br"), a.message),
    el("td", { class: "opt" }, a.rule),
    el("td", { class: "clip", title: a.key }, a.key),
    el("td", {}, el("button", { type: "button", onclick: () => prefillSilence(a.key) }, "Silence…")))));
  $("no-active").hidden = S.active.length > 0;
  S.dirty = true;
  renderFleet();
  renderHostAlerts();
}
function updateAlerting() {
  S.alerting = new Set();
  for (const a of S.active) {
    const t = targetOf(a.key);
    if (t) S.alerting.add(t);
  }
  // Alerts that arrived before their target's first round are matched again later.
  S.alertingStale = S.active.length > 0 && S.hosts.size === 0;
}
let activeTimer = null;
const refreshActive = () => { clearTimeout(activeTimer); activeTimer = setTimeout(loadActive, 300); };

function onAlert(msg) {
  const list = $("live-alerts");
  const kind = msg.alert_type === "recovery" ? "recovery" : "alert";
  $("no-live")?.remove();
  list.prepend(el("li", { class: kind }, el("strong", {}, msg.subject), " ", msg.message, " ", el("small", {}, new Date().toLocaleTimeString())));
  while (list.childElementCount > 200) list.lastChild.remove();
  refreshActive();
}

async function loadHistory(event) {
  if (event) event.preventDefault();
  const since = Number($("history-since").value);
  const host = $("history-host").value.trim().toLowerCase();
  const rule = $("history-rule").value.trim().toLowerCase();
  const q = "?limit=1000" + (since ? "&since=" + Math.floor(Date.now() / 1000 - since) : "");
  let data;
  try {
    data = await api("/api/v1/alerts/history" + q);
  } catch (e) {
    setText($("history-note"), "History unavailable: " + e.message);
    return;
  }
  const rows = (data.transitions || []).filter((t) =>
    (!host || String(t.key).toLowerCase().includes(host) || String(t.subject).toLowerCase().includes(host)) &&
    (!rule || String(t.rule).toLowerCase().includes(rule))).reverse();
  const shown = rows.slice(0, 500);
  const body = $("history").tBodies[0];
  body.replaceChildren(...shown.map((t) => el("tr", { class: t.alert_type + (t.silenced ? " silenced" : "") },
    el("td", {}, stamp(t.time * 1000)),
    el("td", { class: "opt" }, t.alert_type + (t.silenced ? " (silenced)" : "") + (t.repeat ? " (repeat)" : "")),
    el("td", {}, el("strong", {}, t.subject), el("br"), t.message),
    el("td", { class: "opt" }, t.rule),
    el("td", { class: "clip opt", title: t.key }, t.key))));
  setText($("history-note"), rows.length + " transitions" + (rows.length > shown.length ? ", newest 500 shown" : "") +
    " (monserv keeps the newest 1000).");
}

function matcherRow(name, value) {
  const select = el("select", { "aria-label": "Match on" },
    ...["host", "rule", "key", "subject"].map((n) => el("option", { value: n, selected: n === name }, n)));
  const input = el("input", { "aria-label": "Value (* matches anything)", value: value || "", required: true, size: 24 });
  const row = el("div", { class: "matcher" }, select, " = ", input, " ");
  row.append(el("button", { type: "button", onclick: () => { if ($("matchers").children.length > 1) row.remove(); } }, "Remove"));
  return row;
}
function prefillSilence(key) {
  $("matchers").replaceChildren(matcherRow("key", key));
  location.hash = "#alerts";
  $("silence-duration").focus();
}
async function createSilence(event) {
  event.preventDefault();
  const matchers = [...$("matchers").children].map((r) => ({ name: r.querySelector("select").value, value: r.querySelector("input").value }));
  const body = { matchers, duration: $("silence-duration").value.trim(), comment: $("silence-comment").value };
  const by = $("silence-by").value.trim();
  if (by) body.created_by = by;
  const out = $("silence-result");
  try {
    const s = await api("/api/v1/silences", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    out.className = "result ok";
    setText(out, "Silence " + s.id + " created, until " + stamp(s.ends_at * 1000) + ".");
    loadSilences();
  } catch (e) {
    out.className = "result error";
    setText(out, "Not created: " + e.message);
  }
}
async function loadSilences() {
  let data;
  try { data = await api("/api/v1/silences"); } catch (e) { return; }
  const body = $("silences").tBodies[0];
  const list = data.silences || [];
  body.replaceChildren(...list.map((s) => el("tr", { "data-id": s.id },
    el("td", {}, s.state || ""),
    el("td", {}, (s.matchers || []).map((m) => m.name + "=" + m.value).join(", ")),
    el("td", {}, stamp(s.ends_at * 1000)),
    el("td", { class: "opt" }, (s.comment || "") + (s.created_by ? " (" + s.created_by + ")" : "")),
    el("td", {}, s.state === "expired" ? "" : el("button", { type: "button", class: "danger", onclick: (e) => expireSilence(s.id, e.currentTarget) }, "Expire")))));
  if (!list.length) body.append(el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No silences.")));
}
// The button is disabled until the list is reloaded: one click, one DELETE.
async function expireSilence(id, button) {
  if (button) button.disabled = true;
  const out = $("silence-result");
  try {
    await api("/api/v1/silences/" + encodeURIComponent(id), { method: "DELETE" });
    out.className = "result ok";
    setText(out, "Silence " + id + " expired.");
  } catch (e) {
    out.className = "result error";
    setText(out, "Not expired: " + e.message);
  }
  loadSilences();
}

// ---- rules ------------------------------------------------------------------

async function loadRules() {
  let data;
  try { data = await api("/api/v1/rules"); } catch (e) { setText($("engine"), "Rules unavailable: " + e.message); return; }
  const eng = data.engine || {};
  setText($("engine"), "Directory " + data.dir + " · " + eng.rounds_evaluated + " rounds evaluated, " + eng.rounds_skipped +
    " skipped · last round " + (eng.last_round_micros / 1000).toFixed(1) + " ms of a " + eng.round_budget_ms + " ms budget");
  const body = $("rules").tBodies[0];
  body.replaceChildren(...(data.rules || []).map((r) => {
    const del = el("button", { type: "button", class: "danger" }, "Delete");
    del.addEventListener("click", () => deleteRule(r.name, del));
    return el("tr", { "data-rule": r.name },
      el("td", {}, el("strong", {}, r.name), el("br"), el("small", {}, r.version + " · " + r.source)),
      el("td", { class: r.status === "ok" ? "" : "hot" }, r.status),
      el("td", { class: "num opt" }, r.evaluations),
      el("td", { class: "num opt" }, (r.last_eval_micros / 1000).toFixed(2) + " ms"),
      el("td", { class: "num" }, r.failures),
      el("td", { class: "num opt" }, r.events_dropped + r.events_truncated),
      el("td", { class: "num opt" }, r.firing),
      el("td", { title: r.last_error || "" }, r.last_error || (r.warning || "")),
      el("td", {},
        el("button", { type: "button", onclick: () => backtest(r.name) }, "Backtest"), " ",
        el("button", { type: "button", onclick: () => { $("rule-name").value = r.name; $("rule-file").focus(); } }, "Replace"), " ",
        r.source === "builtin" ? "" : del));
  }));
  $("rejected").replaceChildren(...(data.rejected || []).map((r) =>
    el("li", { class: "alert" }, el("strong", {}, r.name), " rejected: ", r.reason)));
}

async function uploadRule(event) {
  event.preventDefault();
  const name = $("rule-name").value.trim();
  const file = $("rule-file").files[0];
  const settings = $("rule-settings").value;
  const out = $("rule-result");
  if (!file && !settings.trim()) {
    out.className = "result error";
    setText(out, "Choose a .wasm file, or write settings (TOML), or both.");
    return;
  }
  const path = "/api/v1/rules/" + encodeURIComponent(name);
  try {
    let info = null;
    if (file) info = await api(path, { method: "PUT", headers: { "Content-Type": "application/wasm" }, body: await file.arrayBuffer() });
    if (settings.trim()) info = await api(path, { method: "PUT", headers: { "Content-Type": "application/toml" }, body: settings });
    out.className = "result ok";
    setText(out, "Rule " + name + " is live" + (info && info.version ? " (version " + info.version + ")" : "") + ".");
  } catch (e) {
    out.className = "result error";
    setText(out, "Rule " + name + " not changed: " + e.message);
  }
  loadRules();
}

async function deleteRule(name, button) {
  // Two steps instead of confirm(): keyboard-friendly and visible.
  if (button.dataset.armed !== "1") {
    button.dataset.armed = "1";
    setText(button, "Really delete?");
    setTimeout(() => { button.dataset.armed = ""; setText(button, "Delete"); }, 5000);
    return;
  }
  const out = $("rule-result");
  try {
    await api("/api/v1/rules/" + encodeURIComponent(name), { method: "DELETE" });
    out.className = "result ok";
    setText(out, "Rule " + name + " deleted.");
  } catch (e) {
    out.className = "result error";
    setText(out, "Rule " + name + " not deleted: " + e.message);
  }
  loadRules();
}

async function backtest(name) {
  const box = $("backtest");
  box.hidden = false;
  setText($("backtest-title"), "Backtest of " + name);
  setText($("backtest-summary"), "Replaying the history kept by monserv…");
  $("backtest-rows").tBodies[0].replaceChildren();
  let r;
  try {
    r = await api("/api/v1/rules/" + encodeURIComponent(name) + "/backtest", { method: "POST" });
  } catch (e) {
    setText($("backtest-summary"), "Backtest failed: " + e.message);
    return;
  }
  setText($("backtest-summary"), r.rounds + " rounds (" + (r.from || "–") + " to " + (r.to || "–") + "): " + r.alerts + " alerts, " +
    r.recoveries + " recoveries, " + r.firing_at_end + " firing at the end, " + r.failures + " failed rounds.");
  fillTable($("backtest-rows"), (r.transitions || []).slice(0, 500).map((t) => [t.time, t.kind, t.subject + " — " + t.message, { text: t.key, cls: "clip", title: t.key }]));
  box.scrollIntoView({ block: "nearest" });
}

// ---- the connection -----------------------------------------------------------

// (Re)connects now: a pending retry is cancelled and an open socket replaced, so
// there is never more than one.
function connect() {
  clearTimeout(S.retryTimer);
  if (S.ws) {
    const old = S.ws;
    S.ws = null;
    old.close();
  }
  const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws" +
    (S.token ? "?token=" + encodeURIComponent(S.token) : "");
  let ws;
  try { ws = new WebSocket(url); } catch (e) { retry(); return; }
  S.ws = ws;
  S.retryAt = 0;
  ws.onopen = () => {
    S.attempt = 0;
    tick();
    refreshAll();
  };
  ws.onmessage = (event) => {
    if (S.ws !== ws) return;
    let msg;
    try { msg = JSON.parse(event.data); } catch (e) { return; }
    if (msg && msg.type === "metrics_update") onMetrics(msg.data);
    else if (msg && msg.type === "alert") onAlert(msg);
  };
  ws.onclose = () => { if (S.ws === ws) { S.ws = null; retry(); } };
}
// Exponential backoff with full jitter (1 s, 2 s, 4 s … 30 s, each 50-100%): a
// restarted monserv is not met by every console at the same instant.
function retry() {
  const base = Math.min(30000, 1000 * Math.pow(2, S.attempt));
  S.attempt++;
  const wait = Math.round(base * (0.5 + Math.random() * 0.5));
  S.retryAt = Date.now() + wait;
  S.retryTimer = setTimeout(connect, wait);
  tick();
}

// Once a second: the connection label and the stale mark (no data for three rounds).
function tick() {
  const status = $("status");
  const now = Date.now();
  if (S.ws && S.ws.readyState === WebSocket.OPEN) {
    setText(status, "Live");
    status.className = "live";
  } else if (S.retryAt) {
    setText(status, "Reconnecting in " + Math.max(0, Math.ceil((S.retryAt - now) / 1000)) + " s (attempt " + S.attempt + ")");
    status.className = "down";
  } else {
    setText(status, "Connecting…");
    status.className = "";
  }
  const staleAfter = Math.max(3 * S.interval * 1000, 10000);
  const stale = S.lastMessage ? now - S.lastMessage > staleAfter : !!S.retryAt;
  const mark = $("stale");
  mark.hidden = !stale;
  if (stale) setText(mark, S.lastMessage ? "Data is stale: last update " + duration((now - S.lastMessage) / 1000) + " ago" : "No data yet");
  document.body.classList.toggle("stale", stale);
}

async function refreshAll() {
  try {
    const health = await api("/api/v1/health");
    if (health.poll_interval_seconds > 0) S.interval = health.poll_interval_seconds;
  } catch (e) { /* keep the default */ }
  loadActive();
  if (S.view === "alerts") { loadSilences(); loadHistory(); }
  if (S.view === "rules") loadRules();
}

// ---- the token dialog ---------------------------------------------------------

function askToken() {
  const dialog = $("token-dialog");
  if (dialog.open) return;
  $("token-input").value = "";
  dialog.showModal();
}

// ---- views ------------------------------------------------------------------

function route() {
  const hash = location.hash || "#fleet";
  let view = "fleet";
  if (hash.startsWith("#host/")) view = "host";
  else if (hash === "#alerts") view = "alerts";
  else if (hash === "#rules") view = "rules";
  S.view = view;
  for (const v of ["fleet", "host", "alerts", "rules"]) $("view-" + v).hidden = v !== view;
  for (const v of ["fleet", "alerts", "rules"]) {
    const a = $("nav-" + v);
    if (v === view || (v === "fleet" && view === "host")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (view === "host") {
    let key = "";
    try { key = decodeURIComponent(hash.slice("#host/".length)); } catch (e) { /* a bad link: empty */ }
    if (!S.detail || S.detail.key !== key) openHost(key);
    else redrawCharts();
  } else {
    S.detail = null;
  }
  if (view === "fleet") { S.dirty = true; renderFleet(); }
  if (view === "alerts") { loadActive(); loadSilences(); loadHistory(); }
  if (view === "rules") loadRules();
}

function init() {
  rowPx = parseFloat(getComputedStyle(document.documentElement).fontSize) * 2.4 || 36;
  let theme = localStorage.getItem("monserv.theme") || "auto";
  if (!THEMES.includes(theme)) theme = "auto";
  applyTheme(theme);
  $("theme").addEventListener("click", () => {
    const next = THEMES[(THEMES.indexOf(localStorage.getItem("monserv.theme") || "auto") + 1) % THEMES.length];
    localStorage.setItem("monserv.theme", next);
    applyTheme(next);
  });
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => applyTheme(localStorage.getItem("monserv.theme") || "auto"));
  $("token-button").addEventListener("click", askToken);
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    S.token = $("token-input").value.trim();
    if (S.token) sessionStorage.setItem("monserv.token", S.token);
    else sessionStorage.removeItem("monserv.token");
    $("token-dialog").close();
    S.attempt = 0;
    connect();
    refreshAll();
  });
  $("token-cancel").addEventListener("click", () => $("token-dialog").close());
  $("filter").addEventListener("input", () => { S.dirty = true; $("fleet-scroll").scrollTop = 0; renderFleet(); });
  $("state-filter").addEventListener("change", () => { S.dirty = true; $("fleet-scroll").scrollTop = 0; renderFleet(); });
  $("fleet-scroll").addEventListener("scroll", onScroll, { passive: true });
  for (const b of document.querySelectorAll("[data-sort]")) {
    b.addEventListener("click", () => {
      const by = b.dataset.sort;
      S.sort = { by, dir: S.sort.by === by ? -S.sort.dir : 1 };
      for (const o of document.querySelectorAll("[data-sort]")) o.parentNode.removeAttribute("aria-sort");
      b.parentNode.setAttribute("aria-sort", S.sort.dir > 0 ? "ascending" : "descending");
      S.dirty = true;
      renderFleet();
    });
  }
  window.addEventListener("resize", () => { renderFleet(); redrawCharts(); });
  window.addEventListener("hashchange", route);
  $("matchers").append(matcherRow("host", ""));
  $("add-matcher").addEventListener("click", () => $("matchers").append(matcherRow("rule", "")));
  $("silence-form").addEventListener("submit", createSilence);
  $("history-form").addEventListener("submit", loadHistory);
  $("rule-form").addEventListener("submit", uploadRule);
  route();
  connect();
  // Also before the socket opens: a monserv that needs a token refuses the socket
  // without saying why, and the REST answer (401) is what asks for it.
  refreshAll();
  setInterval(tick, 1000);
  // Rules change state (quarantine, errors) without an alert: refresh while shown.
  setInterval(() => { if (S.view === "rules" && !document.hidden) loadRules(); }, 10000);
}
init();
