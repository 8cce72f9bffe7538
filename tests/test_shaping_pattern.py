"""Step patterns and transport-fault windows on a Clock: fixed grid, no drift, 0 = stall,
on/off windows, one-shot, hold."""

from twisted.internet.task import Clock

from streamlab.shaping.model import FaultSpec, Step, fault_window, pattern_position
from streamlab.shaping.pattern import FaultRunner, PatternRunner

STEPS = (Step(8, 10), Step(0, 5), Step(2, 3, enabled=False), Step(4, 5))


def test_position_wraps_and_skips_disabled_steps():
    assert pattern_position(STEPS, 100, 100).index == 0
    assert pattern_position(STEPS, 100, 109.999).index == 0
    assert pattern_position(STEPS, 100, 110).index == 1
    p = pattern_position(STEPS, 100, 116)
    assert (p.index, p.rate_mbps, p.next_boundary) == (3, 4, 120)
    assert pattern_position(STEPS, 100, 120).index == 0  # wraps forever
    assert pattern_position(STEPS, 100, 100 + 20 * 1000 + 12).index == 1
    assert pattern_position((Step(1, 0), Step(2, 5, False)), 0, 3) is None


def test_runner_keeps_a_fixed_grid_even_when_timers_fire_late():
    clock = Clock()
    clock.advance(1000.0)
    seen = []
    runner = PatternRunner(clock, STEPS, lambda p: seen.append((round(clock.seconds(), 3), p.index,
                                                                p.rate_mbps)))
    runner.start()
    # Fire each timer 0.3 s late, for many cycles.
    for _ in range(300):
        clock.advance(0.3)
        nxt = min((c.getTime() for c in clock.getDelayedCalls()), default=None)
        clock.advance(max(0.0, nxt - clock.seconds()) + 0.3 if nxt else 1.0)
    starts = [pattern_position(STEPS, 1000.0, t) for t, _, _ in seen]
    # Every reported step is the one the grid says for that moment: no drift accumulated.
    assert all(s.index == idx for s, (_, idx, _) in zip(starts, seen, strict=True))
    assert seen[0] == (1000.0, 0, 8)
    assert seen[1][1] == 1 and seen[1][2] == 0  # a stalled step is reported with rate 0
    assert {i for _, i, _ in seen} == {0, 1, 3}
    last_t = seen[-1][0]
    assert abs((last_t - 1000.0) % 20 - {0: 0, 1: 10, 3: 15}[seen[-1][1]]) < 0.7
    runner.stop()
    assert clock.getDelayedCalls() == []


def test_runner_reports_each_step_once_on_time():
    clock = Clock()
    seen = []
    runner = PatternRunner(clock, (Step(1, 2), Step(0, 1)), lambda p: seen.append((clock.seconds(), p.index)))
    runner.start()
    for _ in range(24):
        clock.advance(0.25)  # exact binary steps: the grid times are hit exactly
    assert seen == [(0, 0), (2.0, 1), (3.0, 0), (5.0, 1), (6.0, 0)]


def test_fault_windows_on_off_one_shot_hold():
    on_off = FaultSpec("drop", 2, 10)
    assert fault_window(on_off, 0, 0).active and fault_window(on_off, 0, 0).next_edge == 2
    assert not fault_window(on_off, 0, 2).active and fault_window(on_off, 0, 2).next_edge == 10
    assert fault_window(on_off, 0, 11.5).active
    one_shot = FaultSpec("reject", 3, 0)
    assert fault_window(one_shot, 0, 1).active
    assert fault_window(one_shot, 0, 3).expired and not fault_window(one_shot, 0, 30).active
    hold = FaultSpec("drop", 0, 10)
    assert fault_window(hold, 0, 1e6).active and fault_window(hold, 0, 5).next_edge is None
    assert not fault_window(FaultSpec(), 0, 1).active
    packets = FaultSpec("drop", 5, 10, "packets")
    w = fault_window(packets, 0, 12)
    assert w.active and w.window_start == 10 and w.next_edge == 20


def test_fault_runner_edges_and_expiry():
    clock = Clock()
    events = []
    expired = []
    runner = FaultRunner(clock, FaultSpec("drop", 2, 5), lambda w, on: events.append((clock.seconds(),
                                                                                         w.active, on)))
    runner.start()
    for _ in range(48):
        clock.advance(0.25)
    times = [(round(t, 6), a, on) for t, a, on in events]
    assert times[:5] == [(0, True, True), (2.0, False, False), (5.0, True, True), (7.0, False, False),
                         (10.0, True, True)]
    assert runner.edges_on == 3
    runner.stop()

    clock = Clock()
    runner = FaultRunner(clock, FaultSpec("reject", 1, 0), lambda w, on: None, lambda: expired.append(
        clock.seconds()))
    runner.start()
    clock.advance(1.0)
    assert expired == [1.0] and not runner.running and clock.getDelayedCalls() == []
