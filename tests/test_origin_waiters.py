"""WaitQueue: one timer for many held callbacks, exact wake-up times, cancellation."""

from twisted.internet.task import Clock

from streamlab.live.waiters import WaitQueue


def test_wakes_exactly_at_time_and_shares_one_timer():
    clock = Clock()
    q = WaitQueue(clock)
    fired = []
    for i in range(200):
        q.add(10.0, lambda i=i: fired.append((clock.seconds(), i)))
    q.add(12.5, lambda: fired.append((clock.seconds(), "late")))
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(9.999)
    assert fired == []
    clock.advance(0.001)
    assert len(fired) == 200 and all(t == 10.0 for t, _ in fired)
    assert [i for _, i in fired] == list(range(200))  # added order
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(2.5)
    assert fired[-1] == (12.5, "late")
    assert clock.getDelayedCalls() == [] and len(q) == 0


def test_earlier_entry_moves_the_timer():
    clock = Clock()
    q = WaitQueue(clock)
    fired = []
    q.add(5, lambda: fired.append("b"))
    q.add(2, lambda: fired.append("a"))
    assert len(clock.getDelayedCalls()) == 1
    assert clock.getDelayedCalls()[0].getTime() == 2
    clock.advance(2)
    assert fired == ["a"]
    clock.advance(3)
    assert fired == ["a", "b"]


def test_past_time_wakes_on_next_turn_not_synchronously():
    clock = Clock()
    clock.advance(100)
    q = WaitQueue(clock)
    fired = []
    q.add(50, lambda: fired.append(1))
    assert fired == []
    clock.advance(0)
    assert fired == [1]


def test_cancel_removes_entry_and_timer():
    clock = Clock()
    q = WaitQueue(clock)
    fired = []
    w = q.add(3, lambda: fired.append(1))
    w.cancel()
    w.cancel()
    assert len(q) == 0
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert fired == []


def test_cancel_head_moves_timer_to_next_live_entry():
    clock = Clock()
    q = WaitQueue(clock)
    fired = []
    w = q.add(1, lambda: fired.append("x"))
    q.add(4, lambda: fired.append("y"))
    w.cancel()
    assert [c.getTime() for c in clock.getDelayedCalls()] == [4]
    clock.advance(4)
    assert fired == ["y"]


def test_many_cancellations_compact_the_heap():
    clock = Clock()
    q = WaitQueue(clock)
    ws = [q.add(100 + i, lambda: None) for i in range(500)]
    for w in ws[1:]:
        w.cancel()
    assert len(q) == 1
    assert len(q._heap) < 100  # compacted, not 500 dead entries


def test_failing_callback_does_not_strand_others():
    clock = Clock()
    q = WaitQueue(clock)
    fired = []

    def boom():
        raise RuntimeError("boom")

    q.add(1, boom)
    q.add(1, lambda: fired.append(1))
    clock.advance(1)
    assert fired == [1]
    assert len(q) == 0


def test_cancel_all():
    clock = Clock()
    q = WaitQueue(clock)
    q.add(1, lambda: None)
    q.add(2, lambda: None)
    q.cancel_all()
    assert len(q) == 0 and clock.getDelayedCalls() == []


class DriftingClock(Clock):
    """A clock that moves a little on every read, like a real one."""

    def seconds(self):
        self.rightNow += 1e-6
        return self.rightNow


def test_one_instant_per_wake_batch():
    clock = DriftingClock()
    q = WaitQueue(clock)
    seen = []
    for _ in range(3):
        q.add(1.0, lambda: seen.append(q.now()))
    clock.advance(1.0)
    assert len(seen) == 3 and len(set(seen)) == 1 and seen[0] >= 1.0
    assert q.now() != seen[0]  # outside a batch: the live clock
