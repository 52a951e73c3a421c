// zist's dashboard: lists programs from API v1, follows state changes and
// logs as Server-Sent Events read with fetch (EventSource cannot send the
// token), polls CPU and memory, and keeps the token in sessionStorage only.
"use strict";

const TOKEN_KEY = "zist-token";
const SPAN = 15 * 60 * 1000;   // ms of history the charts show (zistd keeps it)
const HISTORY_EVERY = 5000;    // ms between history fetches
const STATS_EVERY = 2000;     // ms between CPU/memory polls
const LOG_LINES = 2000;       // lines kept in the log view
const LIVE = new Set(["starting", "running", "stopping"]);

const $ = (id) => document.getElementById(id);
const programs = new Map();   // name -> { info, row, cells, cpu: [], mem: [], visible }
const groups = new Map();     // program with instances -> { row, count, input }
let token = sessionStorage.getItem(TOKEN_KEY);
let eventsAbort = null;
let logsAbort = null;
let logsName = null;
let listTimer = null;
let statsTimer = null;

// ---- talking to zistd -------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, ...(options.headers || {}) },
  });
  if (response.status === 401) {
    throw new Unauthorized("the token was refused");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error.message;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

// Reads a text/event-stream response; calls onEvent(name, data) per event.
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let name = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
      if (line === "") {
        if (data.length) onEvent(name, data.join("\n"));
        name = "message";
        data = [];
      } else if (line.startsWith(":")) {
        // heartbeat
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "event") name = val;
        else if (field === "data") data.push(val);
      }
    }
  }
}

// ---- formatting -------------------------------------------------------

function duration(seconds) {
  seconds = Math.floor(seconds);
  if (seconds < 60) return `${seconds}s`;
  const m = Math.floor(seconds / 60) % 60, h = Math.floor(seconds / 3600) % 24, d = Math.floor(seconds / 86400);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  return `${m}m ${seconds % 60}s`;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function set(cell, text) {
  if (cell.textContent !== text) cell.textContent = text;
}

function showError(message) {
  const status = $("status");
  status.textContent = message;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { status.textContent = ""; }, 6000);
}

// ---- the table --------------------------------------------------------

const observer = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const p = programs.get(entry.target.dataset.name);
    if (!p) continue;
    p.visible = entry.isIntersecting;
    if (p.visible) drawChart(p);
  }
});

function cell(row, className) {
  const td = document.createElement("div");
  td.setAttribute("role", "cell");
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function makeRow(info) {
  const row = document.createElement("div");
  row.className = "row";
  row.setAttribute("role", "row");
  row.dataset.name = info.name;
  const nameCell = cell(row, "who");
  const nameButton = document.createElement("button");
  nameButton.type = "button";
  nameButton.className = "name";
  nameButton.textContent = info.name;
  nameButton.title = "Show the live log";
  nameButton.addEventListener("click", () => openLogs(info.name));
  nameCell.appendChild(nameButton);
  // Why the program is in its state, on the row itself.
  const why = document.createElement("span");
  why.className = "why";
  nameCell.appendChild(why);
  const cells = {
    why,
    state: cell(row, "state"),
    pid: cell(row, "num pid"),
    uptime: cell(row, "num uptime"),
    restarts: cell(row, "num restarts"),
    cpu: cell(row, "num cpu"),
    mem: cell(row, "num mem"),
  };
  const canvas = document.createElement("canvas");
  canvas.className = "spark";
  canvas.width = 160;
  canvas.height = 32;
  cell(row, "chart").appendChild(canvas);
  cells.chart = canvas;
  const actions = cell(row, "actions");
  cells.buttons = {};
  for (const action of ["start", "stop", "restart", "detach"]) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.action = action;
    button.textContent = action;
    button.addEventListener("click", () => act(info.name, action, button));
    actions.appendChild(button);
    cells.buttons[action] = button;
  }
  const more = document.createElement("button");
  more.type = "button";
  more.className = "more";
  more.textContent = "⋯";
  more.title = "Details: spec, paths, last exit, signals";
  more.setAttribute("aria-label", `Details of ${info.name}`);
  more.addEventListener("click", () => openPanel(info.name));
  actions.appendChild(more);
  return { row, cells };
}

function render(p) {
  const { info, cells } = p;
  const live = LIVE.has(info.state);
  set(cells.state, info.state);
  // A program that ended with status 0 did its work: not an error.
  const clean = info.state === "exited" && info.exit_code === 0 && !info.exit_signal;
  cells.state.className = `state state-${clean ? "exited-ok" : info.state}`;
  cells.state.title = info.message || (info.exit_signal ? `killed by ${info.exit_signal}` :
    info.exit_code != null ? `exit code ${info.exit_code}` : "");
  set(cells.why, info.message || "");
  cells.why.title = info.message || "";
  set(cells.pid, info.pid == null ? "" : String(info.pid));
  set(cells.restarts, String(info.restarts));
  set(cells.uptime, live && p.since ? duration((Date.now() - p.since) / 1000) : "");
  if (!info.web) { set(cells.cpu, "hidden"); set(cells.mem, "hidden"); }
  // No process, no figures: blanks rather than 0.0% and 0 B.
  else if (!live) { set(cells.cpu, ""); set(cells.mem, ""); }
  cells.buttons.start.disabled = live || info.state === "detached";
  cells.buttons.stop.disabled = !live;
  cells.buttons.restart.disabled = info.state === "detached";
  cells.buttons.detach.disabled = !live;
  // A state change may move it in or out of the filter.
  p.row.classList.toggle("hidden", !matches(p));
}

function upsert(info) {
  let p = programs.get(info.name);
  if (!p) {
    p = { info, history: null, visible: false, ...makeRow(info) };
    programs.set(info.name, p);
  }
  p.info = info;
  // Uptime counts from the browser's clock, so skew with the server's does not show.
  p.since = LIVE.has(info.state) ? Date.now() - info.uptime_secs * 1000 : null;
  render(p);
  return p;
}

async function loadList() {
  const response = await api("/api/v1/processes");
  performance.mark("zist:list-fetched");
  const list = await response.json();
  performance.mark("zist:list-parsed");
  const body = $("rows");
  const names = new Set(list.map((i) => i.name));
  for (const [name, p] of programs) {
    if (!names.has(name)) { observer.unobserve(p.row); p.row.remove(); programs.delete(name); }
  }
  const fresh = document.createDocumentFragment();
  for (const info of list) {
    const known = programs.has(info.name);
    const p = upsert(info);
    if (!known) { fresh.appendChild(p.row); observer.observe(p.row); }
  }
  performance.mark("zist:rows-built");
  body.appendChild(fresh);
  placeGroups(list);
  applyFilter();
  summarize();
  performance.mark("zist:rows-attached");
}

// A burst of events (a restart of everything) refreshes the list once.
function scheduleList() {
  if (listTimer) return;
  listTimer = setTimeout(() => {
    listTimer = null;
    loadList().catch(failed);
  }, 1000);
}

function summarize() {
  let running = 0;
  for (const p of programs.values()) if (p.info.state === "running") running++;
  set($("summary"), `${programs.size} programs, ${running} running`);
}

// Whether a program passes the filters: its state (running, not running,
// in trouble) and a text found in its name or its message.
function matches(p) {
  const needle = $("filter").value.trim().toLowerCase();
  const want = $("state-filter").value;
  const { state, exit_code, exit_signal } = p.info;
  const trouble = state === "fatal" || state === "backoff" ||
    (state === "exited" && (exit_code !== 0 || exit_signal));
  const stateOk = want === "" || (want === "running" && state === "running") ||
    (want === "down" && state !== "running") || (want === "trouble" && trouble);
  const text = `${p.info.name} ${p.info.message || ""}`.toLowerCase();
  return stateOk && (needle === "" || text.includes(needle));
}

function applyFilter() {
  for (const p of programs.values()) p.row.classList.toggle("hidden", !matches(p));
}

// ---- programs with instances ------------------------------------------

// The program an instance (`web:1`) belongs to, or null.
function baseOf(name) {
  const colon = name.indexOf(":");
  return colon < 0 ? null : name.slice(0, colon);
}

// A line above a program's instances: how many, scale, rolling restart.
function makeGroup(base) {
  const row = document.createElement("div");
  row.className = "group";
  row.setAttribute("role", "row");
  row.dataset.group = base;
  const title = document.createElement("span");
  title.className = "group-title";
  row.appendChild(title);
  const input = document.createElement("input");
  input.type = "number";
  input.min = "1";
  input.max = "1000";
  input.className = "instances";
  input.setAttribute("aria-label", `Instances of ${base}`);
  row.appendChild(input);
  const scale = document.createElement("button");
  scale.type = "button";
  scale.dataset.action = "scale";
  scale.textContent = "scale";
  scale.addEventListener("click", () => groupAct(base, "scale", scale));
  row.appendChild(scale);
  const rolling = document.createElement("button");
  rolling.type = "button";
  rolling.dataset.action = "rolling-restart";
  rolling.textContent = "rolling restart";
  rolling.title = "Restart the instances one at a time, each once the one before runs";
  rolling.addEventListener("click", () => groupAct(base, "rolling", rolling));
  row.appendChild(rolling);
  return { row, title, input };
}

// Puts each group's line before its first instance; drops lines of programs gone.
function placeGroups(list) {
  const counts = new Map();
  const first = new Map();
  for (const info of list) {
    const base = baseOf(info.name);
    if (base === null) continue;
    counts.set(base, (counts.get(base) || 0) + 1);
    if (!first.has(base)) first.set(base, info.name);
  }
  for (const [base, g] of groups) {
    if (!counts.has(base)) { g.row.remove(); groups.delete(base); }
  }
  for (const [base, count] of counts) {
    let g = groups.get(base);
    if (!g) { g = makeGroup(base); groups.set(base, g); }
    set(g.title, `${base} · ${count} instance${count === 1 ? "" : "s"}`);
    if (document.activeElement !== g.input) g.input.value = String(count);
    const row = programs.get(first.get(base)).row;
    if (row.previousSibling !== g.row) row.before(g.row);
  }
}

async function groupAct(base, what, button) {
  button.disabled = true;
  try {
    const g = groups.get(base);
    const response = what === "scale"
      ? await api(`/api/v1/processes/${encodeURIComponent(base)}/scale`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ instances: Number(g.input.value) }),
        })
      : await api(`/api/v1/processes/${encodeURIComponent(base)}/restart?rolling=true`, { method: "POST" });
    await response.json();
    // The list adds the rows of new instances and drops those of removed ones.
    await loadList();
  } catch (e) {
    failed(e);
  } finally {
    button.disabled = false;
  }
}

async function act(name, action, button) {
  button.disabled = true;
  try {
    const info = await (await api(`/api/v1/processes/${encodeURIComponent(name)}/${action}`, { method: "POST" })).json();
    upsert(info);
    summarize();
  } catch (e) {
    failed(e);
    render(programs.get(name));
  }
}

// ---- the program panel ------------------------------------------------

let panelName = null;

function lastExit(info) {
  if (info.exit_signal) return `killed by ${info.exit_signal}${info.exited_at ? ` at ${info.exited_at}` : ""}`;
  if (info.exit_code != null) return `status ${info.exit_code}${info.exited_at ? ` at ${info.exited_at}` : ""}`;
  return "";
}

// Everything about one program: its info, its log files, its spec (Env by
// name only: zistd never sends the values), and every action.
async function openPanel(name) {
  panelName = name;
  const path = `/api/v1/processes/${encodeURIComponent(name)}`;
  let info, spec;
  try {
    [info, spec] = await Promise.all([
      api(path).then((r) => r.json()),
      api(`${path}/spec`).then((r) => r.json()).catch(() => null),
    ]);
  } catch (e) {
    failed(e);
    return;
  }
  const fields = [
    ["state", info.state], ["pid", info.pid ?? ""], ["restarts", info.restarts],
    ["started", info.started_at ?? ""], ["last exit", lastExit(info)], ["message", info.message ?? ""],
  ];
  for (const stream of ["stdout", "stderr"]) {
    const log = info.log[stream];
    fields.push([`${stream} log`, `${log.file ?? ""} (${bytes(log.written)} written, ${bytes(log.lost)} lost)`]);
  }
  for (const [key, value] of Object.entries(spec || {})) {
    if (key === "Name") continue;
    let text = Array.isArray(value) ? value.join(" ") :
      typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
    if (key === "Env" && value.length) text = `${value.join(", ")} (values hidden)`;
    fields.push([key, text]);
  }
  const list = $("panel-fields");
  list.replaceChildren();
  for (const [key, value] of fields) {
    const dt = document.createElement("dt");
    dt.textContent = key;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.dataset.key = key;
    list.append(dt, dd);
  }
  $("panel-title").textContent = name;
  $("panel").hidden = false;
}

async function sendSignal() {
  const name = panelName;
  const signal = $("panel-signal").value;
  try {
    await api(`/api/v1/processes/${encodeURIComponent(name)}/signal`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ signal }),
    });
    showError("");
  } catch (e) {
    failed(e);
  }
}

// ---- live state and stats ---------------------------------------------

async function followEvents() {
  eventsAbort = new AbortController();
  for (;;) {
    try {
      const response = await api("/api/v1/events", { signal: eventsAbort.signal });
      await readEvents(response, (name, data) => {
        if (name === "gap") { scheduleList(); return; }
        const event = JSON.parse(data);
        const p = programs.get(event.name);
        if (!p) { scheduleList(); return; }
        p.info.state = event.to;
        p.info.pid = event.pid;
        if (!LIVE.has(event.to)) {
          p.since = null;
        } else if (!LIVE.has(event.from)) {
          p.since = Date.parse(event.at);
        }
        render(p);
        summarize();
        scheduleList();
      });
    } catch (e) {
      if (e.name === "AbortError") return;
      if (e instanceof Unauthorized) { failed(e); return; }
    }
    // The stream ended (zistd restarted?): try again shortly.
    await new Promise((r) => setTimeout(r, 2000));
    if (!eventsAbort || eventsAbort.signal.aborted) return;
    loadList().catch(() => {});
  }
}

async function pollStats() {
  try {
    if (!document.hidden) {
      const stats = await (await api("/api/v1/stats")).json();
      for (const [name, s] of Object.entries(stats)) {
        const p = programs.get(name);
        if (!p || !LIVE.has(p.info.state)) continue;
        set(p.cells.cpu, `${s.cpu_percent.toFixed(1)}%`);
        set(p.cells.mem, bytes(s.memory_bytes));
      }
    }
  } catch (e) {
    if (e instanceof Unauthorized) { failed(e); return; }
  }
  statsTimer = setTimeout(pollStats, STATS_EVERY);
}

// The history zistd keeps (GET /api/v1/history): every program's CPU and
// memory over the last 15 minutes, so the charts survive a reload.
let historyTimer = null;
async function pollHistory() {
  let next = HISTORY_EVERY;
  try {
    if (!document.hidden) {
      const history = await (await api("/api/v1/history")).json();
      // Just started sampling: the first sample comes within a second.
      if (!Object.keys(history).length) next = 1000;
      for (const [name, series] of Object.entries(history)) {
        const p = programs.get(name);
        if (!p) continue;
        p.history = series;
        if (p.visible) drawChart(p);
      }
    }
  } catch (e) {
    if (e instanceof Unauthorized) { failed(e); return; }
  }
  historyTimer = setTimeout(pollHistory, next);
}

// 1, 2 or 5 times a power of ten, at least `v`: a scale people read.
function nice(v) {
  const p = 10 ** Math.floor(Math.log10(Math.max(v, 1e-9)));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= v);
}

// CPU as a red line on 0..100% (or more), memory as a blue area on 0..a
// round figure, over the last 15 minutes (left edge) to now (right edge);
// the scales are written in the corners, a gap is a time with no process.
function drawChart(p) {
  const canvas = p.cells.chart;
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "rgba(127, 127, 127, 0.5)";
  g.lineWidth = 1;
  g.beginPath();
  g.moveTo(0, h - 0.5);
  g.lineTo(w, h - 0.5);
  // The time axis: a tick every 5 minutes back from now (the right edge).
  for (const back of [5, 10]) {
    const tx = Math.round(w * (1 - (back * 60000) / SPAN)) + 0.5;
    g.moveTo(tx, h);
    g.lineTo(tx, h - 4);
  }
  g.stroke();
  const s = p.history;
  if (!s || !s.cpu_percent.length) return;
  const now = Date.now();
  const x = (i) => w * (1 - (now - (s.start_ms + i * s.every_secs * 1000)) / SPAN);
  const top = 9;  // room for the scales
  const mems = s.memory_bytes.filter((m) => m != null);
  // A round figure of MiB (or KiB for a small program).
  const unit = Math.max(...mems, 1) >= 1048576 ? 1048576 : 1024;
  const memScale = nice(Math.max(...mems, 1) / unit) * unit;
  const cpus = s.cpu_percent.filter((c) => c != null);
  const cpuScale = Math.max(100, nice(Math.max(...cpus, 0)));
  const y = (v, scale) => h - 1 - (v / scale) * (h - 1 - top);
  // Memory: one area per run of samples with a process.
  g.fillStyle = "rgba(36, 87, 166, 0.25)";
  let open = false;
  s.memory_bytes.forEach((m, i) => {
    if (m == null) {
      if (open) { g.lineTo(x(i - 1), h); g.closePath(); g.fill(); open = false; }
      return;
    }
    if (!open) { g.beginPath(); g.moveTo(x(i), h); open = true; }
    g.lineTo(x(i), y(m, memScale));
  });
  if (open) { g.lineTo(x(s.memory_bytes.length - 1), h); g.closePath(); g.fill(); }
  g.strokeStyle = "#b3261e";
  g.lineWidth = 1.2;
  g.beginPath();
  let drawing = false;
  s.cpu_percent.forEach((c, i) => {
    if (c == null) { drawing = false; return; }
    (drawing ? g.lineTo : g.moveTo).call(g, x(i), y(c, cpuScale));
    drawing = true;
  });
  g.stroke();
  g.font = "8px sans-serif";
  g.textBaseline = "top";
  g.textAlign = "left";
  g.fillStyle = "#b3261e";
  const cpuLabel = `${cpuScale}%`;
  g.fillText(cpuLabel, 1, 0);
  g.fillStyle = "rgb(36, 87, 166)";
  g.fillText(bytes(memScale), 1 + g.measureText(cpuLabel).width + 6, 0);
}

function tick() {
  for (const p of programs.values()) {
    if (p.since) set(p.cells.uptime, duration((Date.now() - p.since) / 1000));
  }
}

// ---- the log view -----------------------------------------------------

function stream() {
  return document.querySelector('input[name="stream"]:checked').value;
}

// Lines that came while the view was paused, shown on resume.
let pausedLines = null;

function shownBySearch(line) {
  const needle = $("log-search").value.toLowerCase();
  return needle === "" || line.textContent.toLowerCase().includes(needle);
}

// A line with its arrival time (shown with "times"); stderr's in red.
function appendLine(pre, text, className) {
  const line = document.createElement("div");
  if (className) line.className = className;
  line.textContent = text;
  line.dataset.t = new Date().toLocaleTimeString([], { hour12: false });
  if (pausedLines) {
    pausedLines.push(line);
    if (pausedLines.length > LOG_LINES) pausedLines.shift();
    return;
  }
  showLine(pre, line);
}

function showLine(pre, line) {
  line.classList.toggle("hidden", !shownBySearch(line));
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.appendChild(line);
  while (pre.childElementCount > LOG_LINES) pre.firstElementChild.remove();
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

async function followStream(name, which, pre, signal, className) {
  try {
    const path = `/api/v1/processes/${encodeURIComponent(name)}/logs/${which}?follow=true&lines=200`;
    const response = await api(path, { signal });
    await readEvents(response, (event, data) => {
      if (event === "gap") {
        appendLine(pre, `[zist] ${JSON.parse(data).skipped} lines skipped`, "gap");
      } else {
        for (const line of JSON.parse(data)) appendLine(pre, line, className);
      }
    });
  } catch (e) {
    if (e.name === "AbortError") return;
    appendLine(pre, `[zist] ${e.message}`, "gap");
  }
}

async function openLogs(name) {
  if (logsAbort) logsAbort.abort();
  logsName = name;
  const controller = new AbortController();
  logsAbort = controller;
  $("logs").hidden = false;
  $("logs-title").textContent = `${name} — ${stream()}`;
  const pre = $("log-lines");
  pre.replaceChildren();
  if (pausedLines) pausedLines = [];
  const which = stream();
  // Both streams: two follows into one view, stderr's lines in red.
  const follows = which === "both"
    ? [followStream(name, "stdout", pre, controller.signal, null),
       followStream(name, "stderr", pre, controller.signal, "err")]
    : [followStream(name, which, pre, controller.signal, which === "stderr" ? "err" : null)];
  await Promise.all(follows);
}

function searchLog() {
  for (const line of $("log-lines").children) line.classList.toggle("hidden", !shownBySearch(line));
}

function togglePause() {
  const button = $("log-pause");
  if (pausedLines) {
    const pre = $("log-lines");
    const waiting = pausedLines;
    pausedLines = null;
    for (const line of waiting) showLine(pre, line);
    button.textContent = "Pause";
    button.setAttribute("aria-pressed", "false");
  } else {
    pausedLines = [];
    button.textContent = "Resume";
    button.setAttribute("aria-pressed", "true");
  }
}

// The lines in view (all of them, whatever the search), as a file.
function downloadLog() {
  const times = $("log-times").checked;
  const text = [...$("log-lines").children]
    .map((l) => (times ? `${l.dataset.t} ` : "") + l.textContent)
    .join("\n") + "\n";
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
  link.download = `${logsName}.${stream()}.log`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function closeLogs() {
  if (logsAbort) logsAbort.abort();
  logsAbort = null;
  logsName = null;
  $("logs").hidden = true;
}

// ---- token ------------------------------------------------------------

function failed(e) {
  if (e instanceof Unauthorized) {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    stopStreams();
    showLogin("The token was refused.");
    return;
  }
  showError(e.message || String(e));
}

function stopStreams() {
  if (eventsAbort) eventsAbort.abort();
  eventsAbort = null;
  closeLogs();
  clearTimeout(statsTimer);
  clearTimeout(historyTimer);
}

function showLogin(message) {
  $("app").hidden = true;
  $("filter").hidden = true;
  $("state-filter").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function openDashboard() {
  $("login").hidden = true;
  try {
    await loadList();
  } catch (e) {
    failed(e);
    return;
  }
  $("app").hidden = false;
  $("filter").hidden = false;
  $("state-filter").hidden = false;
  $("forget").hidden = false;
  followEvents();
  pollStats();
  pollHistory();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    $("token").value = "";
    sessionStorage.setItem(TOKEN_KEY, token);
    openDashboard();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    stopStreams();
    $("rows").replaceChildren();
    programs.clear();
    set($("summary"), "");
    showLogin();
  });
  $("filter").addEventListener("input", applyFilter);
  $("state-filter").addEventListener("change", applyFilter);
  $("logs-close").addEventListener("click", closeLogs);
  $("panel-close").addEventListener("click", () => { $("panel").hidden = true; panelName = null; });
  $("panel-send").addEventListener("click", sendSignal);
  for (const button of document.querySelectorAll("#panel-actions button[data-action]")) {
    button.addEventListener("click", async () => {
      const p = programs.get(panelName);
      if (!p) return;
      await act(panelName, button.dataset.action, p.cells.buttons[button.dataset.action]);
      openPanel(panelName);
    });
  }
  $("log-search").addEventListener("input", searchLog);
  $("log-pause").addEventListener("click", togglePause);
  $("log-download").addEventListener("click", downloadLog);
  $("log-times").addEventListener("change", (e) => $("log-lines").classList.toggle("times", e.target.checked));
  for (const radio of document.querySelectorAll('input[name="stream"]')) {
    radio.addEventListener("change", () => { if (logsName) openLogs(logsName); });
  }
  setInterval(tick, 1000);
  if (token) openDashboard(); else showLogin();
});
