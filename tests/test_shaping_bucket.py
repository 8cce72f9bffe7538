"""Token bucket: exact long-run rate whatever the wake-up jitter, small burst."""

import random

from streamlab.shaping.bucket import TokenBucket, chunk_for


def simulate(rate, seconds, jitter=0.0, seed=1):
    rng = random.Random(seed)
    b = TokenBucket(rate, 0.0)
    chunk = chunk_for(rate)
    now, sent = 0.0, 0
    while now < seconds:
        if b.ready(now):
            b.take(chunk)
            sent += chunk
        now += b.wait(now) + rng.random() * jitter
    return sent / seconds


def test_rate_is_exact_without_jitter():
    for rate in (250_000, 1_000_000, 12_500_000):
        assert abs(simulate(rate, 10) / rate - 1) < 0.01


def test_late_timers_do_not_lose_rate():
    rate = 2_500_000
    got = simulate(rate, 10, jitter=0.004)
    assert 0.97 < got / rate < 1.01


def test_burst_is_small_after_idle():
    b = TokenBucket(1_000_000, 0.0)
    b.refill(100.0)
    assert b.tokens <= 2 * chunk_for(1_000_000)


def test_zero_rate_waits_forever():
    b = TokenBucket(0, 0.0)
    b.take(1)
    assert b.wait(5.0) == float("inf")
    b.set_rate(1000, 5.0)
    assert 0 < b.wait(5.0) < 0.01
