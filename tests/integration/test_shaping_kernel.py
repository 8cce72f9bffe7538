"""Kernel shaping backend inside a network namespace this test creates.

htb class on the port reaches the cap; nftables DROP/REJECT rules appear with the port
and count packets; removal leaves no class/filter/rule; two ports never touch each
other.  Skips (with the reason printed) where namespaces, htb or nftables are missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import pytest_twisted

from streamlab.shaping.kernel import KernelBackend, classid
from streamlab.shaping.reconcile import KernelPort
from streamlab.testing.netns import network_namespace, run

pytestmark = pytest.mark.kernel


def _t(fn, *args, **kw):
    from twisted.internet import threads

    return threads.deferToThread(fn, *args, **kw)




@pytest.fixture(scope="module")
def netns():
    with network_namespace("slshape", ("ip", "nft"), lo_mtu=16384) as name:
        yield name


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kfiles")
    (d / "big.bin").write_bytes(os.urandom(1 << 20) * 10)
    (d / "small.txt").write_bytes(b"hi\n")
    return d


@pytest.fixture(scope="module")
def servers(netns, files):
    """Two plain HTTP servers inside the namespace (the 'session ports')."""
    procs = []
    ports = [31801, 31802]
    for p in ports:
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
             str(p), "--directory", str(files)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    deadline = time.monotonic() + 10
    for p in ports:
        while _curl(netns, p, "/small.txt", max_time=1)[0] != 0:
            assert time.monotonic() < deadline, "http.server did not start"
            time.sleep(0.05)
    yield ports
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def _curl(netns, port, path, max_time=10.0):
    out = run("ip", "netns", "exec", netns, "curl", "-s", "-o", "/dev/null", "--max-time", str(max_time),
               "-w", "%{http_code} %{size_download} %{time_starttransfer} %{time_total}",
               f"http://127.0.0.1:{port}{path}", check=False, timeout=max_time + 10)
    fields = out.stdout.split()
    return out.returncode, fields


CLIENT = r"""
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
got, t0, n0, end = 0, None, 0, None
while True:
    chunk = s.recv(262144)
    if not chunk:
        break
    got += len(chunk)
    now = time.monotonic()
    if t0 is None and got >= 128 * 1024:  # skip the start-up burst: sustained goodput
        t0, n0, end = now, got, now + seconds
    if end is not None and now >= end:
        break
print((got - n0) * 8 / (now - t0) / 1e6)
"""


def _sustained_mbps(netns, port, cap, seconds=3.0):
    """Goodput of a bulk download measured for ~3 s after the first 128 KiB (inside the netns)."""
    out = run("ip", "netns", "exec", netns, sys.executable, "-c", CLIENT, str(port), str(seconds),
               timeout=60)
    return float(out.stdout.strip())


def _tc_classes(netns):
    """Classes on lo as [{"handle": "5eb:7c39", "rate": bytes_per_s}] (read through netlink)."""
    from pyroute2 import IPRoute

    with IPRoute(netns=netns) as ipr:
        idx = ipr.link_lookup(ifname="lo")[0]
        out = []
        for c in ipr.get_classes(index=idx):
            h = c["handle"]
            opts = c.get_attr("TCA_OPTIONS")
            parms = opts.get_attr("TCA_HTB_PARMS") if opts is not None else None
            out.append({"handle": f"{h >> 16:x}:{h & 0xffff:x}", "rate": parms["rate"] if parms else None})
        return out


def _tc_filters(netns):
    """Filters under 5eb: as [(prio, kind)]."""
    from pyroute2 import IPRoute

    with IPRoute(netns=netns) as ipr:
        idx = ipr.link_lookup(ifname="lo")[0]
        filters = ipr.get_filters(index=idx, parent=0x5EB0000)
        return [(f["info"] >> 16, f.get_attr("TCA_KIND")) for f in filters]


def _nft_rules(netns):
    out = run("ip", "netns", "exec", netns, "nft", "-j", "list", "ruleset")
    return [i["rule"] for i in json.loads(out.stdout)["nftables"] if "rule" in i]


@pytest_twisted.async_yield_fixture(scope="module")
async def backend(netns, servers):
    from twisted.internet import reactor

    kb = KernelBackend(reactor, "lo", netns=netns)
    support = await kb.start()
    print(f"kernel support in {netns}: {support} {kb.proofs}")
    if not kb.proofs.get("lo") or not kb.proofs["lo"].htb or not support.drop:
        reason = f"kernel lacks htb or nftables here: {support.reason} {kb.proofs}"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    yield kb
    await kb.stop()
    assert not [c for c in (await _t(_tc_classes, netns)) if c.get("handle", "").startswith("5eb:")]
    out = run("ip", "netns", "exec", netns, "nft", "-j", "list", "tables")
    assert "streamlab" not in out.stdout


@pytest.mark.parametrize("cap", [8.0, 20.0])
@pytest_twisted.ensureDeferred
async def test_htb_class_caps_goodput(netns, servers, backend, cap):
    port = servers[0]
    await (backend.reconcile({port: KernelPort(rate_bps=int(cap * 1e6))}))
    assert any(c.get("handle") == f"5eb:{port:x}" for c in (await _t(_tc_classes, netns)))
    mbps = await _t(_sustained_mbps, netns, port, cap)
    print(f"kernel htb cap {cap} Mbps -> {mbps:.2f} Mbps ({mbps / cap * 100:.1f} %)")
    assert 0.90 * cap <= mbps <= 1.02 * cap
    await (backend.reconcile({}))
    assert not [c for c in (await _t(_tc_classes, netns)) if c.get("handle") == f"5eb:{port:x}"]
    assert not [f for f in (await _t(_tc_filters, netns)) if f[0] == port]


@pytest_twisted.ensureDeferred
async def test_same_state_twice_is_a_no_op(netns, servers, backend):
    port = servers[0]
    want = {port: KernelPort(rate_bps=5_000_000)}
    first = await (backend.reconcile(want))
    assert [op.action for op in first] == ["add_class"]
    assert await (backend.reconcile(want)) == []
    changed = await (backend.reconcile({port: KernelPort(rate_bps=6_000_000)}))
    assert [op.action for op in changed] == ["change_class"]
    classes = [c for c in (await _t(_tc_classes, netns)) if c.get("handle") == f"5eb:{port:x}"]
    assert len(classes) == 1 and classes[0]["rate"] == 6_000_000 // 8
    await (backend.reconcile({}))


@pytest_twisted.ensureDeferred
async def test_drop_and_reject_rules_count_and_stay_isolated(netns, servers, backend):
    a, b = servers
    await (backend.reconcile({a: KernelPort(rule_kind="drop"), b: KernelPort()}))
    rules = (await _t(_nft_rules, netns))
    assert len(rules) == 1 and f"port={a}" in rules[0]["comment"]
    rc, _ = await _t(_curl, netns, a, "/small.txt", max_time=1.0)
    assert rc != 0  # dropped: connection never completes
    assert (await _t(_curl, netns, b, "/small.txt"))[1][0] == "200"  # the other port is untouched
    counts = await (backend.counters())
    assert counts[a]["drop"] > 0 and counts.get(b, {"drop": 0})["drop"] == 0

    # Add REJECT on b: a's rule (same handle) is not touched.
    handle_a = backend.handles[a]
    await (backend.reconcile({a: KernelPort(rule_kind="drop"), b: KernelPort(rule_kind="reject")}))
    assert backend.handles[a] == handle_a
    t = time.monotonic()
    rc, _ = await _t(_curl, netns, b, "/small.txt", max_time=5.0)
    assert rc != 0 and time.monotonic() - t < 1.5  # reset, not a timeout
    counts = await (backend.counters())
    assert counts[b]["reject"] > 0

    # Remove a only: b's rule stays, a's is gone.
    await (backend.reconcile({b: KernelPort(rule_kind="reject")}))
    rules = (await _t(_nft_rules, netns))
    assert [r["handle"] for r in rules] == [backend.handles[b]]
    assert (await _t(_curl, netns, a, "/small.txt"))[1][0] == "200"
    await (backend.reconcile({}))
    assert (await _t(_nft_rules, netns)) == []


@pytest_twisted.ensureDeferred
async def test_packet_budget_rule_drops_only_that_many(netns, servers, backend):
    a = servers[0]
    before = (await backend.counters()).get(a, {"drop": 0})["drop"]
    await (backend.reconcile({a: KernelPort(rule_kind="drop", rule_packets=1, rule_epoch=0.0)}))
    # The first SYN is dropped, the retransmission (~1 s later) gets through.
    rc, fields = await _t(_curl, netns, a, "/small.txt", max_time=5.0)
    assert rc == 0 and fields[0] == "200"
    counts = await (backend.counters())
    assert counts[a]["drop"] - before == 1
    await (backend.reconcile({}))


@pytest_twisted.ensureDeferred
async def test_start_removes_leftovers(netns, servers, backend):
    # A previous run's leftovers: our table with a stale rule, our class.
    ns = ("ip", "netns", "exec", netns)
    await _t(run, *ns, "nft", "add", "rule", "inet", "streamlab", "transport_faults",
             "tcp", "dport", "9999", "counter", "drop")
    await _t(run, *ns, "tc", "class", "add", "dev", "lo", "parent", "5eb:", "classid",
             f"5eb:{classid(9999) & 0xffff:x}", "htb", "rate", "1mbit")
    support = await (backend.start())
    assert backend.proofs["lo"].htb and support.drop and support.reject
    assert (await _t(_nft_rules, netns)) == []
    assert not [c for c in (await _t(_tc_classes, netns)) if c.get("handle", "").startswith("5eb:")]


@pytest_twisted.ensureDeferred
async def test_service_routes_features_and_cleans_up(netns, servers, backend, tmp_path):
    """ShapingService with ``backend = kernel`` (lo may be shaped when asked for) on this
    kernel: once a player connects, rate and transport in the kernel, delay and loss in
    userspace (no netem here), release removes exactly the port's objects."""
    from twisted.internet import reactor
    from twisted.internet.address import IPv4Address

    from streamlab import config as configmod
    from streamlab.shaping.service import ShapingService

    await backend.stop()  # the service owns its own backend instance
    cfg = configmod.load(None, {"shaping-backend": "kernel", "media-dir": str(tmp_path / "m"),
                                "state-dir": str(tmp_path / "s")})
    svc = ShapingService(cfg, reactor, kernel=KernelBackend(reactor, "lo", netns=netns))
    await svc.startService()
    try:
        caps = svc.caps.as_dict()
        print(f"capabilities in {netns}: {caps}")
        assert caps["features"]["rate"] == "kernel" and caps["features"]["transport_drop"] == "kernel"
        netem = svc.kernel.proofs["lo"].netem
        assert caps["features"]["delay"] == ("kernel" if netem else "userspace")
        a, b = servers
        for port in (a, b):
            svc.open_port(port)
            await svc.peer_seen(port, IPv4Address("TCP", "127.0.0.1", 40000))
            assert svc.ports[port].placement.carrier("rate").interface == "lo"
        await svc.configure(a, {"nftables_bandwidth_mbps": 4, "nftables_delay_ms": 30,
                                "transport_failure_type": "drop"})
        await svc.configure(b, {"nftables_bandwidth_mbps": 9})
        handles = {c["handle"]: c["rate"] for c in await _t(_tc_classes, netns)}
        assert handles[f"5eb:{a:x}"] == 4_000_000 // 8 and handles[f"5eb:{b:x}"] == 9_000_000 // 8
        assert [r["comment"] for r in await _t(_nft_rules, netns)] == [f"streamlab port={a} kind=drop"]
        if not netem:
            assert round(svc.userspace.shaper(a).delay, 3) == 0.03  # delay done in userspace
        assert svc.userspace.shaper(a).fault == "none"  # the kernel drops
        await svc.release(a)
        handles = {c["handle"] for c in await _t(_tc_classes, netns)}
        assert f"5eb:{a:x}" not in handles and f"5eb:{b:x}" in handles
        assert await _t(_nft_rules, netns) == []
        assert [f[0] for f in await _t(_tc_filters, netns)] == [b] * len(await _t(_tc_filters, netns))
    finally:
        await svc.stopService()
    assert not [c for c in await _t(_tc_classes, netns) if c["handle"].startswith("5eb:")]
    await backend.start()  # leave the module fixture usable for its teardown


@pytest_twisted.ensureDeferred
async def test_a_refused_scratch_class_is_not_claimed(netns, backend):
    """An interface whose root qdisc is someone else's htb cannot take our scratch class:
    the proof says so (with the reason) and the interface is left exactly as it was."""
    ns = ("ip", "netns", "exec", netns)
    await _t(run, *ns, "ip", "link", "add", "slfor0", "type", "veth", "peer", "name", "slfor1")
    try:
        await _t(run, *ns, "ip", "link", "set", "slfor0", "up")
        await _t(run, *ns, "tc", "qdisc", "replace", "dev", "slfor0", "root", "handle", "1:", "htb")
        proof = await backend.prove("slfor0")
        print(f"proof on an interface with a foreign htb root: {proof}")
        assert not proof.htb and not proof.netem and "foreign htb root" in proof.reason
        out = await _t(run, *ns, "tc", "-j", "qdisc", "show", "dev", "slfor0")
        assert [(q["kind"], q["handle"]) for q in json.loads(out.stdout) if q.get("root")] == [("htb", "1:")]
        ok = await backend.prove("lo")
        assert ok.htb  # another interface is unaffected
    finally:
        await _t(run, *ns, "ip", "link", "del", "slfor0", check=False)
