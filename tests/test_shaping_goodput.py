"""Goodput next to the cap, and the warning when a cap does not hold (pure, clock passed in)."""

from streamlab.shaping.goodput import CapWatch


def feed(w, t, total, mbps, seconds, cap, step=0.1):
    per = int(mbps * 1e6 / 8 * step)
    edges = []
    for _ in range(int(round(seconds / step))):
        t += step
        total += per
        edge = w.sample(t, total, cap, "kernel/eth0")
        if edge:
            edges.append((round(t, 1), edge))
    return t, total, edges


def test_a_cap_that_holds_never_warns_and_goodput_is_measured():
    w = CapWatch()
    t, total, edges = feed(w, 0.0, 0, 1.98, 10, 2.0)
    assert edges == [] and w.warning == "" and abs(w.goodput_mbps - 1.98) < 0.02


def test_sustained_excess_warns_once_after_a_full_window_and_clears():
    w = CapWatch()
    t, total, edges = feed(w, 0.0, 0, 500, 5, 1.0)
    assert [e for _, e in edges] == ["raised"] and edges[0][0] >= 3.0 + 1.0  # grace + window
    assert "cap 1 Mbps not holding" in w.warning and "kernel/eth0" in w.warning and w.raised_total == 1
    t, total, edges = feed(w, t, total, 0.9, 4, 1.0)
    assert [e for _, e in edges] == ["cleared"] and w.warning == ""


def test_the_drain_after_a_cap_change_does_not_warn():
    w = CapWatch()
    t, total, _ = feed(w, 0.0, 0, 900, 2, None)  # uncapped
    t, total, edges = feed(w, t, total, 4000, 0.3, 2.0)  # 4 MB of socket buffer drains at once
    t, total, edges2 = feed(w, t, total, 2.0, 6, 2.0)
    assert edges == edges2 == [] and abs(w.goodput_mbps - 2.0) < 0.05


def test_a_short_burst_or_a_cap_change_does_not_warn():
    w = CapWatch()
    t, total, edges = feed(w, 0.0, 0, 50, 0.1, 2.0)  # one 600 KB burst...
    t, total, edges2 = feed(w, t, total, 1.5, 1.0, 2.0)
    assert edges == edges2 == []
    # a pattern step changes the cap: the window restarts, nothing is compared across caps
    t, total, edges = feed(w, t, total, 2.0, 2.9, 8.0)
    t, total, edges2 = feed(w, t, total, 2.0, 2.0, 2.0)
    assert edges == edges2 == []


def test_a_stalled_port_that_still_sends_warns_and_uncapped_never_does():
    w = CapWatch()
    _, _, edges = feed(w, 0.0, 0, 1.0, 5, 0.0)
    assert [e for _, e in edges] == ["raised"]
    u = CapWatch()
    _, _, edges = feed(u, 0.0, 0, 900, 5, None)
    assert edges == [] and u.goodput_mbps > 800
