// Live data: Server-Sent Events and WebSockets, with a shared connection indicator.
// EventSource reconnects by itself (sse() reopens it with a backoff when it gives up); the
// indicator in the top bar says when a live feed is down so nobody mistakes stale numbers
// for current ones.

const feeds = new Map(); // id -> "open" | "connecting" | "down"
let nextId = 1;

function paint() {
  const el = document.getElementById("conn");
  if (!el) return;
  const states = [...feeds.values()];
  if (!states.length) {
    el.textContent = "";
    el.className = "conn";
    return;
  }
  const down = states.filter((s) => s !== "open").length;
  el.textContent = down ? `live: reconnecting (${down})` : "live";
  el.className = "conn " + (down ? "down" : "up");
}

function track(id, state) {
  if (state === null) feeds.delete(id);
  else feeds.set(id, state);
  paint();
}

/**
 * Subscribes to an SSE endpoint.  *handlers* maps event names to fn(parsedData, event);
 * "message" gets unnamed events.  EventSource retries by itself after a dropped
 * connection; when it gives up (an HTTP error, e.g. the daemon restarting), it is
 * reopened after a backoff of 1 s doubling up to 30 s (reset once connected).
 * Returns {close()}.
 */
export function sse(url, handlers) {
  const id = nextId++;
  let es = null;
  let retry = null;
  let backoff = 1000;
  let closed = false;

  function open() {
    retry = null;
    es = new EventSource(url);
    track(id, "connecting");
    es.onopen = () => { backoff = 1000; track(id, "open"); };
    es.onerror = () => {
      if (closed) return;
      if (es.readyState !== EventSource.CLOSED) { track(id, "connecting"); return; }
      track(id, "down");
      retry = setTimeout(open, backoff);
      backoff = Math.min(backoff * 2, 30000);
    };
    for (const [name, fn] of Object.entries(handlers)) {
      es.addEventListener(name, (ev) => {
        let data = ev.data;
        try { data = JSON.parse(ev.data); } catch (e) { /* plain text */ }
        fn(data, ev);
      });
    }
  }

  open();
  return {
    close() {
      closed = true;
      if (retry) clearTimeout(retry);
      if (es) es.close();
      track(id, null);
    },
  };
}

/** ws(s):// URL for an API path on this page's origin. */
export function wsUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/**
 * Opens a WebSocket whose text frames are JSON; onFrame(obj), onClose(code, reason).
 * Returns {close()}.
 */
export function jsonSocket(path, onFrame, onClose) {
  const id = nextId++;
  const ws = new WebSocket(wsUrl(path));
  let closedByUs = false;
  track(id, "connecting");
  ws.onopen = () => track(id, "open");
  ws.onmessage = (ev) => {
    let data;
    try { data = JSON.parse(ev.data); } catch (e) { data = { type: "log", line: String(ev.data) }; }
    onFrame(data);
  };
  ws.onclose = (ev) => {
    track(id, null);
    if (!closedByUs && onClose) onClose(ev.code, ev.reason);
  };
  ws.onerror = () => { /* onclose follows with the code */ };
  return {
    close() {
      closedByUs = true;
      track(id, null);
      try { ws.close(); } catch (e) { /* already closed */ }
    },
  };
}
