// churn dashboard: reads the admin JSON endpoints and draws them. No
// framework; uPlot (vendored) draws the curves. The admin token comes from
// the URL fragment (#token=..., never sent to the server), the session, or
// the form, and travels as a bearer header.
"use strict";

const state = { token: sessionStorage.getItem("churn-token") || "", charts: {}, polling: null };
window.churnCharts = {};

(function tokenFromFragment() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    state.token = decodeURIComponent(m[1]);
    sessionStorage.setItem("churn-token", state.token);
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

const fmt = (x, d = 4) => (x == null || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
const pct = (x) => (x == null ? "–" : (100 * x).toFixed(1) + "%");

async function apiFull(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const res = await fetch(path, Object.assign({}, options, { headers }));
  const body = await res.json().catch(() => null);
  if (!res.ok) {
    const msg = body && body.error ? body.error : res.status + " " + res.statusText;
    const err = new Error(msg);
    err.status = res.status;
    throw err;
  }
  return { body, headers: res.headers };
}

async function api(path, options = {}) {
  return (await apiFull(path, options)).body;
}

function setStatus(text, bad) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = bad ? "alert" : "muted";
}

function fill(tbodyParent, rows) {
  const tbody = document.querySelector(tbodyParent + " tbody");
  tbody.replaceChildren(...rows);
}

// ---- models -------------------------------------------------------------

function production(models) {
  return models.find((m) => m.aliases.includes("production"));
}

/// The version compared with production: the newest other one.
function challenger(models, prod) {
  const others = models.filter((m) => !prod || m.version !== prod.version);
  return others.length ? others[others.length - 1] : null;
}

function renderModels(models) {
  fill("#models", models.slice().reverse().map((m) => {
    const c = m.report && m.report.calibration;
    const isProd = m.aliases.includes("production");
    return el("tr", {},
      el("td", {}, m.version),
      el("td", {}, m.kind),
      el("td", {}, ...m.aliases.map((a) => el("span", { class: "pill" }, a))),
      el("td", { class: "num" }, fmt(m.metrics.auc)),
      el("td", { class: "num" }, fmt(m.metrics.pr_auc)),
      el("td", { class: "num" }, fmt(m.metrics.logloss)),
      el("td", { class: "num" }, fmt(m.metrics.recency_auc)),
      el("td", { title: c ? c.decision : "" }, !c ? "–" : c.method === "none" ? "off" :
        c.method + (c.applied ? " kept" : " dropped") + " (log loss " + fmt(c.raw_logloss) + " → " + fmt(c.calibrated_logloss) + ")"),
      el("td", {}, (m.trained_at || "").slice(0, 19).replace("T", " ")),
      el("td", {}, isProd ? "" : el("button", { type: "button", "data-version": m.version, onclick: () => promote(m.version) }, "Promote")),
    );
  }));
}

// ---- charts -------------------------------------------------------------

const COLORS = ["#2d5bd7", "#d9822b", "#8a8f99"];

/// Points of several series with their own x values, merged into uPlot's
/// aligned form: one sorted x array, null where a series has no point.
function aligned(seriesPoints) {
  const all = [];
  seriesPoints.forEach((pts, s) => pts.forEach(([x, y]) => all.push([x, s, y])));
  all.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const data = [all.map((p) => p[0])];
  seriesPoints.forEach((_, s) => data.push(all.map((p) => (p[1] === s ? p[2] : null))));
  return data;
}

function drawChart(id, labels, seriesPoints, xLabel, yLabel) {
  const target = document.getElementById(id);
  if (state.charts[id]) state.charts[id].destroy();
  const width = Math.max(260, target.clientWidth || 300);
  const opts = {
    width, height: 240,
    scales: { x: { time: false } },
    axes: [{ label: xLabel }, { label: yLabel }],
    series: [{ label: xLabel }].concat(labels.map((label, i) => ({
      label, stroke: COLORS[i % COLORS.length], width: 2, spanGaps: true,
      dash: label === "ideal" || label === "random" ? [4, 4] : undefined,
      points: { show: seriesPoints[i].length < 15 },
    }))),
  };
  state.charts[id] = new uPlot(opts, aligned(seriesPoints), target);
  window.churnCharts[id] = { series: labels, points: seriesPoints.map((p) => p.length) };
}

function reliabilityPoints(m) {
  const r = m.report || {};
  const table = r.calibration && r.calibration.applied && r.calibrated_reliability ? r.calibrated_reliability : r.reliability || [];
  return table.filter((b) => b.count > 0).map((b) => [b.mean_predicted, b.observed_rate]);
}

function renderCharts(models) {
  const prod = production(models);
  const other = challenger(models, prod);
  const shown = [prod, other].filter(Boolean);
  const names = shown.map((m) => "v" + m.version + (m === prod ? " (production)" : " (challenger)"));
  document.getElementById("compare").textContent = shown.length ? "— " + names.join(" vs ") + ", on each version's held-out validation rows" : "— no model yet";
  const curves = (m, k) => ((m.report && m.report.curves && m.report.curves[k]) || []);
  drawChart("chart-roc", names.concat(["random"]), shown.map((m) => curves(m, "roc")).concat([[[0, 0], [1, 1]]]), "false positive rate", "true positive rate");
  drawChart("chart-pr", names, shown.map((m) => curves(m, "pr")), "recall", "precision");
  drawChart("chart-calibration", names.concat(["ideal"]), shown.map(reliabilityPoints).concat([[[0, 0], [1, 1]]]), "predicted", "observed");
  drawChart("chart-lift", names, shown.map((m) => curves(m, "lift")), "share of users contacted", "lift");
  renderImportance(prod);
}

function renderImportance(prod) {
  const box = document.getElementById("importance");
  const items = prod && prod.feature_importance ? prod.feature_importance.slice(0, 15) : [];
  if (!items.length) { box.replaceChildren(el("p", { class: "muted" }, "no importance recorded")); return; }
  const top = items[0].importance || 1;
  box.replaceChildren(...items.map((f) => {
    const bar = el("span", {});
    bar.style.width = (100 * f.importance / top).toFixed(1) + "%";
    return el("div", { class: "bar" }, el("span", {}, f.feature), bar, el("span", { class: "num" }, pct(f.importance)));
  }));
}

// ---- drift, at-risk, jobs -------------------------------------------------

function renderDrift(d) {
  const summary = document.getElementById("drift-summary");
  const alerts = document.getElementById("drift-alerts");
  if (!d) { summary.textContent = "— not measured yet"; alerts.replaceChildren(); fill("#drift", []); return; }
  summary.textContent = "— v" + d.model_version + ", snapshot " + d.features_as_of + " vs reference " + d.reference_as_of +
    "; prediction PSI " + fmt(d.prediction_psi, 3) + "; new users " + pct(d.new_user_share);
  alerts.replaceChildren(...(d.alerts.length ? d.alerts.map((a) => el("p", { class: "alert" }, a)) : [el("p", { class: "ok" }, "no alert")]));
  fill("#drift", d.features.slice(0, 20).map((f) => el("tr", {},
    el("td", {}, f.feature), el("td", { class: "num" }, fmt(f.psi, 3)), el("td", { class: "num" }, pct(f.non_finite_share)),
    el("td", {}, f.alert ? el("span", { class: "alert" }, "drift") : ""))));
}

function renderConsistency(c) {
  const p = document.getElementById("live-consistency");
  if (!c) { p.textContent = "live vs batch: not checked yet"; p.className = "muted"; return; }
  const worst = c.mismatch.reduce((a, m) => (m.ratio > a.ratio ? m : a), { feature: "", ratio: 0 });
  p.textContent = "live vs batch (snapshot " + c.snapshot_as_of + ", " + c.checked_users + " users): " +
    (c.worst > 0 ? "worst " + worst.feature + " " + pct(c.worst) + " differ" : "identical") + (c.alert ? " — ALERT" : "");
  p.className = c.alert ? "alert" : "ok";
}

function renderAtRisk(list, headers) {
  const note = document.getElementById("at-risk-note");
  const ranked = headers && headers.get("churn-ranked-users");
  const left = headers && +headers.get("churn-left-out-users");
  note.textContent = ranked === null || ranked === undefined ? "" :
    "ranked from " + ranked + " users" + (left > 0 ? "; " + left + " left out: " + headers.get("churn-left-out-reason") : "");
  fill("#at-risk", list.map((p) => el("tr", {},
    el("td", {}, p.user_id),
    el("td", { class: "num" }, fmt(p.churn_probability, 3)),
    el("td", {}, ...((p.explanation && p.explanation.contributions) || []).map((c) =>
      el("span", { class: "reason " + (c.contribution > 0 ? "pos" : "neg") }, c.feature + " = " + fmt(c.value, 2) + " (" + (c.contribution > 0 ? "+" : "") + fmt(c.contribution, 2) + ")"))))));
}

function renderJobs(jobs) {
  fill("#jobs", jobs.map((j) => el("tr", { "data-job": j.id, "data-status": j.status },
    el("td", {}, j.id), el("td", {}, j.kind), el("td", { class: j.status === "failed" ? "alert" : "" }, j.status), el("td", {}, j.trigger),
    el("td", {}, j.started_at.slice(0, 19).replace("T", " ")), el("td", {}, (j.finished_at || "").slice(0, 19).replace("T", " ")),
    el("td", {}, j.error || (j.result && j.result.decision) || ""))));
  const running = jobs.some((j) => j.status === "running");
  if (running && !state.polling) state.polling = setInterval(refreshJobs, 1500);
  if (!running && state.polling) { clearInterval(state.polling); state.polling = null; load(); }
}

async function refreshJobs() {
  try { renderJobs(await api("/admin/jobs?limit=20")); } catch (e) { setStatus(e.message, true); }
}

// ---- actions --------------------------------------------------------------

async function act(label, path) {
  const out = document.getElementById("action-result");
  out.textContent = label + "…";
  try {
    const r = await api(path, { method: "POST" });
    out.textContent = label + ": " + (r.id ? "job " + r.id + " " + r.status : "production → v" + r.version);
  } catch (e) {
    out.textContent = label + " failed: " + e.message;
  }
  await refreshJobs();
  if (!state.polling) await load();
}

const promote = (v) => act("promote v" + v, "/admin/models/" + v + "/promote");

// ---- loading ----------------------------------------------------------------

async function load() {
  if (!state.token) setStatus("no admin token given: trying without one");
  try {
    const models = await api("/admin/models");
    renderModels(models);
    renderCharts(models);
    const prod = production(models);
    const [drift, atRisk, consistency] = await Promise.all([
      prod ? api("/admin/monitoring").catch((e) => { if (e.status === 503) return null; throw e; }) : null,
      prod ? apiFull("/admin/at-risk?limit=20&top_k=3") : { body: [], headers: null },
      api("/admin/features/consistency").catch((e) => { if (e.status === 503) return null; throw e; }),
    ]);
    renderDrift(drift);
    renderConsistency(consistency);
    renderAtRisk(atRisk.body, atRisk.headers);
    await refreshJobs();
    setStatus("production " + (prod ? "v" + prod.version : "none") + " · " + models.length + " version(s) · updated " + new Date().toLocaleTimeString());
  } catch (e) {
    setStatus(e.status === 401 || e.status === 403 ? "admin API: " + e.message : e.message, true);
  }
}

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("churn-token", state.token);
  load();
});
document.getElementById("retrain").addEventListener("click", () => act("retrain", "/admin/retrain"));
document.getElementById("rollback").addEventListener("click", () => act("rollback", "/admin/models/rollback"));
load();
