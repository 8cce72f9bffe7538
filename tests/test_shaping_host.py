"""The typed seam between the session registry and shaping (streamlab/shaping/host.py), and
the one definition of the session wire shape (streamlab/proxy/wire.py): the real
SessionRegistry (listening faked) and the real ShapingService on a Clock."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from streamlab import config as configmod
from streamlab.errors import Invalid
from streamlab.events import EventBus
from streamlab.proxy import fields, wire
from streamlab.proxy.registry import SessionRegistry
from streamlab.shaping.host import ControlsChanged, SessionHost, SessionShaping
from streamlab.shaping.service import ShapingService

STEPS = [{"rate_mbps": 3, "duration_seconds": 2, "enabled": True},
         {"rate_mbps": 1, "duration_seconds": 2, "enabled": True}]
LADDER = [{"url": "v1.m3u8", "bandwidth": 1_000_000, "average_bandwidth": None},
          {"url": "v2.m3u8", "bandwidth": 3_000_000, "average_bandwidth": 2_000_000}]


class _Listener:
    def __init__(self, port: int, factory: Any) -> None:
        self.port, self.factory = port, factory

    def stopListening(self) -> None:  # noqa: N802 - twisted API
        pass


@pytest.fixture
def world(tmp_path):
    cfg = configmod.load(None, {"shaping-backend": "userspace", "session-ports": "31200-31209",
                                "media-dir": str(tmp_path / "m"), "state-dir": str(tmp_path / "s")})
    clock = Clock()
    clock.advance(1_700_000_000)
    registry = SessionRegistry(cfg, clock, EventBus(), listen=lambda r, port, f, i: _Listener(port, f))
    svc = ShapingService(cfg, clock, clock=clock)
    registry.shaping = svc.attach(registry)
    svc.startService()
    yield svc, registry, clock
    svc.stopService()


def test_both_sides_meet_the_typed_seam(world):
    svc, registry, clock = world
    assert isinstance(registry, SessionHost) and isinstance(registry.shaping, SessionShaping)
    assert not hasattr(registry, "factory_wrappers") and not hasattr(registry, "release_hooks")


def test_a_plain_rate_stops_the_pattern_within_the_same_patch(world):
    """The follow-up change is stored before PATCH answers (it used to come a reactor turn
    later through callLater(0) and a second registry.patch, so the answer still said the
    pattern ran)."""
    svc, registry, clock = world
    s, _ = registry.get_or_create("p1")
    registry.patch(s.session_id, {"nftables_pattern_enabled": True, "nftables_pattern_steps": STEPS})
    rev = int(s.controls.revision)
    timers = len(clock.getDelayedCalls())
    answer = registry.patch(s.session_id, {"nftables_bandwidth_mbps": 5})
    assert answer["nftables_pattern_enabled"] is False and answer["nftables_pattern_step"] == 0
    assert answer["nftables_bandwidth_mbps"] == 5
    assert int(answer["control_revision"]) == rev + 2  # the rate, then the follow-up
    assert s.controls.changed_at("nftables_pattern_enabled") == rev + 2
    assert svc.userspace.shaper(s.port).rate_mbps == 5
    assert len(clock.getDelayedCalls()) < timers  # the pattern timer is gone, nothing scheduled


def test_a_template_through_patch_builds_validated_steps_in_the_answer(world):
    svc, registry, clock = world
    s, _ = registry.get_or_create("p2")
    s.manifest_variants = list(LADDER)
    answer = registry.patch(s.session_id, {"nftables_pattern_template_mode": "ramp_down",
                                           "nftables_pattern_margin_pct": 50,
                                           "nftables_pattern_step_seconds": 6})
    assert answer["nftables_pattern_steps"] == [{"rate_mbps": 3, "duration_seconds": 6, "enabled": True},
                                                {"rate_mbps": 1.5, "duration_seconds": 6, "enabled": True}]
    assert isinstance(answer["nftables_pattern_steps"][0]["rate_mbps"], int)  # 3, not 3.0: as PATCH stores it
    assert answer["nftables_pattern_enabled"] is True and answer["nftables_pattern_step"] == 1
    assert svc.userspace.shaper(s.port).rate_mbps == 3


def test_group_members_stop_their_patterns_together(world):
    svc, registry, clock = world
    a, _ = registry.get_or_create("a_G3")
    b, _ = registry.get_or_create("b_G3")
    registry.patch(a.session_id, {"nftables_pattern_enabled": True, "nftables_pattern_steps": STEPS})
    assert svc.ports[b.port].pattern is not None
    registry.patch(b.session_id, {"nftables_bandwidth_mbps": 7})
    for member in (a, b):
        j = registry.to_json(member)
        assert (j["nftables_pattern_enabled"], j["nftables_bandwidth_mbps"]) == (False, 7)
        assert svc.userspace.shaper(member.port).rate_mbps == 7
        assert svc.ports[member.port].pattern is None


def test_each_change_reaches_shaping_once_per_member_typed(world):
    svc, registry, clock = world
    seen: list[ControlsChanged] = []
    bridge = registry.shaping
    assert bridge is not None
    real = bridge.controls_changed

    def spy(change: ControlsChanged) -> Any:
        seen.append(change)
        return real(change)

    bridge.controls_changed = spy  # type: ignore[method-assign]
    a, _ = registry.get_or_create("a_G4")
    b, _ = registry.get_or_create("b_G4")
    seen.clear()
    registry.patch(a.session_id, {"nftables_delay_ms": 40})
    assert [(c.session_id, c.port, c.changed) for c in seen] == \
        [(a.session_id, a.port, ("nftables_delay_ms",)), (b.session_id, b.port, ("nftables_delay_ms",))]
    assert seen[0].controls["nftables_delay_ms"] == 40


def test_removal_releases_the_port_once(world, monkeypatch):
    svc, registry, clock = world
    s, _ = registry.get_or_create("p5")
    registry.patch(s.session_id, {"nftables_bandwidth_mbps": 2, "transport_failure_type": "drop"})
    released = []
    real = svc.release
    monkeypatch.setattr(svc, "release", lambda port: released.append(port) or real(port))
    registry.remove(s.session_id)
    clock.advance(1)
    assert released == [s.port] and s.port not in svc.ports


def test_a_refusal_of_the_host_stores_nothing(world):
    svc, registry, clock = world
    s, _ = registry.get_or_create("p6")
    rev = s.controls.revision
    with pytest.raises(Invalid) as exc:
        registry.patch(s.session_id, {"transport_failure_type": "drop", "transport_failure_mode":
                                      "failures_per_packets", "transport_consecutive_failures": 5,
                                      "transport_failure_frequency": 10})
    assert "transport_consecutive_units" in exc.value.extra["fields"]
    assert s.controls.revision == rev and s.controls.values["transport_failure_type"] == "none"


def test_a_shaping_error_does_not_fail_the_session_change(world, monkeypatch):
    svc, registry, clock = world
    s, _ = registry.get_or_create("p7")

    def broken(*a: Any, **k: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(svc, "configure", broken)
    answer = registry.patch(s.session_id, {"nftables_delay_ms": 10})
    assert answer["nftables_delay_ms"] == 10


# ---------------------------------------------------------------------------- wire shape


def test_every_key_of_the_session_object_is_a_control_or_read_only(world):
    svc, registry, clock = world
    s, _ = registry.get_or_create("p8")
    body = registry.to_json(s)
    for key in body:
        assert key in fields.CONTROL_DEFAULTS or key in wire.READ_ONLY_FIELDS \
            or key.startswith(("fault_count_", "player_metrics_")), key
    with pytest.raises(Invalid) as exc:  # was "unknown field" for the shaping_* keys
        registry.patch(s.session_id, {"shaping_backend": "kernel", "mbps_shaper_rate": 3})
    assert exc.value.extra["fields"] == {"shaping_backend": "read-only", "mbps_shaper_rate": "read-only"}


def test_shaping_reports_exactly_the_wire_keys_in_wire_order(world):
    svc, registry, clock = world
    s, _ = registry.get_or_create("p9")
    assert tuple(svc.session_fields(s.port)) == wire.SHAPING_FIELDS
    body = registry.to_json(s)
    keys = [k for k in body if k in wire.SHAPING_FIELDS]
    assert keys == list(wire.SHAPING_FIELDS)


def test_an_unshaped_session_shows_the_shaping_defaults(tmp_path):
    cfg = configmod.load(None, {"session-ports": "31210-31211", "media-dir": str(tmp_path / "m"),
                                "state-dir": str(tmp_path / "s")})
    registry = SessionRegistry(cfg, Clock(), EventBus(), listen=lambda r, port, f, i: _Listener(port, f))
    s, _ = registry.get_or_create("plain")
    body = registry.to_json(s)
    assert {k: body[k] for k in wire.SHAPING_RUNTIME_DEFAULTS} == dict(wire.SHAPING_RUNTIME_DEFAULTS)
    assert not set(wire.SHAPING_STATUS_FIELDS) & set(body)
