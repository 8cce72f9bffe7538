"""Pure per-session backend choice: route facts + proven capabilities -> carrier per feature."""

import pytest

from streamlab.shaping.route import (
    RTN_LOCAL,
    RTN_UNICAST,
    NftProof,
    Route,
    TcProof,
    place,
    route_from_lookup,
)

NFT = NftProof(drop=True, reject=True, counters=True)
ETH = TcProof("eth0", htb=True, netem=False, reason="kernel lacks netem")


def carriers(p):
    return {f: (c.backend, c.interface) for f, c in p.carriers.items()}


def test_route_from_lookup_kinds():
    assert route_from_lookup("127.0.0.1", RTN_LOCAL, "lo", True).kind == "loopback"
    # a local address of a NIC is delivered over lo as well
    assert route_from_lookup("192.0.2.2", RTN_LOCAL, "lo", True).interface == "lo"
    r = route_from_lookup("10.0.0.9", RTN_UNICAST, "veth0", False, "10.0.0.1")
    assert (r.kind, r.interface, r.gateway) == ("device", "veth0", "10.0.0.1")
    assert route_from_lookup("10.0.0.9", 7, "", False).kind == "none"  # unreachable
    none = route_from_lookup("203.0.113.5", None, error="(101, 'Network is unreachable')")
    assert none.kind == "none" and "unreachable" in none.reason


def test_auto_keeps_loopback_players_in_userspace_even_when_lo_is_proven():
    p = place("auto", Route("127.0.0.1", "loopback", "lo"), TcProof("lo", htb=True, netem=True), NFT)
    assert set(carriers(p).values()) == {("userspace", "lo")}
    assert "loopback" in p.carrier("rate").reason and not p.uses_kernel
    # backend = kernel was asked for explicitly: lo is shaped by the kernel when proven
    k = place("kernel", Route("127.0.0.1", "loopback", "lo"), TcProof("lo", htb=True, netem=True), NFT)
    assert k.kernel("rate") and k.interface == "lo"


def test_a_device_route_uses_what_was_proven_on_that_interface():
    p = place("auto", Route("10.0.0.9", "device", "eth0"), ETH, NFT)
    assert carriers(p) == {"rate": ("kernel", "eth0"), "delay": ("userspace", "eth0"),
                           "loss": ("userspace", "eth0"), "transport_drop": ("kernel", "eth0"),
                           "transport_reject": ("kernel", "eth0")}
    assert p.carrier("delay").reason == "kernel lacks netem" and p.interface == "eth0"


@pytest.mark.parametrize("route, tc, reason", [
    (Route(), None, "no connection yet"),
    (Route("203.0.113.5", "none", reason="no route to 203.0.113.5: unreachable"), None, "no route"),
    (Route("10.0.0.9", "device", "eth1"), None, "not proven on eth1"),
    (Route("10.0.0.9", "device", "eth1"), TcProof("eth1", reason="scratch u32 filter refused: (2, 'No such "
                                                  "file or directory')"), "No such file"),
])
def test_everything_else_is_userspace_with_the_reason(route, tc, reason):
    p = place("auto", route, tc, None if tc is None else NFT)
    assert not p.kernel("rate") and reason in p.carrier("rate").reason


def test_only_interface_limits_the_kernel_and_refusals_win_over_proofs():
    p = place("auto", Route("10.0.0.9", "device", "eth1"), TcProof("eth1", htb=True), NFT,
              only_interface="eth0")
    assert not p.uses_kernel and "limited to eth0" in p.carrier("rate").reason
    r = place("auto", Route("10.0.0.9", "device", "eth0"), ETH, NFT,
              refused={"transport_drop": "add_rule port 30181: Operation not permitted"})
    assert r.kernel("rate") and r.kernel("transport_reject") and not r.kernel("transport_drop")
    assert r.carrier("transport_drop").reason.startswith("kernel refused: add_rule")


def test_userspace_mode_never_uses_the_kernel():
    p = place("userspace", Route("10.0.0.9", "device", "eth0"), ETH, NFT)
    assert not p.uses_kernel and p.carrier("rate").reason == "backend = userspace"
