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
    registry.shaping = svc.attach(registry)
    svc.startService()
    yield svc, registry, clock, listeners
    svc.stopService()


def session_json(registry, sid):
    return registry.to_json(registry.get(sid))


def test_listener_is_wrapped_and_session_fields_drive_the_shaper(world):
    svc, registry, clock, listeners = world
    s, _ = registry.get_or_create("p1")
    from streamlab.shaping.userspace import ShapingFactory

    assert isinstance(listeners[s.port].factory, ShapingFactory)
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
    return StubTreq(ShapingApi(svc).app.resource()), svc, registry, clock


def test_capabilities_tell_the_truth(api):
    stub, *_ = api
    code, body = call(stub, "GET", "/nftables/capabilities")
    assert code == 200
    assert body == {"status": "enabled", "platform": "linux", "backend": "userspace",
                    "features": {"rate": "userspace", "delay": "userspace", "loss": "userspace",
                                 "transport_drop": "userspace", "transport_reject": "userspace",
                                 "packet_counters": False}, "reason": "", "interfaces": {},
                    "per_session": False}


def test_endpoints_write_session_fields(api):
    stub, svc, registry, clock = api
    s, _ = registry.get_or_create("api1")
    rev0 = session_json(registry, s.session_id)["control_revision"]
    code, body = call(stub, "POST", f"/nftables/bandwidth/{s.port}", {"rate": 7.5})
    assert (code, body["success"], body["port"], body["rate_mbps"]) == (200, True, s.port, 7.5)
    assert body["carriers"]["rate"] == {"backend": "userspace", "interface": "",
                                        "reason": "backend = userspace"}
    j = session_json(registry, s.session_id)
    assert j["nftables_bandwidth_mbps"] == 7.5 and j["control_revision"] != rev0
    assert call(stub, "POST", f"/nftables/loss/{s.port}", {"loss_pct": 3})[1]["loss_pct"] == 3
    code, body = call(stub, "POST", f"/nftables/shape/{s.port}", {"rate_mbps": 4, "delay_ms": 100,
                                                                  "loss_pct": 0})
    assert {k: body[k] for k in ("success", "port", "rate_mbps", "delay_ms", "loss_pct")} == \
        {"success": True, "port": s.port, "rate_mbps": 4, "delay_ms": 100, "loss_pct": 0}
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
    registry.shaping = svc.attach(registry)
    s, _ = registry.get_or_create("capped")
    assert svc.userspace.shaper(s.port).rate_mbps == 6
    assert svc.debug_info()["ports"][str(s.port)]["rate_mbps"] == 6


class FakeKernel:
    """The kernel backend as a collaborator fake: routes and proofs are given, reconcile
    follows the real reconciler (``plan``/``after``) unless an action is made to fail, and
    nft counters are whatever the test says the kernel counted."""

    interface = ""

    def __init__(self, routes=None, proofs=None, nft=None, fail=()):
        from streamlab.shaping.route import NftProof

        self.routes = dict(routes or {})
        self.available = dict(proofs or {})
        self.proofs = {}
        self.nft_proof = nft if nft is not None else NftProof(drop=True, reject=True, counters=True)
        self.fail = dict(fail)  # action -> error text
        self.applied = {}
        self.handles = {}
        self.drop_base = {}
        self.reject_base = {}
        self.packets = {}  # port -> packets the kernel counted on its rule
        self.counter_reads = 0
        self.refused = {}

    def start(self):
        from twisted.internet import defer

        return defer.succeed(self.nft_proof)

    def stop(self):
        from twisted.internet import defer

        return defer.succeed(None)

    def route(self, dest):
        from twisted.internet import defer

        from streamlab.shaping.route import Route

        return defer.succeed(self.routes.get(dest, Route(dest, "none", reason="no route")))

    def prove(self, interface):
        from twisted.internet import defer

        from streamlab.shaping.route import TcProof

        self.proofs[interface] = self.available.get(interface, TcProof(interface, reason="no htb here"))
        return defer.succeed(self.proofs[interface])

    def refuse(self, interface, reason):
        from streamlab.shaping.route import TcProof

        self.refused[interface] = reason
        self.proofs[interface] = TcProof(interface, reason=f"refused after proof: {reason}")

    def reconcile(self, desired, ports=None):
        from twisted.internet import defer

        from streamlab.shaping.kernel import KernelError
        from streamlab.shaping.reconcile import after, plan

        applied = {p: st for p, st in self.applied.items() if ports is None or p in ports}
        want = {p: st for p, st in desired.items() if ports is None or p in ports}
        for op in plan(want, applied):
            if op.action in self.fail:
                return defer.fail(KernelError(f"{op.describe()}: {self.fail[op.action]}", op))
            if op.action == "add_rule":
                self.handles[op.port] = 100 + op.port
            elif op.action == "del_rule":
                self.handles.pop(op.port, None)
            self.applied = after(op, self.applied)
        return defer.succeed([])

    def counters(self):
        from twisted.internet import defer

        self.counter_reads += 1
        return defer.succeed({p: {"drop": 0, "reject": n} for p, n in self.packets.items()})

    def class_bytes(self):
        from twisted.internet import defer

        return defer.succeed({})

    def forget(self, port):
        pass


def kernel_world(tmp_path, kernel, backend="auto"):
    cfg = configmod.load(None, {"shaping-backend": backend, "session-ports": "31000-31009",
                                "media-dir": str(tmp_path / "m"), "state-dir": str(tmp_path / "s")})
    clock = Clock()
    clock.advance(1_700_000_000)
    bus = EventBus()
    listeners = {}

    def listen(reactor, port, factory, interface):
        listeners[port] = FakeListener(port, factory)
        return listeners[port]

    registry = SessionRegistry(cfg, clock, bus, listen=listen)
    svc = ShapingService(cfg, clock, clock=clock, kernel=kernel)
    registry.shaping = svc.attach(registry)
    svc.startService()
    return svc, registry, clock, listeners


def connect(listeners, port, host):
    """A connection from *host* reaches the session port (the listener builds its protocol)."""
    from twisted.internet.address import IPv4Address

    listeners[port].factory.buildProtocol(IPv4Address("TCP", host, 40000))


def veth_kernel(**kw):
    from streamlab.shaping.route import Route, TcProof

    return FakeKernel(routes={"127.0.0.1": Route("127.0.0.1", "loopback", "lo"),
                              "10.9.0.2": Route("10.9.0.2", "device", "veth0")},
                      proofs={"veth0": TcProof("veth0", htb=True, netem=False, reason="kernel lacks netem"),
                              "lo": TcProof("lo", htb=True)}, **kw)


def test_auto_shapes_a_loopback_player_in_userspace_and_says_so(tmp_path):
    kernel = veth_kernel()
    svc, registry, clock, listeners = kernel_world(tmp_path, kernel)
    s, _ = registry.get_or_create("loop")
    registry.patch(s.session_id, {"nftables_bandwidth_mbps": 2})
    connect(listeners, s.port, "127.0.0.1")
    j = session_json(registry, s.session_id)
    assert (j["shaping_backend"], j["shaping_interface"]) == ("userspace", "lo")
    assert "loopback" in j["shaping_carriers"]["rate"]["reason"]
    assert j["shaping_route"]["kind"] == "loopback" and j["shaping_cap_mbps"] == 2
    assert svc.userspace.shaper(s.port).rate_mbps == 2  # userspace really holds the cap
    assert kernel.applied == {} and "lo" not in kernel.proofs  # nothing went to the kernel
    svc.stopService()


def test_a_player_routed_via_a_veth_is_shaped_by_the_kernel_on_that_veth(tmp_path):
    kernel = veth_kernel()
    svc, registry, clock, listeners = kernel_world(tmp_path, kernel)
    s, _ = registry.get_or_create("far")
    registry.patch(s.session_id, {"nftables_bandwidth_mbps": 2, "nftables_delay_ms": 30})
    assert svc.userspace.shaper(s.port).rate_mbps == 2  # before any connection: userspace
    reason = session_json(registry, s.session_id)["shaping_carriers"]["rate"]["reason"]
    assert reason.startswith("no connection")
    connect(listeners, s.port, "10.9.0.2")
    j = session_json(registry, s.session_id)
    assert (j["shaping_backend"], j["shaping_interface"]) == ("kernel", "veth0")
    assert j["shaping_carriers"]["delay"] == {"backend": "userspace", "interface": "veth0",
                                              "reason": "kernel lacks netem"}
    assert kernel.applied[s.port].interface == "veth0" and kernel.applied[s.port].rate_bps == 2_000_000
    sh = svc.userspace.shaper(s.port)
    assert sh.rate_mbps is None and round(sh.delay, 3) == 0.03  # the kernel holds the rate
    caps = svc.caps.as_dict()
    assert caps["features"]["rate"] == "kernel" and caps["interfaces"]["veth0"]["rate"] == "kernel"
    svc.stopService()


def test_kernel_refusal_falls_back_to_userspace_for_rate_and_patterns(tmp_path):
    enoent = "(2, 'No such file or directory')"
    kernel = veth_kernel(fail={"add_class": enoent})
    svc, registry, clock, listeners = kernel_world(tmp_path, kernel)
    s, _ = registry.get_or_create("refused")
    connect(listeners, s.port, "10.9.0.2")
    stub = StubTreq(ShapingApi(svc).app.resource())
    code, body = call(stub, "POST", f"/nftables/pattern/{s.port}",
                      {"steps": [{"rate_mbps": 2.5, "duration_seconds": 6}, {"rate_mbps": 0.8,
                                                                             "duration_seconds": 6}]})
    assert code == 200, body  # Start pattern: taken by userspace, not a 503
    assert body["pattern_enabled"] is True and body["carriers"]["rate"]["backend"] == "userspace"
    reason = body["carriers"]["rate"]["reason"]
    assert "kernel refused" in reason and enoent in reason
    assert svc.userspace.shaper(s.port).rate_mbps == 2.5
    j = session_json(registry, s.session_id)
    assert j["shaping_backend"] == "userspace" and enoent in j["shaping_error"]
    # the refused interface is not claimed any more
    assert svc.caps.as_dict()["interfaces"]["veth0"]["rate"] == "userspace"
    clock.advance(6)
    assert svc.userspace.shaper(s.port).rate_mbps == 0.8
    code, body = call(stub, "POST", f"/nftables/pattern/{s.port}", {"steps": []})  # Stop pattern
    assert code == 200 and body["pattern_enabled"] is False
    code, body = call(stub, "POST", f"/nftables/bandwidth/{s.port}", {"rate_mbps": 3})
    assert code == 200 and body["shaping_backend"] == "userspace"
    assert svc.userspace.shaper(s.port).rate_mbps == 3
    svc.stopService()


def test_a_refused_nft_drop_is_a_userspace_freeze_not_a_claim(tmp_path):
    kernel = veth_kernel(fail={"add_rule": "Error: Could not process rule: No such file or directory"})
    svc, registry, clock, listeners = kernel_world(tmp_path, kernel)
    s, _ = registry.get_or_create("nodrop")
    connect(listeners, s.port, "10.9.0.2")
    registry.patch(s.session_id, {"transport_failure_type": "drop"})
    j = session_json(registry, s.session_id)
    assert j["transport_fault_active"] is True
    assert j["shaping_carriers"]["transport_drop"]["backend"] == "userspace"
    assert "kernel refused" in j["shaping_carriers"]["transport_drop"]["reason"]
    assert svc.userspace.shaper(s.port).fault == "drop"  # the port really freezes
    svc.stopService()


def test_kernel_counters_are_read_when_asked(tmp_path):
    kernel = veth_kernel()
    svc, registry, clock, listeners = kernel_world(tmp_path, kernel)
    s, _ = registry.get_or_create("count")
    connect(listeners, s.port, "10.9.0.2")
    registry.patch(s.session_id, {"transport_failure_type": "reject"})
    assert kernel.applied[s.port].rule_kind == "reject"
    assert svc.userspace.shaper(s.port).fault == "none"  # the kernel rejects
    kernel.packets[s.port] = 1  # a SYN hit the rule just now; no clock tick since
    stub = StubTreq(ShapingApi(svc).app.resource())
    code, body = call(stub, "GET", f"/nftables/port/{s.port}")
    assert code == 200 and body["transport_fault_reject_packets"] == 1
    kernel.packets[s.port] = 3
    d = registry.refresh(s)  # what GET /api/session/{id} awaits before answering
    assert d.called and session_json(registry, s.session_id)["transport_fault_reject_packets"] == 3
    svc.stopService()


def test_list_answers_read_kernel_counters_once_for_all_sessions(tmp_path):
    """Issue 12 item 6: GET /api/sessions and GET /api/nftables/status are current when
    read (no clock tick since the kernel counted), with one batched read per answer."""
    from streamlab.api.sessions import SessionsApi

    kernel = veth_kernel()
    svc, registry, clock, listeners = kernel_world(tmp_path, kernel)
    ports, sids = [], {}
    for name in ("list-a", "list-b", "list-c"):
        s, _ = registry.get_or_create(name)
        sids[s.session_id] = s.port
        connect(listeners, s.port, "10.9.0.2")
        registry.patch(s.session_id, {"transport_failure_type": "reject"})
        assert kernel.applied[s.port].rule_kind == "reject"
        ports.append(s.port)
    for i, port in enumerate(ports):
        kernel.packets[port] = i + 1  # SYNs hit the rules just now; no poll since
    reads = kernel.counter_reads
    code, body = call(StubTreq(SessionsApi(registry).app.resource()), "GET", "/sessions")
    assert code == 200 and kernel.counter_reads == reads + 1
    got = {sids[s["session_id"]]: s["transport_fault_reject_packets"] for s in body}
    assert got == {port: i + 1 for i, port in enumerate(ports)}
    for port in ports:
        kernel.packets[port] += 10
    code, body = call(StubTreq(ShapingApi(svc).app.resource()), "GET", "/nftables/status")
    assert code == 200 and kernel.counter_reads == reads + 2
    assert {int(p): e["transport_fault_reject_packets"] for p, e in body["ports"].items()} == \
        {port: i + 11 for i, port in enumerate(ports)}
    svc.stopService()


def test_the_session_schema_describes_the_shaping_fields(tmp_path):
    """The OpenAPI session object names every field shaping adds, with the types a real
    session answers."""
    from streamlab.api.schemas import session_schema, type_errors

    kernel = veth_kernel()
    svc, registry, clock, listeners = kernel_world(tmp_path, kernel)
    s, _ = registry.get_or_create("schema")
    connect(listeners, s.port, "10.9.0.2")
    registry.patch(s.session_id, {"nftables_bandwidth_mbps": 2})
    j = session_json(registry, s.session_id)
    schema = session_schema()
    names = ("shaping_backend", "shaping_interface", "shaping_carriers", "shaping_route",
             "shaping_cap_mbps", "shaping_goodput_mbps", "shaping_warning", "shaping_error")
    assert set(names) <= set(schema["properties"]) and set(names) <= set(j)
    assert {"client_rtt_tcp_ms", "client_rtt_shaper_ms"} <= set(schema["properties"])
    assert type_errors({k: j[k] for k in names}, schema) == {}
    assert j["shaping_backend"] in schema["properties"]["shaping_backend"]["enum"]
    svc.stopService()


def test_a_cap_that_does_not_hold_raises_a_warning_and_moves_to_userspace(tmp_path):
    kernel = veth_kernel()
    svc, registry, clock, listeners = kernel_world(tmp_path, kernel)
    s, _ = registry.get_or_create("leaky")
    connect(listeners, s.port, "10.9.0.2")
    registry.patch(s.session_id, {"nftables_bandwidth_mbps": 2})
    assert session_json(registry, s.session_id)["shaping_backend"] == "kernel"
    acked = [0]
    svc.meter.acked_bytes = lambda port: acked[0]
    for _ in range(50):  # 5 s at 20 Mbps: the kernel class is not on this player's path
        acked[0] += 250_000
        clock.advance(0.1)
    j = session_json(registry, s.session_id)
    assert "cap 2 Mbps not holding" in j["shaping_warning"] and j["shaping_goodput_mbps"] > 15
    assert svc.warnings_total == 1 and svc.warnings_active == 1
    from streamlab.metrics import Metrics

    metrics = Metrics(clock)
    metrics.shaping = svc
    text = metrics.render()
    assert "streamlab_shaping_cap_exceeded_total 1\n" in text and "streamlab_shaping_cap_exceeded 1\n" in text
    assert j["shaping_backend"] == "userspace" and "not effective" in j["shaping_carriers"]["rate"]["reason"]
    assert svc.userspace.shaper(s.port).rate_mbps == 2
    for _ in range(50):  # userspace holds it: 2 Mbps
        acked[0] += 25_000
        clock.advance(0.1)
    j = session_json(registry, s.session_id)
    assert j["shaping_warning"] == "" and j["shaping_goodput_mbps"] == pytest.approx(2, rel=0.05)
    assert svc.warnings_total == 1 and svc.warnings_active == 0
    svc.stopService()


@pytest.mark.parametrize("body, field", [
    ({"steps": [{"rate_mbps": 2, "duration_seconds": 6}], "template_mode": "pyramid"}, "steps"),
    ({"steps": None, "template_mode": "pyramid"}, "steps"),
    ({"steps": None}, "steps"),
    ({}, "steps"),
    ({"steps": [], "margin_pct": 10}, "margin_pct"),
])
def test_conflicting_pattern_input_is_400_and_changes_nothing(api, body, field):
    stub, svc, registry, clock = api
    s, _ = registry.get_or_create("pat400")
    s.manifest_variants = [{"url": "v1.m3u8", "bandwidth": 1_000_000},
                           {"url": "v2.m3u8", "bandwidth": 3_000_000}]
    before = session_json(registry, s.session_id)
    code, answer = call(stub, "POST", f"/nftables/pattern/{s.port}", body)
    assert code == 400 and field in answer["fields"], answer
    after = session_json(registry, s.session_id)
    assert after["control_revision"] == before["control_revision"]
    assert after["nftables_pattern_enabled"] is False


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
