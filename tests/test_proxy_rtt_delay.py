"""The session's RTT figure shows the delay the userspace shaper adds (issue 12 item 8)."""

from __future__ import annotations

from streamlab.proxy.tcpinfo import RttWindow, TcpInfo, with_shaper_delay


def _window(rtt_us: int) -> RttWindow:
    w = RttWindow()
    w.add(TcpInfo(rtt_us=rtt_us, rttvar_us=100, rto_us=200_000, min_rtt_us=rtt_us, bytes_acked=0,
                  notsent_bytes=0))
    w.roll()
    return w


def test_rtt_figure_includes_the_shaper_delay_and_names_both_parts():
    fields = with_shaper_delay(_window(12_000).fields, 300.0)
    assert fields["client_rtt_ms"] == 312.0
    assert fields["client_rtt_max_ms"] == 312.0 and fields["client_rtt_min_ms"] == 312.0
    assert fields["client_rtt_tcp_ms"] == 12.0 and fields["client_rtt_shaper_ms"] == 300.0
    assert fields["client_rtt_min_lifetime_ms"] == 12.0  # TCP's own lifetime minimum


def test_without_shaper_delay_the_figure_is_tcps():
    fields = with_shaper_delay(_window(12_000).fields, 0.0)
    assert fields["client_rtt_ms"] == 12.0 and fields["client_rtt_shaper_ms"] == 0.0
