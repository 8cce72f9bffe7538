"""The one in-process event bus: SSE and WebSocket fan-out subscribe here.

Publishing is synchronous and cheap; each subscriber owns its own bounded buffer
(see streamlab.push) so a slow consumer never slows a publisher.  A subscriber that
raises is logged and kept.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from streamlab.interfaces import IEventBus

Handler = Callable[[Any], None]


@implementer(IEventBus)
class EventBus:
    """Topic-based publish/subscribe.  Topics are plain strings, e.g. ``"sessions"``."""

    log = Logger()

    def __init__(self) -> None:
        self._subs: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, topic: str, handler: Handler) -> Callable[[], None]:
        """Call *handler(data)* for every publish on *topic*; returns the unsubscribe."""
        self._subs[topic].append(handler)

        def unsubscribe() -> None:
            try:
                self._subs[topic].remove(handler)
            except ValueError:
                pass

        return unsubscribe

    def publish(self, topic: str, data: Any = None) -> None:
        """Deliver *data* to every subscriber of *topic* now."""
        for handler in list(self._subs.get(topic, ())):
            try:
                handler(data)
            except Exception:
                self.log.failure("event subscriber for {topic} failed", topic=topic)

    def subscribers(self, topic: str) -> int:
        """How many handlers listen on *topic* (for /debug and tests)."""
        return len(self._subs.get(topic, ()))
