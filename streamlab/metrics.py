"""``GET /metrics``: Prometheus text exposition (format 0.0.4) of the daemon.

Families::

    streamlab_up                                  1 while serving
    streamlab_uptime_seconds
    streamlab_sessions                            live sessions (gauge)
    streamlab_sessions_created_total
    streamlab_reactor_delayed_calls               pending reactor timers (gauge)
    streamlab_network_log_entries                 network-log entries of live sessions (gauge)
    streamlab_requests_total{listener,kind,status}  main listener + session ports
    streamlab_requests_in_flight                  main listener
    streamlab_faults_total{type}                  faults injected on session ports
    streamlab_bytes_out_total{listener}           response body bytes
    streamlab_jobs{state}                         jobs by state (gauge)
    streamlab_encode_seconds_total                wall time spent in encodes
    streamlab_render_latency_seconds (histogram)  manifest request -> first byte
    streamlab_shaping_cap_exceeded_total          caps measured >10 % above the cap (warnings raised)
    streamlab_shaping_cap_exceeded                sessions whose cap is not holding now (gauge)

Cost on the request path is one dict increment (plus one histogram bucket for manifest
requests); everything else is read from the components when ``/metrics`` is scraped.
Counters of removed sessions are folded into daemon-wide totals when they go away, so the
``*_total`` families never decrease.
"""

from __future__ import annotations

import bisect
import datetime
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime
from twisted.web import server
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from streamlab.formats import number_text
from streamlab.interfaces import IJobQueue
from streamlab.shutdown import InFlight

if TYPE_CHECKING:  # the services metrics reads; imported for their types only
    from streamlab.proxy.registry import SessionRegistry
    from streamlab.shaping.service import ShapingService

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                                      2.5, 5.0, 10.0)
MANIFEST_KINDS = frozenset({"master_manifest", "manifest"})


def main_kind(path: bytes) -> str:
    """Request kind on the main listener from its path (cheap: no parsing beyond splits)."""
    if path.startswith(b"/api/"):
        return "api"
    if path.startswith(b"/go-live/"):
        tail = path.rsplit(b"/", 1)[-1].split(b"?", 1)[0]
        if tail.endswith((b".m3u8", b".mpd")):
            return "master_manifest" if tail.startswith((b"master", b"manifest")) else "manifest"
        return "segment" if b"." in tail else "other"
    if path.startswith(b"/dashboard"):
        return "dashboard"
    if path.startswith(b"/metrics"):
        return "metrics"
    return "other"


class Histogram:
    """A cumulative histogram with fixed upper bounds."""

    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # last one: +Inf only
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        """Exposition lines (``_bucket``, ``_sum``, ``_count``)."""
        sep = "," if labels else ""
        out, acc = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{number_text(bound)}"}} {acc}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        lab = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{lab} {number_text(self.sum)}")
        out.append(f"{name}_count{lab} {self.count}")
        return out


def _esc(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _parse_iso(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Metrics:
    """Daemon-wide counters plus read-only views of the components (see module docstring)."""

    def __init__(self, clock: IReactorTime, inflight: InFlight | None = None) -> None:
        self.clock = clock
        self.started = clock.seconds()
        self.inflight = inflight
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.main_bytes_out = 0
        self.render_latency = Histogram()
        self._retired_sessions = 0
        # totals of sessions that are gone
        self._retired_faults: Counter[str] = Counter()
        self._retired_bytes = 0
        self._registry: SessionRegistry | None = None
        self._jobs: Callable[[], IJobQueue | None] = lambda: None
        #: the shaping service (cap-exceeded warnings), set by the daemon wiring
        self.shaping: ShapingService | None = None

    # ------------------------------------------------------------------ hooks

    def attach_sessions(self, registry: SessionRegistry) -> None:
        """Observe session-port requests and fold removed sessions into the totals."""
        self._registry = registry
        registry.request_observers.append(self._session_request)
        registry.removal_hooks.append(self._session_removed)

    def attach_jobs(self, jobs: Callable[[], IJobQueue | None]) -> None:
        """*jobs* returns the job service (or None)."""
        self._jobs = jobs

    def _session_request(self, session: Any, record: Any) -> None:
        kind = record.kind  # a streamlab.proxy.exchange.ExchangeRecord
        self.requests[("session", kind, int(record.status or 0))] += 1
        if kind in MANIFEST_KINDS and record.first_byte is not None:
            self.render_latency.observe(max(0.0, record.first_byte - record.arrived))

    def _session_removed(self, session: Any) -> None:
        self._retired_sessions += 1
        self._retired_faults.update(session.fault_counts)
        self._retired_bytes += int(session.bytes_out_total)

    def main_request_done(self, kind: str, status: int, elapsed: float | None, body_bytes: int) -> None:
        """One request answered on the main listener."""
        self.requests[("main", kind, status)] += 1
        self.main_bytes_out += body_bytes
        if elapsed is not None and kind in MANIFEST_KINDS:
            self.render_latency.observe(elapsed)

    # ------------------------------------------------------------------ exposition

    def render(self) -> str:
        """The whole exposition text."""
        now = self.clock.seconds()
        lines: list[str] = []

        def family(name: str, kind: str, doc: str) -> None:
            lines.append(f"# HELP {name} {doc}")
            lines.append(f"# TYPE {name} {kind}")

        family("streamlab_up", "gauge", "1 while the daemon serves")
        lines.append("streamlab_up 1")
        family("streamlab_uptime_seconds", "gauge", "seconds since the daemon started")
        lines.append(f"streamlab_uptime_seconds {number_text(round(now - self.started, 3))}")

        sessions = list(self._registry.all()) if self._registry is not None else []
        family("streamlab_sessions", "gauge", "live player sessions")
        lines.append(f"streamlab_sessions {len(sessions)}")
        family("streamlab_sessions_created_total", "counter", "sessions created since start")
        lines.append(f"streamlab_sessions_created_total {self._retired_sessions + len(sessions)}")
        # soak checks (bench/fleet.py --soak): neither may grow while the sessions stay the same
        family("streamlab_reactor_delayed_calls", "gauge", "timers pending on the reactor")
        lines.append(f"streamlab_reactor_delayed_calls {len(self.clock.getDelayedCalls())}")
        family("streamlab_network_log_entries", "gauge", "network-log entries held by live sessions")
        entries = sum(len(s.netlog) for s in sessions if getattr(s, "netlog", None) is not None)
        lines.append(f"streamlab_network_log_entries {entries}")

        family("streamlab_requests_total", "counter", "HTTP requests answered, by listener, kind and status")
        for (listener, kind, status), n in sorted(self.requests.items()):
            lines.append(f'streamlab_requests_total{{listener="{listener}",kind="{_esc(kind)}",'
                         f'status="{status}"}} {n}')
        family("streamlab_requests_in_flight", "gauge",
               "requests being answered on the main listener and the session ports (event streams excepted)")
        lines.append(f"streamlab_requests_in_flight {getattr(self.inflight, 'count', 0)}")

        faults = Counter(self._retired_faults)
        session_bytes = self._retired_bytes
        for s in sessions:
            faults.update(s.fault_counts)
            session_bytes += int(s.bytes_out_total)
        family("streamlab_faults_total", "counter", "faults injected on session ports, by type")
        for ftype, n in sorted(faults.items()):
            label = ftype[len("fault_count_"):] if ftype.startswith("fault_count_") else ftype
            lines.append(f'streamlab_faults_total{{type="{_esc(label)}"}} {n}')
        family("streamlab_bytes_out_total", "counter", "response body bytes sent, by listener")
        lines.append(f'streamlab_bytes_out_total{{listener="main"}} {self.main_bytes_out}')
        lines.append(f'streamlab_bytes_out_total{{listener="session"}} {session_bytes}')

        states: Counter[str] = Counter()
        encode_seconds = 0.0
        jobs = self._jobs()
        if jobs is not None:
            from streamlab.jobs import state as st

            for name in st.STATUSES:
                states[name] = 0
            for job in jobs.list():
                states[job["status"]] += 1
                start = _parse_iso(job.get("started_at"))
                if start is None:
                    continue
                end = _parse_iso(job.get("completed_at"))
                if end is None and job["status"] == st.ENCODING:
                    end = now
                if end is not None:
                    encode_seconds += max(0.0, end - start)
        family("streamlab_jobs", "gauge", "encoding jobs by state")
        for state, n in sorted(states.items()):
            lines.append(f'streamlab_jobs{{state="{state}"}} {n}')
        family("streamlab_encode_seconds_total", "counter", "wall-clock seconds spent encoding (known jobs)")
        lines.append(f"streamlab_encode_seconds_total {number_text(round(encode_seconds, 3))}")

        family("streamlab_render_latency_seconds", "histogram",
               "manifest request arrival to first response byte (main listener and session ports)")
        lines.extend(self.render_latency.lines("streamlab_render_latency_seconds"))
        if self.shaping is not None:
            family("streamlab_shaping_cap_exceeded_total", "counter",
                   "shaping caps measured more than 10 % above the cap over a full window")
            lines.append(f"streamlab_shaping_cap_exceeded_total {self.shaping.warnings_total}")
            family("streamlab_shaping_cap_exceeded", "gauge", "sessions whose cap is not holding right now")
            lines.append(f"streamlab_shaping_cap_exceeded {self.shaping.warnings_active}")
        return "\n".join(lines) + "\n"


class MetricsResource(Resource):
    """``GET /metrics``."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: IRequest) -> bytes:  # noqa: N802
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")
        return self.metrics.render().encode("utf-8")


def _long_lived(request: server.Request) -> bool:
    """SSE streams and WebSocket upgrades: open until the client leaves, so a graceful
    stop does not wait for them (their services close them)."""
    path = (request.path or b"").split(b"?", 1)[0]
    return path.endswith(b"/stream") or request.requestHeaders.hasHeader(b"upgrade") \
        or b"text/event-stream" in (request.getHeader(b"accept") or b"")


def counting_request_factory(base: type[server.Request], metrics: Metrics | None,
                             inflight: InFlight | None = None) -> type[server.Request]:
    """A subclass of *base* (the site's request class) that reports each answered request
    to *metrics* and tracks it in *inflight* (for the graceful stop; event streams and
    WebSocket upgrades are not waited for)."""

    class CountingRequest(base):  # type: ignore[valid-type, misc]
        _sl_started: float | None = None
        _sl_first: float | None = None
        _sl_bytes = 0
        _sl_tracked = False

        def process(self) -> None:
            if metrics is not None:
                self._sl_started = metrics.clock.seconds()
            if inflight is not None and not _long_lived(self):
                inflight.begin()
                self._sl_tracked = True
            self.notifyFinish().addBoth(self._sl_done)
            super().process()

        def write(self, data: bytes) -> None:
            if data:
                if not self._sl_bytes and self._sl_started is not None:
                    self._sl_first = metrics.clock.seconds()  # type: ignore[union-attr]
                self._sl_bytes += len(data)
            super().write(data)

        def _sl_done(self, _: Any) -> None:
            if self._sl_tracked and inflight is not None:
                inflight.end()
            if metrics is not None:
                first, started = self._sl_first, self._sl_started
                elapsed = None if first is None or started is None else first - started
                metrics.main_request_done(main_kind(self.path or b""), int(self.code), elapsed,
                                          self._sl_bytes)

    CountingRequest.__name__ = f"Counting{base.__name__}"
    return CountingRequest
