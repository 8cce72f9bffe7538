"""Holding requests until a point in time, with ONE timer for all of them.

:class:`WaitQueue` keeps a heap of ``(wake_at, seq, Waiter)`` and a single pending
``IDelayedCall`` for the earliest entry.  Two hundred requests held for the next LL part
cost one heap entry each and one timer in total; when the timer fires every entry whose
time has come is woken in the same reactor turn (in the order they were added), then the
timer is re-armed for the next entry.  Nothing polls.

A cancelled waiter (e.g. the client disconnected) is marked dead and dropped from the
heap lazily; when dead entries outnumber live ones the heap is compacted, and when the
head is dead the timer is moved to the next live entry, so a vanished client costs
nothing afterwards.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()


class Waiter:
    """One held callback; :meth:`cancel` forgets it (idempotent)."""

    __slots__ = ("wake_at", "_callback", "_queue", "active")

    def __init__(self, queue: WaitQueue, wake_at: float, callback: Callable[[], None]) -> None:
        self.wake_at = wake_at
        self._callback: Callable[[], None] | None = callback
        self._queue: WaitQueue | None = queue
        self.active = True

    def cancel(self) -> None:
        """Do not call the callback; the entry is removed lazily."""
        if not self.active:
            return
        self.active = False
        self._callback = None
        queue, self._queue = self._queue, None
        if queue is not None:
            queue._cancelled()

    def _fire(self) -> None:
        callback = self._callback
        self.active = False
        self._callback = None
        self._queue = None
        if callback is not None:
            callback()


class WaitQueue:
    """Wake callbacks at given reactor times using a single ``callLater``."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Waiter]] = []
        self._seq = itertools.count()
        self._call: IDelayedCall | None = None
        self._call_at: float | None = None
        self._dead = 0
        self._batch_now: float | None = None

    def now(self) -> float:
        """The clock; inside a wake-up, the one instant sampled for the whole batch, so every
        callback woken together sees the same time (and can share one render)."""
        return self._batch_now if self._batch_now is not None else self._clock.seconds()

    def __len__(self) -> int:
        """Number of live (not cancelled, not yet woken) waiters."""
        return len(self._heap) - self._dead

    @property
    def timer_pending(self) -> bool:
        """Whether a reactor timer is armed (for tests and the bench)."""
        return self._call is not None and self._call.active()

    def add(self, wake_at: float, callback: Callable[[], None]) -> Waiter:
        """Call *callback* once the clock reaches *wake_at* (reactor seconds).  A time in
        the past wakes on the next timer turn, never synchronously."""
        waiter = Waiter(self, wake_at, callback)
        heapq.heappush(self._heap, (wake_at, next(self._seq), waiter))
        self._arm()
        return waiter

    def cancel_all(self) -> None:
        """Forget every waiter and the timer (used on shutdown)."""
        for _, _, w in self._heap:
            w.active = False
            w._callback = None
            w._queue = None
        self._heap.clear()
        self._dead = 0
        self._disarm()

    # -- internals ---------------------------------------------------------

    def _cancelled(self) -> None:
        self._dead += 1
        live = len(self._heap) - self._dead
        if self._dead > 32 and self._dead > live:
            self._heap = [e for e in self._heap if e[2].active]
            heapq.heapify(self._heap)
            self._dead = 0
        self._drop_dead_head()
        self._arm()

    def _drop_dead_head(self) -> None:
        while self._heap and not self._heap[0][2].active:
            heapq.heappop(self._heap)
            self._dead -= 1

    def _disarm(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._call_at = None

    def _arm(self) -> None:
        self._drop_dead_head()
        if not self._heap:
            self._disarm()
            return
        head = self._heap[0][0]
        if self._call is not None and self._call.active() and self._call_at == head:
            return
        delay = max(0.0, head - self._clock.seconds())
        if self._call is not None and self._call.active():
            self._call.reset(delay)
        else:
            self._call = self._clock.callLater(delay, self._wake)
        self._call_at = head

    def _wake(self) -> None:
        self._call = None
        self._call_at = None
        now = self._clock.seconds()
        due: list[Waiter] = []
        while self._heap and self._heap[0][0] <= now:
            _, _, waiter = heapq.heappop(self._heap)
            if waiter.active:
                due.append(waiter)
            else:
                self._dead -= 1
        self._batch_now = now
        try:
            for waiter in due:
                try:
                    waiter._fire()
                except Exception:  # one bad callback must not strand the others
                    log.failure("waiter callback failed")
        finally:
            self._batch_now = None
        self._arm()
