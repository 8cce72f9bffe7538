// One player abstraction over hls.js, dash.js, shaka-player and the browser's native HLS.
// The libraries are loaded on first use from vendor/ (installed by `make assets`).

import { h, loadScript } from "./ui.js";

export const ENGINES = [
  ["hls", "hls.js"],
  ["dash", "dash.js"],
  ["shaka", "shaka"],
  ["native", "native"],
];

const SCRIPTS = {
  hls: "vendor/hls.min.js",
  dash: "vendor/dash.all.min.js",
  shaka: "vendor/shaka-player.compiled.js",
};

/** Stream URL key of content.urls for protocol ("hls"|"dash") and duration ("ll"|"2s"|"6s"). */
export function urlKey(protocol, duration) {
  return `${protocol}_${duration}`;
}

/** The loop timelines a stream can be asked for ("" = the server's `[live] timeline`). */
export const TIMELINES = [
  ["", "Server default"],
  ["continuous", "Continuous"],
  ["discontinuity", "New period each loop"],
];

// The path of the stream URL of content *name* for protocol, duration and timeline
// ("" leaves the choice to the server, `[live] timeline`; docs/streams.md section 5).
export function streamPath(name, protocol, duration, timeline = "") {
  const n = encodeURIComponent(name);
  const q = timeline ? `?timeline=${encodeURIComponent(timeline)}` : "";
  if (protocol === "dash") return `/go-live/${n}/${duration === "ll" ? "manifest.mpd" : `manifest_${duration}.mpd`}${q}`;
  return `/go-live/${n}/${duration === "ll" ? "master.m3u8" : `master_${duration}.m3u8`}${q}`;
}

/** Engines that can play *protocol* here. */
export function enginesFor(protocol) {
  return protocol === "dash" ? ["dash", "shaka"] : ["hls", "shaka", "native"];
}

/** The seekable live window: {length, position (playhead from its start), behind (to its end)}. */
export function liveWindow(video) {
  const r = video.seekable;
  if (!r || !r.length) return null;
  const start = r.start(0);
  const end = r.end(r.length - 1);
  if (!Number.isFinite(end) || end - start < 1) return null;
  const t = video.currentTime;
  return { length: end - start, position: Math.max(0, t - start), behind: Math.max(0, end - t) };
}

/** "18:04:12 · 28.3 s into the 36 s window, 4.1 s behind the live edge" (or the plain time). */
export function describePlayhead(s) {
  const parts = [];
  if (s.playhead_wallclock_ms) parts.push(new Date(s.playhead_wallclock_ms).toLocaleTimeString([], { hour12: false }));
  if (s.window_s) {
    parts.push(`${s.position_in_window_s.toFixed(1)} s into the ${Math.round(s.window_s)} s window, ${s.behind_live_edge_s.toFixed(1)} s behind the live edge`);
  }
  if (!parts.length && typeof s.playhead_s === "number") parts.push(`${s.playhead_s.toFixed(1)} s`);
  return parts.join(" · ") || "–";
}

/**
 * Player controls for live streams (the native bar shows media time, which for DASH is
 * seconds since the availability start: "60688:39:59").  Returns an element with play /
 * pause, mute, "go live" and the position in the live window; call .update() to refresh.
 */
export function liveControls(video) {
  const play = h("button.small", { type: "button" }, "Pause");
  const mute = h("button.small", { type: "button" }, "Unmute");
  const live = h("button.small", { type: "button", title: "Jump to the live edge" }, "Go live");
  const pos = h("span.live-pos.muted.small");
  play.addEventListener("click", () => { if (video.paused) video.play().catch(() => {}); else video.pause(); });
  mute.addEventListener("click", () => { video.muted = !video.muted; });
  live.addEventListener("click", () => {
    const r = video.seekable;
    if (r && r.length) video.currentTime = Math.max(r.start(0), r.end(r.length - 1) - 3);
  });
  const el = h("div.live-controls", play, mute, live, pos);
  el.update = () => {
    play.textContent = video.paused ? "Play" : "Pause";
    mute.textContent = video.muted ? "Unmute" : "Mute";
    const w = liveWindow(video);
    pos.textContent = w ? `Live window ${Math.round(w.length)} s · at ${w.position.toFixed(1)} s · ${w.behind.toFixed(1)} s behind the edge` : "";
  };
  for (const ev of ["play", "pause", "volumechange", "timeupdate"]) video.addEventListener(ev, el.update);
  return el;
}

function bufferAhead(video) {
  const t = video.currentTime;
  const b = video.buffered;
  for (let i = 0; i < b.length; i++) {
    if (b.start(i) <= t + 0.1 && b.end(i) >= t) return Math.max(0, b.end(i) - t);
  }
  return 0;
}

/**
 * Starts playing *url* in *video* with *engine*.  Options: lowLatency (bool),
 * onError(message, fatal), onEvent(name).  Resolves to
 * {engine, destroy(), stats() -> {bitrate_mbps, buffer_s, playhead_s, state, resolution,
 * latency_s, playhead_wallclock_ms, dropped_frames, stalls, stall_seconds_total, switches,
 * switches_up, switches_down}}.  A stall is a "waiting" after the first "playing" (start-up
 * buffering is not one); it lasts until the next "playing".  A switch is a change of the
 * video rendition the engine plays (up = to a higher bitrate).
 */
export async function createPlayer(video, url, options = {}) {
  const engine = options.engine || "hls";
  const onError = options.onError || (() => {});
  const lowLatency = options.lowLatency !== false;
  let stalls = 0;
  let stallSeconds = 0;
  let stalledAt = null; // performance.now() when the current stall began
  let switchesUp = 0;
  let switchesDown = 0;
  let lastRate = null; // bitrate (bps) of the rendition playing now
  const rendition = (bps) => {
    if (!bps) return;
    if (lastRate !== null && bps !== lastRate) { if (bps > lastRate) switchesUp += 1; else switchesDown += 1; }
    lastRate = bps;
  };
  let started = false; // the first "playing": buffering before it is start-up, not a stall
  let lastError = "";
  let destroyed = false;
  const listeners = [];
  const on = (name, fn) => { video.addEventListener(name, fn); listeners.push([name, fn]); };
  on("playing", () => {
    started = true;
    if (stalledAt !== null) { stallSeconds += (performance.now() - stalledAt) / 1000; stalledAt = null; }
  });
  on("waiting", () => {
    if (started && !video.seeking && stalledAt === null) { stalls += 1; stalledAt = performance.now(); }
  });
  on("error", () => {
    const e = video.error;
    if (e && !destroyed) {
      lastError = `media error ${e.code}${e.message ? ": " + e.message : ""}`;
      onError(lastError, true);
    }
  });

  if (SCRIPTS[engine]) await loadScript(SCRIPTS[engine]);
  video.muted = options.muted !== undefined ? options.muted : video.muted;

  let impl;
  if (engine === "hls") {
    const Hls = window.Hls;
    if (!Hls || !Hls.isSupported()) throw new Error("hls.js is not supported in this browser (no MediaSource).");
    const hls = new Hls({ lowLatencyMode: lowLatency, backBufferLength: 30, enableWorker: true });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      const msg = `${data.type}: ${data.details}${data.response && data.response.code ? ` (HTTP ${data.response.code})` : ""}`;
      if (data.fatal) lastError = msg;
      onError(msg, !!data.fatal);
      if (data.fatal && data.type === Hls.ErrorTypes.NETWORK_ERROR) hls.startLoad();
      else if (data.fatal && data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
    });
    hls.on(Hls.Events.LEVEL_SWITCHED, (_e, data) => {
      const lvl = hls.levels && hls.levels[data.level];
      rendition(lvl && lvl.bitrate);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    impl = {
      bitrate() {
        const lvl = hls.levels && hls.levels[hls.currentLevel];
        return lvl ? lvl.bitrate / 1e6 : null;
      },
      latency() { return Number.isFinite(hls.latency) ? hls.latency : null; },
      wallclock() { const d = hls.playingDate; return d ? d.getTime() : null; },
      destroy() { hls.destroy(); },
    };
  } else if (engine === "dash") {
    const dashjs = window.dashjs;
    const player = dashjs.MediaPlayer().create();
    player.updateSettings({ streaming: { liveCatchup: { enabled: lowLatency } } });
    player.on(dashjs.MediaPlayer.events.ERROR, (e) => {
      const err = e && e.error ? e.error : e;
      const msg = `dash.js error ${err && err.code !== undefined ? err.code : ""} ${err && err.message ? err.message : ""}`.trim();
      lastError = msg;
      onError(msg, true);
    });
    player.on(dashjs.MediaPlayer.events.QUALITY_CHANGE_RENDERED, (e) => {
      if (e.mediaType !== "video") return;
      try {
        const rep = player.getCurrentRepresentationForType && player.getCurrentRepresentationForType("video");
        rendition(rep && rep.bandwidth);
      } catch (err) { /* not ready */ }
    });
    player.initialize(video, url, true);
    impl = {
      bitrate() {
        try {
          const rep = player.getCurrentRepresentationForType && player.getCurrentRepresentationForType("video");
          if (rep && rep.bandwidth) return rep.bandwidth / 1e6;
        } catch (e) { /* not ready */ }
        return null;
      },
      latency() { try { const l = player.getCurrentLiveLatency(); return Number.isFinite(l) ? l : null; } catch (e) { return null; } },
      wallclock() {
        try { const t = player.timeAsUTC(); return Number.isFinite(t) && t > 0 ? Math.round(t * 1000) : null; } catch (e) { return null; }
      },
      destroy() { player.reset(); },
    };
  } else if (engine === "shaka") {
    const shaka = window.shaka;
    shaka.polyfill.installAll();
    if (!shaka.Player.isBrowserSupported()) throw new Error("shaka-player is not supported in this browser.");
    const player = new shaka.Player();
    await player.attach(video);
    player.configure({ streaming: { lowLatencyMode: lowLatency } });
    player.addEventListener("adaptation", () => {
      try { const s = player.getStats(); rendition(s.streamBandwidth); } catch (e) { /* not ready */ }
    });
    player.addEventListener("error", (ev) => {
      const d = ev.detail || {};
      lastError = `shaka error ${d.code || ""}`;
      onError(lastError, d.severity === 2);
    });
    impl = {
      bitrate() { try { const s = player.getStats(); return s.streamBandwidth ? s.streamBandwidth / 1e6 : null; } catch (e) { return null; } },
      latency() { try { const s = player.getStats(); return Number.isFinite(s.liveLatency) ? s.liveLatency : null; } catch (e) { return null; } },
      wallclock() { try { const d = player.getPlayheadTimeAsDate(); return d ? d.getTime() : null; } catch (e) { return null; } },
      destroy() { player.destroy(); },
    };
    player.load(url).catch((err) => {
      lastError = `shaka load failed: ${err && err.code ? err.code : err}`;
      onError(lastError, true);
    });
  } else {
    if (!video.canPlayType("application/vnd.apple.mpegurl") && url.includes(".m3u8")) {
      throw new Error("This browser has no native HLS playback; pick hls.js or shaka.");
    }
    video.src = url;
    impl = {
      bitrate: () => null,
      latency: () => null,
      wallclock: () => null,
      destroy() { video.removeAttribute("src"); video.load(); },
    };
  }
  if (options.autoplay !== false) {
    video.play().catch(() => { /* autoplay policy: the user presses play */ });
  }

  return {
    engine,
    stats() {
      let state = "idle";
      if (video.error) state = "error";
      else if (video.ended) state = "ended";
      else if (video.paused) state = video.currentTime > 0 ? "paused" : "loading";
      else if (video.readyState < 3) state = "buffering";
      else state = "playing";
      const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
      const win = liveWindow(video);
      return {
        window_s: win ? +win.length.toFixed(3) : null,
        position_in_window_s: win ? +win.position.toFixed(3) : null,
        behind_live_edge_s: win ? +win.behind.toFixed(3) : null,
        bitrate_mbps: impl.bitrate(),
        buffer_s: +bufferAhead(video).toFixed(3),
        playhead_s: +video.currentTime.toFixed(3),
        state,
        resolution: video.videoWidth ? `${video.videoWidth}x${video.videoHeight}` : "",
        latency_s: impl.latency(),
        playhead_wallclock_ms: impl.wallclock(),
        dropped_frames: q ? q.droppedVideoFrames : null,
        stalls,
        stall_seconds_total: +(stallSeconds + (stalledAt !== null ? (performance.now() - stalledAt) / 1000 : 0)).toFixed(3),
        switches: switchesUp + switchesDown,
        switches_up: switchesUp,
        switches_down: switchesDown,
        error: lastError,
      };
    },
    destroy() {
      destroyed = true;
      for (const [n, fn] of listeners) video.removeEventListener(n, fn);
      try { impl.destroy(); } catch (e) { /* already gone */ }
    },
  };
}
