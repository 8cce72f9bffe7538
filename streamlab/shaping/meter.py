"""Shaping meters: what each session port really sends and what its player acknowledged.

:class:`ShapingMeter` ticks every 100 ms while some port exists: the shaper rate
(``mbps_shaper_rate`` over the tick, ``mbps_shaper_avg`` over 6 s) from the htb class byte
counter when the kernel shapes the port, else from the bytes the userspace shaper wrote;
the goodput the player acknowledged (``tcpi_bytes_acked`` over the port's connections)
next to the cap (:class:`streamlab.shaping.goodput.CapWatch`); and, once a second, the
nftables rule counters.  :meth:`ShapingMeter.refresh` / :meth:`ShapingMeter.refresh_all`
read the kernel counters *now*, before an answer is built.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from streamlab.proxy.sockets import pending_user_bytes, socket_of
from streamlab.proxy.tcpinfo import read_tcp_info
from streamlab.shaping.userspace import UserspaceBackend

if TYPE_CHECKING:
    from streamlab.shaping.kernel import KernelBackend
    from streamlab.shaping.runtime import PortRuntime

log = Logger()

METER_TICK = 0.1
METER_WINDOW = 6.0
COUNTER_POLL = 1.0


class RateMeter:
    """Mbps over the last tick (100 ms) and over the last 6 s from a byte counter."""

    def __init__(self, window: float = METER_WINDOW) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()
        self.rate = 0.0
        self.avg = 0.0

    def sample(self, now: float, total_bytes: int) -> None:
        """Record the counter at *now* and update both rates."""
        if self.samples and total_bytes < self.samples[-1][1]:
            self.samples.clear()  # counter reset (e.g. class recreated)
        prev = self.samples[-1] if self.samples else None
        self.samples.append((now, total_bytes))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window + 1e-9:
            self.samples.popleft()
        if prev is not None and now > prev[0]:
            self.rate = round((total_bytes - prev[1]) * 8 / (now - prev[0]) / 1e6, 3)
        first = self.samples[0]
        if now > first[0]:
            self.avg = round((total_bytes - first[1]) * 8 / (now - first[0]) / 1e6, 3)


class ShapingMeter:
    """The 100 ms meter of every shaped port, and the kernel counters it reads.

    *ports* is the service's table (read, never changed here); *cap_not_held* is called
    with the port and the reason when a kernel-carried cap does not hold (the service moves
    the rate to userspace); *notify* when a port's runtime fields changed.
    """

    def __init__(self, clock: IReactorTime, ports: Mapping[int, PortRuntime], userspace: UserspaceBackend,
                 kernel: KernelBackend | None, *, cap_not_held: Callable[[PortRuntime, str], object],
                 notify: Callable[[PortRuntime], None]) -> None:
        self.clock = clock
        self.ports = ports
        self.userspace = userspace
        self.kernel = kernel
        self._cap_not_held = cap_not_held
        self._notify = notify
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock
        self._ticks = 0
        #: nft rule counters per port (``{"drop": n, "reject": n}``) at the last reading
        self.kernel_counts: dict[int, dict[str, int]] = {}
        #: htb class bytes per port at the last reading
        self.class_bytes: dict[int, int] = {}
        self._polling = False
        #: cap-exceeded warnings raised since start (``streamlab_shaping_cap_exceeded_total``)
        self.warnings_total = 0
        #: ``(port) -> cumulative bytes the player acknowledged``; replaceable in tests
        self.acked_bytes: Callable[[int], int] = self.read_acked_bytes

    @property
    def warnings_active(self) -> int:
        """Session ports whose cap is not holding right now."""
        return sum(1 for rt in self.ports.values() if rt.watch.warning)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Tick (if not yet ticking); the caller starts it only while some port exists."""
        if not self._loop.running:
            self._loop.start(METER_TICK, now=False)

    def stop(self) -> None:
        """Stop ticking."""
        if self._loop.running:
            self._loop.stop()

    def forget(self, port: int) -> None:
        """Drop what was read for a released port."""
        self.class_bytes.pop(port, None)
        self.kernel_counts.pop(port, None)

    # ------------------------------------------------------------------ counters

    def fault_counts(self, port: int) -> tuple[int, int]:
        """(drop, reject) counters of *port*: kernel packets plus userspace refusals (only
        one backend carries the fault at a time; the sum never loses a count)."""
        us = self.userspace.ports.get(port)
        kc = self.kernel_counts.get(port, {})
        drop = (us.refused_drop if us else 0) + kc.get("drop", 0)
        reject = (us.refused_reject if us else 0) + kc.get("reject", 0)
        return drop, reject

    def refresh(self, port: int) -> defer.Deferred[None]:
        """Read the port's kernel counters (nft rule counters, htb class bytes) *now*, so an
        answer built right after reflects every packet counted so far."""
        if self.kernel is None or port not in self.ports:
            return defer.succeed(None)
        kernel = self.kernel
        state = kernel.applied.get(port)
        return self._read_kernel(
            rules=port in kernel.handles or port in kernel.drop_base or port in kernel.reject_base,
            classes=state is not None and state.rate_bps is not None)

    def refresh_all(self) -> defer.Deferred[None]:
        """Every port's kernel counters read now in one batch (one ``nft list chain``, one
        class dump: both cover all ports), for the list answers (``GET /api/sessions``,
        ``GET /api/nftables/status``)."""
        if self.kernel is None or not self.ports:
            return defer.succeed(None)
        kernel = self.kernel
        return self._read_kernel(
            rules=bool(kernel.handles or kernel.drop_base or kernel.reject_base),
            classes=any(s.rate_bps is not None for s in kernel.applied.values()))

    def _read_kernel(self, rules: bool, classes: bool) -> defer.Deferred[None]:
        assert self.kernel is not None
        ds: list[defer.Deferred[Any]] = []
        if rules:
            ds.append(self.kernel.counters().addCallback(self._got_counters))
        if classes:
            ds.append(self.kernel.class_bytes().addCallback(self.class_bytes.update))
        d = defer.DeferredList(ds, consumeErrors=True)
        return d.addCallback(lambda _: None)

    def _got_counters(self, counts: dict[int, dict[str, int]]) -> None:
        changed = [p for p, c in counts.items() if self.kernel_counts.get(p) != c]
        self.kernel_counts.update(counts)
        for port in changed:
            rt = self.ports.get(port)
            if rt is not None:
                self._notify(rt)

    # ------------------------------------------------------------------ goodput

    def read_acked_bytes(self, port: int) -> int:
        """Cumulative bytes the player acknowledged on *port* (TCP_INFO of every open
        connection; a closed connection keeps what it had at its last reading)."""
        rt = self.ports.get(port)
        sh = self.userspace.ports.get(port)
        if rt is None or sh is None:
            return 0
        if rt.acked_settled == sh.bytes_out and sh.conns.issubset(rt.acked):
            return rt.acked_total  # nothing written since all was acknowledged: no read
        seen: dict[Any, int] = {}
        settled = True
        for conn in list(sh.conns):
            info = read_tcp_info(socket_of(conn))
            if info is None:
                settled = False
                continue
            if info.notsent_bytes or info.unacked or pending_user_bytes(conn):
                settled = False
            last = rt.acked.get(conn, 0)
            if info.bytes_acked > last:
                rt.acked_total += info.bytes_acked - last
            seen[conn] = max(last, info.bytes_acked)
        rt.acked = seen
        rt.acked_settled = sh.bytes_out if settled else None
        return rt.acked_total

    # ------------------------------------------------------------------ the tick

    def _tick(self) -> None:
        try:
            self._ticks += 1
            now = self.clock.seconds()
            for port, rt in list(self.ports.items()):
                applied = self.kernel.applied.get(port) if self.kernel is not None else None
                if applied is not None and applied.rate_bps is not None and port in self.class_bytes:
                    total = self.class_bytes[port]
                else:
                    sh = self.userspace.ports.get(port)
                    total = sh.bytes_out if sh else 0
                rt.meter.sample(now, total)
                self._watch(rt, now)
            if self.kernel is not None and self.ports and not self._polling and \
                    (self.kernel.applied or self.kernel.handles):
                self._poll_kernel()
            if not self.ports:
                self.stop()  # idle daemon: no wake-ups
        except Exception:  # noqa: BLE001 - periodic tasks survive their errors
            log.failure("shaping meter tick failed")

    def _watch(self, rt: PortRuntime, now: float) -> None:
        """Goodput next to the cap; a cap that does not hold raises the warning."""
        rate = rt.placement.carrier("rate")
        where = f"{rate.backend}/{rate.interface}" if rate.interface else rate.backend
        edge = rt.watch.sample(now, self.acked_bytes(rt.port), rt.effective.rate_mbps, where)
        if edge == "raised":
            self.warnings_total += 1
            log.warn("shaping port {port} (session {sid}): {warning}", port=rt.port, sid=rt.session_id,
                     warning=rt.watch.warning)
            if rate.backend == "kernel" and "rate" not in rt.refused:
                # the kernel class does not see this player's traffic (NAT, another path):
                # let userspace hold the cap instead
                self._cap_not_held(rt, f"kernel cap not effective: {rt.watch.warning}")
            self._notify(rt)
        elif edge == "cleared":
            log.info("shaping port {port}: cap holds again ({mbps} Mbps measured)", port=rt.port,
                     mbps=rt.watch.goodput_mbps)
            self._notify(rt)

    def _poll_kernel(self) -> None:
        assert self.kernel is not None
        self._polling = True
        ds: list[defer.Deferred[Any]] = []
        if any(s.rate_bps is not None for s in self.kernel.applied.values()):
            ds.append(self.kernel.class_bytes().addCallback(self.class_bytes.update))
        if self._ticks % int(COUNTER_POLL / METER_TICK) == 0 and (self.kernel.handles or self.kernel.drop_base
                                                                 or self.kernel.reject_base):
            ds.append(self.kernel.counters().addCallback(self._got_counters))

        def done(_: Any) -> None:
            self._polling = False

        d = defer.DeferredList(ds, consumeErrors=True)
        d.addCallback(done)

