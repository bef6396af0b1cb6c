// Small DOM helpers: every value from the server reaches the page through textContent, never innerHTML.
// The page runs under a strict Content-Security-Policy (serving/headers.py): no inline script, no on* attribute,
// no style attribute. Handlers are added with addEventListener and styles set through the CSSOM (node.style).

/** Build an element: h("div", {class: "x", style: {width: "5%"}, onclick}, child, "text", …). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style") {
      if (typeof v !== "object") throw new TypeError("h(): style takes an object (the CSP forbids style=\"…\")");
      Object.assign(node.style, v);
    }
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export const $ = (sel) => document.querySelector(sel);

export function fmtTime(epochS) {
  if (epochS == null) return "";
  return new Date(epochS * 1000).toLocaleString(undefined, { hour12: false });
}

export function fmtNum(v, digits = 1) {
  return v == null || Number.isNaN(v) ? "—" : Number(v).toFixed(digits);
}

/** Short "k=v, …" text of a flat object. */
export function kv(obj) {
  // Nested objects (an event's measured `lead`) read as {series=cu01.supply_c, lag_s=25, …}, never [object Object].
  const show = (v) => Array.isArray(v) ? v.map(show).join("|")
    : v !== null && typeof v === "object" ? `{${kv(v)}}` : v;
  return Object.entries(obj || {}).map(([k, v]) => `${k}=${show(v)}`).join(", ");
}
