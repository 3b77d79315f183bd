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
    const g = svgEl("g", r.item !== undefined && r.item !== null ? { class: "bar", "data-item": String(r.item) }
                                                                  : { class: "bar" });
    const title = svgEl("title", {}, `${r.label}: ${r.note || fmt(r.value)}${r.title ? ` (${r.title})` : ""}`);
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

// ---------------------------------------------------------------------------------------------- //
// explanations: every method's result carries one "explanation" object (whyrec/explain/explanation.py):
// {statement, score, baseline, additive, stats, already_interacted, contributions: [{kind, label, value, item}]}
// and this draws it, whatever the method.
// ---------------------------------------------------------------------------------------------- //
const KIND_CLASS = { "history item": "pos", "knowledge-graph entity": "soft", "user feature": "pos",
                     "item feature": "hi", "concept": "pos" };

function renderExplanation(section, result) {
  const e = result.explanation;
  if (e.already_interacted) {
    section.append(el("p", { class: "note interacted",
      text: `You have already interacted with ${e.item_title || e.item}: this explains its score, not a recommendation.` }));
  }
  if (e.statement) section.append(el("p", { class: "because", text: e.statement }));
  if (e.faithfulness) {  // the benchmark's verdict on this explainer for this model (docs/explanations.md)
    const f = e.faithfulness;
    section.append(el("p", { class: f.verdict === "faithful" ? "muted faithfulness" : "unfaithful faithfulness",
                             text: `${f.verdict === "faithful" ? "Faithful" : f.verdict === "not faithful"
                               ? "Not faithful" : "Faithfulness not measured"}: ${f.note}.` }));
  }
  const stats = Object.assign({}, e.stats || {});
  const share = stats["history share"];
  delete stats["history share"];
  if (typeof share === "number") {
    section.append(el("p", { class: "muted", text: share >= 0.995
      ? "All of this score comes from your history: the explanation is complete."
      : `${pct(share)} of this score depends on your history; the rest is the model's ` +
        "learned profile of you, which no history item explains." }));
  }
  const parts = [];
  if (typeof e.score === "number") parts.push(`score ${fmt(e.score)}`);
  if (typeof e.baseline === "number") parts.push(`baseline ${fmt(e.baseline)}`);
  for (const [k, v] of Object.entries(stats)) {
    if (v !== null && v !== undefined) parts.push(`${k} ${typeof v === "number" ? fmt(v) : v}`);
  }
  if (parts.length) section.append(el("p", { class: "stats", text: parts.join(" · ") }));
  const compare = Object.entries(e.compare || {});
  if (compare.length) {  // a few quantities side by side (a counterfactual: the item's rank now and without the set)
    const bars = el("div", { class: "chart" });
    section.append(bars);
    barChart(bars, compare.map(([k, v], n) => ({ label: k, value: v, cls: n ? "hi" : "soft",
                                         note: Number.isInteger(v) ? String(v) : fmt(v) })),
             { signed: false, labelWidth: 190 });
  }
  const chart = el("div", { class: "chart" });
  section.append(chart);
  const rows = (e.contributions || []).slice(0, 12);
  if (!rows.length && compare.length) { chart.remove(); return; }
  const isSet = rows.length > 0 && rows.every((c) => c.value === rows[0].value);  // a set, not a ranking
  barChart(chart, rows.map((c) => ({ label: c.label, value: c.value, item: c.item, cls: KIND_CLASS[c.kind],
                                     note: isSet ? "in the set" : undefined, title: c.kind })),
           { labelWidth: 190, signed: isSet ? false : undefined });
  const kinds = [...new Set(rows.map((c) => c.kind))];
  if (kinds.length) {
    section.append(el("p", { class: "muted", text: (e.additive ? "contributions add up to score − baseline; " : "") +
                                                    `bars: ${kinds.join(", ")}` }));
  }
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
        renderExplanation(section, result);
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
