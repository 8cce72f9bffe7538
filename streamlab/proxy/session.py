"""One player session: identity, counters, controls, fault engine, network log and the
server-side metrics measured on its port.

A :class:`Session` is plain state plus small bookkeeping methods; the registry owns its
lifecycle (listener, timers) and the listener feeds it (``on_request``, ``on_bytes``,
``on_response_done``).  :meth:`Session.to_json` is the normalised wire shape of
spec/sessions.md section 2.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from streamlab.formats import iso_ms_or_none as iso
from streamlab.proxy.manifest_faults import ManifestFaultState
from streamlab.proxy.tcpinfo import RttWindow, with_shaper_delay
from streamlab.proxy.wire import SHAPING_RUNTIME_DEFAULTS

_SEG_NUMBER = re.compile(r"seg_(\d+)\.")


def group_of_player(player_id: str) -> str | None:
    """``"abc_G12"`` -> ``"G12"`` (the group a player id asks to join), else None."""
    match = re.search(r"_(G\d+)$", player_id or "")
    return match.group(1) if match else None


class Session:
    """State of one session port (see module docstring)."""

    def __init__(self, session_id: str, port: int, external_port: int, player_id: str, *,
                 controls: Any, engine: Any, netlog: Any, now: float) -> None:
        self.session_id = session_id
        self.port = port
        self.external_port = external_port
        self.player_id = player_id
        self.group_id: str | None = None
        self.play_id = ""
        self.attempt_id = ""
        self.player_ip = ""
        self.user_agent = ""
        self.created_at = now
        self.first_request_time: float | None = None
        self.last_request_time: float | None = None
        self.last_activity = now
        self.last_request_url = ""
        self.master_manifest_url = ""
        self.manifest_url = ""
        self.manifest_variants: list[dict[str, Any]] = []
        self.variants_key: Any = None
        self.controls = controls
        self.engine = engine
        self.netlog = netlog
        #: memory of the manifest fault (replaced whenever a manifest_fault_* control changes)
        self.manifest_state = ManifestFaultState()
        self.counters: dict[str, int] = {
            "segments_count": 0, "manifest_requests_count": 0, "master_manifest_requests_count": 0,
            "all_requests_count": 0, "fault_count_total": 0,
        }
        self.fault_counts: dict[str, int] = {}
        # server metrics
        self.bytes_out_total = 0
        self.mbps_transfer_rate = 0.0
        self.mbps_transfer_complete = 0.0
        self._rate_samples: deque[tuple[float, int]] = deque()
        self.rtt = RttWindow()
        #: delay the userspace shaper added to the latest request (ms): part of the round
        #: trip the player sees, invisible to TCP_INFO
        self.shaper_delay_ms = 0.0
        self.ping_rtt_ms: float | None = None
        self.server_video_rendition = ""
        self.server_video_rendition_mbps = 0.0
        self.loop_count_server = 0
        self._last_seg_number: int | None = None
        self._last_loop: int | None = None
        # player metrics
        self.player_metrics: dict[str, Any] = {}
        self.server_received_at_ms: int | None = None
        # wire state (owned by the listener / registry)
        self.listener: Any = None
        self.listener_stopped: Any = None  # Deferred once the port stopped accepting
        self.site: Any = None
        self.channels: set[Any] = set()
        self.latest_transport: Any = None
        self.in_flight = 0
        self.closed = False
        self.net_stream: Any = None

    # ------------------------------------------------------------------ bookkeeping

    def on_request(self, kind: str, url: str, path: str, now: float) -> None:
        """A request arrived on the session port (counted before any fault decision)."""
        if self.first_request_time is None:
            self.first_request_time = now
        self.last_request_time = now
        self.last_activity = now
        self.last_request_url = url
        self.counters["all_requests_count"] += 1
        if kind == "segment":
            self.counters["segments_count"] += 1
        elif kind == "manifest":
            self.counters["manifest_requests_count"] += 1
            self.manifest_url = url
        elif kind == "master_manifest":
            self.counters["master_manifest_requests_count"] += 1
            self.master_manifest_url = url

    def on_video_segment(self, rung: str, path: str, loop: int | None = None) -> None:
        """A video segment of *rung* is being served: rendition + loop inference (*loop*:
        the loop a sequence-addressed ``n<N>`` URL names, from the origin)."""
        self.server_video_rendition = rung
        for v in self.manifest_variants:
            url = str(v.get("url", ""))
            if url.endswith(f"_{rung}.m3u8") or f"/{rung}/" in url or url == rung or v.get("id") == rung:
                self.server_video_rendition_mbps = round((v.get("bandwidth") or 0) / 1e6, 3)
                break
        if loop is not None:
            if self._last_loop is not None and loop > self._last_loop:
                self.loop_count_server += 1
            self._last_loop = loop
            return
        match = _SEG_NUMBER.search(path)
        if match:
            number = int(match.group(1))
            if self._last_seg_number is not None and number < self._last_seg_number - 1:
                self.loop_count_server += 1
            self._last_seg_number = number

    def count_fault(self, key: str, n: int = 1) -> None:
        """Bump ``fault_count_total`` and one ``fault_count_<type>``."""
        if not key.startswith("fault_count_"):
            key = "fault_count_" + key
        self.fault_counts[key] = self.fault_counts.get(key, 0) + n
        self.counters["fault_count_total"] += n

    def on_bytes(self, n: int) -> None:
        """Body bytes written to the client."""
        self.bytes_out_total += n

    def sample_rate(self, now: float, window: float = 0.25) -> None:
        """Update ``mbps_transfer_rate`` from bytes written over the last *window* s."""
        samples = self._rate_samples
        samples.append((now, self.bytes_out_total))
        while len(samples) > 2 and now - samples[1][0] >= window:
            samples.popleft()
        t0, b0 = samples[0]
        dt = now - t0
        self.mbps_transfer_rate = round((self.bytes_out_total - b0) * 8 / dt / 1e6, 3) if dt > 0 else 0.0

    def on_segment_complete(self, nbytes: int, seconds: float) -> None:
        """A segment response finished: ``mbps_transfer_complete``."""
        if nbytes > 0 and seconds > 0:
            self.mbps_transfer_complete = round(nbytes * 8 / seconds / 1e6, 3)

    def store_metrics(self, metrics: Mapping[str, Any], now: float, play_id: str | None = None,
                      attempt_id: str | None = None) -> bool:
        """Merge player metrics; a stale ``player_metrics_event_time`` is ignored (False)."""
        event_time = metrics.get("player_metrics_event_time")
        previous = self.player_metrics.get("player_metrics_event_time")
        if event_time is not None and previous is not None and _comparable(event_time, previous) \
                and event_time < previous:
            return False
        self.player_metrics.update(metrics)
        if play_id:
            self.play_id = play_id
        if attempt_id:
            self.attempt_id = attempt_id
        self.server_received_at_ms = int(now * 1000)
        wall = self.player_metrics.get("player_metrics_playhead_wallclock_ms")
        if isinstance(wall, (int, float)) and not isinstance(wall, bool) and wall > 0:
            self.player_metrics["player_metrics_true_offset_s"] = round(now - wall / 1000.0, 3)
        return True

    # ------------------------------------------------------------------ JSON

    def to_json(self, now: float,
                providers: Sequence[Callable[[Session], Mapping[str, Any]]] = ()) -> dict[str, Any]:
        """The normalised session object."""
        out: dict[str, Any] = {
            "session_id": self.session_id,
            "player_id": self.player_id,
            "play_id": self.play_id,
            "attempt_id": self.attempt_id,
            "group_id": self.group_id or "",
            "x_forwarded_port": str(self.port),
            "x_forwarded_port_external": str(self.external_port),
            "player_ip": self.player_ip,
            "user_agent": self.user_agent,
            "first_request_time": iso(self.first_request_time if self.first_request_time is not None
                                      else self.created_at),
            "last_request": iso(self.last_request_time if self.last_request_time is not None
                                else self.created_at),
            "session_duration": round(now - (self.first_request_time or self.created_at), 3),
            "last_request_url": self.last_request_url,
            "master_manifest_url": self.master_manifest_url,
            "manifest_url": self.manifest_url,
            "manifest_variants": [dict(v) for v in self.manifest_variants],
            "control_revision": self.controls.revision,
        }
        out.update(self.counters)
        out.update(self.fault_counts)
        out.update(self.controls.snapshot())
        out.update(SHAPING_RUNTIME_DEFAULTS)
        out.update({
            "mbps_transfer_rate": self.mbps_transfer_rate,
            "mbps_transfer_complete": self.mbps_transfer_complete,
            "bytes_out_total": self.bytes_out_total,
        })
        out.update(with_shaper_delay(self.rtt.fields, self.shaper_delay_ms))
        if self.ping_rtt_ms is not None:
            out["client_path_ping_rtt_ms"] = self.ping_rtt_ms
        out.update({
            "server_video_rendition": self.server_video_rendition,
            "server_video_rendition_mbps": self.server_video_rendition_mbps,
            "loop_count_server": self.loop_count_server,
        })
        out.update(self.player_metrics)
        if self.server_received_at_ms is not None:
            out["server_received_at_ms"] = self.server_received_at_ms
        for provider in providers:
            try:
                out.update(provider(self))
            except Exception:  # noqa: BLE001 - a broken provider must not break the listing
                from twisted.logger import Logger
                Logger().failure("session field provider failed")
        return out


def _comparable(a: Any, b: Any) -> bool:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, num) and isinstance(b, num)) or (isinstance(a, str) and isinstance(b, str))
