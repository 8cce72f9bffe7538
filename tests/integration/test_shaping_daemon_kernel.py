"""The real daemon with ``backend = auto`` inside a network namespace this test creates:
the API drives htb classes and nftables rules, a removed session leaves nothing, a reused
port starts uncapped, and SIGTERM removes the root qdisc and the table.  Skips with the
reason printed without root / network namespaces / htb / nftables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from streamlab.testing.netns import network_namespace, run

pytestmark = pytest.mark.kernel




@pytest.fixture(scope="module")
def netns():
    with network_namespace("sldmn", ("ip", "nft", "curl")) as name:
        yield name


class NsDaemon:
    def __init__(self, netns, workdir):
        self.netns = netns
        self.ns = ["ip", "netns", "exec", netns]
        self.conf = os.path.join(workdir, "streamlab.conf")
        with open(self.conf, "w") as fh:
            fh.write(f"""[server]
listen = tcp:30000:interface=127.0.0.1
bootstrap_listen = tcp:30081:interface=127.0.0.1
session_ports = 30181-30183
session_interface = 127.0.0.1
[paths]
media_dir = {workdir}/media
state_dir = {workdir}/state
[shaping]
backend = auto
interface = lo
[sessions]
session_port_quarantine = 0
""")
        self.log = os.path.join(workdir, "twistd.log")
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        with open(self.log, "ab") as log:
            argv = [*self.ns, twistd, "--nodaemon", "--pidfile=", "streamlab", "--config", self.conf]
            self.proc = subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def http(self, method, path, body=None, port=30000, max_time=5):
        args = [*self.ns, "curl", "-s", "--max-time", str(max_time), "-X", method, "-w", "\n%{http_code}"]
        if body is not None:
            args += ["-H", "content-type: application/json", "-d", json.dumps(body)]
        out = run(*args, f"http://127.0.0.1:{port}{path}", check=False, timeout=max_time + 10)
        text, _, code = out.stdout.rpartition("\n")
        return int(code or 0), (json.loads(text) if text.strip().startswith(("{", "[")) else text)

    def wait(self, pred, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, open(self.log).read()[-3000:]
            try:
                value = pred()
            except (ValueError, KeyError, TypeError):
                value = None
            if value:
                return value
            assert time.monotonic() < deadline, open(self.log).read()[-3000:]
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def _classes(d):
    from pyroute2 import IPRoute

    with IPRoute(netns=d.netns) as ipr:
        idx = ipr.link_lookup(ifname="lo")[0]
        return {c["handle"] & 0xFFFF: c for c in ipr.get_classes(index=idx) if c["handle"] >> 16 == 0x5EB}


def _root_kind(d):
    from pyroute2 import IPRoute

    with IPRoute(netns=d.netns) as ipr:
        idx = ipr.link_lookup(ifname="lo")[0]
        return [q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=idx) if q["parent"] == 0xFFFFFFFF]


def _rules(d):
    out = run(*d.ns, "nft", "-j", "list", "ruleset")
    return [i["rule"] for i in json.loads(out.stdout)["nftables"] if "rule" in i]


def test_daemon_drives_the_kernel_and_cleans_up(netns, tmp_path):
    d = NsDaemon(netns, str(tmp_path))
    try:
        d.wait(lambda: d.http("GET", "/api/health")[0] == 200)
        caps = d.wait(lambda: (lambda c: c if c["status"] != "starting" else None)(
            d.http("GET", "/api/nftables/capabilities")[1]))
        print(f"capabilities: {caps}")
        if caps["features"]["rate"] != "kernel" or caps["features"]["transport_drop"] != "kernel":
            pytest.skip(f"kernel backend not usable here: {caps['reason']}")
        code, s = d.http("POST", "/api/sessions", {"player_id": "kernel-e2e"})
        assert code == 201
        sid, port = s["session_id"], int(s["x_forwarded_port"])
        assert d.http("POST", f"/api/nftables/bandwidth/{port}", {"rate_mbps": 5})[0] == 200
        cls = _classes(d)
        assert port in cls
        assert cls[port].get_attr("TCA_OPTIONS").get_attr("TCA_HTB_PARMS")["rate"] == 5_000_000 // 8
        assert d.http("GET", f"/api/nftables/port/{port}")[1]["kernel_rate_mbps"] == 5

        code, _ = d.http("PATCH", f"/api/session/{sid}", {"set": {"transport_failure_type": "drop"}})
        assert code == 200
        d.wait(lambda: any(f"port={port}" in r.get("comment", "") for r in _rules(d)))
        code, _ = d.http("GET", "/x", port=port, max_time=1)
        assert code == 0  # dropped in the kernel: no answer
        d.wait(lambda: d.http("GET", f"/api/session/{sid}")[1]["transport_fault_drop_packets"] > 0, 5)

        assert d.http("DELETE", f"/api/session/{sid}")[0] == 200
        d.wait(lambda: port not in _classes(d) and not _rules(d))

        code, s2 = d.http("POST", "/api/sessions", {"player_id": "kernel-e2e-2"})
        assert int(s2["x_forwarded_port"]) == port and port not in _classes(d)  # reused port: uncapped
        assert s2["transport_fault_active"] is False
    finally:
        rc = d.stop()
    assert rc in (0, -signal.SIGTERM), open(d.log).read()[-3000:]  # twistd re-raises SIGTERM
    assert _root_kind(d) != ["htb"]
    assert "streamlab" not in run(*d.ns, "nft", "list", "tables").stdout
