// The dashboard's browser script, served as /dashboard/app.js: plain JavaScript in a string (no
// framework, no build step), loaded as a module under a CSP of script-src 'self', so no eval and
// no inline handlers. It reads the same JSON endpoints the API offers, with the admin's token as a
// bearer header; the token lives in this tab's sessionStorage only and never goes into a URL.
// Everything it shows is built with textContent and createElement, never with innerHTML: agent
// and model names come from the fleet.
export const DASHBOARD_SCRIPT = String.raw`const TOKEN_KEY = "orchard.dashboard.token";
const REFRESH_MS = 10000;
// An endpoint that answered 404/501 (not deployed here) is asked again only after this long: each
// such answer is a "Failed to load resource" line in the browser's console.
const MISSING_RETRY_MS = 60000;
const HOUR_MS = 3600000;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const missingUntil = new Map();
const samples = [];
let timer = null;
let refreshing = false;
let lastAnnounced = "";

class SignedOut extends Error {}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {}))
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  for (const c of children.flat())
    if (c !== undefined && c !== null) node.append(c instanceof Node ? c : String(c));
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

// ---- formatting ----

const dash = "\u2014";
const num = (v, digits = 0) =>
  typeof v === "number" && Number.isFinite(v)
    ? v.toLocaleString("en", { maximumFractionDigits: digits })
    : dash;
const pct = (v) => (typeof v === "number" && Number.isFinite(v) ? num(v, v < 10 ? 1 : 0) + " %" : dash);
const clock = (ms) => new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
function when(iso) {
  if (!iso) return dash;
  const ms = Date.parse(iso);
  if (!Number.isFinite(ms)) return dash;
  const ago = Math.round((Date.now() - ms) / 60000);
  return ago < 1 ? "just now" : ago < 120 ? ago + " min ago" : new Date(ms).toLocaleString("en-GB");
}
function badge(text, tone) {
  return el("span", { class: "badge " + (tone || "") }, text);
}

// ---- the token ----

function takeTokenFromFragment() {
  if (!location.hash.startsWith("#")) return false;
  const params = new URLSearchParams(location.hash.slice(1));
  const value = params.get("token");
  if (value === null) return false;
  if (value.trim()) sessionStorage.setItem(TOKEN_KEY, value.trim());
  // Fragments never reach the server, but they stay in history and in the address bar.
  history.replaceState(null, "", location.pathname + location.search);
  return true;
}

function claimsOf(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}

function showSignIn(message) {
  stop();
  sessionStorage.removeItem(TOKEN_KEY);
  samples.length = 0;
  missingUntil.clear();
  for (const id of [
    "alerts-body",
    "agents-body",
    "models-body",
    "deployments-body",
    "ab-tests-body",
    "charts-body",
  ])
    $(id).replaceChildren();
  $("board").hidden = true;
  $("sign-out").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-message").textContent = message || "";
  $("updated").textContent = "";
  announce("Not signed in");
  const input = $("token");
  input.value = "";
  input.focus();
}

function showBoard() {
  const claims = claimsOf(token());
  $("sign-in").hidden = true;
  $("sign-in-message").textContent = "";
  $("board").hidden = false;
  $("sign-out").hidden = false;
  const who = $("who");
  who.hidden = !claims;
  if (claims) {
    const exp = typeof claims.exp === "number" ? ", token expires " + clock(claims.exp * 1000) : "";
    who.textContent = "Signed in as " + (claims.sub || "?") + exp;
  }
}

// ---- the API ----

async function api(path, bearer) {
  const until = missingUntil.get(path);
  if (until !== undefined && Date.now() < until) return { missing: true };
  const headers = { Accept: "application/json" };
  if (bearer) headers.Authorization = "Bearer " + bearer;
  let res;
  try {
    res = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  } catch {
    return { failed: "the gateway did not answer" };
  }
  if (res.status === 401 || res.status === 403) {
    const body = await res.json().catch(() => null);
    const code = body?.error?.code ? " (" + body.error.code + ")" : "";
    throw new SignedOut(
      res.status === 401
        ? "The gateway refused this token: it is invalid or expired" + code + ". Paste a fresh one."
        : "This token is not an admin's" + code + ". The dashboard needs a token with role admin.",
    );
  }
  if (res.status === 404 || res.status === 501) {
    missingUntil.set(path, Date.now() + MISSING_RETRY_MS);
    return { missing: true };
  }
  missingUntil.delete(path);
  if (!res.ok) return { failed: "HTTP " + res.status };
  try {
    return { data: await res.json() };
  } catch {
    return { failed: "not JSON" };
  }
}

const ENDPOINTS = {
  health: ["/health", false],
  agents: ["/agents", true],
  breakers: ["/circuit-breaker/status", true],
  models: ["/models", true],
  alerts: ["/alerts/active", true],
  report: ["/performance/report", true],
  deployments: ["/deployments", true],
  abTests: ["/ab-tests", true],
};

async function refresh() {
  stop();
  const used = token();
  if (!used || refreshing) return;
  refreshing = true;
  const names = Object.keys(ENDPOINTS);
  let answers;
  try {
    answers = await Promise.all(names.map((n) => api(ENDPOINTS[n][0], ENDPOINTS[n][1] ? used : null)));
  } catch (err) {
    refreshing = false;
    if (!(err instanceof SignedOut)) throw err;
    if (token() === used) showSignIn(err.message);
    else if (token()) refresh();
    return;
  }
  refreshing = false;
  // Signed out, or in again with another token, while this refresh was under way.
  if (token() !== used) {
    if (token()) refresh();
    return;
  }
  try {
    render(Object.fromEntries(names.map((n, i) => [n, answers[i]])));
  } finally {
    schedule();
  }
}

function schedule() {
  stop();
  if (token() && !document.hidden) timer = setTimeout(refresh, REFRESH_MS);
}

function stop() {
  if (timer !== null) clearTimeout(timer);
  timer = null;
}

// ---- rendering ----

function announce(text) {
  // A live region read out every 10 s would drown a screen reader: only changes are written.
  if (text === lastAnnounced) return;
  lastAnnounced = text;
  $("fleet").textContent = text;
}

function unavailable(answer, what) {
  if (answer.missing) return el("p", { class: "note" }, what + " not available on this gateway.");
  if (answer.failed)
    return el("p", { class: "note warn" }, what + " could not be read: " + answer.failed + ".");
  return null;
}

function table(caption, head, rows) {
  return el(
    "div",
    { class: "scroll" },
    el(
      "table",
      {},
      el("caption", {}, caption),
      el(
        "thead",
        {},
        el(
          "tr",
          {},
          head.map((h) => el("th", { scope: "col" }, h)),
        ),
      ),
      el(
        "tbody",
        {},
        rows.map((cells) =>
          el(
            "tr",
            {},
            cells.map((c, i) => (i === 0 ? el("th", { scope: "row" }, c) : el("td", {}, c))),
          ),
        ),
      ),
    ),
  );
}

function render(r) {
  const health = r.health.data;
  const report = r.report.data;
  const agents = r.agents.data ? r.agents.data.agents : [];
  const parts = [];
  if (health) parts.push("Fleet " + health.status);
  else parts.push("Gateway health unknown (" + (r.health.failed || "not available") + ")");
  if (r.agents.data) {
    const ready = agents.filter((a) => a.ready).length;
    parts.push(ready + " agent" + (ready === 1 ? "" : "s") + " connected");
  } else if (health) {
    parts.push(health.agentsConnected + " agents connected");
  }
  const score =
    health && typeof health.healthScore === "number"
      ? health.healthScore
      : report?.health
        ? report.health.score
        : null;
  if (typeof score === "number") parts.push("health score " + num(score) + "/100");
  announce(parts.join(" \u00b7 "));
  const fleet = $("fleet");
  fleet.dataset.status = health ? health.status : "unknown";
  $("updated").textContent = "Updated " + clock(Date.now()) + ", every " + REFRESH_MS / 1000 + " s";

  renderCharts(r.report);
  renderAlerts(r.alerts);
  renderAgents(r.agents, r.breakers);
  renderModels(r.models, agents);
  renderRollouts(r.deployments, r.abTests);
}

function renderAgents(answer, breakers) {
  const body = $("agents-body");
  const none = unavailable(answer, "The agent list is");
  if (none) return body.replaceChildren(none);
  const list = answer.data.agents;
  if (list.length === 0)
    return body.replaceChildren(el("p", { class: "note warn" }, "No agent is connected."));
  const openByAgent = new Map();
  for (const b of breakers.data?.breakers || []) {
    if (b.model !== null && b.state !== "closed")
      openByAgent.set(b.agentId, (openByAgent.get(b.agentId) || 0) + 1);
  }
  const rows = [...list]
    .sort((a, b) => a.pool.localeCompare(b.pool) || a.name.localeCompare(b.name))
    .map((a) => {
      const frame = a.lastHealth ? a.lastHealth.frame : null;
      const host = frame ? frame.host : null;
      const state = !a.ready
        ? badge("connecting", "warn")
        : a.draining
          ? badge("draining", "warn")
          : badge("ready", "ok");
      const modelOpen = openByAgent.get(a.id) || 0;
      const breaker = el(
        "span",
        {},
        badge(a.breaker.replace("_", "-"), a.breaker === "closed" ? "ok" : "bad"),
        modelOpen ? " " + modelOpen + " model" + (modelOpen === 1 ? "" : "s") + " open" : "",
      );
      let memory = dash;
      if (host && host.memoryTotalBytes > 0) {
        memory =
          typeof host.memoryUsedBytes === "number"
            ? pct((100 * host.memoryUsedBytes) / host.memoryTotalBytes)
            : el(
                "span",
                { title: "total minus free: this agent does not report memory in use" },
                "~" + pct((100 * (host.memoryTotalBytes - host.memoryFreeBytes)) / host.memoryTotalBytes),
              );
      }
      const pressure = host?.memoryPressure
        ? badge(
            host.memoryPressure,
            host.memoryPressure === "normal" ? "ok" : host.memoryPressure === "warn" ? "warn" : "bad",
          )
        : dash;
      return [
        a.name === a.id ? a.name : el("span", { title: a.id }, a.name),
        a.pool,
        state,
        a.models.map((m) => m.name).join(", ") || dash,
        a.inFlight + " / " + a.capacity,
        breaker,
        memory,
        pressure,
        host ? pct(host.cpuPercent) : dash,
        host ? pct(host.gpuPercent) : dash,
        frame ? num(frame.tokensPerSecond, 1) : dash,
      ];
    });
  body.replaceChildren(
    table(
      "Connected agents: load, circuit breaker and host (from each agent's latest health report)",
      [
        "Agent",
        "Pool",
        "State",
        "Models",
        "In flight / capacity",
        "Breaker",
        "Memory",
        "Pressure",
        "CPU",
        "GPU",
        "Tokens/s",
      ],
      rows,
    ),
  );
}

function renderModels(answer, agents) {
  const body = $("models-body");
  const served = new Map();
  for (const a of agents) {
    for (const m of a.models) {
      const base = m.name.split(":")[0];
      if (!served.has(base)) served.set(base, new Map());
      const ids = served.get(base);
      if (!ids.has(m.name)) ids.set(m.name, []);
      ids.get(m.name).push(a.name);
    }
  }
  const servedBy = (name) => {
    const ids = served.get(name);
    if (!ids) return dash;
    return [...ids].map(([id, names]) => id + " on " + names.join(", ")).join("; ");
  };
  const registry = answer.data ? answer.data.models : [];
  const rows = registry.map((m) => [
    m.name,
    m.active_version || dash,
    badge(m.status, m.status === "active" ? "ok" : ""),
    num(m.versions),
    m.previous_version || dash,
    m.tags.join(", ") || dash,
    servedBy(m.name),
  ]);
  const known = new Set(registry.map((m) => m.name));
  for (const name of [...served.keys()].sort()) {
    if (!known.has(name))
      rows.push([name, dash, badge("not registered", ""), dash, dash, dash, servedBy(name)]);
  }
  const parts = [];
  const none = unavailable(answer, "The model registry is");
  if (none) parts.push(none);
  if (rows.length === 0) parts.push(el("p", { class: "note" }, "No model is registered or served."));
  else
    parts.push(
      table(
        "Registered models with their active version, and what the connected agents serve",
        ["Model", "Active version", "Status", "Versions", "Previous", "Tags", "Served by"],
        rows,
      ),
    );
  body.replaceChildren(...parts);
}

function renderAlerts(answer) {
  const body = $("alerts-body");
  const none = unavailable(answer, "Alerts are");
  if (none) return body.replaceChildren(none);
  const { alerts, unreachablePools } = answer.data;
  const parts = [];
  if (unreachablePools?.length)
    parts.push(el("p", { class: "note warn" }, "Pools not answering: " + unreachablePools.join(", ")));
  if (alerts.length === 0) parts.push(el("p", { class: "note ok-text" }, "No active alerts."));
  else {
    const order = { critical: 0, warning: 1 };
    const rows = [...alerts]
      .sort((a, b) => (order[a.severity] ?? 2) - (order[b.severity] ?? 2))
      .map((a) => [
        badge(a.severity, a.severity === "critical" ? "bad" : "warn"),
        a.rule,
        a.summary,
        Object.entries(a.labels || {})
          .map(([k, v]) => k + "=" + v)
          .join(" ") || dash,
        num(a.value, 2) + " (threshold " + num(a.threshold, 2) + ")",
        when(a.since),
      ]);
    parts.push(
      table(
        "Alerts firing now, critical first",
        ["Severity", "Rule", "Summary", "Labels", "Value", "Since"],
        rows,
      ),
    );
  }
  body.replaceChildren(...parts);
}

function renderRollouts(deployments, abTests) {
  const dep = deployments.data ? deployments.data.deployments : [];
  const section = $("deployments");
  section.hidden = dep.length === 0 && !deployments.missing && !deployments.failed;
  const depNone = unavailable(deployments, "Deployments are");
  if (depNone) $("deployments-body").replaceChildren(depNone);
  else if (dep.length) {
    const shown = [...dep].sort((a, b) => Number(b.running) - Number(a.running)).slice(0, 10);
    $("deployments-body").replaceChildren(
      table(
        "Deployments, running first, then the most recent",
        ["Model", "Strategy", "Status", "Candidate", "Baseline", "New version's share", "Updated"],
        shown.map((d) => [
          d.model,
          d.strategy,
          badge(d.status, d.running ? "warn" : d.status === "succeeded" ? "ok" : ""),
          d.candidate,
          d.baseline || dash,
          pct(100 * d.traffic_share),
          when(d.updated_at),
        ]),
      ),
    );
  }
  const tests = abTests.data ? abTests.data.ab_tests : [];
  $("ab-tests").hidden = tests.length === 0 && !abTests.missing && !abTests.failed;
  const abNone = unavailable(abTests, "A/B tests are");
  if (abNone) $("ab-tests-body").replaceChildren(abNone);
  else if (tests.length) {
    $("ab-tests-body").replaceChildren(
      table(
        "Running A/B tests",
        ["Test", "Model A", "Model B", "Share to B", "Status", "Started", "Ends"],
        tests.map((t) => [
          t.test_id,
          t.model_a,
          t.model_b,
          pct(100 * t.traffic_split),
          badge(t.status, "warn"),
          when(t.started_at),
          t.ends_at ? new Date(t.ends_at).toLocaleString("en-GB") : dash,
        ]),
      ),
    );
  }
}

// ---- charts ----

// A DDSketch as the hubs serialize it (gateway/experiments/stats/ddsketch.ts): the value at rank
// q(n-1), each bucket represented by 2 gamma^i / (gamma + 1).
function sketchQuantile(s, q) {
  if (!s || !Array.isArray(s.indexes) || !Array.isArray(s.counts)) return null;
  const n = (s.zeroCount || 0) + s.counts.reduce((x, y) => x + y, 0);
  if (n === 0) return null;
  const rank = q * (n - 1);
  if (rank < (s.zeroCount || 0)) return 0;
  const gamma = (1 + s.relativeAccuracy) / (1 - s.relativeAccuracy);
  let seen = s.zeroCount || 0;
  for (let i = 0; i < s.indexes.length; i++) {
    seen += s.counts[i];
    if (seen > rank) return (2 * gamma ** s.indexes[i]) / (gamma + 1);
  }
  return (2 * gamma ** s.indexes[s.indexes.length - 1]) / (gamma + 1);
}

function minutePoints(series) {
  return series.map((p) => ({
    t: p.t,
    requests: p.requests,
    errors: p.errors,
    p95: sketchQuantile(p.latencyMs, 0.95),
    tps: p.generationMs > 0 ? p.completionTokens / (p.generationMs / 1000) : null,
  }));
}

function renderCharts(answer) {
  const body = $("charts-body");
  const note = $("charts-note");
  const none = unavailable(answer, "The performance report is");
  if (none) {
    note.textContent = "";
    return body.replaceChildren(none);
  }
  const report = answer.data;
  let points;
  const now = Date.now();
  if (Array.isArray(report.series)) {
    points = minutePoints(report.series);
    note.textContent = "Per minute over the last hour, all pools.";
  } else {
    // The report has no per-minute series: sample its rolling one-minute window at each refresh,
    // so the charts cover the time since this page opened.
    const row = report.windows?.["1m"] ? report.windows["1m"].overall : null;
    if (row)
      samples.push({
        t: now,
        requests: row.requests,
        errors: row.errors,
        p95: row.latencyMs ? row.latencyMs.p95 : null,
        tps: row.tokensPerSecond,
      });
    while (samples.length && samples[0].t < now - HOUR_MS) samples.shift();
    points = samples;
    note.textContent =
      "Sampled every " +
      REFRESH_MS / 1000 +
      " s from the report's rolling one-minute window since this page opened (the report has no per-minute series).";
  }
  const charts = [
    ["Requests per minute", "requests", "bars", 0, ""],
    ["Errors per minute", "errors", "bars", 0, ""],
    ["Latency p95", "p95", "line", 0, " ms"],
    ["Tokens per second", "tps", "line", 1, " tok/s"],
  ];
  body.replaceChildren(
    ...charts.map(([title, key, kind, digits, unit]) =>
      chart(
        title,
        points.map((p) => ({ t: p.t, v: p[key] })),
        kind,
        digits,
        unit,
        now,
      ),
    ),
  );
}

function chart(title, points, kind, digits, unit, now) {
  const W = 300;
  const H = 96;
  const PAD = 4;
  const values = points.filter((p) => typeof p.v === "number" && Number.isFinite(p.v));
  const max = values.reduce((m, p) => Math.max(m, p.v), 0);
  const top = max > 0 ? max * 1.1 : 1;
  const x = (t) => PAD + ((W - 2 * PAD) * (t - (now - HOUR_MS))) / HOUR_MS;
  const y = (v) => H - PAD - ((H - 2 * PAD) * v) / top;
  const last = values.length ? values[values.length - 1].v : null;
  const summary = values.length
    ? title + ", last hour: latest " + num(last, digits) + unit + ", peak " + num(max, digits) + unit
    : title + ": no data in the last hour";
  const figure = svg("svg", {
    viewBox: "0 0 " + W + " " + H,
    role: "img",
    "aria-label": summary,
    class: "chart " + kind,
  });
  figure.append(svg("line", { x1: PAD, y1: H - PAD, x2: W - PAD, y2: H - PAD, class: "axis" }));
  figure.append(svg("line", { x1: PAD, y1: y(max || top), x2: W - PAD, y2: y(max || top), class: "grid" }));
  if (kind === "bars") {
    const w = Math.max(1, (W - 2 * PAD) / 60 - 1);
    for (const p of values) {
      if (p.v <= 0) continue;
      const left = Math.min(x(p.t), W - PAD - w);
      figure.append(svg("rect", { x: left, y: y(p.v), width: w, height: H - PAD - y(p.v), class: "mark" }));
    }
  } else if (values.length) {
    const d = values.map((p, i) => (i ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p.v).toFixed(1)).join(" ");
    figure.append(svg("path", { d, class: "mark" }));
    const end = values[values.length - 1];
    figure.append(svg("circle", { cx: x(end.t), cy: y(end.v), r: 2.5, class: "dot" }));
  }
  return el(
    "figure",
    { class: "figure" },
    el(
      "figcaption",
      {},
      el("span", {}, title),
      el("strong", {}, values.length ? num(last, digits) + unit : dash),
    ),
    figure,
    el(
      "p",
      { class: "axis-labels", "aria-hidden": "true" },
      el("span", {}, "\u221260 min"),
      el("span", {}, "peak " + num(max, digits) + unit),
      el("span", {}, "now"),
    ),
  );
}

// ---- wiring ----

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (value.split(".").length !== 3) {
    $("sign-in-message").textContent = "That is not a token: a JWT has three parts separated by dots.";
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token").value = "";
  start();
});

$("sign-out").addEventListener("click", () => showSignIn("Signed out."));

document.addEventListener("visibilitychange", () => {
  if (document.hidden) stop();
  else if (token()) refresh();
});

window.addEventListener("hashchange", () => {
  if (takeTokenFromFragment() && token()) start();
});

function start() {
  showBoard();
  announce("Loading\u2026");
  refresh();
}

takeTokenFromFragment();
if (token()) start();
else showSignIn("");
`;
