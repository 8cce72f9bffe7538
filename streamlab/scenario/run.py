"""One scenario run on one session: the timeline on an injected clock (the run's core).

The run talks to its session only through a :class:`ControlTarget` (the service adapts
the session registry to it; tests use a fake), and to time only through an
``IReactorTime``: one timer for the next event, one sampling tick for player metrics.

**Layers.**  Every application of a step pushes, for each control it sets, a layer
``(occurrence, value before, value set)`` on that control's stack.  Restoring an
occurrence (its ``for`` ran out) removes its layer: if it was on top the control goes
back to the value before it; if a later step's layer is above it, that layer now
restores to what was before the removed one.  At the end of the run (or on stop) every
control still stacked goes back to its value before the run.

**The tester wins.**  When a restore finds a control's value is no longer what the run
set (a tester PATCHed it, a one-shot rule disarmed itself), the run lets go of that
control: it is not restored now nor at the end, and the log entry lists it under
``kept``.  Timing mode and its two unit fields are restored together or not at all.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from streamlab.errors import Invalid, StreamlabError
from streamlab.proxy import fields as fields_mod
from streamlab.proxy.session import iso
from streamlab.scenario import timeline as tl
from streamlab.scenario import verdict as verdict_mod
from streamlab.scenario.model import Scenario

log = Logger()

RUNNING, PASSED, FAILED, STOPPED, ERROR = "running", "passed", "failed", "stopped", "error"
SAMPLE_INTERVAL = 0.25
EPS = 1e-3
SEED_STEP = -1
"""Layer owner of the scenario's ``seed`` (applied at the start, restored at the end)."""


class ControlTarget(Protocol):
    """What a run needs of its session (the service adapts the registry)."""

    def current(self) -> Mapping[str, Any]:
        """The session's control values now."""

    def patch(self, changes: Mapping[str, Any]) -> None:
        """Apply *changes* like a PATCH (validated; raises Invalid / NotFound)."""

    def changed(self) -> None:
        """Something a client should see changed (push the sessions SSE stream)."""

    def player_metrics(self) -> Mapping[str, Any]:
        """The player's latest metrics (``player_metrics_*`` and ``server_received_at_ms``)."""

    def network_entries(self, since: float) -> list[dict[str, Any]]:
        """Network-log entries from unix time *since* on."""

    def variants(self) -> list[dict[str, Any]]:
        """The session's ladder (``manifest_variants``)."""


def _timing_group(key: str) -> str | None:
    for p in (*fields_mod.HTTP_PREFIXES, "transport"):
        if key in (f"{p}_failure_mode", f"{p}_consecutive_units", f"{p}_frequency_units"):
            return p
    return None


class ScenarioRun:
    """A run of *scenario* on *target* (see the module docstring)."""

    def __init__(self, run_id: str, session_id: str, scenario: Scenario, target: ControlTarget,
                 clock: IReactorTime, *, window_check: Callable[[str, float], str | None] | None = None,
                 on_end: Callable[[ScenarioRun], None] | None = None) -> None:
        self.id = run_id
        self.session_id = session_id
        self.scenario = scenario
        self.target = target
        self.clock = clock
        self.window_check = window_check
        self.on_end = on_end
        self.state = RUNNING
        self.error: str | None = None
        self.started_at = 0.0
        self.ended_at: float | None = None
        self.duration = tl.run_duration(scenario)
        self.events = tl.events(scenario)
        self.log: list[dict[str, Any]] = []
        self.verdict: dict[str, Any] | None = None
        self.current_step: int | None = None
        self._next = 0  # index into self.events
        self._timer: IDelayedCall | None = None
        self._sampler: LoopingCall | None = None
        # control -> [(owner (step, occurrence), value before, value set)]
        self._stacks: dict[str, list[tuple[tuple[int, int], Any, Any]]] = {}
        self._step_state: dict[int, str] = {s.index: "pending" for s in scenario.steps}
        self._active_occurrences: dict[int, int] = {}
        self._step_times: dict[int, list[tuple[float, float | None]]] = {}
        self._samples: list[tuple[float, dict[str, Any]]] = []
        self._baseline: dict[str, Any] = {}
        self._last_sample_key: Any = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Begin now: apply the seed, sample the player's metrics, schedule the timeline."""
        self.started_at = self.clock.seconds()
        self._baseline = dict(self.target.player_metrics())
        self._last_sample_key = self._baseline.get("server_received_at_ms")
        try:
            if self.scenario.seed is not None:
                self._apply_layer((SEED_STEP, 0), {"seed": self.scenario.seed}, None)
        except StreamlabError as exc:
            self._fail(f"seed: {exc.detail or exc.error}")
            return
        self._sampler = LoopingCall(self._sample)
        self._sampler.clock = self.clock
        self._sampler.start(SAMPLE_INTERVAL, now=False)
        self._advance()

    def stop(self) -> None:
        """Stop now (``DELETE``): restore every control the run set; state ``stopped``."""
        if self.state == RUNNING:
            self._finish(STOPPED, "stopped")

    def abort(self, reason: str) -> None:
        """The session went away: end in ``error`` without touching controls."""
        if self.state != RUNNING:
            return
        self._stacks.clear()
        self._fail(reason, restore=False)

    @property
    def running(self) -> bool:
        """Whether the run is still going."""
        return self.state == RUNNING

    def elapsed(self) -> float:
        """Seconds since the start (frozen at the end)."""
        end = self.ended_at if self.ended_at is not None else self.clock.seconds()
        return max(0.0, end - self.started_at)

    # ------------------------------------------------------------------ timeline

    def _advance(self) -> None:
        self._timer = None
        if self.state != RUNNING:
            return
        try:
            elapsed = self.elapsed()
            while self._next < len(self.events) and self.events[self._next].t <= elapsed + EPS:
                event = self.events[self._next]
                self._next += 1
                if event.action == tl.APPLY:
                    self._apply(event)
                else:
                    self._restore(event)
                if self.state != RUNNING:
                    return
            if self._next >= len(self.events) and elapsed + EPS >= self.duration:
                self._finish(None, "ended")
                return
            due = self.events[self._next].t if self._next < len(self.events) else self.duration
            self._timer = self.clock.callLater(max(0.0, due - elapsed), self._advance)
        except StreamlabError as exc:
            self._fail(str(exc.detail or exc.error))
        except Exception as exc:  # noqa: BLE001 - a run ends in error, the daemon keeps going
            log.failure("scenario run {rid} failed", rid=self.id)
            self._fail(f"internal error: {exc.__class__.__name__}")

    def _step(self, index: int) -> Any:
        return next(s for s in self.scenario.steps if s.index == index)

    def _apply(self, event: tl.Event) -> None:
        step = self._step(event.step)
        try:
            changes = fields_mod.validate(step.set, None, self.target.current())
        except Invalid as exc:
            raise Invalid("invalid", detail=f"step {step.label()}: {exc.extra.get('fields') or exc.detail}") \
                from None
        try:
            self._apply_layer((step.index, event.occurrence), changes, step.index)
        except StreamlabError as exc:
            detail = exc.extra.get("fields") or exc.detail or exc.error
            raise type(exc)(exc.error, detail=f"step {step.label()}: {detail}") from None
        self._step_state[step.index] = "active" if step.for_s is not None or step.repeat else "done"
        self._active_occurrences[step.index] = event.occurrence
        self.current_step = step.index
        self._step_times.setdefault(step.index, []).append((self.clock.seconds(), None))
        if step.for_s is None and (step.repeat is None or event.occurrence == step.repeat.times - 1):
            self._step_state[step.index] = "done"
        self.target.changed()

    def _apply_layer(self, owner: tuple[int, int], changes: Mapping[str, Any], step: int | None) -> None:
        current = self.target.current()
        self.target.patch(changes)
        for key, value in changes.items():
            stack = self._stacks.setdefault(key, [])
            before = copy.deepcopy(current.get(key))
            if stack and stack[-1][0][0] == owner[0] and self._permanent(owner[0]):
                before = stack.pop()[1]  # a repeat of a step without for: one layer
            stack.append((owner, before, copy.deepcopy(value)))
        self._log(step, "applied", dict(changes))

    def _permanent(self, step: int) -> bool:
        return step == SEED_STEP or self._step(step).for_s is None

    def _restore(self, event: tl.Event) -> None:
        step = self._step(event.step)
        owner = (step.index, event.occurrence)
        targets: dict[str, tuple[Any, Any]] = {}
        for key, stack in list(self._stacks.items()):
            pos = next((i for i, layer in enumerate(stack) if layer[0] == owner), None)
            if pos is None:
                continue
            _owner, before, value = stack.pop(pos)
            if pos == len(stack):  # it was on top: the control goes back
                targets[key] = (value, before)
            else:  # a later layer sits above: it now restores to what was before this one
                above = stack[pos]
                stack[pos] = (above[0], before, above[2])
            if not stack:
                del self._stacks[key]
        restored, kept = self._put_back(targets)
        times = self._step_times.get(step.index) or []
        if times and times[-1][1] is None:
            times[-1] = (times[-1][0], self.clock.seconds())
        last = step.repeat is None or event.occurrence == step.repeat.times - 1
        self._step_state[step.index] = "done" if last else "pending"
        self._log(step.index, "restored", restored, kept)
        self.target.changed()

    def _put_back(self, targets: Mapping[str, tuple[Any, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Restore each control of *targets* (``{key: (value the run set, value to put
        back)}``) where it still holds what the run set; let go of the others (the
        tester's value wins).  Returns ``(restored, kept)``."""
        current = self.target.current()
        kept: dict[str, Any] = {k: copy.deepcopy(current.get(k)) for k, (mine, _to) in targets.items()
                                if current.get(k) != mine}
        groups = {_timing_group(k) for k in kept} - {None}
        for key in targets:
            if key not in kept and _timing_group(key) in groups:
                kept[key] = copy.deepcopy(current.get(key))
        for key in kept:
            self._stacks.pop(key, None)
        restore = {k: to for k, (_mine, to) in targets.items() if k not in kept}
        changes = {k: v for k, v in restore.items() if current.get(k) != v}
        if changes:
            try:
                self.target.patch(changes)
            except Invalid:
                # e.g. a cross-field check against a control the tester changed: one by one
                for key, value in changes.items():
                    try:
                        self.target.patch({key: value})
                    except Invalid as exc:
                        kept[key] = copy.deepcopy(current.get(key))
                        restore.pop(key, None)
                        log.info("scenario run {rid}: could not restore {key}: {e}", rid=self.id, key=key,
                                 e=exc.extra.get("fields") or exc.detail)
        return copy.deepcopy(restore), kept

    # ------------------------------------------------------------------ end

    def _finish(self, state: str | None, event: str) -> None:
        self._cancel_timers()
        self.ended_at = self.clock.seconds()
        restored, kept = self._put_back(self._end_targets())
        self._stacks.clear()
        for index, st in self._step_state.items():
            if st == "active":
                self._step_state[index] = "done"
        for times in self._step_times.values():
            if times and times[-1][1] is None:
                times[-1] = (times[-1][0], self.ended_at)
        self._log(None, event, restored, kept)
        self._sample(force=True)
        self.verdict = self._evaluate()
        if state is None:
            state = PASSED if self.verdict["passed"] else FAILED
        self.state = state
        self.target.changed()
        if self.on_end is not None:
            self.on_end(self)

    def _fail(self, reason: str, *, restore: bool = True) -> None:
        self.error = reason
        self._cancel_timers()
        self.ended_at = self.clock.seconds()
        if restore and self._stacks:
            try:
                restored, kept = self._put_back(self._end_targets())
                self._log(None, "restored", restored, kept)
            except StreamlabError as exc:
                log.info("scenario run {rid}: restore after error failed: {e}", rid=self.id, e=exc)
        self._stacks.clear()
        self._log(None, "error", {}, None, reason)
        self.state = ERROR
        try:
            self.target.changed()
        except Exception:  # noqa: BLE001 - the session may be gone
            pass
        if self.on_end is not None:
            self.on_end(self)

    def _end_targets(self) -> dict[str, tuple[Any, Any]]:
        """Every control the run still holds: (its value now, its value before the run)."""
        return {k: (stack[-1][2], stack[0][1]) for k, stack in self._stacks.items() if stack}

    def _cancel_timers(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._sampler is not None and self._sampler.running:
            self._sampler.stop()

    # ------------------------------------------------------------------ observations

    def _sample(self, force: bool = False) -> None:
        try:
            metrics = self.target.player_metrics()
        except Exception:  # noqa: BLE001 - the session may be gone
            return
        key = metrics.get("server_received_at_ms")
        if key is None or key == self._last_sample_key:
            return
        self._last_sample_key = key
        self._samples.append((self.clock.seconds(), dict(metrics)))

    def _evaluate(self) -> dict[str, Any]:
        end = self.ended_at if self.ended_at is not None else self.clock.seconds()
        try:
            entries = self.target.network_entries(self.started_at)
            variants = self.target.variants()
        except StreamlabError:
            entries, variants = [], []
        obs = verdict_mod.Observations(
            started_at=self.started_at, ended_at=end, samples=list(self._samples), baseline=self._baseline,
            entries=entries, step_times=self._step_times, variants=variants, window_check=self.window_check)
        return verdict_mod.evaluate(self.scenario.expect, obs)

    # ------------------------------------------------------------------ JSON

    def _log(self, step: int | None, event: str, fields: Mapping[str, Any],
             kept: Mapping[str, Any] | None = None, error: str | None = None) -> None:
        entry: dict[str, Any] = {"t_s": round(self.elapsed(), 3), "step": None if step in (None, SEED_STEP)
                                 else step, "event": event, "fields": copy.deepcopy(dict(fields))}
        if kept:
            entry["kept"] = copy.deepcopy(dict(kept))
        if error:
            entry["error"] = error
        self.log.append(entry)

    def active(self) -> dict[str, Any]:
        """``{control: value}`` the run holds set now."""
        return {k: copy.deepcopy(stack[-1][2]) for k, stack in sorted(self._stacks.items()) if stack}

    def next_step_in(self) -> float | None:
        """Seconds until the next step application (None when none is left)."""
        if self.state != RUNNING:
            return None
        elapsed = self.elapsed()
        for event in self.events[self._next:]:
            if event.action == tl.APPLY:
                return round(max(0.0, event.t - elapsed), 3)
        return None

    def summary(self) -> dict[str, Any]:
        """The short form carried in the session JSON (``"scenario"``)."""
        return {"id": self.id, "name": self.scenario.name, "state": self.state,
                "started_at": iso(self.started_at), "elapsed_s": round(self.elapsed(), 3),
                "duration_s": round(self.duration, 3), "current_step": self.current_step,
                "next_step_in_s": self.next_step_in(), "active": self.active(),
                "passed": self.verdict["passed"] if self.verdict is not None else None,
                "error": self.error}

    def to_json(self) -> dict[str, Any]:
        """The run JSON of the API (docs/scenarios.md)."""
        starts = tl.step_starts(self.scenario)
        steps = [{"index": s.index, "id": s.id, "at_s": round(starts[s.index], 3), "for_s": s.for_s,
                  "repeat": {"every": s.repeat.every, "times": s.repeat.times} if s.repeat else None,
                  "set": copy.deepcopy(s.set), "state": self._step_state[s.index],
                  "applied": len(self._step_times.get(s.index, []))}
                 for s in self.scenario.steps]
        return {"id": self.id, "session_id": self.session_id, "name": self.scenario.name,
                "seed": self.scenario.seed, "state": self.state, "started_at": iso(self.started_at),
                "ended_at": iso(self.ended_at), "elapsed_s": round(self.elapsed(), 3),
                "duration_s": round(self.duration, 3), "current_step": self.current_step,
                "next_step_in_s": self.next_step_in(), "active": self.active(), "steps": steps,
                "log": copy.deepcopy(self.log), "verdict": copy.deepcopy(self.verdict), "error": self.error,
                "scenario": copy.deepcopy(self.scenario.raw)}
