// The incident timeline: click an open incident to see its trace (GET /api/traces/{id}), one row per span,
// sample → event → incident → retrieval → LLM → proposal → approval → action → feedback → outcome.
import { api } from "./api.js";

const STAGES = ["sample", "event", "incident", "retrieval", "llm", "proposal", "approval", "action", "feedback", "outcome"];

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function render(box, body) {
  const spans = body.spans || [];
  const t0 = spans.length ? spans[0].start_ns : 0;
  const total = Math.max(1, ...spans.map((s) => (s.end_ns || s.start_ns) - t0));
  box.replaceChildren(el("div", "muted", `trace ${body.trace_ids.join(", ")} · ${spans.length} spans`));
  for (const s of spans) {
    const row = el("div", "tl-row");
    const stage = s.stage || "";
    row.append(el("span", `tl-stage tl-${STAGES.includes(stage) ? stage : "other"}`, stage || s.name));
    row.append(el("span", "tl-name", `${s.name} (${(s.process || {}).name || "?"} ${(s.process || {}).pid || ""})`));
    const bar = el("span", "tl-bar");
    const fill = el("span", "tl-fill");
    fill.style.marginLeft = `${(100 * (s.start_ns - t0)) / total}%`;
    fill.style.width = `${Math.max(0.5, (100 * ((s.end_ns || s.start_ns) - s.start_ns)) / total)}%`;
    bar.append(fill);
    row.append(bar, el("span", "tl-at muted", `+${((s.start_ns - t0) / 1e9).toFixed(3)} s`));
    box.append(row);
  }
}

async function show(incidentId, anchor) {
  let box = document.getElementById("timeline");
  if (!box) {
    box = el("div", "timeline");
    box.id = "timeline";
  }
  anchor.after(box);
  box.replaceChildren(el("div", "muted", `loading the trace of ${incidentId} …`));
  try {
    render(box, await api(`/api/traces/${encodeURIComponent(incidentId)}`));
  } catch (err) {
    box.replaceChildren(el("div", "muted", `no trace: ${err.message || err} (tracing off, or spans on another node)`));
  }
}

document.addEventListener("click", (ev) => {
  const inc = ev.target.closest && ev.target.closest(".incident[data-id]");
  if (inc) show(inc.dataset.id, inc);
});
