// The dashboard: sign in with an API token, then follow the live stream and draw every panel.

import { api, ApiError, setToken, sse, token } from "./api.js";
import { Approvals } from "./approvals.js";
import { GpuCharts, Rolling } from "./charts.js";
import { Chat } from "./chat.js";
import { $, fmtNum } from "./dom.js";
import { EventTable, renderBarrier, renderHeatmap, renderIncidents, renderLlm } from "./panels.js";

const HISTORY_KEPT = 600;

const state = { user: null, snapshot: null, history: [], selected: null, stream: null };
const approvals = new Approvals();
const events = new EventTable();
let gpuCharts, barrierChart, llmChart;

function showLogin(message = "") {
  $("#login").hidden = false;
  $("#main").hidden = true;
  $("#logout").hidden = true;
  $("#whoami").textContent = "";
  $("#login-error").textContent = message;
  $("#login-token").focus();
}

async function signIn(t) {
  setToken(t);
  try {
    state.user = await api("/api/me");
  } catch (e) {
    setToken(null);
    showLogin(e instanceof ApiError && e.status === 401 ? "That token is not valid." : `Cannot sign in: ${e.message}`);
    return;
  }
  approvals.user = state.user;
  document.body.dataset.role = state.user.role;
  $("#login").hidden = true;
  $("#main").hidden = false;
  $("#logout").hidden = false;
  $("#whoami").textContent = `${state.user.name} (${state.user.role})`;
  if (!gpuCharts) {
    gpuCharts = new GpuCharts($("#chart-temp"), $("#chart-clock"));
    barrierChart = new Rolling($("#chart-barrier"), [
      { label: "mean wait ms", borderColor: "#58a6ff" }, { label: "max wait ms", borderColor: "#f85149" },
    ], { x: "tick", y: "ms" });
    llmChart = new Rolling($("#chart-llm"), [
      { label: "KV cache %", borderColor: "#3fb950" }, { label: "waiting", borderColor: "#d29922", yAxisID: "y2" },
    ], { y: "%", y2: "requests" });
    new Chat();
  }
  follow();
}

function live(on) {
  const el = $("#live");
  el.className = `live ${on ? "on" : "off"}`;
  el.textContent = on ? "● live" : "● reconnecting";
}

/** Follow /api/stream until signed out; reconnect with a growing pause when it drops. */
async function follow() {
  if (state.stream) state.stream.abort();
  const ctrl = new AbortController();
  state.stream = ctrl;
  let pause = 500;
  while (!ctrl.signal.aborted) {
    try {
      await sse("/api/stream", (name, data) => { live(true); pause = 500; handle(name, JSON.parse(data)); },
        { signal: ctrl.signal });
    } catch (e) {
      if (ctrl.signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) { setToken(null); showLogin("Your token is no longer valid."); return; }
    }
    live(false);
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 10000);
  }
}

function handle(name, data) {
  switch (name) {
    case "hello":
      state.history = data.history || [];
      events.rows = [];
      events.add(data.events || []);
      for (const [k, v] of Object.entries(data)) if (!["history", "events"].includes(k)) handle(k, v);
      break;
    case "snapshot":
      onSnapshot(data);
      break;
    case "events":
      events.add(data);
      drawGpu();
      break;
    case "approvals":
      approvals.setAll(data);
      break;
    case "incidents":
      renderIncidents(data);
      break;
    case "status":
      onStatus(data);
      break;
    case "barrier":
      renderBarrier(data, barrierChart);
      break;
    case "llm":
      renderLlm(data, llmChart);
      break;
    default:
      break; // ping and anything newer than this page
  }
}

function onSnapshot(snap) {
  state.snapshot = snap;
  const last = state.history[state.history.length - 1];
  if (snap.ts != null && (!last || last.ts !== snap.ts)) {
    const gpus = {};
    for (const g of snap.gpus || []) gpus[g.gpu] = [g.sensed_c, g.est_c, g.clock_mhz, g.power_w];
    state.history.push({ ts: snap.ts, gpus });
    if (state.history.length > HISTORY_KEPT) state.history.shift();
  }
  if (!state.selected || !(snap.gpus || []).some((g) => g.gpu === state.selected)) {
    const hottest = [...(snap.gpus || [])].sort((a, b) => b.sensed_c - a.sensed_c)[0];
    state.selected = hottest ? hottest.gpu : null;
  }
  renderHeatmap(snap, state.selected, select);
  drawGpu();
}

function select(gpu) {
  state.selected = gpu;
  if (state.snapshot) renderHeatmap(state.snapshot, gpu, select);
  drawGpu();
}

function drawGpu() {
  const g = state.snapshot && (state.snapshot.gpus || []).find((x) => x.gpu === state.selected);
  if (!g) return;
  $("#gpu-name").textContent = g.gpu;
  $("#gpu-facts").textContent = `sensed ${fmtNum(g.sensed_c)} °C · true ≈ ${fmtNum(g.est_c)} °C · `
    + `heading to ${fmtNum(g.projected_c)} °C · slowdown ${fmtNum(g.slowdown_c, 0)} °C`;
  const reasons = Array.isArray(g.throttle_reasons) ? g.throttle_reasons.join(", ") : null;
  $("#gpu-throttle").textContent = reasons || events.throttle(g.gpu) || "none reported";
  gpuCharts.show(g.gpu, state.history, g);
}

function onStatus(st) {
  const t = st.twin || {};
  const a = st.approvals || {};
  $("#fleet-summary").textContent = `${t.gpus ?? "?"} GPUs · ${(t.hot_gpus || []).length} hot · max ${fmtNum(t.max_sensed_c)} °C`
    + ` · ${t.events_total ?? 0} events · ${a.pending || 0} pending`;
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  signIn($("#login-token").value.trim());
});
$("#logout").addEventListener("click", () => {
  if (state.stream) state.stream.abort();
  setToken(null);
  showLogin();
});

if (token()) signIn(token());
else showLogin();
