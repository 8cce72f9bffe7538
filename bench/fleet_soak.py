"""``bench/fleet.py --soak``: players for a while, then the leak checks (nothing grows,
everything of the fleet's sessions is gone after the deletion, kernel state included)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from fleet_probe import daemon_gauges, kernel_state, process_sample  # noqa: E402
from fleet_run import Run, Target  # noqa: E402


def soak(target: Target, args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """Players for ``--soak`` seconds; checks nothing grows, then deletes the sessions and
    checks they are gone with their kernel state.  Returns (report, leak found)."""
    prefix = f"fleet{os.getpid()}soak"
    preset = None
    caps = None
    if args.kernel:
        caps = _wait_capabilities(target)
        preset = {"nftables_bandwidth_mbps": args.kernel_rate}
    idle = _soak_sample(target, args, None)
    run = Run(target, args, args.players, prefix, args.soak, preset)
    run.start()
    ports: set[int] = set()

    def on_sample() -> dict[str, Any]:
        if not ports:
            ports.update(int(s["x_forwarded_port"]) for s in target.sessions(prefix))
        return _soak_sample(target, args, ports)

    result = run.measure(on_sample, sample_every=args.sample_every)
    samples = result.pop("samples", [])
    ports.update(int(s["x_forwarded_port"]) for s in target.sessions(prefix))
    end = _soak_sample(target, args, ports)
    deleted = target.delete_sessions(prefix)
    after = _wait_gone(target, args, prefix, ports, idle)
    checks = soak_checks(args, idle, samples, end, after)
    leak = any(not c["ok"] for c in checks)
    report = {
        "mode": "soak",
        "seconds": args.soak,
        "players": args.players,
        "kernel": args.kernel,
        "capabilities": caps,
        "idle": idle,
        "start": samples[0] if samples else None,
        "series": [
            [
                round(s["t"] - samples[0]["t"]),
                s["rss_mb"],
                s["fds"],
                s.get("timers"),
                s.get("network_log_entries"),
            ]
            for s in samples
        ],
        "series_columns": ["t_s", "rss_mb", "fds", "timers", "network_log_entries"],
        "rss_mb_per_hour_after_baseline": rss_slope(samples, baseline_index(samples, args.warmup)),
        "end": end,
        "after_delete": after,
        "sessions_deleted": deleted,
        "checks": checks,
        "leak": leak,
        "daemon_log_problems": target.log_problems(),
        "fleet": result,
    }
    return report, leak


def _soak_sample(target: Target, args: argparse.Namespace, ports: set[int] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "t": round(time.time(), 1),
        **process_sample(target.pid),
        **daemon_gauges(target.host, target.port),
    }
    if args.kernel:
        out.update(kernel_state(ports))
    return out


def baseline_index(samples: list[dict[str, Any]], warmup: float) -> int:
    """The first sample after *warmup* seconds at which the network-log rings have stopped
    filling (entries unchanged since the previous sample): before that, RSS grows by
    design.  Falls back to the first sample after the warm-up."""
    if not samples:
        return 0
    after = [i for i, s in enumerate(samples) if s["t"] >= samples[0]["t"] + warmup] or [0]
    for i in after:
        if i > 0 and samples[i].get("network_log_entries") == samples[i - 1].get("network_log_entries"):
            return i
    return after[0]


def rss_slope(samples: list[dict[str, Any]], start: int) -> float | None:
    """Least-squares RSS trend (MB per hour) over ``samples[start:]``."""
    pts = [(s["t"], s["rss_mb"]) for s in samples[start:]]
    if len(pts) < 3:
        return None
    mt = sum(t for t, _ in pts) / len(pts)
    mr = sum(r for _, r in pts) / len(pts)
    den = sum((t - mt) ** 2 for t, _ in pts)
    return round(sum((t - mt) * (r - mr) for t, r in pts) / den * 3600, 1) if den else None


def _wait_capabilities(target: Target, timeout: float = 60.0) -> dict[str, Any] | None:
    deadline = time.time() + timeout
    caps = None
    while time.time() < deadline:
        caps = target.api("GET", "/api/nftables/capabilities")
        if caps and caps.get("status") != "starting":
            return caps
        time.sleep(0.2)
    return caps


def _wait_gone(
    target: Target,
    args: argparse.Namespace,
    prefix: str,
    ports: set[int],
    idle: dict[str, Any],
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Poll (with a deadline) until the fleet's sessions, their listeners and kernel state
    are gone; returns the last sample."""
    deadline = time.time() + timeout
    while True:
        sample = _soak_sample(target, args, ports)
        sample["fleet_sessions"] = len(target.sessions(prefix))
        gone = (
            sample["fleet_sessions"] == 0
            and sample["fds"] <= idle["fds"] + args.fd_tolerance
            and (not args.kernel or (sample.get("tc_classes") == 0 and sample.get("nft_rules") == 0))
        )
        if gone or time.time() > deadline:
            return sample
        time.sleep(0.25)


def soak_checks(
    args: argparse.Namespace,
    idle: dict[str, Any],
    samples: list[dict[str, Any]],
    end: dict[str, Any],
    after: dict[str, Any],
) -> list[dict[str, Any]]:
    """The leak verdicts (pure): growth during the run against the post-warm-up baseline,
    and what must be gone after the deletion (see docs/capacity.md for the tolerances)."""
    checks = []

    def check(name: str, before: Any, value: Any, limit: Any, ok: bool) -> None:
        checks.append({"check": name, "before": before, "after": value, "limit": limit, "ok": bool(ok)})

    # the baseline is the first sample after the warm-up (players joined, buffers sized);
    # growth is judged on the last sample taken while the players were still playing
    base = samples[baseline_index(samples, args.warmup)] if samples else end
    last = samples[-1] if samples else end
    rss_limit = round(base["rss_mb"] * (1 + args.rss_tolerance) + args.rss_slack_mb, 1)
    check("rss_mb during run", base["rss_mb"], last["rss_mb"], rss_limit, last["rss_mb"] <= rss_limit)
    # each player holds 2-4 connections depending on the moment: allow one per player
    fd_limit = base["fds"] + max(args.fd_tolerance, args.players) + base["fds"] // 10
    check("fds during run", base["fds"], last["fds"], fd_limit, last["fds"] <= fd_limit)
    if base.get("timers") is not None and last.get("timers") is not None:
        # Twisted keeps one idle-timeout timer per open connection: timers move with
        # connections, so they get the same allowance as fds
        t_limit = base["timers"] + max(10, args.players) + base["timers"] // 10
        check("reactor timers during run", base["timers"], last["timers"], t_limit, last["timers"] <= t_limit)
    if last.get("network_log_entries") is not None:
        n_limit = args.players * args.network_log_size
        top = max(s.get("network_log_entries") or 0 for s in samples or [last])
        check("network-log entries bounded", base.get("network_log_entries"), top, n_limit, top <= n_limit)
    check("fleet sessions deleted", None, after.get("fleet_sessions"), 0, after.get("fleet_sessions") == 0)
    if after.get("sessions") is not None and idle.get("sessions") is not None:
        check(
            "daemon sessions back to idle",
            idle["sessions"],
            after["sessions"],
            idle["sessions"],
            after["sessions"] <= idle["sessions"],
        )
    check(
        "fds back to idle",
        idle["fds"],
        after["fds"],
        idle["fds"] + args.fd_tolerance,
        after["fds"] <= idle["fds"] + args.fd_tolerance,
    )
    if idle.get("timers") is not None and after.get("timers") is not None:
        check(
            "reactor timers back to idle",
            idle["timers"],
            after["timers"],
            idle["timers"] + 5,
            after["timers"] <= idle["timers"] + 5,
        )
    if after.get("network_log_entries") is not None and idle.get("network_log_entries") is not None:
        check(
            "network log dropped",
            idle["network_log_entries"],
            after["network_log_entries"],
            idle["network_log_entries"],
            after["network_log_entries"] <= idle["network_log_entries"],
        )
    if args.kernel:
        check(
            "tc classes during run (at most one per capped session)",
            base.get("tc_classes"),
            last.get("tc_classes"),
            args.players,
            last.get("tc_classes") is not None and last["tc_classes"] <= args.players,
        )
        check(
            "tc classes after delete",
            end.get("tc_classes"),
            after.get("tc_classes"),
            0,
            after.get("tc_classes") == 0,
        )
        check(
            "nft rules after delete",
            end.get("nft_rules"),
            after.get("nft_rules"),
            0,
            after.get("nft_rules") == 0,
        )
    return checks
