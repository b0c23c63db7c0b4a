// Corral console: plain JavaScript, no build step. Talks to /console/api/* and /commands/*.
"use strict";

const api = (p) => fetch(p).then((r) => r.ok ? r.json() : r.json().then((e) => Promise.reject(e.error || r.statusText), () => Promise.reject(r.statusText)));
const enc = (path) => path.split("/").filter((s) => s).map(encodeURIComponent).join("/");
const el = (tag, attrs, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
};
const rows = (table, pairs) => {
  table.replaceChildren(...pairs.map((cells) => el("tr", {}, ...cells.map((c) => el("td", {}, String(c ?? ""))))));
};
const joinPath = (parent, name) => (parent === "/" ? "" : parent) + "/" + name;

let current = null;

// ---- tree: children are fetched when a node is expanded.
function treeItem(path, name) {
  const li = el("li", { class: "node", "data-path": path });
  const toggle = el("span", { class: "toggle" }, "+");
  const label = el("span", { class: "name" }, name);
  li.append(toggle, label);
  toggle.onclick = () => expand(li);
  label.onclick = () => { select(li); expand(li, true); };
  return li;
}

async function expand(li, openOnly) {
  const sub = li.querySelector(":scope > ul");
  if (sub) {
    if (!openOnly) { sub.remove(); li.querySelector(".toggle").textContent = "+"; }
    return;
  }
  const path = li.dataset.path;
  try {
    const node = await api("/console/api/node/" + enc(path));
    const ul = el("ul", {}, ...node.children.map((c) => treeItem(joinPath(path, c), c)));
    li.append(ul);
    li.querySelector(".toggle").textContent = node.children.length ? "−" : "·";
  } catch (e) {
    li.append(el("ul", {}, el("li", { class: "error" }, String(e))));
  }
}

async function select(li) {
  document.querySelectorAll(".tree .selected").forEach((n) => n.classList.remove("selected"));
  li.classList.add("selected");
  const path = li.dataset.path;
  document.getElementById("node-path").textContent = path;
  document.getElementById("edit-path").value = path;
  try {
    current = await api("/console/api/node/" + enc(path));
    showData();
    const s = current.stat;
    rows(document.getElementById("node-stat"), Object.entries(s).map(([k, v]) =>
      [k, (k === "ctime" || k === "mtime") && v ? `${v} (${new Date(v).toISOString()})` : v]));
    rows(document.getElementById("node-acl"), current.acl.map((a) => [a.scheme + ":" + a.id, a.perms]));
  } catch (e) {
    current = null;
    document.getElementById("node-data").textContent = "error: " + e;
  }
}

function bytesOf(node) {
  if (!node || node.data_base64 == null) return null;
  const bin = atob(node.data_base64);
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

function showData() {
  const out = document.getElementById("node-data");
  const bytes = bytesOf(current);
  const view = document.querySelector("input[name=view]:checked").value;
  if (bytes == null) { out.textContent = "(null)"; return; }
  const textData = new TextDecoder().decode(bytes);
  if (view === "json") {
    try { out.textContent = JSON.stringify(JSON.parse(textData), null, 2); } catch (e) { out.textContent = "not JSON: " + e.message; }
  } else if (view === "hex") {
    const lines = [];
    for (let i = 0; i < bytes.length; i += 16) {
      const chunk = Array.from(bytes.slice(i, i + 16));
      lines.push(i.toString(16).padStart(8, "0") + "  " + chunk.map((b) => b.toString(16).padStart(2, "0")).join(" "));
    }
    out.textContent = lines.join("\n");
  } else {
    out.textContent = textData;
  }
}
document.querySelectorAll("input[name=view]").forEach((r) => (r.onchange = showData));

// ---- live events: one EventSource on a persistent recursive watch.
let source = null;
function follow() {
  const path = document.getElementById("events-path").value || "/";
  if (source) source.close();
  const state = document.getElementById("events-state");
  state.textContent = "connecting";
  source = new EventSource("/console/api/events/" + enc(path));
  source.addEventListener("ready", () => (state.textContent = "following " + path));
  source.addEventListener("session", (m) => (state.textContent = "session " + JSON.parse(m.data)));
  source.onmessage = (m) => {
    const ev = JSON.parse(m.data);
    const list = document.getElementById("events");
    list.prepend(el("li", { class: "event" }, `${new Date().toLocaleTimeString()} ${ev.type} ${ev.path} ${ev.zxid || ""}`));
    while (list.children.length > 200) list.lastChild.remove();
  };
  source.onerror = () => (state.textContent = "reconnecting");
}
document.getElementById("events-follow").onclick = follow;

// ---- charts: plain SVG polylines over the last hour.
// The hour ends at the newest sample's time. Both ends are server times: the browser's
// clock may differ from the server's, and measuring against it shifted every point sideways.
const HOUR_MS = 3600 * 1000;
function chartPoints(values, times, w, h, pad) {
  const t1 = times.length ? times[times.length - 1] : 0;
  const t0 = t1 - HOUR_MS;
  // Samples older than the hour are left out, not piled up on the chart's left edge.
  const shown = values.map((v, i) => [times[i], v]).filter(([t]) => t >= t0);
  const max = Math.max(1e-9, ...shown.map(([, v]) => v));
  const pts = shown.map(([t, v]) => {
    const x = ((t - t0) / HOUR_MS) * w;
    const y = h - pad - (v / max) * (h - 2 * pad);
    return x.toFixed(1) + "," + y.toFixed(1);
  });
  return { pts, max };
}
function chart(id, values, times) {
  const svg = document.getElementById(id);
  const w = 300, h = 80, pad = 12;
  const { pts, max } = chartPoints(values, times, w, h, pad);
  const ns = "http://www.w3.org/2000/svg";
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 2); label.setAttribute("y", 10);
  label.textContent = "max " + (Number.isInteger(max) ? max : max.toFixed(2)) + "  now " + (values.length ? values[values.length - 1].toFixed?.(2) ?? values[values.length - 1] : "-");
  svg.replaceChildren(line, label);
}
async function refreshCharts() {
  const s = await api("/console/api/samples");
  const t = s.map((x) => x.at_ms);
  chart("chart-rate", s.map((x) => x.requests_per_sec), t);
  chart("chart-latency", s.map((x) => x.avg_latency_ms), t);
  chart("chart-znodes", s.map((x) => x.znode_count), t);
}

// ---- members and sessions.
async function refreshMembers() {
  const m = await api("/console/api/members");
  document.getElementById("mode").textContent = m.mode === "standalone" ? "standalone" : `member ${m.my_id} (${m.state})`;
  const table = document.getElementById("members");
  if (m.mode === "standalone") {
    rows(table, [["standalone", m.state, "zxid " + m.zxid]]);
  } else {
    rows(table, [["id", "address", "role", "zxid", "lag (entries)"],
      ...m.members.map((x) => [x.id + (x.self ? " (this)" : ""), x.address, x.role, x.zxid, x.lag_entries])]);
  }
}
async function refreshSessions() {
  const s = await api("/console/api/sessions");
  rows(document.getElementById("sessions"), [["session", "remote", "timeout ms", "last op", "watches"],
    ...s.map((c) => [c.session, c.remote, c.timeout_ms, c.last_operation, c.watches.join(" ")])]);
}

// ---- edits (only offered when the server allows them).
async function edit(method) {
  const user = document.getElementById("edit-user").value;
  const password = document.getElementById("edit-password").value;
  const path = document.getElementById("edit-path").value;
  const result = document.getElementById("edit-result");
  const r = await fetch("/console/api/node/" + enc(path), {
    method,
    headers: { Authorization: "Basic " + btoa(user + ":" + password) },
    body: method === "DELETE" ? undefined : document.getElementById("edit-data").value,
  });
  result.textContent = r.status + " " + (await r.text());
  result.className = r.ok ? "" : "error";
}

async function start() {
  const root = treeItem("/", "/");
  document.getElementById("tree").append(root);
  expand(root);
  select(root);
  const info = await api("/console/api/info");
  if (info.edits) {
    document.getElementById("edit").hidden = false;
    document.getElementById("edit-create").onclick = () => edit("POST");
    document.getElementById("edit-set").onclick = () => edit("PUT");
    document.getElementById("edit-delete").onclick = () => edit("DELETE");
  }
  const refresh = () => Promise.allSettled([refreshCharts(), refreshMembers(), refreshSessions()]);
  refresh();
  setInterval(refresh, 10000);
}
start();
