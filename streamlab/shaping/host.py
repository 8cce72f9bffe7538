"""The typed seam between the session registry and shaping (both directions, nothing else).

The registry and the shaping subsystem never import each other; both import this module.

* :class:`SessionShaping` is what the registry calls on shaping: wrap a new session
  listener, check merged controls before a change is stored, **one** "controls changed"
  callback (:class:`ControlsChanged`), the removal of a session, the runtime fields of the
  session object and fresh kernel counters before an answer.
* :class:`SessionHost` is the narrow part of the registry shaping may read and change:
  look a session up, store a control change through the same door as ``PATCH``, count a
  transport fault, and say that runtime fields changed (an SSE push, no revision bump).

Follow-up changes that shaping derives from a control change (a plain rate stops the
pattern; a template builds its steps) are the *return value* of
:meth:`SessionShaping.controls_changed`: the registry stores them at once as a second
change (its own revision), so shaping never re-enters the registry while it is changing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from twisted.internet import defer
from twisted.internet.interfaces import IProtocolFactory


@dataclass(frozen=True)
class ControlsChanged:
    """One session's controls changed (one per group member of a group change)."""

    session_id: str
    #: the internal session port (the shaped listener)
    port: int
    #: the control names whose value changed
    changed: tuple[str, ...]
    #: every control value after the change (a copy: safe to keep)
    controls: Mapping[str, Any]
    #: the session's ladder (``manifest_variants``) when the change was made
    variants: tuple[Mapping[str, Any], ...] = ()


class ControlValues(Protocol):
    """The control values of a session (``ControlState``)."""

    @property
    def values(self) -> Mapping[str, Any]:
        """Current control values."""


class SessionView(Protocol):
    """What shaping reads of one session."""

    @property
    def session_id(self) -> str:
        """The session id."""

    @property
    def port(self) -> int:
        """The internal session port."""

    @property
    def external_port(self) -> int:
        """The advertised session port."""

    @property
    def manifest_variants(self) -> Sequence[Mapping[str, Any]]:
        """The ladder seen in the last master playlist or MPD."""

    @property
    def controls(self) -> ControlValues:
        """The session's controls."""


@runtime_checkable
class SessionHost(Protocol):
    """The part of the session registry shaping may read and change."""

    def get(self, session_id: str) -> SessionView:
        """The live session *session_id* (``NotFound`` otherwise)."""

    def get_by_port(self, port: int) -> SessionView:
        """The session on internal or external *port* (``NotFound`` otherwise)."""

    def all(self) -> Sequence[SessionView]:
        """Every live session."""

    def patch(self, session_id: str, set_: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and store a control change (group-wide for group fields, revision
        bump), as ``PATCH /api/session/{id}`` does; returns the session JSON."""

    def bump_fault_counter(self, session_id: str, key: str, n: int = 1) -> None:
        """Count *n* faults under ``fault_count_<key>``."""

    def notify(self, session_id: str) -> None:
        """Runtime fields of the session changed (SSE push, no revision bump)."""


@runtime_checkable
class SessionShaping(Protocol):
    """What the session registry calls on shaping."""

    def wrap_listener(self, port: int, factory: IProtocolFactory) -> IProtocolFactory:
        """The factory a new session listener on *port* serves with (a fresh, uncapped
        shaper: a reused port starts clean)."""

    def check_controls(self, controls: Mapping[str, Any], port: int) -> None:
        """Raise ``Invalid``/``Conflict`` for merged *controls* this host cannot honour,
        before anything is stored."""

    def controls_changed(self, change: ControlsChanged) -> Mapping[str, Any]:
        """Follow the session's new controls; returns the follow-up control changes the
        registry stores next (empty: none)."""

    def session_removed(self, port: int) -> defer.Deferred[None]:
        """The session on *port* is gone: stop its timers and delete its kernel state.
        The port is not reused before the Deferred fires."""

    def runtime_fields(self, port: int) -> Mapping[str, Any]:
        """The runtime shaping fields of the session object on *port*."""

    def refresh(self, port: int) -> defer.Deferred[None]:
        """Read *port*'s kernel counters now (before a session is answered)."""

    def refresh_all(self) -> defer.Deferred[None]:
        """Read every port's kernel counters now, in one batch."""
