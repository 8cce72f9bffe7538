"""A session's control values with per-field revisions (pure).

``control_revision`` is an opaque string (a monotonic integer rendered as text).  Every
field remembers the revision at which it last changed, so a PATCH carrying
``base_revision`` conflicts only on the fields *it* lists that someone else changed after
that revision: two testers editing different controls never conflict.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from streamlab.errors import Conflict, Invalid


def parse_revision(value: Any) -> int | None:
    """The integer behind a revision string (``None``/``""`` -> ``None``); Invalid otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Invalid("invalid", fields={"base_revision": "must be a revision string"})
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdecimal():
        return int(value.strip())
    raise Invalid("invalid", fields={"base_revision": "must be a revision string from control_revision"})


class ControlState:
    """Current control values of one session plus per-field change revisions.

    *defaults* seeds :attr:`values` (deep-copied).  *next_revision* (optional) hands out
    revision numbers — pass a shared counter to keep revisions monotonic across sessions
    (a reused session id then never reissues an old revision); the default is a private
    counter starting at *start*.
    """

    def __init__(self, defaults: Mapping[str, Any], *, start: int = 0,
                 next_revision: Callable[[], int] | None = None) -> None:
        self.values: dict[str, Any] = copy.deepcopy(dict(defaults))
        self._rev = start
        self._next = next_revision
        self._changed_at: dict[str, int] = {}

    # ------------------------------------------------------------------ revisions

    @property
    def revision(self) -> str:
        """The opaque ``control_revision`` string."""
        return str(self._rev)

    @property
    def revision_number(self) -> int:
        """The integer behind :attr:`revision`."""
        return self._rev

    def changed_at(self, name: str) -> int:
        """Revision at which *name* last changed (0 = never)."""
        return self._changed_at.get(name, 0)

    def _new_revision(self, revision: int | None) -> int:
        if revision is not None:
            if revision <= self._rev:
                raise ValueError(f"revision {revision} is not after {self._rev}")
            return revision
        if self._next is not None:
            value = self._next()
            return value if value > self._rev else self._rev + 1
        return self._rev + 1

    # ------------------------------------------------------------------ changes

    def conflicts(self, names: Iterable[str], base_revision: str | int | None,
                  changes: Mapping[str, Any] | None = None) -> list[str]:
        """Listed fields changed after *base_revision* (empty when None).

        A field whose new value (in *changes*) equals its current value never conflicts:
        both writers agree.
        """
        base = parse_revision(base_revision)
        if base is None:
            return []
        out = []
        for name in names:
            if changes is not None and name in changes and self.values.get(name) == changes[name]:
                continue
            if self._changed_at.get(name, 0) > base:
                out.append(name)
        return out

    def apply(self, changes: Mapping[str, Any], base_revision: str | int | None = None, *,
              revision: int | None = None) -> list[str]:
        """Apply validated *changes*; return the names whose value actually changed.

        Raises ``Conflict("revision_conflict", conflicts=[...])`` — and changes nothing —
        when a field in *changes* was changed after *base_revision* (``None`` = last
        writer wins).  The revision is bumped once, only if something changed; an explicit
        *revision* (e.g. one shared by a whole group step) is used instead of the counter.
        """
        conflicts = self.conflicts(changes, base_revision, changes)
        if conflicts:
            raise Conflict("revision_conflict", conflicts=conflicts, control_revision=self.revision)
        changed = [name for name, value in changes.items() if self.values.get(name, _MISSING) != value]
        if not changed:
            return []
        rev = self._new_revision(revision)
        for name in changed:
            self.values[name] = copy.deepcopy(changes[name])
            self._changed_at[name] = rev
        self._rev = rev
        return changed

    def bump(self, names: Iterable[str], *, revision: int | None = None) -> str:
        """Record a server-side change of *names* (already written to :attr:`values`),
        e.g. a one-shot rule disarming itself.  Returns the new revision."""
        names = list(names)
        rev = self._new_revision(revision)
        for name in names:
            self._changed_at[name] = rev
        self._rev = rev
        return self.revision

    def set_server(self, changes: Mapping[str, Any]) -> list[str]:
        """Write server-side *changes* (no conflict check) and bump once if any changed."""
        changed = [name for name, value in changes.items() if self.values.get(name, _MISSING) != value]
        if changed:
            for name in changed:
                self.values[name] = copy.deepcopy(changes[name])
            self.bump(changed)
        return changed

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of the values (safe to serialise or hand out)."""
        return copy.deepcopy(self.values)


_MISSING = object()
