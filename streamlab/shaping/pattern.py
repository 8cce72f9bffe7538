"""Clock-driven runners for step patterns and transport-fault windows.

The timing rules are pure (:func:`streamlab.shaping.model.pattern_position`,
:func:`~streamlab.shaping.model.fault_window`); these runners only schedule the next
boundary on an injected ``IReactorTime``.  Each wake-up recomputes the position from the
fixed grid (start + cumulative durations), so late timers never accumulate drift.
Templates live in :mod:`streamlab.shaping.model` (``template_steps``/``template_fields``).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from streamlab.shaping.model import (
    FaultSpec,
    FaultWindow,
    PatternPosition,
    Step,
    fault_window,
    pattern_position,
)

log = Logger()


class _GridRunner:
    """Wake at the next boundary of a fixed grid; subclasses say what happens at a wake-up
    (:meth:`_advance` returns the next boundary, or None to stop scheduling)."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._call: IDelayedCall | None = None
        self.running = False

    def stop(self) -> None:
        """Cancel the timer; the runner can be dropped."""
        self.running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _run(self) -> None:
        self.running = True
        self._tick()

    def _tick(self) -> None:
        self._call = None
        if not self.running:
            return
        now = self.clock.seconds()
        wake = self._advance(now)
        if wake is not None and self.running:
            self._call = self.clock.callLater(max(0.0, wake - now), self._tick)

    def _advance(self, now: float) -> float | None:
        raise NotImplementedError


class PatternRunner(_GridRunner):
    """Follow *steps* from *started_at* forever, calling ``on_step(position)`` at each step."""

    def __init__(self, clock: IReactorTime, steps: tuple[Step, ...],
                 on_step: Callable[[PatternPosition], None], started_at: float | None = None) -> None:
        super().__init__(clock)
        self.steps = steps
        self.on_step = on_step
        self.started_at = clock.seconds() if started_at is None else started_at
        self.position: PatternPosition | None = None

    def start(self) -> PatternPosition | None:
        """Compute the current step, report it and schedule the next boundary."""
        self._run()
        return self.position

    def _advance(self, now: float) -> float | None:
        pos = pattern_position(self.steps, self.started_at, now)
        changed = pos is not None and (self.position is None or pos.index != self.position.index
                                       or pos.step_started_at != self.position.step_started_at)
        self.position = pos
        if pos is None:
            return None
        if changed:
            try:
                self.on_step(pos)
            except Exception:
                log.failure("pattern step handler failed")
        return pos.next_boundary


class FaultRunner(_GridRunner):
    """Keep a transport fault's on/off windows: ``on_change(window, on_edge)`` at each edge,
    ``on_expire()`` once when a one-shot (F = 0) window has ended."""

    def __init__(self, clock: IReactorTime, spec: FaultSpec,
                 on_change: Callable[[FaultWindow, bool], None],
                 on_expire: Callable[[], None] | None = None, armed_at: float | None = None) -> None:
        super().__init__(clock)
        self.spec = spec
        self.on_change = on_change
        self.on_expire = on_expire
        self.armed_at = clock.seconds() if armed_at is None else armed_at
        self.window: FaultWindow | None = None
        self.edges_on = 0

    def start(self) -> FaultWindow:
        """Compute and report the current window, schedule the next edge."""
        self._run()
        assert self.window is not None
        return self.window

    def _advance(self, now: float) -> float | None:
        win = fault_window(self.spec, self.armed_at, now)
        prev = self.window
        self.window = win
        on_edge = win.active and (prev is None or not prev.active or prev.window_start != win.window_start)
        if prev is None or on_edge or win.active != prev.active:
            if on_edge:
                self.edges_on += 1
            try:
                self.on_change(win, on_edge)
            except Exception:
                log.failure("transport fault handler failed")
        if win.expired and self.on_expire is not None:
            self.running = False
            try:
                self.on_expire()
            except Exception:
                log.failure("transport fault expiry handler failed")
            return None
        return win.next_edge
