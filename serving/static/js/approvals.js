// Approvals: pending ones with ✓ / ✗ (approvers only), decided ones with who and when; the runbook viewer.

import { api } from "./api.js";
import { $, fmtTime, h, kv } from "./dom.js";

const DECIDERS = new Set(["approver", "admin"]);
// Who may ask for an undo (it proposes the inverse anew, judged by the policy): POST .../undo needs operator.
const PROPOSERS = new Set(["operator", "approver", "admin"]);

function describeAction(action) {
  const { kind, ...params } = action || {};
  return `${kind}(${kv(params)})`;
}

function describePrediction(p) {
  if (!p) return null;
  if (p.text) return p.text;
  const bounds = [p.below != null ? `below ${p.below}` : null, p.above != null ? `above ${p.above}` : null]
    .filter(Boolean).join(" and ");
  return `${p.metric} of ${p.subject} ${bounds} within ${p.within_s} s`;
}

function citationLinks(citations) {
  return (citations || []).map((c) => h("div", {},
    h("button", { class: "cite", type: "button", dataset: { doc: c.doc_id, step: c.step_id || "" },
      onclick: () => openRunbook(c.doc_id, c.step_id) }, `${c.doc_id}${c.step_id ? " § " + c.step_id : ""}`),
    " ", c.title));
}

function describeBounds(bounds) {
  const entries = Object.entries(bounds || {});
  if (!entries.length) return "no numbers to bound";
  return h("div", {}, ...entries.map(([k, b]) => h("div", { class: "bound" }, h("code", {}, k), `: ${b.text}`)));
}

// Who chose the action (the same words as the Slack card and the CLI: serving/slack_blocks.describe_source).
function describeSource(ap) {
  if (ap.source === "operator") return `${ap.proposer}, undoing ${ap.undo_of || "an earlier action"}`;
  if (ap.source !== "llm") return "the runbook mapping (no model)";
  const numbers = ap.emergency ? "; its numbers are the step's own (emergency)" : "";
  return `the model, inside the cited step's bounds${numbers} (its words are marked [model text])`;
}

// What approving it will run: the exact call, where, the value now and the new one (the same text as the Slack card,
// the CLI and the audit entry: serving/slack_blocks.describe_effect).
function describeEffect(ap) {
  return (ap.effect && ap.effect.text) || "not stated for this approval";
}

function decisionsList(ap) {
  return (ap.decisions || []).map((d) => h("div", { class: "decision" },
    `${d.decision === "approve" ? "✓" : "✗"} ${d.by} via ${d.channel} at ${fmtTime(d.ts)}`,
    d.reason ? ` — “${d.reason}”` : ""));
}

function card(ap, user, onDecided) {
  const rc = ap.root_cause || {};
  const prediction = describePrediction(ap.prediction || (ap.result && ap.result.prediction));
  const rows = [
    ["action", h("code", {}, describeAction(ap.action))],
    ["will run", h("span", { class: "effect" }, describeEffect(ap))],
    ["allowed by the step", describeBounds(ap.bounds)],
    ["proposed by", describeSource(ap)],
    ["root cause", rc.kind ? `${rc.kind} on ${rc.subject}${rc.why ? ": " + rc.why : ""}` : "—"],
    ["rationale", ap.rationale || "—"],
    ["citations", citationLinks(ap.citations)],
    ["what-if", prediction || "no prediction attached"],
    ["policy", `${ap.policy}${ap.required ? ` (${ap.required} approver${ap.required > 1 ? "s" : ""})` : ""}`],
    ["opened", fmtTime(ap.created_ts)],
  ];
  if ((ap.decisions || []).length) rows.push(["decided", decisionsList(ap)]);
  if (ap.result) rows.push(["result", `${ap.result.status || ""} ${ap.result.detail || ""}`]);
  if (ap.undo_of) rows.push(["undoes", h("code", {}, ap.undo_of)]);
  if (ap.inverse) rows.push(["undo", h("span", { class: "inverse" }, describeAction(ap.inverse),
    ap.undone_by ? ` (proposed as ${ap.undone_by})` : "")]);
  const node = h("div", { class: `approval ${ap.status}`, dataset: { id: ap.approval_id } },
    h("div", { class: "head" }, h("span", { class: "summary" }, ap.summary),
      h("span", { class: `status ${ap.status}` }, ap.status)),
    h("dl", {}, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  if (ap.status === "pending" && user && DECIDERS.has(user.role)) node.append(decideForm(ap, user, onDecided));
  else if (ap.status === "pending") node.append(h("p", { class: "muted" }, "Waiting for an approver."));
  if (ap.status === "executed" && ap.inverse && user && PROPOSERS.has(user.role)) node.append(undoForm(ap, onDecided));
  return node;
}

// Undo: the inverse recorded as the action ran becomes a new approval (the answer), judged by the same policy.
function undoForm(ap, onDecided) {
  const error = h("div", { class: "error", role: "alert" });
  const button = h("button", { class: "undo", type: "button",
    title: `propose ${describeAction(ap.inverse)} as a new approval` }, "↶ Undo");
  button.addEventListener("click", async () => {
    button.disabled = true;
    error.textContent = "";
    try {
      onDecided(await api(`/api/approvals/${encodeURIComponent(ap.approval_id)}/undo`, { method: "POST", body: {} }));
    } catch (e) {
      error.textContent = e.message;
    }
    button.disabled = false;
  });
  return h("div", {}, h("div", { class: "decide" }, button), error);
}

function decideForm(ap, user, onDecided) {
  const reason = h("input", { class: "reason", placeholder: "reason (needed to reject)", maxlength: "2000" });
  const error = h("div", { class: "error", role: "alert" });
  const send = async (decision, buttons) => {
    if (decision === "reject" && !reason.value.trim()) { error.textContent = "A rejection needs a reason."; return; }
    const was = buttons.map((b) => b.disabled);
    buttons.forEach((b) => { b.disabled = true; });
    error.textContent = "";
    try {
      const out = await api(`/api/approvals/${encodeURIComponent(ap.approval_id)}/decision`, {
        method: "POST",
        // action_hash binds the decision to the action this card shows (409 if it changed since); the server
        // records the channel from the route and credential, so the page does not claim one.
        body: { decision, reason: reason.value.trim(), action_hash: ap.action_hash },
      });
      onDecided(out);
    } catch (e) {
      error.textContent = e.message;
      buttons.forEach((b, i) => { b.disabled = was[i]; });
    }
  };
  const mayApprove = !ap.roles || ap.roles.includes(user.role);
  const approve = h("button", { class: "approve", type: "button", disabled: !mayApprove,
    title: mayApprove ? "approve" : `needs ${(ap.roles || []).join(" or ")}` }, "✓ Approve");
  const reject = h("button", { class: "reject", type: "button", title: "reject" }, "✗ Reject");
  approve.addEventListener("click", () => send("approve", [approve, reject]));
  reject.addEventListener("click", () => send("reject", [approve, reject]));
  return h("div", {}, h("div", { class: "decide" }, reason, approve, reject), error);
}

/** Keeps the approvals by id and draws both lists. */
export class Approvals {
  constructor() { this.byId = new Map(); this.user = null; }

  setAll(list) {
    this.byId = new Map(list.map((a) => [a.approval_id, a]));
    this.render();
  }

  upsert(ap) {
    const known = this.byId.get(ap.approval_id);
    if (!known || (ap.updated_ts || 0) >= (known.updated_ts || 0)) this.byId.set(ap.approval_id, ap);
    this.render();
  }

  render() {
    const all = [...this.byId.values()].sort((a, b) => b.created_ts - a.created_ts);
    const pending = all.filter((a) => a.status === "pending");
    const decided = all.filter((a) => a.status !== "pending").slice(0, 30);
    const onDecided = (ap) => this.upsert(ap);
    // keep a half-typed reason across re-renders of the same pending card
    const typed = new Map([...document.querySelectorAll("#pending .approval")].map((n) => [n.dataset.id,
      n.querySelector(".reason") && n.querySelector(".reason").value]));
    $("#pending").replaceChildren(...(pending.length ? pending.map((a) => card(a, this.user, onDecided))
      : [h("p", { class: "muted" }, "Nothing waits for a decision.")]));
    for (const [id, value] of typed) {
      const input = document.querySelector(`#pending .approval[data-id="${CSS.escape(id)}"] .reason`);
      if (input && value) input.value = value;
    }
    $("#decided").replaceChildren(...decided.map((a) => card(a, this.user, onDecided)));
    $("#pending-count").textContent = String(pending.length);
  }
}

/** Open the runbook viewer on `docId`, scrolled to `stepId`. */
export async function openRunbook(docId, stepId) {
  const dialog = $("#runbook");
  $("#runbook-title").textContent = docId;
  $("#runbook-meta").textContent = "loading…";
  $("#runbook-steps").replaceChildren();
  if (!dialog.open) dialog.showModal();
  try {
    const doc = await api(`/api/knowledge/${encodeURIComponent(docId)}`);
    $("#runbook-title").textContent = doc.title;
    $("#runbook-meta").textContent = `${doc.doc_id} · ${doc.type} · risk ${doc.risk}`;
    const steps = (doc.steps || []).map((s) => h("div", { class: `step${s.step_id === stepId ? " target" : ""}`,
      id: `step-${s.step_id}`, dataset: { step: s.step_id } },
      h("h4", {}, `${s.step_id}. ${s.title}`), h("p", {}, s.text)));
    $("#runbook-steps").replaceChildren(...(steps.length ? steps : [h("p", { class: "step" }, doc.body)]));
    const target = document.getElementById(`step-${stepId}`);
    if (target) target.scrollIntoView({ block: "center" });
  } catch (e) {
    $("#runbook-meta").textContent = `could not open ${docId}: ${e.message}`;
  }
}
