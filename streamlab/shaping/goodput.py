"""Measured goodput next to the cap, and the warning when a cap is not holding.

Pure: the service feeds :meth:`CapWatch.sample` every 100 ms with the bytes the player's
TCP stack acknowledged on the session port (``tcpi_bytes_acked`` summed over its
connections) and the cap in force.  Whatever backend shapes the port, acknowledged bytes
are what the player really got, so a cap the kernel applies on the wrong interface (or
one a NAT routes around) shows up as goodput above the cap.
"""

from __future__ import annotations

from collections import deque

#: Length of the measurement window (seconds of sustained transfer).
WINDOW = 3.0
#: A window above cap x (1 + TOLERANCE) raises the warning.
TOLERANCE = 0.10
#: Bytes a window may carry beyond the cap (bucket bursts, one in-flight block).
SLACK_BYTES = 64 * 1024
#: After a cap change, what was queued under the previous cap (socket buffers) drains
#: first: the window starts this much later.
GRACE = 1.0


class CapWatch:
    """Goodput over the last :data:`WINDOW` seconds and the cap-exceeded warning.

    The window restarts :data:`GRACE` seconds after the cap in force changes (pattern steps
    included), so a warning always compares a full window against one cap, never the drain
    of what the previous cap let into the socket buffers.  ``warning`` is ``""`` while
    the cap holds; :meth:`sample` answers ``"raised"``/``"cleared"`` on an edge.
    """

    def __init__(self, window: float = WINDOW, tolerance: float = TOLERANCE,
                 slack_bytes: int = SLACK_BYTES, grace: float = GRACE) -> None:
        self.window = window
        self.grace = grace
        self.changed_at: float | None = None
        self.tolerance = tolerance
        self.slack_bytes = slack_bytes
        self.samples: deque[tuple[float, int]] = deque()
        self.cap: float | None = None
        self.goodput_mbps = 0.0
        self.warning = ""
        self.raised_total = 0

    def sample(self, now: float, total_bytes: int, cap_mbps: float | None, where: str = "") -> str | None:
        """Record the acknowledged-bytes counter at *now* under *cap_mbps* (``None`` = no cap,
        0 = stalled); *where* names the carrier in the warning text."""
        if cap_mbps != self.cap or self.changed_at is None:
            self.cap = cap_mbps
            self.changed_at = now
            self.samples.clear()
        if self.samples and total_bytes < self.samples[-1][1]:
            self.samples.clear()
        if now - self.changed_at < self.grace - 1e-9:
            self.samples.clear()  # still draining what the previous cap let through
        self.samples.append((now, total_bytes))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window - 1e-9:
            self.samples.popleft()
        t0, b0 = self.samples[0]
        span = now - t0
        sent = total_bytes - b0
        if span >= 0.5:
            self.goodput_mbps = round(sent * 8 / span / 1e6, 3)
        if cap_mbps is None:
            return self._clear()
        if span < self.window - 1e-9:
            return None
        allowed = cap_mbps * 1e6 / 8 * (1 + self.tolerance) * span + self.slack_bytes
        if sent > allowed:
            if not self.warning:
                measured = sent * 8 / span / 1e6
                self.warning = (f"cap {cap_mbps:g} Mbps not holding: measured {measured:.3g} Mbps "
                                f"over {span:.1f} s" + (f" ({where})" if where else ""))
                self.raised_total += 1
                return "raised"
            return None
        return self._clear()

    def _clear(self) -> str | None:
        if self.warning:
            self.warning = ""
            return "cleared"
        return None
