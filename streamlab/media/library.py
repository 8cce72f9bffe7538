"""ContentLibrary: the encoded items under ``<media_dir>/dynamic_content/``, kept in memory.

Scans run in a thread (``load_item`` stats every segment file); the reactor only swaps
the results in.  The one exception is the first scan when the service starts before the
reactor runs (twistd start-up): it runs inline so the daemon never serves an empty list.
A cheap periodic check (a LoopingCall, every ``poll_interval`` seconds)
compares each ``content.json``'s mtime/size and reloads the items that changed, appeared
or vanished; :meth:`ContentLibrary.refresh` reloads everything now (the encoder calls it
after packaging).  Unusable items (missing/unreadable/inconsistent ``content.json``) are
kept aside with their reason, logged once per new reason, and never served.

Directory names are the content names: ``[A-Za-z0-9_-]+``; hidden directories (the
packager's ``.name.partial-*`` staging) are ignored.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from twisted.application.service import Service
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from streamlab.deferreds import when_fired
from streamlab.errors import NotFound
from streamlab.interfaces import IContentLibrary, IDaemonReactor
from streamlab.media import decode_times
from streamlab.media.decode_times import DecodeTimes
from streamlab.media.index import ContentIndex, UnusableItem, load_item

log = Logger()

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")

Signature = tuple[int, int] | None  # (mtime_ns, size) of content.json, None when absent


def valid_name(name: str) -> bool:
    """True for a content name that can be a directory under dynamic_content/."""
    return bool(NAME_RE.match(name)) and len(name) <= 200


@implementer(IContentLibrary)
class ContentLibrary(Service):
    """The content items the origin can serve (an IService; see the module docstring)."""

    name = "library"

    def __init__(self, media_dir: str, reactor: IDaemonReactor, *, poll_interval: float = 2.0,
                 clock: IReactorTime | None = None) -> None:
        self.media_dir = os.path.abspath(media_dir)
        self.content_dir = os.path.join(self.media_dir, "dynamic_content")
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._poll_interval = poll_interval
        self._items: dict[str, ContentIndex] = {}
        self._unusable: dict[str, str] = {}
        self._signatures: dict[str, Signature] = {}
        self._times: dict[str, DecodeTimes | str] = {}
        self._loop: LoopingCall | None = None
        self._loop_done: Deferred[Any] | None = None
        self._busy: Deferred[None] | None = None  # the scan running now
        self._again: Deferred[None] | None = None  # a full scan queued behind it

    # -- public surface -------------------------------------------------------

    def get(self, name: str) -> ContentIndex | None:
        """The usable item *name*, or None."""
        return self._items.get(name)

    def items(self) -> list[ContentIndex]:
        """Usable items, sorted by name."""
        return [self._items[k] for k in sorted(self._items)]

    def decode_times(self, name: str) -> DecodeTimes | str | None:
        """The decode-time index of item *name* (continuous timeline), the reason it could
        not be built (a string), or None for an unknown item."""
        return self._times.get(name)

    def unusable(self) -> dict[str, str]:
        """Unusable item name -> reason."""
        return dict(self._unusable)

    def item_dir(self, name: str) -> str:
        """Absolute directory of item *name* (NotFound for a name that cannot be one)."""
        if not valid_name(name):
            raise NotFound("unknown content", detail=name)
        path = os.path.join(self.content_dir, name)
        if os.path.dirname(path) != self.content_dir:  # belt and braces
            raise NotFound("unknown content", detail=name)
        return path

    def refresh(self) -> Deferred[None]:
        """Re-scan every item now (off the reactor thread); fires when the new state is in.

        A refresh asked for while a scan runs queues exactly one more full scan."""
        if self._busy is None:
            return self._start(None)
        if self._again is None:
            again: Deferred[None] = Deferred()
            self._again = again
        return self._after(self._again)

    @staticmethod
    def _after(d: Deferred[None]) -> Deferred[None]:
        """A new Deferred firing None when *d* fires (callers never touch *d*'s chain)."""
        return when_fired(d, None)

    # -- IService ---------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop_done = self._loop.start(self._poll_interval, now=False)
        if getattr(self._reactor, "running", True):
            self.refresh()
        else:
            # twistd starts services before reactor.run(): nothing is served yet, so the
            # first scan runs right here and the item list is complete before any
            # listener accepts a request (no "empty library" window after a restart).
            self._apply(self._scan(None), None)

    def stopService(self) -> Deferred[None] | None:  # noqa: N802
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return None if self._busy is None else self._after(self._busy)

    # -- scanning ---------------------------------------------------------------

    def _tick(self) -> None:
        self.check()

    def check(self) -> Deferred[None]:
        """The periodic check: reload the items whose content.json changed, appeared or
        vanished.  Fires when done; never fails (errors are logged)."""
        if self._busy is not None:
            return self._after(self._busy)
        d = threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._signatures_now)

        def compare(now: dict[str, Signature]) -> Deferred[None] | None:
            if self._busy is not None:
                return None
            changed = {n for n in set(now) | set(self._signatures)
                       if n not in now or n not in self._signatures or now[n] != self._signatures[n]}
            if not changed:
                return None
            return self._start(changed)

        d.addCallback(compare)
        d.addErrback(lambda f: log.failure("content library check failed", f))
        return d.addCallback(lambda _: None)

    def _start(self, names: set[str] | None) -> Deferred[None]:
        """Run one scan (*names* None = everything) in a thread, then apply it."""
        d = threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._scan, names)
        d.addCallback(self._apply, names)
        d.addErrback(lambda f: log.failure("content library scan failed", f))
        result: Deferred[None] = Deferred()
        self._busy = result

        def finished(_: Any) -> None:
            self._busy = None
            result.callback(None)
            again, self._again = self._again, None
            if again is not None:
                self._start(None).chainDeferred(again)

        d.addBoth(finished)
        return result

    def _signatures_now(self) -> dict[str, Signature]:
        """content.json signature of every item directory (blocking)."""
        out: dict[str, Signature] = {}
        try:
            entries = os.listdir(self.content_dir)
        except FileNotFoundError:
            return out
        for name in entries:
            if not valid_name(name):
                continue
            path = os.path.join(self.content_dir, name)
            if not os.path.isdir(path):
                continue
            try:
                st = os.stat(os.path.join(path, "content.json"))
                out[name] = (st.st_mtime_ns, st.st_size)
            except OSError:
                out[name] = None
        return out

    def _scan(self, names: set[str] | None) -> tuple[dict[str, Signature], dict[str, ContentIndex | str],
                                                     dict[str, DecodeTimes | str]]:
        """Load the items *names* (or all); returns signatures, name -> index or reason, and
        name -> decode-time index or the reason there is none."""
        signatures = self._signatures_now()
        wanted = set(signatures) if names is None else names & set(signatures)
        loaded: dict[str, ContentIndex | str] = {}
        times: dict[str, DecodeTimes | str] = {}
        for name in sorted(wanted):
            try:
                index = load_item(os.path.join(self.content_dir, name))
            except UnusableItem as exc:
                loaded[name] = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad item must not hide the others
                loaded[name] = f"cannot load: {exc!r}"
                continue
            if index.name != name:
                index = dataclasses.replace(index, name=name)
            loaded[name] = index
            try:
                times[name] = decode_times.build(os.path.join(self.content_dir, name), index)
            except Exception as exc:  # noqa: BLE001 - the item still plays in the default timeline
                times[name] = f"no decode-time index: {exc}"
        return signatures, loaded, times

    def _apply(self, result: tuple[dict[str, Signature], dict[str, ContentIndex | str],
                                   dict[str, DecodeTimes | str]],
               names: set[str] | None) -> None:
        signatures, loaded, times = result
        scope = set(self._signatures) | set(signatures) if names is None else names
        for name in scope:
            if name not in signatures:  # the directory is gone
                if name in self._items or name in self._unusable:
                    log.info("content {name}: removed", name=name)
                self._items.pop(name, None)
                self._unusable.pop(name, None)
                self._signatures.pop(name, None)
                self._times.pop(name, None)
                continue
            if name not in loaded:
                continue
            self._signatures[name] = signatures[name]
            value = loaded[name]
            if isinstance(value, ContentIndex):
                if name not in self._items or name in self._unusable:
                    log.info("content {name}: ready ({count} x {seg} s, {tracks} tracks)", name=name,
                             count=value.segment_count, seg=value.segment_duration, tracks=len(value.tracks))
                self._items[name] = value
                self._unusable.pop(name, None)
                self._times[name] = times.get(name, "no decode-time index")
                if isinstance(self._times[name], str):
                    log.warn("content {name}: continuous timeline unavailable: {reason}", name=name,
                             reason=self._times[name])
            else:
                if self._unusable.get(name) != value:
                    log.warn("content {name}: unusable: {reason}", name=name, reason=value)
                self._unusable[name] = value
                self._items.pop(name, None)
                self._times.pop(name, None)

