"""The player fleet (bench/fleet.py) against a real daemon: players bootstrap onto their
own session ports and play without a single error, lateness and the daemon's CPU are
reported (never judged: no speed threshold here), a short soak finds no leak and every
session is gone after the deletion; with the kernel backend in a namespace, so are the
tc classes.  The leak verdict itself is checked on made-up samples."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from streamlab.testing.daemon import Daemon
from streamlab.testing.fixtures import install_test_item

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLEET = os.path.join(ROOT, "bench", "fleet.py")
sys.path.insert(0, os.path.join(ROOT, "bench"))

import fleet_run  # noqa: E402
import fleet_soak  # noqa: E402


@pytest.fixture(scope="module")
def target(tmp_path_factory, test_item):
    d = Daemon(str(tmp_path_factory.mktemp("fleet")), session_ports=40)
    install_test_item(d.media_dir)
    d.start()
    yield d
    d.stop()


def _fleet(d: Daemon | None, *args: str, timeout: float = 120) -> tuple[int, dict]:
    argv = [sys.executable, FLEET, *args]
    if d is not None:
        argv += ["--server", f"http://127.0.0.1:{d.port}", "--bootstrap", f"http://127.0.0.1:{d.bootstrap_port}",
                 "--pid", str(d.proc.pid)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def _assert_reported(r: dict, kind: str) -> None:
    lat = r["lateness_ms"][kind]
    assert lat["count"] > 0 and lat["p50"] is not None and lat["p99"] is not None, r["lateness_ms"]
    assert r["service_ms"][kind]["count"] == lat["count"]


def _assert_daemon_figures(r: dict, d: Daemon) -> None:
    daemon = r["daemon"]
    assert daemon["pid"] == d.proc.pid
    assert isinstance(daemon["cpu_share"], float) and daemon["cpu_share"] >= 0
    assert daemon["rss_mb"] > 10 and daemon["fds"] > 0
    assert r["requests_per_s"]["total"] > 0


def _no_fleet_sessions(d: Daemon) -> None:
    left = [s["player_id"] for s in d.get("/api/sessions").json() if s["player_id"].startswith("fleet")]
    assert left == []


def test_ll_hls_fleet_plays_without_errors(target):
    code, r = _fleet(target, "--players", "10", "--duration", "3", "--settle", "1.5")
    assert code == 0
    assert r["errors"]["total"] == 0, r["errors"]
    assert r["bootstrapped"] == 10 and r["players"] == 10
    _assert_reported(r, "ll_hls.part")
    _assert_reported(r, "ll_hls.playlist")  # blocking-reload wake-up after publication
    assert r["requests_per_s"]["by_kind"]["ll_hls.playlist"] > 0
    _assert_daemon_figures(r, target)
    # ten players, ten session ports: every one was a session of its own, deleted after
    assert r["sessions_deleted"] == 10
    _no_fleet_sessions(target)


def test_mixed_fleet_plays_every_kind_without_errors(target):
    code, r = _fleet(target, "--players", "10", "--mix", "ll_hls=0.4,hls_6s=0.2,hls_2s=0.2,dash_6s=0.2",
                     "--duration", "6", "--settle", "1.5", "--workers", "2")
    assert code == 0
    assert r["errors"]["total"] == 0, r["errors"]
    assert r["bootstrapped"] == 10
    assert r["mix"] == {"ll_hls": 0.4, "hls_6s": 0.2, "hls_2s": 0.2, "dash_6s": 0.2}
    _assert_reported(r, "ll_hls.part")
    _assert_reported(r, "hls_2s.segment")  # a new 2 s segment every 2 s: several in 6 s
    kinds = r["requests_per_s"]["by_kind"]
    for key in ("ll_hls.playlist", "hls_6s.playlist", "hls_2s.segment", "dash_6s.mpd"):
        assert kinds.get(key, 0) > 0, kinds
    _assert_daemon_figures(r, target)
    _no_fleet_sessions(target)


def test_short_soak_finds_no_leak_and_deletes_everything(target):
    code, r = _fleet(target, "--soak", "10", "--players", "20", "--sample-every", "2", "--warmup", "2",
                     "--settle", "1")
    failed = [c for c in r["checks"] if not c["ok"]]
    assert code == 0 and not r["leak"], failed
    names = {c["check"] for c in r["checks"]}
    assert {"rss_mb during run", "fds during run", "reactor timers during run", "network-log entries bounded",
            "fleet sessions deleted", "fds back to idle", "network log dropped"} <= names
    assert r["fleet"]["bootstrapped"] == 20 and r["end"]["sessions"] >= 20  # sessions alive until deleted
    assert r["start"]["timers"] is not None and r["start"]["network_log_entries"] > 0
    assert r["after_delete"]["fleet_sessions"] == 0 and r["after_delete"]["network_log_entries"] == 0
    assert r["fleet"]["errors"]["total"] == 0, r["fleet"]["errors"]
    _no_fleet_sessions(target)


def test_players_that_leave_leave_the_daemon_log_clean(target):
    """Runs after the fleets above (file order): every fleet ends by closing its players'
    connections, some in the middle of a held preload-hint response, as real players do."""
    log = target.log()
    assert "Unhandled error" not in log and "Traceback" not in log, log[log.find("Unhandled"):][:3000]


@pytest.mark.kernel
def test_kernel_soak_removes_every_class(test_item):
    code, r = _fleet(None, "--soak", "5", "--players", "6", "--sample-every", "1", "--warmup", "1",
                     "--settle", "1", "--kernel", "--item", test_item, timeout=150)
    if r.get("skipped"):
        print(f"SKIP: {r['skipped']}")
        pytest.skip(r["skipped"])
    if r["capabilities"]["features"]["rate"] != "kernel":
        pytest.skip(f"kernel backend not usable here: {r['capabilities'].get('reason')}")
    failed = [c for c in r["checks"] if not c["ok"]]
    assert code == 0 and not r["leak"], failed
    assert r["end"]["tc_classes"] == 6  # one htb class per capped session ...
    assert r["after_delete"]["tc_classes"] == 0 and r["after_delete"]["nft_rules"] == 0  # ... none after


# --------------------------------------------------------------------------- the verdicts (pure)

def _args(**kw) -> argparse.Namespace:
    base = {"warmup": 0.0, "rss_tolerance": 0.1, "rss_slack_mb": 20.0, "fd_tolerance": 8, "players": 10,
            "network_log_size": 200, "kernel": False}
    base.update(kw)
    return argparse.Namespace(**base)


def _sample(t, rss=60.0, fds=50, timers=40, entries=500, sessions=10):
    return {"t": t, "rss_mb": rss, "fds": fds, "timers": timers, "network_log_entries": entries,
            "sessions": sessions}


def test_soak_checks_flag_growth_and_leftovers():
    idle = _sample(0, fds=20, timers=4, entries=0, sessions=0)
    gone = {**_sample(100, fds=20, timers=5, entries=0, sessions=0), "fleet_sessions": 0}
    steady = [_sample(t) for t in (10, 20, 30)]
    assert all(c["ok"] for c in fleet_soak.soak_checks(_args(), idle, steady, steady[-1], gone))

    def failing(samples, after=gone):
        checks = fleet_soak.soak_checks(_args(), idle, samples, samples[-1], after)
        return {c["check"] for c in checks if not c["ok"]}

    assert failing([_sample(10), _sample(15), _sample(20, rss=200.0)]) == {"rss_mb during run"}
    assert failing([_sample(10), _sample(15), _sample(20, fds=120)]) == {"fds during run"}
    assert failing([_sample(10), _sample(15), _sample(20, timers=52)]) == set()  # connections come and go
    assert failing([_sample(10), _sample(15), _sample(20, timers=400)]) == {"reactor timers during run"}
    assert failing([_sample(10), _sample(15), _sample(20, entries=2001)]) == {"network-log entries bounded"}
    # RSS grows while the network-log rings fill: the baseline waits until they are full
    filling = [_sample(10, rss=60.0, entries=100), _sample(20, rss=90.0, entries=1000),
               _sample(30, rss=95.0, entries=2000), _sample(40, rss=96.0, entries=2000)]
    assert fleet_soak.baseline_index(filling, 0) == 3
    assert failing(filling) == set()
    left = {**gone, "fleet_sessions": 1, "sessions": 1, "fds": 23, "network_log_entries": 7}
    assert failing(steady, left) == {"fleet sessions deleted", "daemon sessions back to idle",
                                     "network log dropped"}


def test_mix_assignment_and_percentiles():
    mix = fleet_run.parse_mix("ll_hls=7,hls_6s=2,dash_6s=1")
    assert mix == {"ll_hls": 0.7, "hls_6s": 0.2, "dash_6s": 0.1}
    kinds = fleet_run.assign(10, fleet_run.parse_mix("ll_hls=0.7,hls_6s=0.2,dash_6s=0.1"))
    assert sorted(kinds) == sorted(["ll_hls"] * 7 + ["hls_6s"] * 2 + ["dash_6s"])
    assert set(kinds[:3]) == {"ll_hls", "hls_6s", "dash_6s"}  # interleaved across workers
    with pytest.raises(ValueError):
        fleet_run.parse_mix("firefox=1")
    s = fleet_run.summary([i / 1000 for i in range(1, 101)])
    assert (s["count"], s["p50"], s["p99"], s["max"]) == (100, 50.0, 99.0, 100.0)
    assert fleet_run.summary([])["p99"] is None
