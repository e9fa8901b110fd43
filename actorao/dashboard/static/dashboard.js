// actorao's dashboard: live samples over server-sent events, a small canvas line chart, and pages
// read from /dashboard/api. No build step and nothing fetched from elsewhere.
"use strict";

const COLORS = ["#2f6fde", "#e0832f", "#c23b3b"];
const HISTORY = 600; // samples the charts keep (ten minutes at one a second)
const samples = [];
let latest = null;
let openWorker = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// -- a line chart on a canvas: series of numbers against sample times --------------------------
function drawChart(canvas, times, series) {
  const ctx = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height, left = 52, bottom = 18, top = 6, right = 8;
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = "#667";
  let max = 0;
  for (const values of series) for (const v of values) max = Math.max(max, v);
  max = max > 0 ? max * 1.1 : 1;
  const t0 = times.length ? times[0] : 0, t1 = times.length ? times[times.length - 1] : 1;
  const x = (t) => left + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  ctx.strokeStyle = "#e3e6ec";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const value = (max * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y(value)); ctx.lineTo(width - right, y(value)); ctx.stroke();
    ctx.fillText(value >= 100 ? value.toFixed(0) : value.toFixed(1), 4, y(value) + 4);
  }
  if (times.length > 1) ctx.fillText(`last ${Math.round(t1 - t0)} s`, width - 70, height - 4);
  series.forEach((values, index) => {
    ctx.strokeStyle = COLORS[index % COLORS.length];
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    values.forEach((v, i) => (i ? ctx.lineTo(x(times[i]), y(v)) : ctx.moveTo(x(times[i]), y(v))));
    ctx.stroke();
  });
}

function drawCharts() {
  const times = samples.map((s) => s.time);
  drawChart($("chart-throughput"), times,
    [samples.map((s) => s.assigned_per_s), samples.map((s) => s.evaluated_per_s)]);
  drawChart($("chart-latency"), times, ["p50", "p90", "p99"].map((p) => samples.map((s) => s.latency[p] * 1000)));
}

// -- the overview -------------------------------------------------------------------------------
function showSample(sample) {
  latest = sample;
  samples.push(sample);
  while (samples.length > HISTORY) samples.shift();
  $("stat-assigned").textContent = sample.assigned;
  $("stat-evaluated").textContent = sample.evaluated;
  $("stat-assigned-rate").textContent = `${sample.assigned_per_s}/s`;
  $("stat-evaluated-rate").textContent = `${sample.evaluated_per_s}/s`;
  $("stat-commits").textContent = sample.commits;
  $("stat-processes").textContent = sample.processes;
  $("stat-restarts").textContent = sample.restarts;
  const lat = sample.latency;
  $("stat-latency").textContent = `${(lat.p50 * 1000).toFixed(1)} / ${(lat.p99 * 1000).toFixed(1)} ms`;
  $("messenger-backlog").textContent = sample.messenger.backlog;
  $("messenger-undelivered").textContent = sample.messenger.undelivered;
  $("messenger-cron").textContent = sample.messenger.cron;
  $("node-address").textContent = sample.address;
  $("live").textContent = `live · sample ${sample.seq}`;
  $("live").className = "live on";
  drawCharts();
  drawTree(sample);
}

function usageOf(sample, id) {
  return [...sample.workers, ...sample.schedulers].find((w) => w.id === id);
}

function drawTree(sample) {
  const closed = new Set([...document.querySelectorAll("#tree li.closed")].map((li) => li.dataset.id));
  const render = (entry) => {
    const usage = usageOf(sample, entry.id);
    const label = [`${entry.id}`, entry.type, entry.state];
    if (entry.pid) label.push(`pid ${entry.pid}`);
    if (usage) {
      if (usage.cpu_percent !== null) label.push(`cpu ${usage.cpu_percent}%`);
      label.push(`rss ${fmtBytes(usage.rss)}`);
      if (usage.processes !== undefined) label.push(`${usage.processes} processes`);
    }
    if (entry.restarts) label.push(`restarts ${entry.restarts}`);
    const span = el("span", { class: `node state-${entry.state}`, "data-id": entry.id, id: `tree-${entry.id}` },
      label.join(" · "));
    const li = el("li", { "data-id": entry.id }, span);
    if (entry.children && entry.children.length) {
      const ul = el("ul", {}, ...entry.children.map(render));
      li.append(ul);
      if (closed.has(entry.id)) { li.classList.add("closed"); ul.hidden = true; }
      span.addEventListener("click", () => { li.classList.toggle("closed"); ul.hidden = !ul.hidden; });
    } else if (usage && usage.processes !== undefined) {
      span.addEventListener("click", () => showWorker(entry.id));
    }
    return li;
  };
  const tree = $("tree");
  tree.replaceChildren(el("ul", { class: "tree" }, render(sample.tree)));
  tree.className = "tree";
}

async function showWorker(id) {
  openWorker = id;
  const usage = latest && usageOf(latest, id);
  const found = await getJSON(`/dashboard/api/processes?worker=${encodeURIComponent(id)}&limit=200`);
  const rows = found.processes.map((p) =>
    el("tr", {}, el("td", { class: "mono" }, el("a", { href: `#/process/${p.id}` }, p.id)), el("td", {}, p.name)));
  $("worker-detail").replaceChildren(
    el("h3", { id: "worker-detail-title" }, `${id}: pid ${usage ? usage.pid : "?"}, ${found.total} processes`),
    el("table", { class: "list", id: "worker-processes" }, ...rows));
}

async function showMessenger() {
  try {
    const doc = await getJSON("/dashboard/api/messenger");
    const rows = doc.undelivered_messages.map((m) => el("tr", {}, el("td", { class: "mono" }, JSON.stringify(m))));
    $("undelivered-list").replaceChildren(...(rows.length ? [el("table", { class: "list" }, ...rows)] : []));
  } catch (error) { $("undelivered-list").replaceChildren(el("p", { class: "error" }, error.message)); }
}

// -- processes ----------------------------------------------------------------------------------
let searchTimer = null;
async function searchProcesses() {
  const q = $("process-search").value;
  const found = await getJSON(`/dashboard/api/processes?q=${encodeURIComponent(q)}`);
  $("process-total").textContent = `${found.total} found`;
  $("process-list").tBodies[0].replaceChildren(...found.processes.map((p) => el("tr", {},
    el("td", { class: "mono" }, el("a", { href: `#/process/${p.id}`, class: "process-link" }, p.id)),
    el("td", {}, p.name), el("td", { class: "mono" }, p.module), el("td", {}, p.worker ?? "–"))));
}

let logAfter = -1;
async function showProcess(pid) {
  $("process-id").textContent = pid;
  const info = await getJSON(`/dashboard/api/processes/${pid}`);
  const kv = [["name", info.name], ["module", info.module], ["slots", info.head_slot + 1],
    ["scheduler", info.scheduler], ["worker", info.worker ?? "–"], ["memory", "…"]];
  $("process-info").replaceChildren(...kv.map(([k, v]) =>
    el("tr", {}, el("th", {}, k), el("td", { class: "mono", id: `process-${k}` }, v))));
  $("process-checkpoints").tBodies[0].replaceChildren(...info.checkpoints.map((c) =>
    el("tr", {}, el("td", {}, c.slot), el("td", {}, fmtBytes(c.bytes)))));
  $("process-results").tBodies[0].replaceChildren(...info.latest_results.map((r) => el("tr", {},
    el("td", {}, r.slot), el("td", {}, r.cron ? "yes" : ""), el("td", { class: "mono" }, r.output ?? ""),
    el("td", { class: "mono error" }, r.error ?? ""), el("td", {}, r.messages), el("td", {}, r.spawns))));
  $("process-log").tBodies[0].replaceChildren();
  logAfter = -1;
  await moreLog(pid);
  getJSON(`/dashboard/api/processes/${pid}/memory`).then(
    (m) => { $("process-memory").textContent = `${fmtBytes(m.bytes)} after slot ${m.slot}`; },
    (error) => { $("process-memory").textContent = error.message; });
}

async function moreLog(pid) {
  const page = await getJSON(`/dashboard/api/processes/${pid}/log?after=${logAfter}&limit=20`);
  for (const e of page.entries) {
    logAfter = e.slot;
    $("process-log").tBodies[0].append(el("tr", { "data-message": e.id },
      el("td", {}, e.slot), el("td", { class: "mono" }, e.id), el("td", { class: "mono" }, e.from),
      el("td", {}, ...e.tags.map(([n, v]) => el("span", { class: "tag" }, `${n}=${v}`))),
      el("td", { class: "mono" }, e.data ?? "")));
  }
  const more = $("log-more");
  more.hidden = !page.more;
  more.onclick = () => moreLog(pid);
}

// -- bench runs -------------------------------------------------------------------------------
let benchRuns = [];
async function showBench() {
  const doc = await getJSON("/dashboard/api/bench");
  benchRuns = doc.runs;
  $("bench-dir").textContent = benchRuns.length ? `${benchRuns.length} runs in ${doc.dir}/` : `no runs in ${doc.dir}/`;
  for (const [side, pick] of [["left", 0], ["right", 1]]) {
    const select = $(`bench-${side}`);
    select.replaceChildren(...benchRuns.map((r) => el("option", { value: r.run }, r.run)));
    if (benchRuns[pick]) select.value = benchRuns[pick].run;
    select.onchange = () => showRun(side, select.value);
    showRun(side, select.value);
  }
}

async function showRun(side, name) {
  const pane = $(`bench-pane-${side}`);
  const run = benchRuns.find((r) => r.run === name);
  if (!run) { pane.replaceChildren(); return; }
  const parts = [el("h3", {}, run.run)];
  for (const file of run.files.filter((f) => f.endsWith(".png"))) {
    parts.push(el("img", { src: `/dashboard/bench/${run.run}/${file}`, alt: file }));
  }
  if (run.files.includes("report.md")) {
    const text = await (await fetch(`/dashboard/bench/${run.run}/report.md`)).text();
    parts.push(el("pre", {}, text));
  }
  pane.replaceChildren(...parts);
}

// -- routing: #/ the overview, #/processes, #/process/<id>, #/bench ---------------------------
function route() {
  const hash = location.hash || "#/";
  const [, view, arg] = hash.split("/");
  const name = view === "process" ? "process" : view === "processes" ? "processes" : view === "bench" ? "bench" : "overview";
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${name}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.id === `nav-${name}`);
  if (name === "processes") searchProcesses();
  if (name === "process") showProcess(arg);
  if (name === "bench") showBench();
  if (name === "overview") showMessenger();
}

async function start() {
  const history = await getJSON("/dashboard/api/history");
  for (const sample of history.samples) samples.push(sample);
  const events = new EventSource("/dashboard/events");
  events.addEventListener("sample", (event) => showSample(JSON.parse(event.data)));
  events.onerror = () => { $("live").textContent = "reconnecting…"; $("live").className = "live"; };
  $("process-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(searchProcesses, 200);
  });
  window.addEventListener("hashchange", route);
  setInterval(() => { if (!$("view-overview").hidden) showMessenger(); }, 5000);
  route();
}

start();
