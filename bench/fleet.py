"""Player fleet: N simulated players against one streamlab daemon, figures as JSON.

Each player bootstraps onto its own session port (bootstrap listener, ``player_id`` ->
302) and behaves like a real one (bench/fleet_players.py: LL-HLS blocking reloads and
preload hints, 6 s / 2 s HLS polling, 6 s DASH at availability times).  The players run
in ``--workers`` separate processes so they do not share the daemon's interpreter.

    .venv/bin/python bench/fleet.py                        # 20 LL-HLS players, 10 s, own daemon
    .venv/bin/python bench/fleet.py --players 100 --mix ll_hls=0.7,hls_6s=0.2,dash_6s=0.1
    .venv/bin/python bench/fleet.py --search --mix ll_hls=1          # largest N that keeps up
    .venv/bin/python bench/fleet.py --soak 3600 --players 100       # leak check (exit 1 on a leak)
    .venv/bin/python bench/fleet.py --soak 600 --kernel             # ... with tc/nft in a netns
    .venv/bin/python bench/fleet.py --server http://box:30000 --bootstrap http://box:30081

Reported (docs/capacity.md): lateness (last byte arrived - publication on the live clock)
and service (arrival - max(publication, when the player asked)) p50/p99 per item kind,
errors by kind, requests/s, the daemon's CPU (utime+stime from /proc as a share of one
core over the measured window), RSS, open fds, threads and the gauges it exposes.
Never fails on speed; ``--soak`` exits 1 only on a leak.

This file is the command line and ``--search``; the rest lives beside it:
``fleet_run`` (the daemon under test, one measured run, its verdict), ``fleet_players``
(the players and the worker process), ``fleet_http`` (the keep-alive client),
``fleet_manifests`` (playlist / MPD parsing with live-clock times), ``fleet_probe``
(/proc, /metrics, /debug, tc, nft), ``fleet_soak`` (leak checks), ``fleet_profile``
(py-spy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from fleet_run import DEFAULT_MIX, KINDS, Target, parse_mix, run_once, verdict  # noqa: E402
from fleet_soak import soak  # noqa: E402

# --------------------------------------------------------------------------- modes


def search(target: Target, args: argparse.Namespace, part_bound: float) -> dict[str, Any]:
    """Largest N that keeps up: double until a run fails, then bisect."""
    steps = []
    best: dict[str, Any] | None = None
    lo, hi = 0, None
    n = args.players
    while True:
        for attempt in range(1 + args.retries):  # a busy box stalls now and then: retry a failure
            result = run_once(target, args, n, f"s{len(steps)}a{attempt}")
            why = verdict(result, part_bound, args.segment_bound, args.cpu_limit)
            steps.append({"players": n, "ok": not why, "why": why, "result": result})
            step = {
                "search_step": n,
                "attempt": attempt,
                "ok": not why,
                "why": why,
                "cpu_share": result["daemon"]["cpu_share"],
                "players_at_cpu_limit": result["daemon"]["players_at_cpu_limit"],
                "lateness_ms": result["lateness_ms"],
                "service_ms": result["service_ms"],
                "loop_lag_ms": result["load_generator"]["loop_lag_ms"],
            }
            print(json.dumps(step), file=sys.stderr, flush=True)
            if not why:
                break
        if not why:
            lo, best = n, result
        else:
            hi = n
        if hi is None:
            if n >= args.max_players:
                break
            n = min(args.max_players, n * 2)
        else:
            if hi - lo <= max(args.precision, int(lo * 0.1)):
                break
            n = (lo + hi) // 2
            if n <= 0:
                break
    return {
        "mode": "search",
        "largest_ok": lo,
        "first_failing": hi,
        "capped": hi is None,
        "bounds": {
            "ll_hls_part_p99_ms": part_bound * 1000,
            "segment_service_p99_ms": args.segment_bound * 1000,
            "daemon_cpu_share": args.cpu_limit,
        },
        "steps": [
            {
                "players": s["players"],
                "ok": s["ok"],
                "why": s["why"],
                "players_at_cpu_limit": s["result"]["daemon"]["players_at_cpu_limit"],
            }
            for s in steps
        ],
        "best": best,
    }


# --------------------------------------------------------------------------- network namespace


def _in_netns(argv: list[str]) -> int | None:
    """``--kernel``: re-run this command inside a fresh network namespace (deleted after).
    Returns the exit code, or None when already inside one.  Prints a skip when the
    namespace cannot be made (not root, no ip/nft/tc)."""
    if os.environ.get("FLEET_NETNS"):
        return None
    missing = [t for t in ("ip", "nft", "tc") if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        print(
            json.dumps(
                {
                    "mode": "soak",
                    "skipped": f"--kernel needs root and ip, nft, tc"
                    f"{' (missing: ' + ', '.join(missing) + ')' if missing else ' (not root)'}",
                }
            )
        )
        return 0
    name = f"fleet{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        print(
            json.dumps(
                {"mode": "soak", "skipped": f"cannot create a network namespace: {made.stderr.strip()}"}
            )
        )
        return 0
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, FLEET_NETNS=name)
        return subprocess.call(["ip", "netns", "exec", name, sys.executable, *argv], env=env)
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--players",
        "-n",
        type=int,
        default=None,
        help="players (default 20; 100 with --soak; the first N tried with --search)",
    )
    p.add_argument(
        "--mix",
        default=DEFAULT_MIX,
        help=f"kinds and weights, e.g. ll_hls=0.7,hls_6s=0.2,dash_6s=0.1 "
        f"(kinds: {', '.join(KINDS)}; default {DEFAULT_MIX})",
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
    p.add_argument(
        "--ramp",
        type=float,
        default=None,
        help="seconds over which players join (default 1 + 0.02 s per player, at most 10)",
    )
    p.add_argument("--settle", type=float, default=3.0, help="seconds after the ramp before measuring")
    p.add_argument("--workers", type=int, default=2, help="load-generator processes (default 2)")
    p.add_argument(
        "--pin",
        help="DAEMON_CPUS:GENERATOR_CPUS, e.g. 0:1: keep the players off the daemon's core (own daemon only)",
    )
    p.add_argument("--rendition", default="highest", help="highest | lowest | a rung id such as 180p")
    p.add_argument("--content", default="testclip", help="content item (own daemon: the cached test item)")
    p.add_argument(
        "--item", help="own daemon: copy this content item directory (default: build the test item)"
    )
    p.add_argument("--server", help="main listener URL of a running daemon, e.g. http://127.0.0.1:30000")
    p.add_argument("--bootstrap", help="bootstrap listener URL of that daemon, e.g. http://127.0.0.1:30081")
    p.add_argument("--pid", type=int, help="pid of that daemon (default: found from the listening port)")
    p.add_argument("--search", action="store_true", help="find the largest N that keeps up")
    p.add_argument("--max-players", type=int, default=600, help="upper limit of --search (default 600)")
    p.add_argument(
        "--retries", type=int, default=1, help="--search re-runs a failing step this often (default 1)"
    )
    p.add_argument("--precision", type=int, default=10, help="--search stops when the bracket is this narrow")
    p.add_argument(
        "--segment-bound",
        type=float,
        default=1.0,
        help="HLS/DASH segment service p99 bound in seconds for --search (default 1.0)",
    )
    p.add_argument("--cpu-limit", type=float, default=0.70, help="daemon CPU share bound for --search (0.70)")
    p.add_argument(
        "--profile", action="store_true", help="py-spy the daemon during the window (summary in JSON)"
    )
    p.add_argument(
        "--profile-raw", metavar="FILE", help="with --profile: also keep py-spy's collapsed stacks in FILE"
    )
    p.add_argument("--soak", type=float, default=None, metavar="SECONDS", help="leak check for SECONDS")
    p.add_argument("--sample-every", type=float, default=10.0, help="soak sampling period (s)")
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="soak: seconds of the window before the baseline (default: a quarter of the soak, at most 60)",
    )
    p.add_argument("--rss-tolerance", type=float, default=0.10, help="soak: RSS may grow by this share ...")
    p.add_argument("--rss-slack-mb", type=float, default=20.0, help="... plus this many MB (default 20)")
    p.add_argument(
        "--fd-tolerance",
        type=int,
        default=8,
        help="soak: extra fds tolerated (during the run: at least one per player, plus 10%%)",
    )
    p.add_argument("--network-log-size", type=int, default=200, help="the daemon's network_log_size")
    p.add_argument(
        "--kernel",
        action="store_true",
        help="soak with backend=kernel on lo in a fresh network namespace: "
        "every session gets a rate cap (an htb class); checks tc classes and nft rules",
    )
    p.add_argument("--kernel-rate", type=float, default=100.0, help="Mbps cap per session with --kernel")
    p.add_argument(
        "--timeline",
        choices=("continuous", "discontinuity"),
        help="own daemon: its [live] timeline (default: the daemon's default, continuous)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the fleet; print one JSON document on stdout."""
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    if args.players is None:
        args.players = 100 if args.soak else 20
    if args.kernel:
        if args.server:
            raise SystemExit("--kernel starts its own daemon inside a namespace; drop --server")
        code = _in_netns([os.path.abspath(__file__), *raw])
        if code is not None:
            return code
    if args.warmup is None and args.soak:
        args.warmup = min(60.0, args.soak / 4)
    parse_mix(args.mix)
    target = Target(args)
    leak = False
    try:
        part_bound = target.part_target()
        if args.soak:
            report, leak = soak(target, args)
        elif args.search:
            report = search(target, args, part_bound)
        else:
            result = run_once(target, args, args.players, "r", profile=args.profile)
            report = {
                "mode": "run",
                **result,
                "keeps_up": not verdict(result, part_bound, args.segment_bound, args.cpu_limit),
                "why_not": verdict(result, part_bound, args.segment_bound, args.cpu_limit),
            }
        report["daemon_log_problems"] = target.log_problems()
        report["target"] = {
            "own_daemon": target.daemon is not None,
            "content": target.content,
            "part_target_s": part_bound,
        }
    finally:
        target.close()
    print(json.dumps(report, indent=1))
    return 1 if leak else 0


if __name__ == "__main__":
    sys.exit(main())
