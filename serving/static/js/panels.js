// The fleet heat map, the event stream, the incidents, the barrier and the LLM serving panels.

import { $, fmtNum, h, kv } from "./dom.js";

const COOL_C = 30;
const EVENTS_SHOWN = 150;

/** Colour of a temperature: blue when cool, red at the GPU's slowdown line. */
export function heat(c, slowdown) {
  const f = Math.max(0, Math.min(1, (c - COOL_C) / Math.max(1, slowdown - COOL_C)));
  return `hsl(${Math.round(220 * (1 - f))} 70% ${f > 0.85 ? 55 : 52}%)`;
}

/** Coolant flow as a fraction of nominal: one number, or one per node served. */
function flowText(flow) {
  if (flow == null) return "";
  if (typeof flow === "number") return `, flow ${fmtNum(100 * flow, 0)} %`;
  return `, flow ${Object.entries(flow).map(([n, f]) => `${n} ${fmtNum(100 * f, 0)} %`).join(", ")}`;
}

export function renderHeatmap(snap, selected, onSelect) {
  const byNode = new Map();
  for (const g of snap.gpus || []) {
    if (!byNode.has(g.node)) byNode.set(g.node, []);
    byNode.get(g.node).push(g);
  }
  const rows = [...byNode.entries()].map(([node, gpus]) => h("div", { class: "node-row" },
    h("span", { class: "node" }, node),
    gpus.map((g) => h("div", {
      class: `cell${g.alarm ? " alarm" : ""}${g.gpu === selected ? " selected" : ""}`,
      style: { background: heat(g.sensed_c, g.slowdown_c || 89) },
      title: `${g.gpu}: sensed ${fmtNum(g.sensed_c)} °C, estimated true ${fmtNum(g.est_c)} °C, `
        + `${fmtNum(g.clock_mhz, 0)} MHz, ${fmtNum(g.power_w, 0)} W`,
      dataset: { gpu: g.gpu }, onclick: () => onSelect(g.gpu),
    }, fmtNum(g.sensed_c, 0)))));
  $("#heatmap").replaceChildren(...rows);
  $("#units").replaceChildren(...(snap.units || []).map((u) => h("div", { class: u.alarm ? "alarm" : "" },
    `${u.unit}: supply ${fmtNum(u.supply_c)} °C (setpoint ${fmtNum(u.setpoint_c)})`
    + `${flowText(u.flow_frac)}`
    + `${u.fan_pct == null ? "" : `, fans ${fmtNum(u.fan_pct, 0)} %`} → ${(u.serves || []).join(", ")}`)));
  $("#fleet-ts").textContent = snap.ts != null ? `t = ${fmtNum(snap.ts, 0)} s` : "";
}

/** Newest events first. */
export class EventTable {
  constructor() { this.rows = []; }

  add(events) {
    this.rows = [...events.slice().reverse(), ...this.rows].slice(0, EVENTS_SHOWN);
    $("#events").replaceChildren(...this.rows.map((e) => h("tr", { class: e.severity, dataset: { kind: e.kind } },
      h("td", {}, fmtNum(e.ts)), h("td", {}, e.kind), h("td", {}, e.subject), h("td", {}, e.severity),
      h("td", { class: "data", title: kv(e.data) }, kv(e.data)))));
  }

  /** The newest throttle reasons the events gave for `gpu`. */
  throttle(gpu) {
    const e = this.rows.find((r) => r.subject === gpu && r.data && (r.data.reasons || r.data.reason));
    if (!e) return null;
    const reasons = Array.isArray(e.data.reasons) ? e.data.reasons : [];
    return `${reasons.join(", ") || e.data.reason} (${e.kind} at t=${fmtNum(e.ts)} s)`;
  }
}

export function renderIncidents(incidents) {
  $("#incidents").replaceChildren(...(incidents && incidents.length ? incidents.map((i) => h("div",
    { class: "incident", dataset: { id: i.incident_id } },
    h("b", {}, `${i.root_cause.kind} on ${i.root_cause.subject}`),
    h("div", { class: "muted" }, i.root_cause.why || ""),
    h("div", { class: "muted" }, `${i.events} events · hot: ${(i.hot || []).join(", ") || "—"} · ${i.incident_id}`)))
    : [h("p", { class: "muted" }, "No open incidents.")]));
}

function facts(node, pairs) {
  node.replaceChildren(...pairs.flatMap(([k, v]) => [h("span", { class: "muted" }, k), h("b", {}, v)]));
}

/** The barrier of the sharded twin: the wait cost per tick and the shard everyone waited for. */
export function renderBarrier(barrier, chart) {
  const last = barrier && (barrier.last_tick || barrier.last);
  if (!last || last.tick == null) {
    facts($("#barrier-facts"), [["barrier", "no sharded twin reporting"]]);
    return;
  }
  const b = barrier;
  facts($("#barrier-facts"), [
    ["tick", String(last.tick)], ["shards", String(last.shards)],
    ["wait this tick", `mean ${fmtNum(last.mean_wait_ms)} · max ${fmtNum(last.max_wait_ms)} ms`],
    ["slowest shard", `${last.slowest}${b.slowest_shard ? ` (most often ${b.slowest_shard}, `
      + `${fmtNum(100 * (b.slowest_share || 0), 0)} %)` : ""}`],
    ["mean wait (window)", `${fmtNum(b.mean_wait_ms)} ms · p99 ${fmtNum(b.p99_wait_ms)} ms`],
    ["efficiency", `${fmtNum(100 * (b.efficiency ?? last.efficiency), 0)} %`],
  ]);
  chart.push(last.tick, [last.mean_wait_ms, last.max_wait_ms]);
}

/** vLLM's KV-cache use and queue, as the twin last read them (snapshot key `llm`). */
export function renderLlm(llm, chart) {
  if (!llm) {
    facts($("#llm-facts"), [["engine", "no LLM metrics yet"]]);
    return;
  }
  const kvPct = 100 * (llm.kv_cache_usage || 0);
  facts($("#llm-facts"), [
    ["KV cache", `${fmtNum(kvPct)} %`], ["running", String(llm.running ?? "—")],
    ["waiting (queue)", String(llm.waiting ?? "—")], ["tokens/s", fmtNum(llm.tokens_per_s)],
    ["TTFT", llm.ttft_s == null ? "—" : `${fmtNum(1000 * llm.ttft_s, 0)} ms`],
    ["preemptions", String(llm.preemptions ?? 0)],
  ]);
  $("#llm-facts").append(h("div", { class: "meter" }, h("div", { style: { width: `${kvPct.toFixed(1)}%` } })));
  chart.push(llm.ts, [kvPct, llm.waiting]);
}
