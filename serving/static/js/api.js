// Talking to the opsloop ingress: the token, JSON calls and server-sent events read with fetch.
// fetch (not EventSource) so that every request, the live stream included, carries the token in the
// Authorization header and never in a URL.

const KEY = "opsloop.token";

export function token() { return sessionStorage.getItem(KEY); }
export function setToken(t) { if (t) sessionStorage.setItem(KEY, t); else sessionStorage.removeItem(KEY); }

function headers(extra = {}) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

/** A JSON call; throws ApiError with the server's {"error": {code, message}} on a non-2xx answer. */
export async function api(path, { method = "GET", body } = {}) {
  const resp = await fetch(path, {
    method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: { message: text } }; }
  if (!resp.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(resp.status, err.code || String(resp.status), err.message || detail(data) || resp.statusText);
  }
  return data;
}

function detail(data) { return data && typeof data.detail === "string" ? data.detail : ""; }

/**
 * POST or GET a text/event-stream and call onEvent(name, data) for each event (data is the raw string).
 * Resolves when the server closes the stream or `signal` aborts it.
 */
export async function sse(path, onEvent, { method = "GET", body, signal } = {}) {
  const resp = await fetch(path, {
    method, signal, headers: headers(body === undefined ? { Accept: "text/event-stream" }
      : { Accept: "text/event-stream", "Content-Type": "application/json" }),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!resp.ok) {
    let message = resp.statusText;
    try { const e = await resp.json(); message = (e.error && e.error.message) || message; } catch { /* not JSON */ }
    throw new ApiError(resp.status, String(resp.status), message);
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}
