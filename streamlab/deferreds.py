"""Small typed Deferred helpers shared by the services."""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


def when_fired(d: Deferred[Any], value: T) -> Deferred[T]:
    """A new Deferred that fires with *value* once *d* fires (with a result or a failure).

    *d*'s own chain is left exactly as it was: its result (or failure) passes on
    untouched, so several waiters can watch one Deferred without consuming it."""
    waiter: Deferred[T] = Deferred()

    def fire(result: object) -> object:
        waiter.callback(value)
        return result

    d.addBoth(fire)
    return waiter
