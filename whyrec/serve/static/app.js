// whyrec page: plain DOM + hand-drawn SVG charts, no dependencies, no network beyond this server.
"use strict";

const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";
const state = { health: null, liked: [], mode: null, data: null, selected: null, suggest: [], active: -1 };

// ---------------------------------------------------------------------------------------------- //
// HTTP
// ---------------------------------------------------------------------------------------------- //
// A service started with an API key (needed beyond loopback) is opened as http://host:port/#key=KEY: the
// key is kept for this tab and sent with every request as X-API-Key; it never goes into a URL.
const API_KEY = (() => {
  const m = /(?:^#|&)key=([^&]+)/.exec(location.hash || "");
  if (m) {
    try { sessionStorage.setItem("whyrec-key", decodeURIComponent(m[1])); } catch (e) { /* storage off */ }
    history.replaceState(null, "", location.pathname + location.search);
    return decodeURIComponent(m[1]);
  }
  try { return sessionStorage.getItem("whyrec-key"); } catch (e) { return null; }
})();

async function api(path, options) {
  options = Object.assign({}, options || {});
  if (API_KEY) options.headers = Object.assign({}, options.headers || {}, { "X-API-Key": API_KEY });
  const res = await fetch(path, options);
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (!res.ok) {
    let msg = body && body.detail !== undefined ? body.detail : res.statusText;
    if (Array.isArray(msg)) msg = msg.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    const err = new Error(String(msg));
    err.status = res.status;
    throw err;
  }
  return body;
}

function showError(err) {
  const box = $("#error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.message || String(err);
  box.hidden = false;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function svgEl(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

const fmt = (v) => {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.001 || a >= 10000)) return v.toExponential(2);
  return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
};
const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(0)}%`);
const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

// ---------------------------------------------------------------------------------------------- //
// charts
// ---------------------------------------------------------------------------------------------- //
// Horizontal bars. rows: [{label, value, cls?, note?}]; signed bars grow from a zero axis.
function barChart(container, rows, opts = {}) {
  container.replaceChildren();
  if (!rows.length) { container.append(el("p", { class: "muted", text: "nothing to show" })); return null; }
  const W = opts.width || 460, labelW = opts.labelWidth || 170, valueW = 58, rowH = 20, top = opts.title ? 18 : 4;
  const H = top + rows.length * rowH + 4;
  const values = rows.map((r) => r.value);
  const signed = opts.signed !== undefined ? opts.signed : values.some((v) => v < 0);
  const maxAbs = Math.max(1e-12, ...values.map((v) => Math.abs(v)));
  const plotW = W - labelW - valueW;
  const x0 = signed ? labelW + plotW / 2 : labelW;
  const scale = (signed ? plotW / 2 : plotW) / (opts.max || maxAbs);
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title || "bar chart" });
  if (opts.title) svg.append(svgEl("text", { x: labelW, y: 12, class: "head" }, opts.title));
  rows.forEach((r, k) => {
    const y = top + k * rowH;
    const w = Math.max(Math.abs(r.value) * scale, r.value === 0 ? 0 : 1);
    const x = r.value >= 0 ? x0 : x0 - w;
    const g = svgEl("g", { class: "bar" });
    const title = svgEl("title", {}, `${r.label}: ${r.note || fmt(r.value)}`);
    g.append(title);
    if (!signed) g.append(svgEl("rect", { x: labelW, y: y + 3, width: plotW, height: rowH - 6, class: "track" }));
    g.append(svgEl("rect", { x, y: y + 3, width: w, height: rowH - 6,
                             class: r.cls || (r.value >= 0 ? "pos" : "neg") }));
    g.append(svgEl("text", { x: labelW - 6, y: y + rowH / 2 + 4, "text-anchor": "end" }, clip(r.label, 30)));
    g.append(svgEl("text", { x: W - valueW + 6, y: y + rowH / 2 + 4, class: "value" }, r.note || fmt(r.value)));
    svg.append(g);
  });
  if (signed) svg.append(svgEl("line", { x1: x0, x2: x0, y1: top, y2: H - 2, class: "axis" }));
  container.append(svg);
  return svg;
}

// Two aligned bar columns per row (e.g. the model's genre sensitivity next to the real history).
function pairedChart(container, rows, titles) {
  container.replaceChildren();
  if (!rows.length) { container.append(el("p", { class: "muted", text: "nothing to show" })); return null; }
  const W = 560, labelW = 120, colW = (W - labelW) / 2, rowH = 20, top = 20, H = top + rows.length * rowH + 4;
  const svg = svgEl("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": titles.join(" vs ") });
  const cols = [0, 1].map((c) => {
    const vals = rows.map((r) => (c === 0 ? r.a : r.b)).filter((v) => v !== null && v !== undefined);
    const signed = vals.some((v) => v < 0);
    const maxAbs = Math.max(1e-12, ...vals.map(Math.abs));
    const x = labelW + c * colW + 6, w = colW - 56;
    return { x, w, signed, maxAbs, x0: signed ? x + w / 2 : x };
  });
  cols.forEach((col, c) => svg.append(svgEl("text", { x: col.x, y: 12, class: "head" }, titles[c])));
  rows.forEach((r, k) => {
    const y = top + k * rowH;
    svg.append(svgEl("text", { x: labelW - 4, y: y + rowH / 2 + 4, "text-anchor": "end" }, clip(r.label, 18)));
    cols.forEach((col, c) => {
      const v = c === 0 ? r.a : r.b;
      if (v === null || v === undefined) {
        svg.append(svgEl("text", { x: col.x0 + 2, y: y + rowH / 2 + 4, class: "value" }, "–"));
        return;
      }
      const w = Math.max(Math.abs(v) * (col.signed ? col.w / 2 : col.w) / col.maxAbs, 1);
      const cls = r.hi ? "hi" : c === 0 ? (v >= 0 ? "pos" : "neg") : "soft";
      const g = svgEl("g", { class: "bar" });
      g.append(svgEl("title", {}, `${r.label}: ${c === 0 ? fmt(v) : r.bNote || fmt(v)}`));
      g.append(svgEl("rect", { x: v >= 0 ? col.x0 : col.x0 - w, y: y + 3, width: w, height: rowH - 6, class: cls }));
      g.append(svgEl("text", { x: col.x + col.w + 4, y: y + rowH / 2 + 4, class: "value" },
                     c === 0 ? fmt(v) : r.bNote || fmt(v)));
      svg.append(g);
    });
  });
  cols.filter((c) => c.signed).forEach((c) =>
    svg.append(svgEl("line", { x1: c.x0, x2: c.x0, y1: top, y2: H - 2, class: "axis" })));
  container.append(svg);
  return svg;
}

// ---------------------------------------------------------------------------------------------- //
// explanation results -> bars (any method: known shapes first, then a generic search)
// ---------------------------------------------------------------------------------------------- //
const LABEL_KEYS = ["title", "item_title", "label", "name", "feature", "group", "genre", "concept", "factor", "item"];
const VALUE_KEYS = ["attribution", "contribution", "importance", "value", "weight", "sensitivity", "score", "share"];

function barsFromObject(obj) {
  const rows = Object.entries(obj).filter(([, v]) => typeof v === "number" && Number.isFinite(v))
    .map(([k, v]) => ({ label: k, value: v }));
  return rows.length ? rows : null;
}

function barsFromArray(arr) {
  if (!Array.isArray(arr) || !arr.length || typeof arr[0] !== "object" || arr[0] === null) return null;
  const labelKey = LABEL_KEYS.find((k) => arr.every((r) => r[k] !== undefined && r[k] !== null));
  const valueKey = VALUE_KEYS.find((k) => arr.every((r) => typeof r[k] === "number"));
  if (!labelKey || !valueKey) return null;
  return arr.map((r) => ({ label: String(r[labelKey]), value: r[valueKey] }));
}

function genericBars(result) {
  for (const key of ["attributions", "contributions", "importances", "weights", "history", "items", "features"]) {
    const v = result[key];
    if (!v) continue;
    const rows = Array.isArray(v) ? barsFromArray(v) : typeof v === "object" ? barsFromObject(v) : null;
    if (rows) return rows;
  }
  for (const v of Object.values(result)) {
    const rows = Array.isArray(v) ? barsFromArray(v) : v && typeof v === "object" ? barsFromObject(v) : null;
    if (rows && rows.length > 1) return rows;
  }
  return null;
}

// Counterfactual: the verified set of history items without which the item leaves the top k.
function renderCounterfactual(section, result) {
  section.append(el("p", { class: "because counterfactual", text: result.statement }));
  const rows = [{ label: "rank now", value: result.rank_before, cls: "soft", note: `#${result.rank_before}` }];
  const after = result.found ? result.rank_after : (result.best_rank || result.rank_after);
  rows.push({ label: result.found ? "rank without them" : "best rank reached", value: after,
              cls: result.found ? "hi" : "soft", note: `#${after}` });
  const stats = [];
  if (result.found && !result.already_out) {
    stats.push(`${result.size} of your ${result.n_history} history items`);
    stats.push(result.optimal ? "proven smallest" : "no item of it can be spared");
  }
  stats.push(`verified by ${result.rescorings} exact re-scorings`);
  section.append(el("p", { class: "stats", text: stats.join(" · ") }));
  const chart = el("div", { class: "chart" });
  section.append(chart);
  barChart(chart, rows, { signed: false, labelWidth: 190,
                          max: Math.max(result.k + 1, after, result.rank_before) });
  if (result.removed && result.removed.length) {
    section.append(el("ul", { class: "removed" },
      ...result.removed.map((r) => el("li", { "data-item": String(r.item),
                                              text: r.title + (r.rating ? ` (${r.rating}★)` : "") }))));
  }
}

function renderExplanation(section, method, result) {
  if (method === "counterfactual") { renderCounterfactual(section, result); return; }
  const stats = [];
  for (const k of ["score", "baseline_score", "delta", "convergence_delta"]) {
    if (typeof result[k] === "number") stats.push(`${k.replace("_", " ")} ${fmt(result[k])}`);
  }
  if (typeof result.because === "string") section.append(el("p", { class: "because", text: result.because }));
  if (typeof result.history_share === "number") {
    section.append(el("p", { class: "muted", text: result.history_share >= 0.995
      ? "All of this score comes from your history: the explanation is complete."
      : `${pct(result.history_share)} of this score depends on your history; the rest is the model's ` +
        "learned profile of you, which no history item explains." }));
  }
  if (stats.length) section.append(el("p", { class: "stats", text: stats.join(" · ") }));
  const chart = el("div", { class: "chart" });
  section.append(chart);
  if (method === "concepts" && Array.isArray(result.genres)) {
    const byZ = [...result.genres].sort((p, q) => (q.z ?? -Infinity) - (p.z ?? -Infinity));
    const rows = byZ.slice(0, 12).map((g) => ({
      label: g.genre, a: g.z, b: g.share, hi: g.item_genre, bNote: pct(g.share),
    }));
    pairedChart(chart, rows, ["model's sensitivity (z over users)", "share of your history"]);
    section.append(el("p", { class: "muted",
      text: "Genres ranked by how strongly the model thinks you like them; highlighted: this movie's genres." }));
    return;
  }
  let rows = genericBars(result);
  if (!rows) { chart.append(el("p", { class: "muted", text: "this result has nothing to draw" })); return; }
  rows = rows.sort((p, q) => Math.abs(q.value) - Math.abs(p.value)).slice(0, 12);
  barChart(chart, rows, { labelWidth: 190 });
}

const METHOD_TITLES = {
  history: "Your history items that drove it",
  features: "Feature attributions (Integrated Gradients)",
  concepts: "Your genre sensitivities next to your real genre history",
  intrinsic: "The model's own importances",
  counterfactual: "What would take it out of your top 10",
};
// query options per method (the counterfactual asks about the whole list shown, the top 10)
const METHOD_OPTIONS = { counterfactual: "&k=10" };

// A search such as the counterfactual one can take longer than the service's deadline (a 503 with
// Retry-After); the computation it started goes on and its answer is cached, so asking again gets it.
async function explainWithRetry(path, item, tries = 180) {
  for (let attempt = 1; ; attempt++) {
    try { return await api(path); } catch (err) {
      if (err.status !== 503 || attempt >= tries || state.selected !== String(item)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

async function loadExplanations(user, item) {
  const box = $("#explanations");
  box.replaceChildren();
  const methods = (state.health && state.health.available_methods) || [];
  const missing = ((state.health && state.health.explain_methods) || []).filter((m) => !methods.includes(m));
  for (const method of methods) {
    const section = el("div", { class: "block explain", "data-method": method },
                       el("h3", { text: METHOD_TITLES[method] || method }));
    const wait = el("p", { class: "muted", text: "computing…" });
    section.append(wait);
    box.append(section);
    explainWithRetry(`/users/${encodeURIComponent(user)}/explanations/${encodeURIComponent(item)}` +
                     `?method=${method}${METHOD_OPTIONS[method] || ""}`, item)
      .then((result) => {
        if (state.selected !== String(item)) return;  // another movie was opened meanwhile
        wait.remove();
        renderExplanation(section, method, result);
        section.setAttribute("data-ready", "1");
      })
      .catch((err) => { wait.remove(); section.append(el("p", { class: "error", text: err.message })); });
  }
  if (missing.length) {
    box.append(el("p", { class: "muted",
      text: `Not in this version of whyrec yet: ${missing.join(", ")} explanations.` }));
  }
}

// ---------------------------------------------------------------------------------------------- //
// recommendations
// ---------------------------------------------------------------------------------------------- //
function showRecommendations(data, heading) {
  state.data = data;
  state.selected = null;
  $("#results").hidden = false;
  $("#detail").hidden = true;
  $("#results-title").textContent = heading;
  const list = $("#recs");
  list.replaceChildren();
  for (const r of data.recommendations) {
    const btn = el("button", { type: "button", "data-item": String(r.item_id), "aria-pressed": "false" },
                   el("span", { class: "rank", text: String(r.rank) }),
                   el("span", { class: "title", text: r.title },
                      el("span", { class: "genres", text: (r.genres || []).join(" · ") })),
                   el("span", { class: "score chart" }));
    btn.addEventListener("click", () => openDetail(r.item_id));
    list.append(el("li", {}, btn));
    const max = Math.max(...data.recommendations.map((x) => Math.abs(x.score)), 1e-12);
    const bar = svgEl("svg", { viewBox: "0 0 90 10", "aria-hidden": "true" });
    bar.append(svgEl("rect", { x: 0, y: 2, width: 90, height: 6, class: "track" }));
    bar.append(svgEl("rect", { x: 0, y: 2, width: Math.max(1, 90 * Math.abs(r.score) / max), height: 6,
                               class: "soft" }));
    btn.querySelector(".score").append(bar);
  }
  if (!data.recommendations.length) list.append(el("li", { class: "muted", text: "no unseen items left" }));
}

function openDetail(itemId) {
  const data = state.data;
  const rec = data.recommendations.find((r) => r.item_id === itemId);
  if (!rec) return;
  state.selected = String(itemId);
  document.querySelectorAll("#recs button").forEach((b) =>
    b.setAttribute("aria-pressed", b.dataset.item === String(itemId) ? "true" : "false"));
  $("#detail").hidden = false;
  $("#detail-title").textContent = `#${rec.rank} ${rec.title}`;
  $("#detail-meta").textContent = `${(rec.genres || []).join(", ") || "no genres"} · score ${fmt(rec.score)}` +
    (state.mode === "user" ? ` · user ${data.user}` : ` · from ${data.liked.length} liked movies`);
  // because you liked (new users: exact fold-in decomposition)
  const because = $("#because-block");
  if (state.mode === "new" && rec.because) {
    because.hidden = false;
    barChart($("#because-chart"), rec.because.map((b) => ({ label: b.title, value: b.contribution })),
             { labelWidth: 200 });
  } else {
    because.hidden = true;
    $("#because-chart").replaceChildren();
  }
  // genre profile with this item's genres highlighted
  const mine = new Set(rec.genres || []);
  const profile = data.profile || [];
  const shown = profile.filter((g, k) => k < 14 || mine.has(g.genre));  // the top genres and this movie's
  const rows = shown.map((g) => ({
    label: g.genre, value: g.share, note: `${pct(g.share)} (${g.count})`, cls: mine.has(g.genre) ? "hi" : "soft",
  }));
  for (const g of mine) {  // a genre of this movie the user has never seen
    if (!rows.some((r) => r.label === g)) rows.push({ label: g, value: 0, note: "0%", cls: "hi" });
  }
  barChart($("#genre-chart"), rows, { signed: false, max: 1, labelWidth: 150 });
  // score among the list
  barChart($("#score-chart"), data.recommendations.map((r) => ({
    label: `${r.rank}. ${r.title}`, value: r.score, cls: r.item_id === itemId ? "hi" : "soft",
  })), { labelWidth: 220 });
  // method explanations (known users: the endpoint needs a user id)
  if (state.mode === "user") loadExplanations(data.user, itemId);
  else {
    $("#explanations").replaceChildren();
    if (state.health && state.health.available_methods.length) {
      $("#explanations").append(el("p", { class: "muted",
        text: "Method explanations (" + state.health.available_methods.join(", ") +
              ") are for existing users: pick one on the left." }));
    }
  }
}

async function recommendUser(ev) {
  ev.preventDefault();
  showError(null);
  const id = $("#user-id").value.trim();
  if (!id) { showError(new Error("enter a user id")); return; }
  try {
    const data = await api(`/users/${encodeURIComponent(id)}/recommendations?k=10`);
    state.mode = "user";
    showRecommendations(data, `Top ${data.recommendations.length} for user ${data.user} (${data.n_seen} seen)`);
  } catch (err) { showError(err); }
}

async function recommendNew(ev) {
  ev.preventDefault();
  showError(null);
  if (!state.liked.length) { showError(new Error("add at least one movie you like")); return; }
  try {
    const data = await api("/recommendations", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ liked: state.liked.map((x) => x.item_id), k: 10 }),
    });
    state.mode = "new";
    showRecommendations(data, `Top ${data.recommendations.length} for someone who likes ${data.liked.length} ` +
                              `movie${data.liked.length > 1 ? "s" : ""}`);
  } catch (err) { showError(err); }
}

// ---------------------------------------------------------------------------------------------- //
// liked movies: chips + autocomplete
// ---------------------------------------------------------------------------------------------- //
function renderLiked() {
  const list = $("#liked-list");
  list.replaceChildren();
  state.liked.forEach((item, k) => {
    const remove = el("button", { type: "button", "aria-label": `remove ${item.title}`, text: "×" });
    remove.addEventListener("click", () => { state.liked.splice(k, 1); renderLiked(); });
    list.append(el("li", { "data-item": String(item.item_id) }, el("span", { text: item.title }), remove));
  });
  $("#new-go").disabled = state.liked.length === 0;
}

function addLiked(item) {
  if (!state.liked.some((x) => x.item_id === item.item_id)) state.liked.push(item);
  renderLiked();
  closeSuggestions();
  $("#liked-input").value = "";
  $("#liked-input").focus();
}

function closeSuggestions() {
  state.suggest = []; state.active = -1;
  $("#suggestions").hidden = true;
  $("#suggestions").replaceChildren();
  $("#liked-input").setAttribute("aria-expanded", "false");
}

function renderSuggestions() {
  const box = $("#suggestions");
  box.replaceChildren();
  state.suggest.forEach((item, k) => {
    const li = el("li", { role: "option", "data-item": String(item.item_id), "aria-selected": String(k === state.active) },
                  el("span", { text: item.title }), el("span", { class: "genres", text: (item.genres || []).join(", ") }));
    li.addEventListener("mousedown", (e) => { e.preventDefault(); addLiked(item); });
    box.append(li);
  });
  box.hidden = state.suggest.length === 0;
  $("#liked-input").setAttribute("aria-expanded", String(!box.hidden));
}

let suggestTimer = null, suggestSeq = 0;
function onType() {
  clearTimeout(suggestTimer);
  const q = $("#liked-input").value.trim();
  if (!q) { closeSuggestions(); return; }
  suggestTimer = setTimeout(async () => {
    const seq = ++suggestSeq;
    try {
      const res = await api(`/items?q=${encodeURIComponent(q)}&limit=8`);
      if (seq !== suggestSeq) return;
      state.suggest = res.items; state.active = res.items.length ? 0 : -1;
      renderSuggestions();
    } catch (err) { showError(err); }
  }, 120);
}

function onKey(ev) {
  const n = state.suggest.length;
  if (ev.key === "ArrowDown" && n) { state.active = (state.active + 1) % n; renderSuggestions(); ev.preventDefault(); }
  else if (ev.key === "ArrowUp" && n) { state.active = (state.active - 1 + n) % n; renderSuggestions(); ev.preventDefault(); }
  else if (ev.key === "Enter") {
    ev.preventDefault();
    if (n && state.active >= 0) addLiked(state.suggest[state.active]);
  } else if (ev.key === "Escape") closeSuggestions();
}

// ---------------------------------------------------------------------------------------------- //
async function init() {
  $("#user-form").addEventListener("submit", recommendUser);
  $("#new-form").addEventListener("submit", recommendNew);
  $("#new-clear").addEventListener("click", () => { state.liked = []; renderLiked(); closeSuggestions(); });
  $("#liked-input").addEventListener("input", onType);
  $("#liked-input").addEventListener("keydown", onKey);
  $("#liked-input").addEventListener("blur", () => setTimeout(closeSuggestions, 150));
  try {
    const h = await api("/health");
    state.health = h;
    $("#run-info").textContent = `${h.model} on ${h.dataset} · ${h.n_users.toLocaleString()} users · ` +
      `${h.n_items.toLocaleString()} items · explanations: ${h.available_methods.join(", ") || "none yet"}`;
    $("#user-hint").textContent = `ids ${h.user_id_range[0]}–${h.user_id_range[1]}, e.g. ${h.example_users.join(", ")}`;
    $("#user-id").placeholder = `e.g. ${h.example_users[0]}`;
    if (!h.new_users) {
      $("#liked-input").disabled = true;
      $("#new-form").append(el("p", { class: "muted", text: `New users need a LightGCN run (this is ${h.model}).` }));
    }
    document.body.setAttribute("data-ready", "1");
  } catch (err) { showError(err); }
}

document.addEventListener("DOMContentLoaded", init);
