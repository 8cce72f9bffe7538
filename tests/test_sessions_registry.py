"""SessionRegistry with a MemoryReactorClock: port allocation, reuse, expiry, release
hooks, PATCH semantics, groups, bus events, per-IP limits, player metrics."""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock

from streamlab import config as configmod
from streamlab.errors import Conflict, Invalid, NotFound, TooMany, Unavailable
from streamlab.events import EventBus
from streamlab.proxy.registry import SessionRegistry, is_public_ip

LO = 41000


def _registry(ports: int = 3, **over: str) -> tuple[SessionRegistry, MemoryReactorClock, list]:
    overrides = {"session-ports": f"{LO}-{LO + ports - 1}", "session-idle-timeout": "5"}
    overrides.update(over)
    cfg = configmod.load(None, overrides)
    reactor = MemoryReactorClock()
    reactor.advance(1_700_000_000)
    bus = EventBus()
    events: list = []
    bus.subscribe("session.changed", lambda d: events.append(("changed", d)))
    bus.subscribe("session.removed", lambda d: events.append(("removed", d)))
    return SessionRegistry(cfg, reactor, bus), reactor, events


def test_lowest_free_port_first_and_ids_count_up():
    reg, reactor, _ = _registry()
    sessions = [reg.get_or_create(f"p{i}")[0] for i in range(3)]
    assert [s.port for s in sessions] == [LO, LO + 1, LO + 2]
    assert [s.session_id for s in sessions] == ["1", "2", "3"]
    assert [p[0] for p in reactor.tcpServers] == [LO, LO + 1, LO + 2]
    again, created = reg.get_or_create("p1")
    assert again is sessions[1] and created is False
    with pytest.raises(Unavailable):
        reg.get_or_create("p9")


class _Shaping:
    """A stand-in for the shaping subsystem (streamlab.shaping.host.SessionShaping)."""

    def __init__(self, release: Deferred | None = None, wrap=None, fields=None) -> None:
        self.released: list[int] = []
        self._release = release
        self._wrap = wrap
        self._fields = fields or {}

    def wrap_listener(self, port, factory):
        return self._wrap(port, factory) if self._wrap is not None else factory

    def check_controls(self, controls, port):
        pass

    def controls_changed(self, change):
        return {}

    def session_removed(self, port):
        self.released.append(port)
        return self._release if self._release is not None else succeed(None)

    def runtime_fields(self, port):
        return dict(self._fields)

    def refresh(self, port):
        return succeed(None)

    def refresh_all(self):
        return succeed(None)


def test_shaping_release_is_awaited_before_port_reuse_and_reuse_starts_clean():
    reg, reactor, events = _registry()
    gate: Deferred = Deferred()
    shaping = reg.shaping = _Shaping(release=gate)
    released = shaping.released
    for i in range(3):
        reg.get_or_create(f"p{i}")
    s2 = reg.get("2")
    reg.patch("2", {"segment_failure_type": "404"})
    s2.count_fault("fault_count_404")
    s2.store_metrics({"player_metrics_buffer_s": 3}, reactor.seconds())
    s2.on_bytes(1000)
    reg.remove("2")
    assert released == [LO + 1]
    assert ("removed", {"session_id": "2", "port": LO + 1}) in events
    with pytest.raises(NotFound):
        reg.get("2")
    with pytest.raises(Unavailable):  # the port is still being released
        reg.get_or_create("newcomer")
    gate.callback(None)
    fresh, created = reg.get_or_create("newcomer")
    # the only free port (still in its quarantine, but no other is free) and a new id:
    # "2" means the removed session forever
    assert created and fresh.port == LO + 1 and fresh.session_id == "4"
    body = reg.to_json(fresh)
    assert body["player_id"] == "newcomer"
    assert body["segment_failure_type"] == "none"
    assert body["fault_count_total"] == 0 and "fault_count_404" not in body
    assert body["bytes_out_total"] == 0
    assert "player_metrics_buffer_s" not in body


class _Site:
    """Records when the registry resets a session's connections."""

    def __init__(self) -> None:
        self.aborted: list[object] = []

    def abort_all(self, channels) -> None:
        self.aborted.append(channels)


def test_connections_are_reset_only_after_the_kernel_state_is_gone():
    """An RST queued in the port's htb class (or dropped by its DROP rule) would die with
    the class: the registry resets the connections once the shaping release fired."""
    reg, reactor, _ = _registry()
    gate: Deferred = Deferred()
    reg.shaping = _Shaping(release=gate)
    s = reg.get_or_create("p")[0]
    s.site = site = _Site()
    reg.remove(s.session_id)
    assert site.aborted == []
    gate.callback(None)
    assert site.aborted == [s.channels]
    reactor.advance(60)
    assert len(site.aborted) == 1


def test_a_stuck_kernel_release_does_not_keep_connections_open():
    reg, reactor, _ = _registry()
    reg.shaping = _Shaping(release=Deferred())  # never fires
    s = reg.get_or_create("p")[0]
    s.site = site = _Site()
    reg.remove(s.session_id)
    reactor.advance(1.9)
    assert site.aborted == []
    reactor.advance(0.2)
    assert site.aborted == [s.channels]


class _Port:
    """A listening port whose stopListening() hands out a Deferred the test fires."""

    def __init__(self, stopped: list[Deferred]) -> None:
        self.stopped = stopped

    def stopListening(self) -> Deferred:  # noqa: N802 - IListeningPort
        d: Deferred = Deferred()
        self.stopped.append(d)
        return d


def test_remove_closes_listener_and_waits_for_it():
    cfg = configmod.load(None, {"session-ports": f"{LO}-{LO}", "session-idle-timeout": "5"})
    reactor = MemoryReactorClock()
    stopped: list[Deferred] = []
    listened = []

    def listen(r, port, factory, interface):
        listened.append((port, interface))
        return _Port(stopped)

    reg = SessionRegistry(cfg, reactor, EventBus(), listen=listen)
    s, _ = reg.get_or_create("p")
    assert listened == [(LO, "")]
    done = []
    reg.remove(s.session_id).addCallback(done.append)
    assert len(stopped) == 1 and not done
    with pytest.raises(Unavailable):
        reg.get_or_create("q")
    stopped[0].callback(None)
    assert done
    assert reg.get_or_create("q")[0].port == LO


def test_stop_accepting_closes_every_port_once_and_refuses_new_sessions():
    """Graceful stop: every session port stops accepting (sessions stay, so open
    connections finish), no new session is created, and the final remove() does not close
    a port twice but waits for the same close."""
    cfg = configmod.load(None, {"session-ports": f"{LO}-{LO + 1}", "session-idle-timeout": "5"})
    stopped: list[Deferred] = []
    reg = SessionRegistry(cfg, MemoryReactorClock(), EventBus(), listen=lambda *a: _Port(stopped))
    a, _ = reg.get_or_create("a")
    b, _ = reg.get_or_create("b")
    done = []
    reg.stop_accepting().addCallback(done.append)
    assert len(stopped) == 2 and not done
    assert reg.get("1") is a and reg.get("2") is b  # still there for open connections
    with pytest.raises(Unavailable, match="shutting down"):
        reg.get_or_create("c")
    for d in stopped:
        d.callback(None)
    assert done == [None]
    removed = []
    reg.remove("1").addCallback(removed.append)
    assert len(stopped) == 2 and removed  # no second stopListening


def test_idle_expiry_runs_on_a_timer_and_activity_extends_it():
    reg, reactor, events = _registry()
    s, _ = reg.get_or_create("p")
    reactor.advance(3)
    s.last_activity = reactor.seconds()  # a request at t=3
    reactor.advance(2.5)
    assert reg.all() == [s]
    reactor.advance(3)
    assert reg.all() == []
    assert events[-1] == ("removed", {"session_id": "1", "port": LO})


def test_in_flight_request_postpones_expiry():
    reg, reactor, _ = _registry()
    s, _ = reg.get_or_create("p")
    s.in_flight = 1
    reactor.advance(10)
    assert reg.all() == [s]
    s.in_flight = 0
    reactor.advance(6)
    assert reg.all() == []


def test_shaping_wraps_the_listener_with_the_internal_port():
    reg, reactor, _ = _registry(**{"advertised-port-offset": "1000"})
    seen = []

    class Wrapped:
        def __init__(self, inner, tag):
            self.inner, self.tag = inner, tag

    def wrap(port, factory):
        seen.append(("shaping", port))
        return Wrapped(factory, "shaping")

    reg.shaping = _Shaping(wrap=wrap)
    s, _ = reg.get_or_create("p")
    assert seen == [("shaping", LO)]
    assert reactor.tcpServers[-1][1].tag == "shaping"
    assert s.external_port == LO + 1000
    assert reg.get_by_port(LO + 1000) is s and reg.get_by_port(LO) is s


def test_create_with_set_applies_before_first_request_and_publishes():
    reg, reactor, events = _registry()
    s, created = reg.get_or_create("p", set_={"segment_failure_type": 404, "nftables_bandwidth_mbps": 5})
    assert created
    assert s.controls.values["segment_failure_type"] == "404"
    changed = [d for kind, d in events if kind == "changed"]
    assert changed and set(changed[-1]["changed"]) >= {"segment_failure_type", "nftables_bandwidth_mbps"}
    assert changed[-1]["controls"]["nftables_bandwidth_mbps"] == 5
    # a bad set creates nothing
    with pytest.raises(Invalid):
        reg.get_or_create("q", set_={"segment_failure_type": "nope"})
    assert reg.by_player("q") is None and len(reg.all()) == 1


def test_patch_validation_is_all_or_nothing():
    reg, reactor, _ = _registry()
    s, _ = reg.get_or_create("p")
    rev = s.controls.revision
    with pytest.raises(Invalid) as err:
        reg.patch("1", {"segment_failure_type": "500", "nftables_delay_ms": -1, "bogus": 1})
    body = err.value.body()
    assert body["error"] == "invalid"
    assert set(body["fields"]) == {"nftables_delay_ms", "bogus"}
    assert s.controls.revision == rev and s.controls.values["segment_failure_type"] == "none"
    with pytest.raises(Invalid) as err:
        reg.patch("1", {})
    assert err.value.body()["error"] == "no fields provided"
    with pytest.raises(NotFound):
        reg.patch("77", {"segment_failure_type": "500"})


def test_conflicts_are_per_field():
    reg, reactor, _ = _registry()
    s, _ = reg.get_or_create("p")
    base = reg.patch("1", {"segment_failure_type": "500"})["control_revision"]
    reg.patch("1", {"manifest_failure_type": "404"}, base_revision=base)  # tester A
    # tester B edits a different control from the same base: fine
    reg.patch("1", {"nftables_delay_ms": 20}, base_revision=base)
    with pytest.raises(Conflict) as err:
        reg.patch("1", {"manifest_failure_type": "503"}, base_revision=base)
    body = err.value.body()
    assert body["error"] == "revision_conflict"
    assert body["conflicts"] == ["manifest_failure_type"]
    assert body["session"]["manifest_failure_type"] == "404"
    assert body["control_revision"] == s.controls.revision
    # fields limits what is applied
    reg.patch("1", {"segment_failure_type": "502", "manifest_failure_type": "503"},
              fields=["segment_failure_type"])
    assert s.controls.values["manifest_failure_type"] == "404"
    assert s.controls.values["segment_failure_type"] == "502"


def test_groups_propagate_group_fields_with_one_revision():
    reg, reactor, events = _registry(ports=5)
    a, _ = reg.get_or_create("tv_G7")
    b, _ = reg.get_or_create("phone_G7")
    c, _ = reg.get_or_create("solo")
    assert a.group_id == b.group_id == "G7" and c.group_id is None
    events.clear()
    reg.patch(a.session_id, {"segment_failure_type": "404", "nftables_bandwidth_mbps": 3,
                             "content_strip_codecs": True})
    assert b.controls.values["segment_failure_type"] == "404"
    assert b.controls.values["nftables_bandwidth_mbps"] == 3
    assert b.controls.values["content_strip_codecs"] is False  # content stays per session
    assert a.controls.revision == b.controls.revision
    assert c.controls.values["segment_failure_type"] == "none"
    members = sorted([a.session_id, b.session_id])
    assert sorted(d["session_id"] for k, d in events if k == "changed") == members
    events.clear()
    linked = reg.link([c.session_id], "G7")
    joined = [d for k, d in events if k == "changed"]
    assert [d["session_id"] for d in joined] == [c.session_id]
    assert "nftables_bandwidth_mbps" in joined[0]["changed"]  # shaping learns the new member's rate
    assert linked["session_ids"] == [a.session_id, b.session_id, c.session_id]
    assert c.controls.values["segment_failure_type"] == "404"  # joins with the group's settings
    assert reg.group("G7")["session_ids"] == linked["session_ids"]
    reg.unlink(a.session_id)
    reg.unlink(b.session_id)  # one member left -> the group dissolves
    with pytest.raises(NotFound):
        reg.group("G7")
    assert c.group_id is None


def test_link_limits_and_unknown_ids():
    reg, reactor, _ = _registry(ports=12)
    ids = [reg.get_or_create(f"p{i}")[0].session_id for i in range(11)]
    with pytest.raises(NotFound):
        reg.link(["1", "99"])
    with pytest.raises(Invalid):
        reg.link(ids)  # 11 > 10
    out = reg.link(ids[:10])
    assert len(out["session_ids"]) == 10
    with pytest.raises(Invalid):
        reg.link([ids[10]], out["group_id"])


def test_max_sessions_per_public_client_ip():
    reg, reactor, _ = _registry(ports=6, **{"max-sessions-per-client-ip": "2"})
    reg.get_or_create("a", client_ip="8.8.8.8")
    reg.get_or_create("b", client_ip="8.8.8.8")
    with pytest.raises(TooMany):
        reg.get_or_create("c", client_ip="8.8.8.8")
    reg.get_or_create("a", client_ip="8.8.8.8")  # existing session: fine
    for name in ("d", "e", "f"):
        reg.get_or_create(name, client_ip="192.168.1.9")  # private: unlimited
    assert is_public_ip("8.8.8.8") and not is_public_ip("10.1.2.3") and not is_public_ip("::1")


def test_player_metrics_never_touch_controls():
    reg, reactor, _ = _registry()
    s, _ = reg.get_or_create("p")
    rev = s.controls.revision
    assert reg.post_metrics("1", {"player_metrics_event_time": 10, "player_metrics_buffer_s": 4.5,
                                  "player_metrics_playhead_wallclock_ms": (reactor.seconds() - 8) * 1000},
                            play_id="play-1")
    body = reg.to_json(s)
    assert body["player_metrics_buffer_s"] == 4.5
    assert body["player_metrics_true_offset_s"] == pytest.approx(8, abs=0.01)
    assert body["server_received_at_ms"] == int(reactor.seconds() * 1000)
    assert body["play_id"] == "play-1"
    assert not reg.post_metrics("1", {"player_metrics_event_time": 5, "player_metrics_buffer_s": 1})
    assert reg.to_json(s)["player_metrics_buffer_s"] == 4.5
    with pytest.raises(Invalid):
        reg.post_metrics("1", {"segment_failure_type": "404"})
    assert s.controls.revision == rev


def test_session_json_shape():
    reg, reactor, _ = _registry()
    s, _ = reg.get_or_create("p")
    body = reg.to_json(s)
    for key in ("session_id", "player_id", "x_forwarded_port", "x_forwarded_port_external",
                "control_revision", "manifest_variants", "segments_count", "all_requests_count",
                "fault_count_total", "all_failure_type", "segment_failure_urls", "transport_failure_type",
                "transfer_active_timeout_seconds", "nftables_bandwidth_mbps", "content_live_offset",
                "mbps_transfer_rate", "mbps_transfer_complete", "bytes_out_total", "client_rtt_ms",
                "client_rtt_stale", "server_video_rendition", "loop_count_server", "last_request"):
        assert key in body, key
    assert body["x_forwarded_port"] == str(LO) and isinstance(body["session_id"], str)
    assert body["last_request"].endswith("Z")
    assert body["mbps_shaper_rate"] == 0.0  # the shaping defaults, before shaping reports
    reg.shaping = _Shaping(fields={"mbps_shaper_rate": 1.5})
    assert reg.to_json(s)["mbps_shaper_rate"] == 1.5


def test_stop_releases_everything():
    reg, reactor, events = _registry()
    for i in range(3):
        reg.get_or_create(f"p{i}")
    d = reg.stop()
    fired = []
    d.addCallback(fired.append)
    assert fired and reg.all() == []
    assert len([e for e in events if e[0] == "removed"]) == 3
    assert not reactor.getDelayedCalls() or all(not c.active() for c in reactor.getDelayedCalls())


# --------------------------------------------------------------------------- ids, quarantine, lifetime


def test_ids_are_never_reused_and_ports_wait_out_their_quarantine():
    reg, reactor, _ = _registry(ports=3, **{"session-port-quarantine": "30", "session-idle-timeout": "100"})
    a, b = reg.get_or_create("a")[0], reg.get_or_create("b")[0]
    reg.remove(a.session_id)
    reactor.advance(1)
    c = reg.get_or_create("c")[0]
    assert (c.session_id, c.port) == ("3", LO + 2)  # LO is quarantined; LO+2 was never used
    reg.remove(c.session_id)
    reactor.advance(1)
    d = reg.get_or_create("d")[0]  # both free ports quarantined: the one released longest ago
    assert (d.session_id, d.port) == ("4", LO)
    reactor.advance(31)
    e = reg.get_or_create("e")[0]
    assert (e.session_id, e.port) == ("5", LO + 2)
    assert [s.session_id for s in reg.all()] == ["2", "4", "5"] and b.session_id == "2"


def _state(reg, s):
    body = reg.to_json(s)
    return body["session_state"], body["session_expires_in_s"], body["session_keep"]


def test_idle_session_with_controls_set_counts_down_visibly_then_expires():
    reg, reactor, events = _registry(**{"session-expiry-grace": "20"})
    s, _ = reg.get_or_create("p", set_={"segment_failure_type": "404"})
    assert _state(reg, s) == ("active", None, False)
    reactor.advance(5.5)  # idle timeout is 5 s
    assert reg.all() == [s]
    state, left, _ = _state(reg, s)
    assert state == "expiring" and 14 <= left <= 20
    reactor.advance(10)
    assert _state(reg, s)[0] == "expiring" and _state(reg, s)[1] <= 10
    reactor.advance(11)
    assert reg.all() == [] and events[-1][0] == "removed"


def test_a_request_cancels_the_countdown():
    reg, reactor, _ = _registry(**{"session-expiry-grace": "20"})
    s, _ = reg.get_or_create("p", set_={"nftables_bandwidth_mbps": 2})
    reactor.advance(10)
    assert _state(reg, s)[0] == "expiring"
    s.last_activity = reactor.seconds()
    assert _state(reg, s) == ("active", None, False)
    reactor.advance(4)
    assert _state(reg, s)[0] == "active"
    reactor.advance(3)  # idle again: a fresh full countdown
    assert _state(reg, s)[0] == "expiring" and _state(reg, s)[1] >= 17


def test_kept_session_never_expires_and_release_lets_it_go():
    reg, reactor, _ = _registry(**{"session-expiry-grace": "20"})
    s, _ = reg.get_or_create("p", set_={"segment_failure_type": "404"})
    reg.set_keep(s.session_id, True)
    reactor.advance(3600)
    assert reg.all() == [s] and _state(reg, s) == ("idle_kept", None, True)
    reg.set_keep(s.session_id, False)
    reactor.advance(1)
    assert _state(reg, s)[0] == "expiring"
    reactor.advance(25)
    assert reg.all() == []


def test_watched_session_stays_while_a_page_watches():
    reg, reactor, _ = _registry(**{"session-expiry-grace": "20"})
    s, _ = reg.get_or_create("p")
    stream = reg.network_stream(s)
    stream.clients.append(object())  # a Testing-session page holds the network stream
    reactor.advance(600)
    assert reg.all() == [s] and _state(reg, s)[0] == "idle_watched"
    stream.clients.clear()
    reactor.advance(3)  # no controls set: nothing to keep it
    assert reg.all() == []


def test_untouched_session_still_expires_at_the_idle_timeout():
    reg, reactor, _ = _registry(**{"session-expiry-grace": "20"})
    s, _ = reg.get_or_create("p")
    assert reg.to_json(s)["session_expires_in_s"] == 5.0
    reactor.advance(5.1)
    assert reg.all() == []


def test_control_changes_leave_markers_in_the_network_log():
    reg, reactor, _ = _registry()
    s, _ = reg.get_or_create("p")
    reg.patch(s.session_id, {"segment_failure_type": "404"})
    reactor.advance(2)
    reg.patch(s.session_id, {"nftables_bandwidth_mbps": 2})
    texts = [(m["kind"], m["text"]) for m in s.netlog.markers()]
    assert texts == [("fault", "segment: 404 armed"), ("shaping", "shaping: 2 Mbps")]
