// The growth dashboard: one page, hash routes, the worker's own JSON API, SVG charts.
// Every value from the API is put in the page as text (never as HTML).
"use strict";

const REFRESH_MS = 5000;
const main = document.getElementById("main");
const updated = document.getElementById("updated");
const state = { strategy: "", minScore: "", filter: "" };

// --- helpers -------------------------------------------------------------------------------

async function api(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined));
  const response = await fetch(path + (query.toString() ? "?" + query : ""), { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!body.success && path !== "/health") {
    const error = new Error(body.error ? body.error.message : "HTTP " + response.status);
    error.status = response.status;
    throw error;
  }
  return body.data;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US", { maximumFractionDigits: 2 }));
const when = (iso) => (iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–");
const accountLink = (did, handle) => el("a", { href: "#/account/" + encodeURIComponent(did), text: handle || did });
const journeyHref = (topic, partition, offset) =>
  "#/journey/" + encodeURIComponent(topic) + "/" + partition + "/" + offset;
const recordHref = (uri) => "#/record/" + encodeURIComponent(uri);

function table(caption, columns, rows, empty = "Nothing yet.") {
  if (!rows.length) return el("p", { class: "muted", text: caption + ": " + empty });
  const head = el("tr", {}, columns.map((c) => el("th", { scope: "col", class: c.num ? "num" : null, text: c.label })));
  const body = rows.map((row) => el("tr", {}, columns.map((c) => {
    const value = c.value(row);
    return el("td", { class: c.num ? "num" : null }, value instanceof Node ? value : String(value ?? "–"));
  })));
  return el("div", { class: "scroll" }, el("table", {}, el("caption", { text: caption }), el("thead", {}, head), el("tbody", {}, body)));
}

function card(title, ...content) {
  return el("section", { class: "card", "aria-label": title }, el("h2", { text: title }), ...content);
}

// --- charts (SVG) ----------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

function frame(label, points, draw) {
  const width = 600, height = 180, pad = { l: 40, r: 8, t: 8, b: 22 };
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
                             preserveAspectRatio: "none" });
  chart.append(svg("title", {}, label));
  const ys = points.map((p) => p.y);
  const max = Math.max(1, ...ys);
  const x = (i) => pad.l + (points.length <= 1 ? 0 : (i / (points.length - 1)) * (width - pad.l - pad.r));
  const y = (v) => height - pad.b - (v / max) * (height - pad.t - pad.b);
  chart.append(svg("line", { class: "axis", x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b }));
  chart.append(svg("text", { x: 2, y: pad.t + 10 }, number(max)));
  chart.append(svg("text", { x: 2, y: height - pad.b }, "0"));
  if (points.length) {
    chart.append(svg("text", { x: pad.l, y: height - 6 }, points[0].label));
    chart.append(svg("text", { x: width - pad.r, y: height - 6, "text-anchor": "end" }, points[points.length - 1].label));
  }
  draw(chart, { x, y, width, height, pad, max });
  return chart;
}

function lineChart(label, points) {
  return frame(label, points, (chart, g) => {
    if (!points.length) return;
    const d = points.map((p, i) => (i ? "L" : "M") + g.x(i).toFixed(1) + " " + g.y(p.y).toFixed(1)).join(" ");
    chart.append(svg("path", { class: "series", d }));
  });
}

function barChart(label, points) {
  // points: {label, y, down?}: bars up (y) and, when given, down (down) from the axis
  return frame(label, points.map((p) => ({ ...p, y: Math.max(p.y, p.down || 0) })), (chart, g) => {
    const slot = (g.width - g.pad.l - g.pad.r) / Math.max(points.length, 1);
    points.forEach((p, i) => {
      const left = g.pad.l + i * slot + slot * 0.15, w = Math.max(slot * 0.7, 1);
      const base = g.height - g.pad.b;
      if (p.y) chart.append(svg("rect", { class: "bar", x: left, y: g.y(p.y), width: w / (p.down ? 2 : 1), height: base - g.y(p.y) }));
      if (p.down) chart.append(svg("rect", { class: "bar lost", x: left + w / 2, y: g.y(p.down), width: w / 2, height: base - g.y(p.down) }));
    });
  });
}

const minuteLabel = (iso) => new Date(iso).toISOString().slice(11, 16);
const hourLabel = (iso) => new Date(iso).toISOString().slice(5, 13).replace("T", " ") + "h";

// --- pages -----------------------------------------------------------------------------------

async function overview() {
  const [stats, health, dead] = await Promise.all([api("/api/network-stats", { minutes: 60 }), api("/health"),
    api("/api/dead-letters", { minutes: 60 })]);
  const totals = ["users", "follows", "posts", "likes", "reposts", "blocks"].map((k) =>
    el("div", { class: "stat" }, el("b", { text: number(stats[k]) }), el("span", { text: k })));
  totals.push(el("div", { class: "stat" }, el("b", { text: number(stats.events_per_minute) }),
    el("span", { text: "events / min (last hour)" })));
  const series = stats.per_minute.map((p) => ({ label: minuteLabel(p.minute), y: p.count }));
  const services = (health.services || []).map((s) => ({ ...s }));
  const status = (s) => el("span", { class: s === "healthy" ? "ok" : s === "unhealthy" ? "bad" : "warn", text: s });
  return [
    el("h1", { text: "Overview" }),
    el("div", { class: "stats" }, totals),
    el("div", { class: "grid" },
      card("Events per minute", lineChart(`Collected events per minute over the last hour: ${series.length} minutes, ` +
        `${number(stats.events_per_minute)} per minute on average`, series)),
      card("Pipeline health", el("p", {}, "Overall: ", status(health.overall)),
        table("Checks (lag, dead letters, breakers, the ingest's cursor)", [
          { label: "check", value: (s) => s.service },
          { label: "status", value: (s) => status(s.status) },
          { label: "ms", num: true, value: (s) => number(s.responseTime) },
          { label: "says", value: (s) => s.message || "" },
        ], services)),
      card("Dead letters (last hour)", el("p", {}, `${number(dead.total)} dead letters`,
        dead.counted < dead.total ? ` (reasons of the newest ${number(dead.counted)})` : ""),
        table("By topic and reason (bge dlq list shows each; bge dlq redrive re-drives them)", [
          { label: "topic", value: (d) => d.topic }, { label: "reason", value: (d) => d.reason },
          { label: "count", num: true, value: (d) => number(d.count) },
        ], dead.by_reason, "none."))),
  ];
}

async function growth() {
  const [trending, velocity, leaders, posts, tags] = await Promise.all([
    api("/api/trending", { hours: 24, limit: 10 }), api("/api/growth-velocity", { hours: 24, min_base: 1, limit: 10 }),
    api("/api/engagement-leaders", { limit: 10 }), api("/api/posts/top", { hours: 24, limit: 10 }),
    api("/api/hashtags/trending", { hours: 24, limit: 10 }),
  ]);
  const who = (r) => accountLink(r.did, r.handle);
  const top = tags[0];
  return [
    el("h1", { text: "Growth" }),
    el("div", { class: "grid" },
      card("Trending accounts (24 h)", table("Net follower gain", [
        { label: "account", value: who }, { label: "gained", num: true, value: (r) => number(r.gained) },
        { label: "lost", num: true, value: (r) => number(r.lost) }, { label: "net", num: true, value: (r) => number(r.net_gain) },
      ], trending)),
      card("Fastest-growing (24 h)", table("Net gain relative to followers", [
        { label: "account", value: who }, { label: "base", num: true, value: (r) => number(r.base) },
        { label: "net", num: true, value: (r) => number(r.net_gain) },
        { label: "growth", num: true, value: (r) => (r.relative_gain * 100).toFixed(1) + "%" },
      ], velocity)),
      card("Engagement leaders", table("Likes, reposts, replies and quotes received", [
        { label: "account", value: who }, { label: "engagement", num: true, value: (r) => number(r.engagement) },
        { label: "likes", num: true, value: (r) => number(r.likes_received) },
      ], leaders)),
      card("Top posts (24 h)", table("By likes + 2 reposts + 3 replies + 2 quotes", [
        { label: "author", value: (r) => accountLink(r.did, r.handle) }, { label: "post", value: (r) => el("a", { class: "record", href: recordHref(r.uri), text: (r.text || "").slice(0, 90) || "(no text)" }) },
        { label: "likes", num: true, value: (r) => number(r.like_count) }, { label: "score", num: true, value: (r) => number(r.score) },
      ], posts)),
      card("Trending hashtags (24 h)", table("Uses in the window", [
        { label: "hashtag", value: (r) => "#" + r.tag }, { label: "uses", num: true, value: (r) => number(r.total) },
      ], tags), top ? barChart(`Uses of #${top.tag} per hour over the last 24 hours`,
        top.hourly.map((h) => ({ label: hourLabel(h.hour), y: h.count }))) : null),
    ),
  ];
}

async function candidates() {
  const { strategies } = await api("/api/candidates");
  if (!state.strategy && strategies.length) state.strategy = strategies[0].strategy;
  const list = state.strategy ? await api("/api/candidates", { strategy: state.strategy, limit: 100, min_score: state.minScore }) : { candidates: [] };
  const pick = el("select", { id: "strategy", name: "strategy" }, strategies.map((s) =>
    el("option", { value: s.strategy, selected: s.strategy === state.strategy ? "selected" : null, text: `${s.strategy} (${s.candidates})` })));
  pick.addEventListener("change", () => { state.strategy = pick.value; render(); });
  const min = el("input", { id: "min-score", type: "number", step: "0.1", value: state.minScore });
  min.addEventListener("change", () => { state.minScore = min.value; render(); });
  const filter = el("input", { id: "filter", type: "search", value: state.filter, placeholder: "handle, DID or reason" });
  filter.addEventListener("input", () => { state.filter = filter.value; show(); });
  const holder = el("div");
  const show = () => {
    const needle = state.filter.toLowerCase();
    const rows = list.candidates.filter((r) => !needle || [r.did, r.handle || "", ...r.reasons].join(" ").toLowerCase().includes(needle));
    holder.replaceChildren(table(`Candidates of ${state.strategy || "no strategy"}, best score first`, [
      { label: "account", value: (r) => accountLink(r.did, r.handle) },
      { label: "score", num: true, value: (r) => number(r.score) },
      { label: "reasons", value: (r) => el("span", {}, r.reasons.map((why) => el("span", { class: "pill", text: why }))) },
      { label: "followers", num: true, value: (r) => number(r.follower_count) },
      { label: "why", value: (r) => r.source_topic !== null && r.source_topic !== undefined
          ? el("a", { class: "journey", href: journeyHref(r.source_topic, r.source_partition, r.source_offset), text: "event journey" })
          : el("span", { class: "muted", text: "–" }) },
    ], rows));
  };
  show();
  return [
    el("h1", { text: "Candidates" }),
    el("div", { class: "controls" },
      el("label", { for: "strategy" }, "Strategy", pick), el("label", { for: "min-score" }, "Least score", min),
      el("label", { for: "filter" }, "Filter", filter)),
    el("section", { class: "card", "aria-label": "Candidates" }, holder),
  ];
}

async function account(actor) {
  const user = await api("/api/users/" + encodeURIComponent(actor), { recent: 20 });
  const gains = user.follower_gains.map((g) => ({ label: hourLabel(g.hour), y: g.gained, down: g.lost }));
  const counts = user.counts;
  const stat = (label, value) => el("div", { class: "stat" }, el("b", { text: number(value) }), el("span", { text: label }));
  return [
    el("h1", {}, user.profile.display_name || user.handle || user.did, " ", el("span", { class: "muted", text: user.handle ? "@" + user.handle : "" })),
    el("p", { class: "muted" }, user.did, user.profile.description ? " · " + user.profile.description : ""),
    el("div", { class: "stats" },
      stat("followers (firehose)", counts.observed.followers), stat("followers (graph)", counts.graph.followers),
      stat("followers (AppView)", counts.appview ? counts.appview.followers : null), stat("posts", counts.observed.posts),
      stat("net gain, 24 h", user.follower_gain_24h.net)),
    el("div", { class: "grid" },
      card("Follower gains", barChart(`Followers gained (blue) and lost (red) per hour over the last 72 hours: ` +
        `${user.follower_gain_24h.gained} gained and ${user.follower_gain_24h.lost} lost in 24 h`, gains)),
      card("Why it is a candidate", table("Each strategy's decision", [
        { label: "strategy", value: (c) => c.strategy }, { label: "score", num: true, value: (c) => number(c.score) },
        { label: "reasons", value: (c) => el("span", {}, c.reasons.map((why) => c.source_topic !== null && c.source_topic !== undefined
            ? el("a", { class: "pill", href: journeyHref(c.source_topic, c.source_partition, c.source_offset), text: why })
            : el("span", { class: "pill", text: why }))) },
        { label: "since", value: (c) => when(c.first_seen_at) },
      ], user.candidates, "not a candidate.")),
      card("Recent activity", table("Latest actions", [
        { label: "when", value: (a) => when(a.occurred_at) }, { label: "what", value: (a) => a.collection + " " + a.operation },
      ], user.recent_activity)),
      card("Recent posts", table("Latest posts", [
        { label: "when", value: (p) => when(p.indexed_at) },
        { label: "text", value: (p) => el("a", { class: "record", href: recordHref(p.uri), text: (p.text || "").slice(0, 120) || "(no text)" }) },
        { label: "likes", num: true, value: (p) => number(p.like_count) },
      ], user.recent_posts)),
    ),
  ];
}

async function journey(topic, partition, offset, uri = null) {
  const j = uri ? await api("/api/journey/record", { uri }) : await api("/api/journey", { topic, partition, offset });
  const ex = j.explanation || {};
  const decisions = Object.entries(ex.decisions || {}).map(([strategy, d]) => ({ strategy, ...d }));
  const spans = j.spans || [];
  const start = spans.length ? Math.min(...spans.map((s) => s.start_us)) : 0;
  const end = spans.length ? Math.max(...spans.map((s) => s.start_us + s.duration_us)) : 1;
  const total = Math.max(end - start, 1);
  const waterfall = el("ul", { class: "spans", "aria-label": "Spans of the trace" }, spans.map((s) =>
    el("li", { class: "trace-span" }, el("span", {}, s.name, el("span", { class: "muted", text: " · " + s.service })),
      el("span", { class: "track", "aria-hidden": "true" }, el("span", { class: "span",
        style: `left:${((s.start_us - start) / total * 100).toFixed(2)}%;width:${(s.duration_us / total * 100).toFixed(2)}%` })),
      el("span", { class: "num", text: (s.duration_us / 1000).toFixed(2) + " ms" }))));
  return [
    el("h1", { text: "Event journey" }),
    el("p", { class: "muted" }, (uri ? uri + " · " : "") + `${j.topic} · partition ${j.partition} · offset ${j.offset} · ${when(new Date(j.timestamp_ms).toISOString())}`),
    el("div", { class: "grid wide" },
      card("The event", el("pre", { text: JSON.stringify(j.event, null, 2) })),
      card("Each strategy's decision", ex.status === "rejected"
        ? el("p", { class: "bad", text: `Rejected: ${ex.code}: ${ex.message}` })
        : table("Replayed alone, with the worker's strategy configuration", [
          { label: "strategy", value: (d) => d.strategy },
          { label: "result", value: (d) => el("span", { class: d.result === "success" ? "ok" : "muted", text: d.result === "success" ? "candidate" : "declined" }) },
          { label: "why", value: (d) => d.result === "success" ? d.candidates.map((c) => c.reasons.join("; ")).join(" | ") : `${d.code}: ${d.message}` },
        ], decisions, "not a raw event.")),
      card("Domain events", table("What the collect stage derives", [
        { label: "schema", value: (e) => e.schema }, { label: "account", value: (e) => accountLink(e.did, e.did) }, { label: "id", value: (e) => e.id },
      ], ex.events || [])),
      card("Rows written", Object.keys(j.rows).length
        ? Object.entries(j.rows).map(([t, rows]) => el("div", {}, el("h3", { text: t }), el("pre", { text: JSON.stringify(rows, null, 2) })))
        : el("p", { class: "muted", text: "No row holds it (yet)." })),
      card("Trace", j.trace_id ? el("p", {}, "Trace ", el("code", { text: j.trace_id }), j.jaeger_url ? el("span", {}, " · ", el("a", { href: j.jaeger_url, text: "open in Jaeger" })) : "")
        : el("p", { class: "muted", text: "The message carries no trace context (sampling)." }),
        spans.length ? waterfall : el("p", { class: "muted", text: j.trace_id ? "Jaeger has no spans of it yet." : "" })),
      card("Reproduce it", el("pre", {}, el("code", { text: j.replay_command }))),
    ),
  ];
}

async function crawls() {
  const rows = await api("/api/crawls", { limit: 20 });
  return [
    el("h1", { text: "Crawls" }),
    el("section", { class: "card", "aria-label": "Crawls" }, table("Started with bge crawl, latest first", [
      { label: "id", value: (c) => c.id.slice(0, 8) }, { label: "kind", value: (c) => c.kind },
      { label: "state", value: (c) => c.state },
      { label: "progress", value: (c) => el("progress", { max: Math.max(c.requests, 1), value: c.finished,
          "aria-label": `${c.finished} of ${c.requests} requests` }) },
      { label: "requests", num: true, value: (c) => `${c.finished}/${c.requests}` },
      { label: "found", num: true, value: (c) => number(c.accounts_found) },
      { label: "failed", num: true, value: (c) => number(c.failed) },
      { label: "ETA", num: true, value: (c) => (c.eta_s === null ? "–" : c.eta_s + " s") },
    ], rows, "none yet (bge crawl snowball --seed ...).")),
  ];
}

// --- routing and live refresh ------------------------------------------------------------------

function route() {
  const parts = (location.hash.replace(/^#\/?/, "") || "overview").split("/").map(decodeURIComponent);
  switch (parts[0]) {
    case "growth": return ["growth", () => growth()];
    case "candidates": return ["candidates", () => candidates()];
    case "crawls": return ["crawls", () => crawls()];
    case "account": return ["account", () => account(parts.slice(1).join("/"))];
    case "journey": return ["journey", () => journey(parts[1], parts[2], parts[3])];
    case "record": return ["journey", () => journey(null, null, null, parts.slice(1).join("/"))];
    default: return ["overview", () => overview()];
  }
}

let rendering = null;
async function render(focus = false) {
  if (rendering) return rendering;
  const [page, build] = route();
  document.querySelectorAll("nav a").forEach((link) => {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  });
  rendering = (async () => {
    try {
      const content = await build();
      const active = document.activeElement && main.contains(document.activeElement) ? document.activeElement.id : null;
      main.replaceChildren(...content);
      main.dataset.page = page;
      if (active && document.getElementById(active)) document.getElementById(active).focus();
      if (focus) { window.scrollTo(0, 0); main.focus({ preventScroll: true }); }
      updated.textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    } catch (error) {
      main.replaceChildren(el("h1", { text: "Not available" }), el("p", { class: "error", text: error.message }));
      main.dataset.page = page;
    } finally {
      rendering = null;
    }
  })();
  return rendering;
}

document.querySelector("form.find").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = document.getElementById("find").value.trim();
  const coordinates = value.match(/^([A-Za-z0-9._-]+)\/(\d+)\/(\d+)$/);
  if (coordinates) location.hash = journeyHref(coordinates[1], coordinates[2], coordinates[3]);
  else if (/^at:\/\/[^/]+\/[^/]+\/[^/]+$/.test(value)) location.hash = recordHref(value);
  else if (value.startsWith("at://")) location.hash = "#/account/" + encodeURIComponent(value.slice(5).split("/")[0]);
  else if (value) location.hash = "#/account/" + encodeURIComponent(value.replace(/^@/, ""));
});
window.addEventListener("hashchange", () => render(true));
setInterval(() => { if (!document.hidden) render(false); }, REFRESH_MS);
render(false);
