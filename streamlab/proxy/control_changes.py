"""Changing a session's controls: validated PATCHes with per-field conflicts, group
propagation, one-shot disarms (and their timers), control-change markers in the
network log, and the ``session.changed`` bus event (spec/sessions.md sections 3, 4, 7).

The session table (:class:`streamlab.proxy.registry.SessionRegistry`) owns the sessions;
this module owns what happens when their controls change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from streamlab.errors import Conflict, Invalid, NotFound
from streamlab.proxy import fields as fields_mod
from streamlab.proxy import manifest_faults, markers
from streamlab.proxy.session import Session
from streamlab.shaping.host import ControlsChanged, SessionShaping

if TYPE_CHECKING:
    from streamlab.interfaces import IEventBus

log = Logger()

MAX_GROUP = 10


class DisarmTimers:
    """One-shot rules (``P_failure_frequency`` 0) end by themselves: after each decision
    the engine's finished windows are disarmed (*disarm*), and a seconds-mode window that
    must end even without requests gets one timer per session."""

    def __init__(self, clock: IReactorTime, disarm: Callable[[Session, list[str]], None]) -> None:
        self.clock = clock
        self._disarm = disarm
        self._timers: dict[str, IDelayedCall] = {}

    def after_decide(self, session: Session, faulted: bool = True) -> None:
        """Apply one-shot disarms the engine reported; after a fault, arm the timer of a
        seconds-mode one-shot window that must end even without requests."""
        try:
            disarmed = session.engine.take_disarmed()
        except Exception:  # noqa: BLE001
            log.failure("take_disarmed failed")
            return
        if not disarmed:
            if faulted and session.session_id not in self._timers:
                self.schedule(session)
            return
        self._disarm(session, disarmed)

    def schedule(self, session: Session) -> None:
        """Arm a timer for a seconds-mode one-shot that must disarm even without requests."""
        self.cancel(session.session_id)
        deadline = session.engine.next_deadline()
        if deadline is None or session.closed:
            return
        delay = max(0.0, deadline - self.clock.seconds())
        self._timers[session.session_id] = self.clock.callLater(delay, self._poll, session)

    def cancel(self, session_id: str) -> None:
        """Forget *session_id*'s timer (the session changed or went away)."""
        timer = self._timers.pop(session_id, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _poll(self, session: Session) -> None:
        self._timers.pop(session.session_id, None)
        if session.closed:
            return
        try:
            session.engine.poll(self.clock.seconds())
            self.after_decide(session)
        except Exception:  # noqa: BLE001 - timers survive their errors
            log.failure("one-shot disarm failed")


class ControlChanges:
    """Control changes of the sessions in *sessions* (the registry's live table).

    *changed(session, urgent)* tells the SSE feed; *shaping()* is the registry's shaping
    collaborator (None: unshaped), which checks merged controls before they are stored
    and gets one ``controls_changed`` call per changed session; *to_json* renders a
    session for a conflict body."""

    def __init__(self, sessions: Mapping[str, Session], clock: IReactorTime, bus: IEventBus, *,
                 changed: Callable[[Session | None, bool], None],
                 shaping: Callable[[], SessionShaping | None],
                 to_json: Callable[[Session], dict[str, Any]]) -> None:
        self._by_id = sessions
        self.clock = clock
        self.bus = bus
        self._changed = changed
        self._shaping = shaping
        self._to_json = to_json
        self.disarm = DisarmTimers(clock, self.disarmed)
        self._groups: dict[str, list[str]] = {}
        self._group_seq = 0
        self._rev = 0

    def next_rev(self) -> int:
        """The next control revision (one counter for every session)."""
        self._rev += 1
        return self._rev

    # ------------------------------------------------------------------ change

    def patch(self, session: Session, set_: Mapping[str, Any], fields: Sequence[str] | None = None,
              base_revision: str | None = None, *, coerce_strings: bool = False) -> None:
        """Validate and apply a control change (group-wide for group fields).
        Invalid / Conflict (with the session in the body)."""
        changes = fields_mod.validate(set_, fields, session.controls.values, coerce_strings=coerce_strings,
                                      variants=session.manifest_variants or None)
        merged = {**session.controls.values, **changes}
        shaping = self._shaping()
        if shaping is not None:
            shaping.check_controls(merged, session.port)
        conflicts = session.controls.conflicts(changes, base_revision, changes)
        if conflicts:
            raise Conflict("revision_conflict", conflicts=conflicts, session=self._to_json(session),
                           control_revision=session.controls.revision)
        self.apply(session, changes, base_revision)
        self._changed(session, True)

    def apply(self, session: Session, changes: Mapping[str, Any], base_revision: str | None, *,
              publish_self: bool = True) -> None:
        """Apply validated *changes* to *session* (and group fields to its group)."""
        rev = self.next_rev()
        changed = session.controls.apply(changes, base_revision, revision=rev)
        if any(k.startswith("manifest_fault_") for k in changes):  # set, even to the same value: re-armed
            session.manifest_state = manifest_faults.ManifestFaultState()
        if "seed" in changes and "seed" not in changed:  # the same seed again: replay from the start
            session.engine.configure(session.controls.values, ["seed"], self.clock.seconds())
        touched = [(session, changed)]
        group_changes = {k: v for k, v in changes.items() if k in fields_mod.GROUP_FIELDS}
        if session.group_id and group_changes:
            for sid in self._groups.get(session.group_id, []):
                member = self._by_id.get(sid)
                if member is None or member is session:
                    continue
                touched.append((member, member.controls.apply(group_changes, None, revision=rev)))
        now = self.clock.seconds()
        for member, names in touched:
            if not names:
                continue
            member.engine.configure(member.controls.values, names, now)
            self.disarm.schedule(member)
            if member is not session or publish_self:
                self.publish_changed(member, names)
            self.mark(member, names, now)
            if member is not session:
                self._changed(member, False)

    def disarmed(self, session: Session, items: list[str]) -> None:
        """One-shot windows of *session* ended: their types go back to ``none``."""
        names: list[str] = []
        for item in items:
            name = item if str(item).endswith("_failure_type") else f"{item}_failure_type"
            if name in session.controls.values:
                session.controls.values[name] = "none"
                names.append(name)
        if names:
            session.controls.bump(names)
            session.engine.configure(session.controls.values, names, self.clock.seconds())
            self.publish_changed(session, names)
            self.mark(session, names, self.clock.seconds(), " (one-shot)")
            self._changed(session, True)

    def publish_changed(self, session: Session, names: Sequence[str]) -> None:
        """``session.changed`` on the bus, then shaping's one ``controls_changed`` call;
        the follow-up changes it returns (e.g. a plain rate stopped the pattern) are
        stored as the next change."""
        self.bus.publish("session.changed", {"session_id": session.session_id, "port": session.port,
                                             "changed": list(names), "controls": session.controls.snapshot()})
        shaping = self._shaping()
        if shaping is not None:
            follow_up = shaping.controls_changed(ControlsChanged(
                session.session_id, session.port, tuple(names), session.controls.snapshot(),
                tuple(session.manifest_variants)))
            if follow_up:
                self.apply(session, follow_up, None)

    def mark(self, session: Session, names: Sequence[str], now: float, suffix: str = "") -> None:
        """A control-change marker in the session's network log (and on its SSE stream)."""
        if session.netlog is None or not names:
            return
        kind, text = markers.describe(names, session.controls.values)
        marker = session.netlog.mark(now, kind, text + suffix, names)
        if session.net_stream is not None and session.net_stream.clients:
            session.net_stream.publish("marker", marker)

    # ------------------------------------------------------------------ groups

    def join_group(self, session: Session, group_id: str) -> list[str]:
        """Add *session* to *group_id*; it takes the group's shared fields.  Returns the
        control names that changed (the caller publishes them)."""
        members = self._groups.setdefault(group_id, [])
        if session.session_id in members:
            return []
        if len(members) >= MAX_GROUP:
            log.warn("group {g} is full; {sid} stays alone", g=group_id, sid=session.session_id)
            if not members:
                del self._groups[group_id]
            return []
        source = next((self._by_id[m] for m in members if m in self._by_id), None)
        members.append(session.session_id)
        session.group_id = group_id
        if source is None:
            return []
        shared = {k: v for k, v in source.controls.values.items() if k in fields_mod.GROUP_FIELDS}
        changed = session.controls.apply(shared, None, revision=self.next_rev())
        if changed:
            session.engine.configure(session.controls.values, changed, self.clock.seconds())
        return changed

    def link(self, session_ids: Sequence[str], group_id: str | None = None) -> dict[str, Any]:
        """Create or extend a group; returns ``{"group_id","session_ids"}``."""
        if not isinstance(session_ids, list) or not session_ids or \
                not all(isinstance(s, (str, int)) and not isinstance(s, bool) for s in session_ids):
            raise Invalid("invalid", fields={"session_ids": "must be a non-empty list of session ids"})
        if group_id is not None and (not isinstance(group_id, str) or not group_id.strip()
                                     or len(group_id) > 64):
            raise Invalid("invalid", fields={"group_id": "must be a non-empty string (max 64 chars)"})
        ids = list(dict.fromkeys(str(s) for s in session_ids))
        missing = [s for s in ids if s not in self._by_id]
        if missing:
            raise NotFound("session not found", detail=missing)
        if group_id is None:
            group_id = next((self._by_id[s].group_id for s in ids if self._by_id[s].group_id), None)
        if group_id is None:
            self._group_seq += 1
            while f"G{self._group_seq}" in self._groups:
                self._group_seq += 1
            group_id = f"G{self._group_seq}"
        members = list(self._groups.get(group_id, []))
        new = [s for s in ids if s not in members]
        if len(members) + len(new) > MAX_GROUP:
            raise Invalid("invalid", detail=f"a group has at most {MAX_GROUP} members",
                          fields={"session_ids": f"a group has at most {MAX_GROUP} members"})
        for sid in new:
            old = self._by_id[sid].group_id
            if old and old != group_id:
                self.leave_group(self._by_id[sid])
        for sid in new:
            changed = self.join_group(self._by_id[sid], group_id)
            if changed:
                self.publish_changed(self._by_id[sid], changed)
        self._changed(None, True)
        return {"group_id": group_id, "session_ids": list(self._groups.get(group_id, []))}

    def unlink(self, session: Session) -> dict[str, Any]:
        """Take *session* out of its group (a one-member group dissolves)."""
        group = session.group_id
        self.leave_group(session)
        self._changed(None, True)
        return {"session_id": session.session_id, "group_id": group or "",
                "session_ids": list(self._groups.get(group, [])) if group else []}

    def leave_group(self, session: Session) -> None:
        """*session* leaves its group (if any)."""
        group = session.group_id
        session.group_id = None
        if not group or group not in self._groups:
            return
        members = self._groups[group]
        if session.session_id in members:
            members.remove(session.session_id)
        if len(members) <= 1:
            for sid in members:
                if sid in self._by_id:
                    self._by_id[sid].group_id = None
            del self._groups[group]

    def group(self, group_id: str) -> dict[str, Any]:
        """``{"group_id","session_ids","sessions"}``; NotFound for unknown groups."""
        members = self._groups.get(group_id)
        if not members:
            raise NotFound("group not found", detail=group_id)
        return {"group_id": group_id, "session_ids": list(members),
                "sessions": [self._to_json(self._by_id[s]) for s in members if s in self._by_id]}
