"""The session object's keys that are not controls (spec/sessions.md section 2), in wire order.

One definition, three users: :meth:`streamlab.proxy.session.Session.to_json` writes the
shaping runtime defaults from :data:`SHAPING_RUNTIME_DEFAULTS`, the shaping status view
(:mod:`streamlab.shaping.status`) builds its fields in the order of :data:`SHAPING_FIELDS`,
and :data:`READ_ONLY_FIELDS` (what a PATCH may not set: reason ``read-only``) is the union
of every group here.  Control fields and their defaults are :mod:`streamlab.proxy.fields`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

IDENTITY_FIELDS: tuple[str, ...] = (
    "session_id", "player_id", "play_id", "attempt_id", "group_id", "x_forwarded_port",
    "x_forwarded_port_external", "player_ip", "user_agent", "first_request_time", "last_request",
    "session_duration", "last_request_url", "master_manifest_url", "manifest_url", "manifest_variants",
    "control_revision",
)
"""Who and where: the head of the session object."""

COUNTER_FIELDS: tuple[str, ...] = (
    "segments_count", "manifest_requests_count", "master_manifest_requests_count", "all_requests_count",
    "fault_count_total",
)
"""Request counters (``fault_count_<type>`` keys follow them, one per fault type seen)."""

SHAPING_RUNTIME_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "transport_fault_active": False,
    "transport_fault_started_at": None,
    "transport_fault_drop_packets": 0,
    "transport_fault_reject_packets": 0,
    "nftables_pattern_step": 0,
    "nftables_pattern_rate_runtime_mbps": 0,
    "mbps_shaper_rate": 0.0,
    "mbps_shaper_avg": 0.0,
})
"""Runtime state of the session's shaping and transport fault, with the values a session
shows before shaping reports (they sit right after the controls)."""

SHAPING_STATUS_FIELDS: tuple[str, ...] = (
    "shaping_backend", "shaping_interface", "shaping_carriers", "shaping_route", "shaping_cap_mbps",
    "shaping_goodput_mbps", "shaping_warning", "shaping_error",
)
"""Which backend carries the session's shaping and how well the cap holds (docs/shaping.md);
present once shaping runs, at the end of the object."""

SHAPING_FIELDS: tuple[str, ...] = (*SHAPING_RUNTIME_DEFAULTS, *SHAPING_STATUS_FIELDS)
"""Every key the shaping subsystem reports on a session, in the order it reports them."""

SERVER_METRIC_FIELDS: tuple[str, ...] = ("mbps_transfer_rate", "mbps_transfer_complete", "bytes_out_total")

RTT_FIELDS: tuple[str, ...] = (
    "client_rtt_ms", "client_rtt_max_ms", "client_rtt_min_ms", "client_rtt_min_lifetime_ms",
    "client_rtt_var_ms", "client_rto_ms", "client_rtt_stale",
    "client_rtt_tcp_ms", "client_rtt_shaper_ms",  # RTT parts (docs/faults.md section 10)
    "client_path_ping_rtt_ms",
)

RENDITION_FIELDS: tuple[str, ...] = (
    "server_video_rendition", "server_video_rendition_mbps", "loop_count_server", "server_received_at_ms",
)

LIFETIME_FIELDS: tuple[str, ...] = (
    "session_keep", "session_state", "session_idle_s", "session_idle_timeout_s", "session_expires_at",
    "session_expires_in_s",
)
"""Idle expiry (docs/sessions.md); ``session_keep`` is set through its own endpoint."""

READ_ONLY_FIELDS: frozenset[str] = frozenset({
    *IDENTITY_FIELDS, *COUNTER_FIELDS, *SHAPING_FIELDS, *SERVER_METRIC_FIELDS, *RTT_FIELDS,
    *RENDITION_FIELDS, *LIFETIME_FIELDS,
})
"""Session-object keys that exist but cannot be set (reason ``read-only``)."""
