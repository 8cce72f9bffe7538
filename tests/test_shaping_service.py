"""ShapingService wired to the real SessionRegistry (listening faked) on a Clock, and the
/api/nftables endpoints in memory (StubTreq): one model, two doors."""

from __future__ import annotations

import json

import pytest
from treq.testing import StubTreq
from twisted.internet.task import Clock

from streamlab import config as configmod
from streamlab.api.shaping import ShapingApi
from streamlab.events import EventBus
from streamlab.proxy.registry import SessionRegistry
from streamlab.shaping.service import ShapingService


class FakeListener:
    def __init__(self, port, factory):
        self.port, self.factory = port, factory
        self.stopped = False

    def stopListening(self):
        self.stopped = True


@pytest.fixture
def world(tmp_path):
    cfg = configmod.load(None, {"shaping-backend": "userspace", "session-ports": "31000-31009",
                                "media-dir": str(tmp_path / "m"), "state-dir": str(tmp_path / "s")})
    clock = Clock()
    clock.advance(1_700_000_000)
    bus = EventBus()
    listeners = {}

    def listen(reactor, port, factory, interface):
        listeners[port] = FakeListener(port, factory)
        return listeners[port]

    registry = SessionRegistry(cfg, clock, bus, listen=listen)
    svc = ShapingService(cfg, clock, clock=clock)
    svc.attach(registry, bus)
    svc.startService()
    yield svc, registry, clock, listeners
    svc.stopService()


def session_json(registry, sid):
    return registry.to_json(registry.get(sid))


def test_listener_is_wrapped_and_session_fields_drive_the_shaper(world):
    svc, registry, clock, listeners = world
    s, _ = registry.get_or_create("p1")
    assert type(listeners[s.port].factory).__name__ == "ShapingFactory"
    registry.patch(s.session_id, {"nftables_bandwidth_mbps": 6, "nftables_delay_ms": 40,
                                  "nftables_packet_loss": 2})
    sh = svc.userspace.shaper(s.port)
    assert (sh.rate_mbps, round(sh.delay, 3), round(sh.loss, 3)) == (6, 0.04, 0.02)


def test_pattern_steps_update_runtime_fields_without_revision_bump(world):
    svc, registry, clock, _ = world
    s, _ = registry.get_or_create("p2")
    notified = []
    registry.notify = lambda sid: notified.append((clock.seconds(), sid))
    registry.patch(s.session_id, {"nftables_pattern_enabled": True, "nftables_pattern_steps": [
        {"rate_mbps": 3, "duration_seconds": 2, "enabled": True},
        {"rate_mbps": 0, "duration_seconds": 1, "enabled": True}]})
    rev = session_json(registry, s.session_id)["control_revision"]
    j = session_json(registry, s.session_id)
    assert (j["nftables_pattern_step"], j["nftables_pattern_rate_runtime_mbps"]) == (1, 3)
    assert svc.userspace.shaper(s.port).rate_mbps == 3
    clock.advance(2.0)
    j = session_json(registry, s.session_id)
    assert (j["nftables_pattern_step"], j["nftables_pattern_rate_runtime_mbps"]) == (2, 0)
    assert svc.userspace.shaper(s.port).rate_mbps == 0.0  # stalled, not uncapped
    clock.advance(1.0)
    assert session_json(registry, s.session_id)["nftables_pattern_step"] == 1
    assert j["control_revision"] == rev == session_json(registry, s.session_id)["control_revision"]
    assert len(notified) == 2
    # A plain rate stops the pattern.
    registry.patch(s.session_id, {"nftables_bandwidth_mbps": 5})
    clock.advance(0)
    j = session_json(registry, s.session_id)
    assert j["nftables_pattern_enabled"] is False and j["nftables_pattern_step"] == 0
    assert svc.userspace.shaper(s.port).rate_mbps == 5


def test_transport_fault_windows_bump_counters_on_each_on_edge(world):
    svc, registry, clock, _ = world
    s, _ = registry.get_or_create("p3")
    registry.patch(s.session_id, {"transport_failure_type": "drop", "transport_consecutive_failures": 2,
                                  "transport_failure_frequency": 5})
    j = session_json(registry, s.session_id)
    assert j["transport_fault_active"] is True and j["transport_fault_started_at"].endswith("Z")
    assert svc.userspace.shaper(s.port).fault == "drop"
    clock.advance(2)
    assert session_json(registry, s.session_id)["transport_fault_active"] is False
    assert svc.userspace.shaper(s.port).fault == "none"
    clock.advance(3)
    clock.advance(5)
    j = session_json(registry, s.session_id)
    assert j["fault_count_transport_drop"] == 3 and j["transport_fault_active"] is True


def test_one_shot_disarms_itself(world):
    svc, registry, clock, _ = world
    s, _ = registry.get_or_create("p4")
    registry.patch(s.session_id, {"transport_failure_type": "reject", "transport_consecutive_failures": 3,
                                  "transport_failure_frequency": 0})
    rev = session_json(registry, s.session_id)["control_revision"]
    clock.advance(3)
    j = session_json(registry, s.session_id)
    assert j["transport_failure_type"] == "none" and j["transport_fault_active"] is False
    assert j["control_revision"] != rev
    assert svc.userspace.shaper(s.port).fault == "none"


def test_release_clears_the_port_and_reuse_starts_uncapped(world):
    svc, registry, clock, _ = world
    s, _ = registry.get_or_create("p5")
    port = s.port
    registry.patch(s.session_id, {"nftables_bandwidth_mbps": 2, "transport_failure_type": "drop"})
    registry.remove(s.session_id)
    assert port not in svc.ports and clock.getDelayedCalls() is not None
    clock.advance(31)  # past the released port's quarantine (session_port_quarantine)
    s2, _ = registry.get_or_create("p6")
    assert s2.port == port
    sh = svc.userspace.shaper(port)
    assert sh.rate_mbps is None and sh.fault == "none"
    assert session_json(registry, s2.session_id)["transport_fault_active"] is False


def test_group_members_are_shaped_together(world):
    svc, registry, clock, _ = world
    a, _ = registry.get_or_create("a_G7")
    b, _ = registry.get_or_create("b_G7")
    registry.patch(a.session_id, {"nftables_bandwidth_mbps": 3})
    assert svc.userspace.shaper(a.port).rate_mbps == 3 == svc.userspace.shaper(b.port).rate_mbps


def test_meter_reports_shaper_rates(world):
    svc, registry, clock, _ = world
    s, _ = registry.get_or_create("p7")
    sh = svc.userspace.shaper(s.port)
    for _ in range(60):
        sh.bytes_out += 12_500  # 1 Mbps in 100 ms ticks
        clock.advance(0.1)
    j = session_json(registry, s.session_id)
    assert j["mbps_shaper_rate"] == pytest.approx(1.0, rel=0.01)
    assert j["mbps_shaper_avg"] == pytest.approx(1.0, rel=0.02)


# ---------------------------------------------------------------------------- API


def call(stub, method, path, body=None):
    from twisted.internet import defer

    d = stub.request(method, "http://x" + path, data=json.dumps(body).encode() if body is not None else None,
                     headers={"content-type": "application/json"})
    out = []
    d.addCallback(lambda r: defer.gatherResults([defer.succeed(r.code), r.content()]))
    d.addCallback(out.append)
    stub.flush()
    assert out, f"no answer for {method} {path}"
    code, content = out[0]
    return code, json.loads(content)


@pytest.fixture
def api(world):
    svc, registry, clock, _ = world
    return StubTreq(ShapingApi(svc, registry).app.resource()), svc, registry, clock


def test_capabilities_tell_the_truth(api):
    stub, *_ = api
    code, body = call(stub, "GET", "/nftables/capabilities")
    assert code == 200
    assert body == {"status": "enabled", "platform": "linux", "backend": "userspace",
                    "features": {"rate": "userspace", "delay": "userspace", "loss": "userspace",
                                 "transport_drop": "userspace", "transport_reject": "userspace",
                                 "packet_counters": False}, "reason": ""}


def test_endpoints_write_session_fields(api):
    stub, svc, registry, clock = api
    s, _ = registry.get_or_create("api1")
    rev0 = session_json(registry, s.session_id)["control_revision"]
    code, body = call(stub, "POST", f"/nftables/bandwidth/{s.port}", {"rate": 7.5})
    assert (code, body) == (200, {"success": True, "port": s.port, "rate_mbps": 7.5})
    j = session_json(registry, s.session_id)
    assert j["nftables_bandwidth_mbps"] == 7.5 and j["control_revision"] != rev0
    assert call(stub, "POST", f"/nftables/loss/{s.port}", {"loss_pct": 3})[1]["loss_pct"] == 3
    code, body = call(stub, "POST", f"/nftables/shape/{s.port}", {"rate_mbps": 4, "delay_ms": 100,
                                                                  "loss_pct": 0})
    assert body == {"success": True, "port": s.port, "rate_mbps": 4, "delay_ms": 100, "loss_pct": 0}
    assert svc.userspace.shaper(s.port).rate_mbps == 4
    code, body = call(stub, "POST", f"/nftables/pattern/{s.port}",
                      {"steps": [{"rate_mbps": 2, "duration_seconds": 6, "enabled": True}]})
    assert code == 200 and body["pattern_enabled"] is True and len(body["steps"]) == 1
    code, st = call(stub, "GET", "/nftables/status")
    assert st["backend"] == "userspace" and st["ports"][str(s.port)]["pattern_enabled"] is True
    code, body = call(stub, "POST", f"/nftables/pattern/{s.port}", {"steps": []})
    assert body["pattern_enabled"] is False
    code, port = call(stub, "GET", f"/nftables/port/{s.port}")
    assert code == 200 and port["rate_mbps"] == 4 and port["applied"]["userspace"]["rate_mbps"] == 4


def test_endpoint_errors(api):
    stub, svc, registry, clock = api
    s, _ = registry.get_or_create("api2")
    before = session_json(registry, s.session_id)
    assert call(stub, "POST", "/nftables/bandwidth/1", {"rate_mbps": 1})[0] == 404
    assert call(stub, "GET", "/nftables/port/1")[0] == 404
    code, body = call(stub, "POST", f"/nftables/bandwidth/{s.port}", {"rate_mbps": 20000})
    assert code == 400 and "rate_mbps" in body["fields"]
    assert call(stub, "POST", f"/nftables/shape/{s.port}", {"delay_ms": -1})[0] == 400
    assert call(stub, "POST", f"/nftables/loss/{s.port}", {"percent": 101})[0] == 400
    code, body = call(stub, "POST", f"/nftables/pattern/{s.port}", {"template_mode": "pyramid"})
    assert code == 409 and "manifest_variants" in body["detail"]
    assert call(stub, "POST", f"/nftables/pattern/{s.port}", {"template_mode": "ramp_up",
                                                               "margin_pct": 7})[0] in (400, 409)
    after = session_json(registry, s.session_id)
    assert after["control_revision"] == before["control_revision"]  # nothing was applied
    assert after["nftables_bandwidth_mbps"] == before["nftables_bandwidth_mbps"]


def test_packet_units_need_the_kernel(world):
    svc, registry, clock, _ = world
    from streamlab.errors import Invalid

    with pytest.raises(Invalid) as exc:
        svc.validate_controls({"transport_failure_type": "drop", "transport_consecutive_units": "packets",
                               "transport_consecutive_failures": 5, "transport_failure_frequency": 10})
    assert "transport_consecutive_units" in exc.value.extra["fields"]
    svc.validate_controls({"transport_failure_type": "drop", "transport_consecutive_units": "seconds"})


def test_template_from_the_ladder(api):
    stub, svc, registry, clock = api
    s, _ = registry.get_or_create("api3")
    s.manifest_variants = [{"url": "v1.m3u8", "bandwidth": 1_000_000, "average_bandwidth": None},
                           {"url": "v2.m3u8", "bandwidth": 3_000_000, "average_bandwidth": 2_000_000}]
    code, body = call(stub, "POST", f"/nftables/pattern/{s.port}",
                      {"template_mode": "square_wave", "margin_pct": 50, "step_seconds": 6})
    assert code == 200 and [st["rate_mbps"] for st in body["steps"]] == [1.5, 3]
    j = session_json(registry, s.session_id)
    assert j["nftables_pattern_template_mode"] == "square_wave" and j["nftables_pattern_step"] == 1
    assert svc.userspace.shaper(s.port).rate_mbps == 1.5
    # The PATCH door builds the steps server-side too.
    registry.patch(s.session_id, {"nftables_pattern_template_mode": "ramp_down"})
    clock.advance(0)
    j = session_json(registry, s.session_id)
    assert [st["rate_mbps"] for st in j["nftables_pattern_steps"]] == [3, 1.5]


def test_default_rate_caps_a_new_session(tmp_path):
    cfg = configmod.load(None, {"shaping-backend": "userspace", "session-ports": "31000-31009",
                                "default-rate-mbps": "6", "media-dir": str(tmp_path / "m"),
                                "state-dir": str(tmp_path / "s")})
    clock = Clock()
    bus = EventBus()
    registry = SessionRegistry(cfg, clock, bus, listen=lambda r, p, f, i: FakeListener(p, f))
    svc = ShapingService(cfg, clock, clock=clock)
    svc.attach(registry, bus)
    s, _ = registry.get_or_create("capped")
    assert svc.userspace.shaper(s.port).rate_mbps == 6
    assert svc.debug_info()["ports"][str(s.port)]["rate_mbps"] == 6


class FailingKernel:
    """A kernel backend whose tc refuses every change (collaborator fake)."""

    interface = "lo"

    def __init__(self):
        from streamlab.shaping.model import KernelSupport

        self.applied = {}
        self.handles = {}
        self.support = KernelSupport(htb=True, netem=False, nft=True, nft_reject=True)

    def start(self):
        from twisted.internet import defer

        return defer.succeed(self.support)

    def stop(self):
        from twisted.internet import defer

        return defer.succeed(None)

    def reconcile(self, desired, ports=None):
        from twisted.internet import defer

        from streamlab.shaping.kernel import KernelError

        if all(s.empty for s in desired.values()):
            return defer.succeed([])
        return defer.fail(KernelError("add_class port 31000: Operation not permitted"))

    def counters(self):
        from twisted.internet import defer

        return defer.succeed({})

    def class_bytes(self):
        from twisted.internet import defer

        return defer.succeed({})

    def forget(self, port):
        pass


def test_backend_failure_is_503_and_keeps_the_previous_state(tmp_path):
    cfg = configmod.load(None, {"shaping-backend": "auto", "session-ports": "31000-31009",
                                "media-dir": str(tmp_path / "m"), "state-dir": str(tmp_path / "s")})
    clock = Clock()
    bus = EventBus()
    registry = SessionRegistry(cfg, clock, bus, listen=lambda r, p, f, i: FakeListener(p, f))
    svc = ShapingService(cfg, clock, clock=clock, kernel=FailingKernel())
    svc.attach(registry, bus)
    svc.startService()
    assert svc.caps.kernel("rate") and svc.caps.as_dict()["status"] == "enabled"
    s, _ = registry.get_or_create("k")
    before = session_json(registry, s.session_id)
    stub = StubTreq(ShapingApi(svc, registry).app.resource())
    code, body = call(stub, "POST", f"/nftables/bandwidth/{s.port}", {"rate_mbps": 3})
    assert code == 503 and "Operation not permitted" in body["detail"]
    after = session_json(registry, s.session_id)
    assert after["nftables_bandwidth_mbps"] == before["nftables_bandwidth_mbps"]
    assert after["control_revision"] == before["control_revision"]
    assert svc.userspace.shaper(s.port).rate_mbps is None  # nothing half-applied
    # A PATCH the kernel cannot apply is still enforced in userspace (honest fallback).
    registry.patch(s.session_id, {"nftables_bandwidth_mbps": 4})
    assert svc.userspace.shaper(s.port).rate_mbps == 4
    assert "not permitted" in svc.port_status(s.port)["error"]
    svc.stopService()


def test_patch_refuses_packet_units_on_a_userspace_host_and_applies_nothing(world):
    svc, registry, clock, _ = world
    from streamlab.errors import Invalid

    s, _ = registry.get_or_create("pk")
    before = session_json(registry, s.session_id)
    with pytest.raises(Invalid) as exc:
        registry.patch(s.session_id, {"transport_failure_type": "drop",
                                      "transport_consecutive_units": "packets",
                                      "transport_consecutive_failures": 5,
                                      "transport_failure_frequency": 10})
    assert "transport_consecutive_units" in exc.value.extra["fields"]
    after = session_json(registry, s.session_id)
    assert after["control_revision"] == before["control_revision"]
    assert after["transport_failure_type"] == "none"
