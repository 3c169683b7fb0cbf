// The callboard dashboard: one snapshot from /api/overview, then samples pushed over
// /api/stream (server-sent events read with fetch, so the admin token can travel in a header).
"use strict";

const state = { token: "", history: [], latest: null, failedSeen: {}, open: new Set(["/"]) };

function tokenFromPage() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const given = hash.get("token");
  if (given) {
    sessionStorage.setItem("callboard-admin-token", given);
    history.replaceState(null, "", location.pathname); // keep it out of the address bar
  }
  return sessionStorage.getItem("callboard-admin-token") || "";
}

function headers() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401 || response.status === 403) {
    showLogin(response.status === 401 ? "the admin token is required" : "refused");
    throw new Error("unauthorised");
  }
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

function showLogin(why) {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("login-error").textContent = why;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function rate(field, bot) {
  const h = state.history;
  if (h.length < 2) return 0;
  const a = h[h.length - 2], b = h[h.length - 1];
  const pick = (s) => (bot ? (s.bots[bot] || {})[field] || 0 : s.engine[field] || 0);
  return Math.max(0, (pick(b) - pick(a)) / Math.max(b.t - a.t, 0.001));
}

function series(bot) {
  const out = [];
  const h = state.history;
  for (let i = 1; i < h.length; i++) {
    const a = (h[i - 1].bots[bot] || {}).accepted || 0, b = (h[i].bots[bot] || {}).accepted || 0;
    out.push(Math.max(0, (b - a) / Math.max(h[i].t - h[i - 1].t, 0.001)));
  }
  return out;
}

function sparkline(values) {
  const canvas = el("canvas", { width: 160, height: 26, class: "spark" });
  const ctx = canvas.getContext("2d");
  const max = Math.max(1, ...values);
  ctx.strokeStyle = "#3b6fd8";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = values.length < 2 ? 0 : (i / (values.length - 1)) * (canvas.width - 2) + 1;
    const y = canvas.height - 2 - (v / max) * (canvas.height - 4);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  return canvas;
}

function card(label, value) {
  return el("div", { class: "card" }, el("b", {}, value), el("span", {}, label));
}

function renderEngine() {
  const e = state.latest.engine;
  const box = document.getElementById("engine");
  box.replaceChildren(
    card("events/s", rate("accepted_total").toFixed(1)),
    card("journal commits/s", rate("journal_commits").toFixed(1)),
    card("actors", e.actors),
    card("mailbox depth (largest)", `${e.mailbox_depth} (${e.mailbox_max})`),
    card("events in flight", `${e.in_flight} / ${e.in_flight_max}`),
    card("sandboxes", e.sandboxes),
    card("dead letters", e.dead_letters),
  );
  const problem = document.getElementById("journal-problem");
  problem.hidden = !e.journal_problem;
  problem.textContent = e.journal_problem ? "journal: " + e.journal_problem : "";
}

function renderBots() {
  const body = document.querySelector("#bots tbody");
  const rows = Object.entries(state.latest.bots).sort(([a], [b]) => a.localeCompare(b));
  body.replaceChildren(...rows.map(([id, b]) =>
    el("tr", { "data-bot": id },
      el("td", {}, id), el("td", {}, b.adapter),
      el("td", {}, el("span", { class: "dot" + (b.connected ? " up" : "") }), b.connection),
      el("td", { class: "rate" }, rate("accepted", id).toFixed(1)),
      el("td", {}, sparkline(series(id))),
      el("td", {}, b.sessions), el("td", {}, b.in_flight), el("td", {}, b.runs),
      el("td", { class: "failed-runs" }, b.failed_runs), el("td", {}, b.sends), el("td", {}, b.send_failures),
    )));
}

async function refreshFailed() {
  const rows = [];
  for (const id of Object.keys(state.latest.bots).sort()) {
    let failed = [];
    try { failed = await api(`/api/bots/${encodeURIComponent(id)}/failed`); } catch (e) { continue; }
    for (const run of failed) rows.push([id, run]);
  }
  const body = document.querySelector("#failed tbody");
  body.replaceChildren(...rows.map(([id, run]) => {
    const retry = run.status === "failed"
      ? el("button", { onclick: () => retryRun(id, run) }, "retry")
      : el("span", { class: "quiet" }, "");
    return el("tr", { "data-run": run.run_id },
      el("td", {}, id), el("td", {}, run.run_id), el("td", {}, run.rule), el("td", {}, run.session || ""),
      el("td", {}, run.status), el("td", { class: "error" }, run.error || ""),
      el("td", {}, (run.events || []).join(", ")),
      el("td", {}, new Date(run.at * 1000).toLocaleTimeString()), el("td", {}, retry));
  }));
  document.getElementById("no-failed").hidden = rows.length > 0;
}

async function retryRun(bot, run) {
  await api(`/api/bots/${encodeURIComponent(bot)}/failed/${run.run_id}/${run.rule}/retry`, { method: "POST" });
  setTimeout(refreshFailed, 1000);
}

function renderTree(node, depth = 0) {
  const label = el("span", { class: "node" },
    node.name || "/", " ", el("span", { class: "cls" }, node.class),
    " · mailbox ", el("span", { class: node.mailbox > 100 ? "busy" : "" }, node.mailbox),
    " · restarts ", node.restarts || 0, " · ", node.state);
  if (!node.children || node.children.length === 0) return el("div", { class: "leaf", "data-path": node.path }, label);
  const count = node.children.length + (node.more || 0);
  const details = el("details", { "data-path": node.path }, el("summary", {}, label, ` (${count})`));
  if (state.open.has(node.path) || depth < 2) details.open = true;
  details.addEventListener("toggle", () => {
    if (details.open) state.open.add(node.path); else state.open.delete(node.path);
  });
  for (const child of node.children) details.append(renderTree(child, depth + 1));
  if (node.more) details.append(el("div", { class: "quiet" }, `... ${node.more} more`));
  return details;
}

function renderConfig(config) {
  const box = document.getElementById("config");
  box.replaceChildren(...Object.entries(config).map(([id, bot]) =>
    el("details", { "data-bot": id }, el("summary", {}, id), el("pre", {}, JSON.stringify(bot, null, 2)))));
}

function addSample(sample) {
  sample.engine.accepted_total = Object.values(sample.bots).reduce((n, b) => n + (b.accepted || 0), 0);
  state.history.push(sample);
  if (state.history.length > 300) state.history.shift();
  state.latest = sample;
  renderEngine();
  renderBots();
  let changed = false;
  for (const [id, b] of Object.entries(sample.bots)) {
    if (state.failedSeen[id] !== b.failed_runs) { state.failedSeen[id] = b.failed_runs; changed = true; }
  }
  if (changed) refreshFailed();
}

async function stream() {
  const live = document.getElementById("live");
  while (true) {
    try {
      const response = await fetch("/api/stream", { headers: headers() });
      if (!response.ok) throw new Error("HTTP " + response.status);
      live.textContent = "live"; live.className = "pill on";
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let kind = "message", data = "";
          for (const line of frame.split("\n")) {
            if (line.startsWith("event: ")) kind = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (!data) continue;
          const parsed = JSON.parse(data);
          if (kind === "sample") addSample(parsed);
          else if (kind === "tree") document.getElementById("tree").replaceChildren(renderTree(parsed));
        }
      }
    } catch (e) {
      // fall through to reconnect
    }
    live.textContent = "reconnecting"; live.className = "pill off";
    await new Promise((r) => setTimeout(r, 2000));
  }
}

async function start() {
  state.token = tokenFromPage();
  let overview;
  try { overview = await api("/api/overview"); } catch (e) { return; }
  document.getElementById("login").hidden = true;
  document.getElementById("fleet").textContent = overview.fleet;
  for (const sample of overview.history) addSample(sample);
  addSample(overview.latest);
  document.getElementById("tree").replaceChildren(renderTree(overview.tree));
  renderConfig(overview.config);
  refreshFailed();
  stream();
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("callboard-admin-token", state.token);
  start();
});

start();
