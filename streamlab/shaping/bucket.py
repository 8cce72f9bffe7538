"""A token bucket that may go into debt: the pacing core of the userspace shaper.

Pure: the caller passes ``now`` (reactor seconds).  Sending *n* bytes takes *n* tokens
even when fewer are left; the debt is repaid by time, so the long-run rate is exactly
``rate`` however late timers fire, and a burst is never larger than ``burst`` bytes.
"""

from __future__ import annotations


def chunk_for(rate_bytes_per_s: float) -> int:
    """Write granularity for a rate: ~10 ms of data, 1 KiB .. 64 KiB."""
    return int(min(65536, max(1024, rate_bytes_per_s * 0.01)))


class TokenBucket:
    """Bytes-per-second bucket with a small burst."""

    def __init__(self, rate_bytes_per_s: float, now: float, burst: int | None = None) -> None:
        self.rate = 0.0
        self.burst = 0
        self.tokens = 0.0
        self.last = now
        self.set_rate(rate_bytes_per_s, now, burst)

    def set_rate(self, rate_bytes_per_s: float, now: float, burst: int | None = None) -> None:
        """Change the rate from *now* on (tokens earned so far are kept, debt is kept)."""
        self.refill(now)
        self.rate = max(0.0, float(rate_bytes_per_s))
        self.burst = burst if burst is not None else 2 * chunk_for(self.rate)
        self.tokens = min(self.tokens, float(self.burst))

    def refill(self, now: float, cap: float | None = None) -> None:
        """Earn tokens for the time since the last call, capped at the burst (or *cap*:
        a backlogged sender whose timer fired late may catch up that much)."""
        limit = float(self.burst) if cap is None else max(float(self.burst), cap)
        if now > self.last:
            self.tokens = min(limit, self.tokens + (now - self.last) * self.rate)
        self.last = max(self.last, now)

    def ready(self, now: float, cap: float | None = None) -> bool:
        """True when a write may go now (tokens are not in debt)."""
        self.refill(now, cap)
        return self.tokens > 0

    def take(self, n: int) -> None:
        """Account for *n* bytes just written (may go into debt)."""
        self.tokens -= n

    def wait(self, now: float) -> float:
        """Seconds until :meth:`ready` turns true (0 when it is); inf when the rate is 0."""
        self.refill(now)
        if self.tokens > 0:
            return 0.0
        if self.rate <= 0:
            return float("inf")
        return (1.0 - self.tokens) / self.rate
