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
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

from fleet_manifests import parse_master, parse_media  # noqa: E402
from fleet_players import KINDS  # noqa: E402
from fleet_probe import (  # noqa: E402
    cpu_seconds,
    daemon_gauges,
    find_listener_pid,
    host_cpu,
    kernel_state,
    process_sample,
    runqueue_wait,
)

from streamlab.testing.daemon import Daemon, request  # noqa: E402

DEFAULT_MIX = "ll_hls=1"


# --------------------------------------------------------------------------- pure helpers


def parse_mix(text: str) -> dict[str, float]:
    """``ll_hls=0.7,hls_6s=0.2,dash_6s=0.1`` -> normalised weights (ValueError when bad)."""
    mix: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        kind, _, weight = item.partition("=")
        if kind not in KINDS:
            raise ValueError(f"unknown player kind {kind!r} (known: {', '.join(KINDS)})")
        mix[kind] = float(weight or 1)
    total = sum(mix.values())
    if not mix or total <= 0:
        raise ValueError("empty mix")
    return {k: v / total for k, v in mix.items() if v > 0}


def assign(n: int, mix: dict[str, float]) -> list[str]:
    """*n* player kinds in proportion to *mix* (largest remainder), interleaved so every
    worker gets its share of each kind."""
    exact = {k: n * w for k, w in mix.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    out: list[str] = []
    left = dict(counts)
    while len(out) < n:
        for k in mix:
            if left[k] > 0:
                out.append(k)
                left[k] -= 1
    return out


def parse_pin(text: str) -> tuple[set[int], set[int]]:
    """``0:1`` or ``0:1,2`` -> (CPUs of the daemon, CPUs of the load generator)."""
    daemon, _, gen = text.partition(":")
    cpus = ({int(c) for c in daemon.split(",") if c}, {int(c) for c in gen.split(",") if c})
    if not cpus[0] or not cpus[1]:
        raise ValueError("--pin wants DAEMON_CPUS:GENERATOR_CPUS, e.g. 0:1")
    return cpus


def summary(values: list[float]) -> dict[str, Any]:
    """p50 / p99 / max in milliseconds (nearest rank) and the sample count."""
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    s = sorted(values)

    def rank(q: float) -> float:
        return round(s[min(len(s) - 1, max(0, int(q * len(s) + 0.999999) - 1))] * 1000, 1)

    return {"count": len(s), "p50": rank(0.50), "p99": rank(0.99), "max": round(s[-1] * 1000, 1)}


def worst_seconds(pairs: list[tuple[float, float]], top: int = 3) -> list[dict[str, Any]]:
    """The *top* seconds (by publication time) with the worst p99 lateness: a stall of the
    daemon (or of the box) shows as one second where every player was late at once."""
    by_second: dict[int, list[float]] = {}
    for published, lateness in pairs:
        by_second.setdefault(int(published), []).append(lateness)
    rows = [{"second": sec, **summary(vals)} for sec, vals in by_second.items()]
    rows.sort(key=lambda r: r["p99"] or 0, reverse=True)
    return [
        {
            "at": time.strftime("%H:%M:%S", time.gmtime(r["second"])),
            "items": r["count"],
            "p50": r["p50"],
            "p99": r["p99"],
        }
        for r in rows[:top]
    ]


# --------------------------------------------------------------------------- the daemon under test


class Target:
    """The daemon the fleet plays against: one it started, or one given by URL."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.daemon: Daemon | None = None
        self.workdir: str | None = None
        self.content = args.content
        if args.server:
            main = urllib.parse.urlsplit(args.server)
            boot = urllib.parse.urlsplit(args.bootstrap or "")
            if not boot.port:
                raise SystemExit("--server needs --bootstrap URL (the bootstrap listener)")
            self.host = main.hostname or "127.0.0.1"
            self.port = main.port or 80
            self.bootstrap_port = boot.port
            self.pid = args.pid or find_listener_pid(self.port)
            if self.pid is None:
                raise SystemExit("cannot find the daemon's pid (not local?): pass --pid")
        else:
            from streamlab.testing.fixtures import install_test_item

            _raise_fd_limit()
            self.workdir = tempfile.mkdtemp(prefix="streamlab-fleet-")
            config: dict[str, dict[str, Any]] = {}
            if args.kernel:
                config["shaping"] = {"backend": "auto", "interface": "lo"}
            ports = max(args.players, args.max_players if args.search else 0) + 16
            self.daemon = Daemon(self.workdir, config=config, session_ports=ports)
            install_test_item(self.daemon.media_dir, self.content, source=args.item)
            self.daemon.start()
            assert self.daemon.proc is not None
            self.host, self.port, self.bootstrap_port = (
                "127.0.0.1",
                self.daemon.port,
                self.daemon.bootstrap_port,
            )
            self.pid = self.daemon.proc.pid
            if args.pin:
                os.sched_setaffinity(self.pid, parse_pin(args.pin)[0])

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """JSON API call on the main listener (None on a non-2xx answer)."""
        resp = request(self.port, method, path, body, host=self.host, timeout=30)
        return resp.json() if 200 <= resp.status < 300 and resp.body else None

    def part_target(self) -> float:
        """PART-TARGET of the item's LL playlists (the LL-HLS lateness bound)."""
        master = request(self.port, "GET", f"/go-live/{self.content}/master.m3u8", host=self.host).text
        uri = parse_master(master)[0].uri
        pl = parse_media(request(self.port, "GET", f"/go-live/{self.content}/{uri}", host=self.host).text)
        return pl.part_target or 1.0

    def sessions(self, prefix: str) -> list[dict[str, Any]]:
        """This fleet's sessions (player ids starting with *prefix*)."""
        return [
            s
            for s in (self.api("GET", "/api/sessions") or [])
            if str(s.get("player_id", "")).startswith(prefix)
        ]

    def delete_sessions(self, prefix: str) -> int:
        """DELETE every session of this fleet; returns how many."""
        mine = self.sessions(prefix)
        for s in mine:
            request(self.port, "DELETE", f"/api/session/{s['session_id']}", host=self.host, timeout=30)
        return len(mine)

    def log_problems(self) -> list[str]:
        """Unhandled errors / tracebacks in the log of a daemon this fleet started: the
        first few, each with the lines that follow it."""
        if self.daemon is None:
            return []
        lines = self.daemon.log().splitlines()
        out = []
        for i, line in enumerate(lines):
            if (
                "Unhandled error" in line
                or "Traceback" in line
                and (i == 0 or "Unhandled" not in lines[i - 1])
            ):
                out.append("\n".join(lines[i : i + 25]))
                if len(out) >= 3:
                    break
        return out

    def close(self) -> None:
        """Stop the daemon this fleet started and remove its directory."""
        if self.daemon is not None:
            self.daemon.stop()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------- one fleet run


class Run:
    """One fleet of *n* players: start the workers, measure the window, merge."""

    def __init__(
        self,
        target: Target,
        args: argparse.Namespace,
        n: int,
        prefix: str,
        duration: float,
        preset: dict[str, Any] | None = None,
    ) -> None:
        self.target = target
        self.args = args
        self.n = n
        self.prefix = prefix
        self.duration = duration
        self.preset = preset
        self.mix = parse_mix(args.mix)
        self.procs: list[subprocess.Popen[str]] = []

    def start(self) -> None:
        """Spawn the workers; sets the measurement window (wall clock)."""
        args = self.args
        ramp = args.ramp if args.ramp is not None else min(10.0, 1.0 + self.n * 0.02)
        t0 = time.time() + 0.5
        self.started = t0
        self.ramp_until = t0 + ramp
        self.window = (self.ramp_until + args.settle, self.ramp_until + args.settle + self.duration)
        self.stop_at = self.window[1] + 0.5
        kinds = assign(self.n, self.mix)
        workers = max(1, min(args.workers, self.n))
        for w in range(workers):
            players = [{"id": f"{self.prefix}-{i}", "kind": kinds[i]} for i in range(w, self.n, workers)]
            job = {
                "host": self.target.host,
                "bootstrap_port": self.target.bootstrap_port,
                "api_port": self.target.port,
                "content": self.target.content,
                "players": players,
                "ramp_until": self.ramp_until,
                "window": self.window,
                "stop_at": self.stop_at,
                "rendition": args.rendition,
                "preset": self.preset,
                "seed": w,
            }
            proc = subprocess.Popen(
                [sys.executable, os.path.join(HERE, "fleet_players.py")],
                preexec_fn=functools.partial(os.sched_setaffinity, 0, parse_pin(args.pin)[1])
                if args.pin
                else None,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(job))
            proc.stdin.close()
            proc.stdin = None  # written and closed: communicate() only reads
            self.procs.append(proc)

    def measure(self, on_sample: Any = None, sample_every: float = 2.0) -> dict[str, Any]:
        """Sample the daemon over the window, collect the workers, return the figures."""
        pid = self.target.pid
        _sleep_until(self.window[0])
        cpu0, host0, t0, wait0 = cpu_seconds(pid), host_cpu(), time.time(), runqueue_wait(pid)
        rss_max = 0.0
        samples = []
        while time.time() < self.window[1]:
            sample = process_sample(pid)
            rss_max = max(rss_max, sample["rss_mb"])
            if on_sample is not None:
                samples.append(on_sample())
            _sleep_until(min(self.window[1], time.time() + sample_every))
        cpu1, host1, t1, wait1 = cpu_seconds(pid), host_cpu(), time.time(), runqueue_wait(pid)
        proc_end = process_sample(pid)
        # ready to run but not running: the share of the window a busy box kept it waiting
        proc_end["runqueue_wait_share"] = round((wait1 - wait0) / (t1 - t0), 3)
        gauges = daemon_gauges(self.target.host, self.target.port)
        results = []
        for proc in self.procs:
            try:
                out, _ = proc.communicate(timeout=max(60.0, self.stop_at - time.time() + 60))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            try:
                results.append(json.loads(out.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                results.append(
                    {"errors": {"worker.crashed": 1}, "error_examples": {"worker.crashed": out[-500:]}}
                )
        return self._merge(results, (t0, t1), cpu1 - cpu0, (host0, host1), proc_end, rss_max, gauges, samples)

    def _merge(
        self,
        results: list[dict[str, Any]],
        span: tuple[float, float],
        cpu: float,
        host: tuple[tuple[float, float], tuple[float, float]],
        proc_end: dict[str, Any],
        rss_max: float,
        gauges: dict[str, Any],
        samples: list[Any],
    ) -> dict[str, Any]:
        wall = span[1] - span[0]
        late: dict[str, list[float]] = {}
        serv: dict[str, list[float]] = {}
        requests: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        examples: dict[str, str] = {}
        total_bytes = 0
        worker_cpu = 0.0
        bootstrapped = 0
        early: Counter[str] = Counter()
        behind = 0
        lags: list[float] = []
        published: dict[str, list[tuple[float, float]]] = {}
        for r in results:
            for kind, pairs in r.get("samples", {}).items():
                late.setdefault(kind, []).extend(p[0] for p in pairs)
                serv.setdefault(kind, []).extend(p[1] for p in pairs)
                published.setdefault(kind, []).extend((p[2], p[0]) for p in pairs)
            lags.extend(r.get("loop_lag", []))
            requests.update(r.get("requests", {}))
            errors.update(r.get("errors", {}))
            early.update(r.get("early", {}))
            behind += r.get("parts_skipped_behind_live", 0)
            for k, v in r.get("error_examples", {}).items():
                examples.setdefault(k, v)
            total_bytes += r.get("bytes", 0)
            worker_cpu += r.get("cpu_seconds", 0.0)
            bootstrapped += r.get("bootstrapped", 0)
        busy = (host[1][0] - host[0][0]) / max(1, host[1][1] - host[0][1])
        run_wall = self.stop_at - self.started
        out = {
            "players": self.n,
            "bootstrapped": bootstrapped,
            "mix": {k: round(v, 3) for k, v in self.mix.items()},
            "workers": len(self.procs),
            "window_s": round(wall, 2),
            "lateness_ms": {k: summary(v) for k, v in sorted(late.items())},
            "service_ms": {k: summary(v) for k, v in sorted(serv.items())},
            "errors": {
                "total": sum(errors.values()),
                "by_kind": dict(sorted(errors.items())),
                "examples": examples,
            },
            "requests_per_s": {
                "total": round(sum(requests.values()) / wall, 1),
                "by_kind": {k: round(v / wall, 1) for k, v in sorted(requests.items())},
            },
            "mbit_per_s": round(total_bytes * 8 / wall / 1e6, 2),
            "delivered_before_publication": dict(sorted(early.items())),
            "ll_hls_parts_skipped_behind_live": behind,
            "daemon": {
                "pid": self.target.pid,
                "cpu_share": round(cpu / wall, 3),
                # CPU is what a busy box distorts least: the linear estimate of N at the limit
                "cpu_ms_per_player_s": round(cpu / wall / max(1, self.n) * 1000, 3),
                "players_at_cpu_limit": int(self.args.cpu_limit * self.n / (cpu / wall)) if cpu > 0 else None,
                **proc_end,
                "rss_mb_max": max(rss_max, proc_end["rss_mb"]),
                **gauges,
            },
            "worst_seconds_ms": {k: worst_seconds(v) for k, v in sorted(published.items())},
            "load_generator": {
                "cpu_seconds": round(worker_cpu, 2),
                "cpu_share_avg": round(worker_cpu / max(1.0, run_wall), 3),
                "loop_lag_ms": summary(lags),
            },
            "host": {
                "cpus": os.cpu_count(),
                "busy_share": round(busy, 3),
                "loadavg_1m": float(open("/proc/loadavg").read().split()[0]),
            },
        }
        if samples:
            out["samples"] = samples
        return out


def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def verdict(result: dict[str, Any], part_bound: float, segment_bound: float, cpu_limit: float) -> list[str]:
    """Why a run does not keep up (empty list: it does)."""
    why = []
    if result["errors"]["total"]:
        why.append(f"{result['errors']['total']} errors")
    if result["bootstrapped"] < result["players"]:
        why.append(f"only {result['bootstrapped']} of {result['players']} players got a session")
    for kind in result["mix"]:
        key = "ll_hls.part" if kind == "ll_hls" else f"{kind}.segment"
        lat = result["lateness_ms"].get(key) if kind == "ll_hls" else result["service_ms"].get(key)
        bound = part_bound if kind == "ll_hls" else segment_bound
        if not lat or not lat["count"]:
            why.append(f"no {key} delivered")
        elif lat["p99"] > bound * 1000:
            why.append(f"{key} p99 {lat['p99']} ms > {bound * 1000:g} ms")
    if result.get("ll_hls_parts_skipped_behind_live"):
        why.append(
            f"LL-HLS players fell behind live ({result['ll_hls_parts_skipped_behind_live']} parts skipped)"
        )
    if result["daemon"]["cpu_share"] > cpu_limit:
        why.append(f"daemon CPU {result['daemon']['cpu_share']:.0%} > {cpu_limit:.0%}")
    lag = result["load_generator"]["loop_lag_ms"]["p99"]
    if why and lag is not None and lag > part_bound * 500:
        why.append(f"(the load generator itself was starved: event-loop lag p99 {lag} ms)")
    return why


# --------------------------------------------------------------------------- modes


def run_once(
    target: Target, args: argparse.Namespace, n: int, tag: str, profile: bool = False
) -> dict[str, Any]:
    """One measured fleet of *n* players; its sessions are deleted afterwards."""
    prefix = f"fleet{os.getpid()}{tag}"
    run = Run(target, args, n, prefix, args.duration)
    run.start()
    spy = _start_profiler(target.pid, run) if profile else None
    try:
        result = run.measure()
    finally:
        deleted = target.delete_sessions(prefix)
    result["sessions_deleted"] = deleted
    if spy is not None:
        result["profile"] = _finish_profiler(spy)
    return result


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
    checks = _soak_checks(args, idle, samples, end, after)
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
        "rss_mb_per_hour_after_warmup": rss_slope(samples, args.warmup),
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


def rss_slope(samples: list[dict[str, Any]], warmup: float) -> float | None:
    """Least-squares RSS trend (MB per hour) over the samples after the warm-up."""
    pts = [(s["t"], s["rss_mb"]) for s in samples if samples and s["t"] >= samples[0]["t"] + warmup]
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


def _soak_checks(
    args: argparse.Namespace,
    idle: dict[str, Any],
    samples: list[dict[str, Any]],
    end: dict[str, Any],
    after: dict[str, Any],
) -> list[dict[str, Any]]:
    checks = []

    def check(name: str, before: Any, value: Any, limit: Any, ok: bool) -> None:
        checks.append({"check": name, "before": before, "after": value, "limit": limit, "ok": bool(ok)})

    # the baseline is the first sample after the warm-up (players joined, buffers sized);
    # growth is judged on the last sample taken while the players were still playing
    warm = [s for s in samples if s["t"] >= samples[0]["t"] + args.warmup] if samples else []
    base = warm[0] if warm else (samples[0] if samples else end)
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
            "tc classes during run (one per capped session)",
            base.get("tc_classes"),
            last.get("tc_classes"),
            args.players,
            bool(last.get("tc_classes")) and last["tc_classes"] <= args.players,
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


# --------------------------------------------------------------------------- profiling (py-spy)


def _start_profiler(pid: int, run: Run) -> dict[str, Any] | None:
    spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(spy):
        return {"error": "py-spy not installed (pip install py-spy)"}
    out = tempfile.mktemp(prefix="fleet-pyspy-", suffix=".txt")
    delay = max(0.0, run.window[0] - time.time())
    seconds = max(1, int(run.window[1] - run.window[0]))
    cmd = (
        f"sleep {delay:.2f}; exec {spy} record --pid {pid} --duration {seconds} --rate 200 --format raw "
        f"--nonblocking --output {out}"
    )
    proc = subprocess.Popen(["sh", "-c", cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return {"proc": proc, "out": out, "keep": run.args.profile_raw}


def _finish_profiler(spy: dict[str, Any]) -> dict[str, Any]:
    if "proc" not in spy:
        return spy
    _, err = spy["proc"].communicate(timeout=120)
    try:
        with open(spy["out"]) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return {"error": f"py-spy wrote nothing: {err[-300:]}"}
    finally:
        if spy.get("keep"):
            shutil.copyfile(spy["out"], spy["keep"])
        if os.path.exists(spy["out"]):
            os.unlink(spy["out"])
    return profile_summary(lines)


def profile_summary(lines: list[str], top: int = 20) -> dict[str, Any]:
    """Collapsed stacks (``f1;f2;f3 count``) -> shares of all samples: the functions with
    the most self time, the most inclusive time (the reactor's trunk left out), the
    inclusive time of each source file, and the streamlab functions alone."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    files: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        for f in {f.rpartition(" (")[2].rstrip(")") for f in frames}:
            files[f] += n
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str], keep: Any, k: int = top) -> list[list[Any]]:
        return [[f, round(c / total, 3)] for f, c in counter.most_common() if keep(f, c)][:k]

    def branch(f: str, c: int) -> bool:
        return c < 0.9 * total  # the trunk (twistd, runReactor, mainLoop) is in every sample

    return {
        "samples": total,
        "self": share(self_c, lambda f, c: True),
        "inclusive": share(incl, branch),
        "files": share(files, branch, 25),
        "streamlab": share(incl, lambda f, c: "(streamlab/" in f and branch(f, c), 25),
    }


def _short(frame: str) -> str:
    """``func (path/to/mod.py:12)`` -> ``func (mod.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    if "site-packages" in path:
        short = "/".join(parts[parts.index("site-packages") + 1 :])
    elif "streamlab" in parts:
        short = "/".join(parts[parts.index("streamlab") :])
    else:
        short = parts[-1]
    return f"{name} ({short})"


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
        help="soak with backend=auto in a fresh network namespace: "
        "every session gets a rate cap (an htb class); checks tc classes and nft rules",
    )
    p.add_argument("--kernel-rate", type=float, default=100.0, help="Mbps cap per session with --kernel")
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
