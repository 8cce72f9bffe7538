"""Progress of an encode from ``ffmpeg -progress pipe:1`` output (pure).

:class:`ProgressParser` consumes the raw key=value stream in arbitrary chunks and
reports, per block, the media time written so far; :class:`JobProgress` weighs the
steps of a job (audio, each rung of each codec, packaging) into one 0-100 figure and
estimates the remaining time from the rate observed so far (``now`` is passed in).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressBlock:
    """One ``progress=continue|end`` block of ffmpeg's -progress output."""

    out_time: float  # seconds of output written
    frame: int
    speed: float | None
    end: bool


class ProgressParser:
    """Incremental parser: ``feed(bytes)`` returns the blocks completed by that chunk."""

    def __init__(self) -> None:
        self._buf = b""
        self._fields: dict[str, str] = {}

    def feed(self, data: bytes) -> list[ProgressBlock]:
        """Consume *data*; return every block it completed."""
        self._buf += data
        blocks: list[ProgressBlock] = []
        while b"\n" in self._buf:
            raw, self._buf = self._buf.split(b"\n", 1)
            line = raw.decode("utf-8", "replace").strip()
            if "=" not in line:
                continue
            key, value = line.split("=", 1)
            key, value = key.strip(), value.strip()
            if key != "progress":
                self._fields[key] = value
                continue
            blocks.append(self._block(end=value == "end"))
            self._fields = {}
        return blocks

    def _block(self, end: bool) -> ProgressBlock:
        f = self._fields
        out_time = 0.0
        for key, scale in (("out_time_us", 1e-6), ("out_time_ms", 1e-6)):
            # out_time_ms is microseconds too (a long-standing ffmpeg quirk)
            if key in f:
                try:
                    out_time = max(0.0, int(f[key]) * scale)
                    break
                except ValueError:
                    continue
        else:
            out_time = _hms(f.get("out_time", ""))
        try:
            frame = int(f.get("frame", "0"))
        except ValueError:
            frame = 0
        speed_text = f.get("speed", "").rstrip("x").strip()
        try:
            speed: float | None = float(speed_text)
        except ValueError:
            speed = None
        return ProgressBlock(out_time=out_time, frame=frame, speed=speed, end=end)


def _hms(text: str) -> float:
    try:
        h, m, s = text.split(":")
        return max(0.0, int(h) * 3600 + int(m) * 60 + float(s))
    except ValueError:
        return 0.0


class JobProgress:
    """Weighted progress across a job's steps plus a final packaging share.

    ``weights`` are the relative costs of the encode steps; packaging (and indexing)
    counts as ``package_share`` of the whole.
    """

    def __init__(self, weights: Sequence[float], durations: Sequence[float], *, started: float,
                 package_share: float = 0.05) -> None:
        if len(weights) != len(durations):
            raise ValueError("one duration per weight")
        total = sum(weights) or 1.0
        scale = (1.0 - package_share) / total
        self._weights = [w * scale for w in weights]
        self._durations = [max(d, 1e-6) for d in durations]
        self._package_share = package_share
        self._started = started
        self._step = 0
        self._fraction = 0.0
        self._packaging = 0.0

    def step_started(self, index: int) -> None:
        """Step *index* (0-based) is now running; earlier steps count as done."""
        self._step = index
        self._fraction = 0.0

    def update(self, block: ProgressBlock) -> None:
        """Apply one -progress block of the running step."""
        fraction = 1.0 if block.end else block.out_time / self._durations[self._step]
        self._fraction = max(self._fraction, min(1.0, fraction))

    def packaging(self, fraction: float) -> None:
        """All encode steps done; packaging is *fraction* done."""
        self._step = len(self._weights)
        self._fraction = 0.0
        self._packaging = max(0.0, min(1.0, fraction))

    @property
    def percent(self) -> float:
        """Overall progress 0-100."""
        done = sum(self._weights[: self._step])
        if self._step < len(self._weights):
            done += self._weights[self._step] * self._fraction
        done += self._package_share * self._packaging
        return max(0.0, min(100.0, 100.0 * done))

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate seen so far (None until there is a rate)."""
        pct = self.percent
        elapsed = now - self._started
        if pct <= 0.5 or elapsed <= 0:
            return None
        return max(0.0, elapsed * (100.0 - pct) / pct)
