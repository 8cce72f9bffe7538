"""The bfifo leaf under each htb class: ~100 ms of the rate, never smaller than what one
packet (a GSO lump) can be — a bfifo drops every packet larger than its limit."""

from streamlab.shaping.kernel import LEAF_SECONDS, leaf_limit


def test_leaf_holds_about_150_ms_of_the_rate():
    assert leaf_limit(8e6, 1500, 1500) == int(8e6 / 8 * LEAF_SECONDS) == 100_000
    assert leaf_limit(100e6, 1500, 65536) == 1_250_000


def test_slow_rates_keep_a_few_frames():
    # 1 Mbps: 100 ms is 12500 B, above four 1564-byte frames; 0.5 Mbps is below them
    assert leaf_limit(1e6, 1500, 1500) == 12500
    assert leaf_limit(0.5e6, 1500, 1500) == 4 * 1564
    assert leaf_limit(0.1e6, 1500, 1500) == 4 * 1564


def test_never_below_one_gso_lump():
    # a 64 KiB TSO lump of 45 segments counts 45 sets of headers in the qdisc: it must fit
    # (a limit of 64 KiB + a frame starved a 1 Mbps class to 1.7 % of its cap)
    # room for three of them: with fewer, TCP's next lump is refused while the class sends
    # and the class idles until TCP retries (one lump: 87.6 %, two: 92 % of the cap)
    assert leaf_limit(0.5e6, 1500, 65536) == 3 * (65536 + 45 * 128) + 2 * 1564
    assert leaf_limit(1e6, 16384, 16384) == 4 * 16448
