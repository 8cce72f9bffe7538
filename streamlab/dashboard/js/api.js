// Thin fetch wrapper over the streamlab HTTP API.  Every call returns the decoded JSON
// body or throws an ApiError that knows how to say what went wrong in plain words.

export class ApiError extends Error {
  constructor(status, body, method, path) {
    super(describeBody(status, body));
    this.status = status;
    this.body = body && typeof body === "object" ? body : { error: String(body || "") };
    this.method = method;
    this.path = path;
  }

  /** {field: reason} for 400 invalid answers. */
  get fields() {
    return (this.body && this.body.fields) || {};
  }

  get isConflict() {
    return this.status === 409 && this.body && this.body.error === "revision_conflict";
  }
}

const STATUS_WORDS = {
  400: "The server did not accept this",
  403: "Not allowed",
  404: "Not found",
  405: "Not supported",
  409: "Conflict",
  413: "Too large",
  422: "The server could not process this",
  429: "Too many requests — try again shortly",
  500: "Server error",
  502: "Bad gateway",
  503: "The server cannot do this right now",
};

function detailText(detail) {
  if (detail === undefined || detail === null || detail === "") return "";
  if (typeof detail === "string") return detail;
  try { return JSON.stringify(detail); } catch (e) { return String(detail); }
}

function describeBody(status, body) {
  const head = STATUS_WORDS[status] || `HTTP ${status}`;
  if (!body || typeof body !== "object") return body ? `${head}: ${body}` : head;
  const parts = [];
  if (body.fields && typeof body.fields === "object") {
    for (const [k, v] of Object.entries(body.fields)) parts.push(`${k}: ${v}`);
  }
  const err = body.error && body.error !== "invalid" ? body.error : "";
  const detail = detailText(body.detail);
  let msg = head;
  if (err) msg += ` — ${err}`;
  if (detail) msg += ` (${detail})`;
  if (parts.length) msg += `. ${parts.join("; ")}`;
  if (body.received_size !== undefined) msg += ` (server has ${body.received_size} bytes)`;
  return msg;
}

/** Plain-words message for any error thrown by api() or fetch(). */
export function describeError(err) {
  if (err instanceof ApiError) return err.message;
  if (err && err.name === "AbortError") return "Cancelled.";
  if (err instanceof TypeError) return "Could not reach the streamlab server (network error).";
  return (err && err.message) || String(err);
}

/**
 * One API call.  *body*: undefined (none), FormData/Blob/ArrayBuffer (sent as is) or any
 * other value (sent as JSON).  Returns the parsed JSON (or text) body.
 */
export async function api(method, path, body, options = {}) {
  const init = { method, headers: { ...(options.headers || {}) }, signal: options.signal };
  if (body !== undefined) {
    if (body instanceof FormData || body instanceof Blob || body instanceof ArrayBuffer) {
      init.body = body;
    } else {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch (e) { data = text; }
  }
  if (!resp.ok) throw new ApiError(resp.status, data, method, path);
  return data;
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body, opts) => api("POST", path, body, opts);
export const patch = (path, body, opts) => api("PATCH", path, body, opts);
export const del = (path, opts) => api("DELETE", path, undefined, opts);

export const enc = encodeURIComponent;
