"""The sessions SSE feed (``GET /api/sessions/stream``): ``sessions`` snapshots in which
each session is serialised again only when it changed (or once per ``refresh`` seconds,
for its clock-driven fields such as ``session_duration``), and — for a client that asks
with ``?delta=1`` — the snapshot once, then ``sessions.delta`` events carrying only the
sessions that changed and the ids that went away (docs/sessions.md, "Live updates").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from streamlab.push.sse import EventStream, FlushSchedule, encode_event

log = Logger()


def _dumps(item: Any) -> str:
    return json.dumps(item, separators=(",", ":"))


class SessionsFeed:
    """Keyed snapshot feed of the sessions (see the module docstring).

    *keys()* lists the live keys in order, *render(key)* builds one item, *active()* says
    whether heartbeats are due.  ``changed(key)`` / ``changed_many(keys)`` /
    ``changed_all()`` tell it what moved (an item missing from *keys()* is sent as
    removed); nothing is tracked or rendered while no client listens."""

    event = "sessions"
    delta_event = "sessions.delta"

    def __init__(self, clock: IReactorTime, keys: Callable[[], list[str]], render: Callable[[str], Any],
                 active: Callable[[], bool], min_interval: float = 0.25, heartbeat: float = 1.0,
                 refresh: float = 1.0) -> None:
        self.clock = clock
        #: clients of full snapshots, and of deltas (``?delta=1``)
        self.stream = EventStream(clock)
        self.delta_stream = EventStream(clock)
        self._keys = keys
        self._render = render
        self._active = active
        self.schedule = FlushSchedule(clock, self._flush, min_interval, heartbeat)
        self.refresh = refresh
        self.revision = 0
        #: JSON text of every item as last sent, and when it was rendered
        self._texts: dict[str, str] = {}
        self._rendered_at: dict[str, float] = {}
        self._dirty: set[str] = set()
        self._all = True
        #: items serialised since start (a cost figure for /debug and tests)
        self.rendered = 0

    @property
    def watched(self) -> bool:
        """Whether any client listens (full or delta)."""
        return bool(self.stream.clients or self.delta_stream.clients)

    def changed(self, key: str, urgent: bool = False) -> None:
        """Item *key* changed."""
        if self.stream.clients or self.delta_stream.clients:
            self._dirty.add(key)
            self._poke(urgent)

    def changed_many(self, keys: Iterable[str]) -> None:
        """Items *keys* changed."""
        if self.watched:
            self._dirty.update(keys)
            self._poke(False)

    def changed_all(self, urgent: bool = False) -> None:
        """Any item may have changed (render them all at the next event)."""
        if self.watched:
            self._all = True
            self._poke(urgent)

    def attach(self, request: IRequest) -> Any:
        """A new client: the full snapshot now (rendered fresh), then events."""
        args = getattr(request, "args", None) or {}
        delta = (args.get(b"delta") or [b""])[0] in (b"1", b"true", b"yes")
        if not self.watched:
            self._all = True  # nothing was tracked while nobody listened
        self.revision += 1
        texts = []
        for key in self._keys():
            try:
                texts.append(_dumps(self._render(key)))
            except Exception:  # noqa: BLE001 - one broken item must not break the stream
                log.failure("rendering {key} for a new SSE client failed", key=key)
        frame = self._full_frame(texts)
        result = (self.delta_stream if delta else self.stream).attach(request, [frame])
        self._schedule_heartbeat()
        return result

    def _full_frame(self, texts: Iterable[str]) -> bytes:
        return encode_event(self.event, '{"sessions":[' + ",".join(texts) + '],"revision":'
                            + str(self.revision) + "}")

    def _update(self, now: float) -> tuple[list[str], list[str], list[str]]:
        """Render what changed or went stale: ``(keys, changed keys, removed keys)``."""
        keys = self._keys()
        texts, at = self._texts, self._rendered_at
        stale = now - self.refresh
        dirty, everything = self._dirty, self._all
        changed = []
        for key in keys:
            if everything or key in dirty or at.get(key, stale) <= stale:
                try:
                    texts[key] = _dumps(self._render(key))
                except Exception:  # noqa: BLE001 - one broken item must not break the stream
                    log.failure("rendering {key} for SSE failed", key=key)
                    continue
                at[key] = now
                changed.append(key)
        self.rendered += len(changed)
        live = set(keys)
        removed = [key for key in texts if key not in live]
        for key in removed:
            del texts[key]
            at.pop(key, None)
        self._dirty = set()
        self._all = False
        return keys, changed, removed

    def _poke(self, urgent: bool) -> None:
        self.schedule.poke(urgent)

    def _schedule_heartbeat(self) -> None:
        self.schedule.heartbeat_if(self.watched and self._active())

    def _flush(self) -> None:
        try:
            if self.watched:
                now = self.clock.seconds()
                keys, changed, removed = self._update(now)
                self.schedule.sent(now)
                self.revision += 1
                texts = self._texts
                if self.stream.clients:
                    self.stream.send_frame(self._full_frame(texts[k] for k in keys if k in texts))
                if self.delta_stream.clients and (changed or removed):
                    data = ('{"changed":[' + ",".join(texts[k] for k in changed) + '],"removed":'
                            + _dumps(removed) + ',"revision":' + str(self.revision) + "}")
                    self.delta_stream.send_frame(encode_event(self.delta_event, data))
        except Exception:  # noqa: BLE001 - periodic tasks survive their errors
            log.failure("SSE sessions update failed")
        self._schedule_heartbeat()

    def stop(self) -> None:
        """Cancel timers and finish every client."""
        self.schedule.stop()
        self.delta_stream.close()
