"""Scenario runs on live sessions: the adapter between :class:`ScenarioRun` and the
session registry (one ``IService``).

* each run drives its session through :class:`RegistryTarget` — ``registry.patch`` (the
  PATCH path: same validation, group propagation, revisions, markers, SSE);
* the last run of every session is kept (also after it ended) until the session goes;
* every session's JSON carries ``"scenario"``: the last run's summary or ``null``
  (a registry ``field_provider``); a step taking effect pushes the sessions SSE stream;
* a session removed during a run ends it in ``error`` (a registry ``removal_hook``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from streamlab.errors import Conflict, NotFound
from streamlab.proxy.netlog import iso_ms
from streamlab.proxy.session import Session
from streamlab.scenario import model
from streamlab.scenario.run import ScenarioRun

log = Logger()


class RegistryTarget:
    """A session of the registry as a run's :class:`~streamlab.scenario.run.ControlTarget`."""

    def __init__(self, registry: Any, session: Session) -> None:
        self.registry = registry
        self.session = session

    def current(self) -> Mapping[str, Any]:
        """A copy of the session's control values."""
        snapshot: dict[str, Any] = self.session.controls.snapshot()
        return snapshot

    def patch(self, changes: Mapping[str, Any]) -> None:
        """The PATCH path: validated, applied group-wide for group fields, pushed."""
        if self.session.closed:
            raise NotFound("session not found", detail=self.session.session_id)
        self.registry.patch(self.session.session_id, dict(changes))

    def changed(self) -> None:
        """Push the sessions SSE stream now."""
        if not self.session.closed:
            self.registry.notify(self.session.session_id)

    def player_metrics(self) -> Mapping[str, Any]:
        """The latest player metrics with the time they arrived."""
        out = dict(self.session.player_metrics)
        if self.session.server_received_at_ms is not None:
            out["server_received_at_ms"] = self.session.server_received_at_ms
        return out

    def network_entries(self, since: float) -> list[dict[str, Any]]:
        """Network-log entries that arrived at or after *since* (unix seconds)."""
        netlog = self.session.netlog
        if netlog is None:
            return []
        entries: list[dict[str, Any]] = netlog.entries(since=iso_ms(since - 0.001))
        return entries

    def variants(self) -> list[dict[str, Any]]:
        """The session's ladder."""
        return [dict(v) for v in self.session.manifest_variants]


class ScenarioService(Service):
    """Starts, stops and remembers scenario runs (see the module docstring)."""

    name = "scenarios"

    def __init__(self, registry: Any, clock: IReactorTime, *,
                 origin: Callable[[], Any] | None = None) -> None:
        self.registry = registry
        self.clock = clock
        self.origin = origin
        self._runs: dict[str, ScenarioRun] = {}
        self._seq = 0
        registry.field_providers.append(self.session_field)
        registry.removal_hooks.append(self._session_removed)

    # ------------------------------------------------------------------ runs

    def start(self, session_id: str, raw: Any) -> ScenarioRun:
        """Start *raw* on *session_id*: NotFound (session), ScenarioInvalid, Conflict (running)."""
        session = self.registry.get(session_id)
        scenario = model.parse(raw)
        self._check_idle([session])
        return self._start(session, scenario)

    def start_group(self, group_id: str, raw: Any) -> list[ScenarioRun]:
        """One run of *raw* per member of *group_id* (none starts if any member is busy)."""
        members = [self.registry.get(sid) for sid in self.registry.group(group_id)["session_ids"]]
        scenario = model.parse(raw)
        self._check_idle(members)
        return [self._start(session, scenario) for session in members]

    def _check_idle(self, sessions: list[Session]) -> None:
        busy = [s.session_id for s in sessions if self._runs.get(s.session_id) is not None
                and self._runs[s.session_id].running]
        if busy:
            raise Conflict("scenario running", detail=f"a scenario is already running on session "
                           f"{', '.join(busy)}: stop it first (DELETE .../scenario)", session_ids=busy)

    def _start(self, session: Session, scenario: model.Scenario) -> ScenarioRun:
        self._seq += 1
        target = RegistryTarget(self.registry, session)
        run = ScenarioRun(f"r{self._seq}", session.session_id, scenario, target, self.clock,
                          window_check=self.window_check, on_end=self._ended)
        self._runs[session.session_id] = run
        log.info("scenario {name!r} ({rid}) started on session {sid}", name=scenario.name, rid=run.id,
                 sid=session.session_id)
        run.start()
        return run

    def _ended(self, run: ScenarioRun) -> None:
        verdict = run.verdict or {}
        results = verdict.get("expectations", [])
        why = f" ({run.error})" if run.error else \
            f" ({sum(1 for e in results if e['passed'])}/{len(results)} expectations passed)"
        log.info("scenario {name!r} ({rid}) on session {sid}: {state}{why}", name=run.scenario.name,
                 rid=run.id, sid=run.session_id, state=run.state, why=why)

    def last(self, session_id: str) -> ScenarioRun:
        """The last run of *session_id* (NotFound: unknown session, or no run yet)."""
        session = self.registry.get(session_id)
        run = self._runs.get(session.session_id)
        if run is None:
            raise NotFound("no scenario run", detail=f"session {session.session_id} has not run a scenario")
        return run

    def stop(self, session_id: str) -> ScenarioRun:
        """Stop the session's run (restoring its controls); the run (also when it had ended)."""
        run = self.last(session_id)
        run.stop()
        return run

    def group_runs(self, group_id: str) -> list[ScenarioRun]:
        """The last run of every member of *group_id* that has one."""
        ids = self.registry.group(group_id)["session_ids"]
        return [self._runs[sid] for sid in ids if sid in self._runs]

    def active_runs(self) -> list[ScenarioRun]:
        """Runs still going."""
        return [r for r in self._runs.values() if r.running]

    # ------------------------------------------------------------------ registry hooks

    def session_field(self, session: Session) -> dict[str, Any]:
        """``{"scenario": summary of the session's last run, or None}``."""
        run = self._runs.get(session.session_id)
        return {"scenario": run.summary() if run is not None else None}

    def _session_removed(self, session: Session) -> None:
        run = self._runs.pop(session.session_id, None)
        if run is not None and run.running:
            run.abort("the session was removed")

    # ------------------------------------------------------------------ the origin's window

    def window_check(self, path: str, at: float) -> str | None:
        """Whether the sequence-addressed segment *path* was ``behind``/``ahead`` of/``in``
        the live window at unix time *at* (None when the origin cannot tell)."""
        origin = self.origin() if self.origin is not None else None
        if origin is None or getattr(origin, "library", None) is None:
            return None
        from streamlab.live.timeline import LiveTimeline
        from streamlab.live.urls import parse_media

        parts = path.split("?", 1)[0].split("/")
        if len(parts) < 5 or parts[1] != "go-live":
            return None
        index = origin.library.get(parts[2])
        if index is None or not getattr(index, "segment_duration", 0):
            return None
        ref = parse_media(index, "/".join(parts[3:]))
        if ref is None or ref.seq is None:
            return None
        edge = LiveTimeline(index, origin.epoch).in_progress(at)
        depth = math.ceil(float(origin.window) / index.segment_duration)
        if ref.seq > edge + 1:
            return "ahead"
        if ref.seq < edge - depth - 1:
            return "behind"
        return "in"

    # ------------------------------------------------------------------ service

    def stopService(self) -> Any:  # noqa: N802 - twisted API
        """Daemon stop: stop every run (timers cancelled, controls restored)."""
        for run in self.active_runs():
            try:
                run.stop()
            except Exception:  # noqa: BLE001 - stopping must go on
                log.failure("stopping scenario run {rid}", rid=run.id)
        return super().stopService()
