"""One fleet run (bench/fleet.py): the daemon under test, the worker processes, the
measured window, the merged figures and the keeps-up verdict."""

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
    process_sample,
    runqueue_wait,
)
from fleet_profile import finish_profiler, start_profiler  # noqa: E402

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
            # the ring size the soak's bound assumes (players x network_log_size entries)
            config: dict[str, dict[str, Any]] = {
                "sessions": {"network_log_size": str(args.network_log_size)}}
            if args.timeline:
                config["live"] = {"timeline": args.timeline}
            if args.kernel:
                # kernel, not auto: auto shapes a loopback player in userspace (no htb class)
                config["shaping"] = {"backend": "kernel", "interface": "lo"}
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


# --------------------------------------------------------------------------- one measured run


def run_once(
    target: Target, args: argparse.Namespace, n: int, tag: str, profile: bool = False
) -> dict[str, Any]:
    """One measured fleet of *n* players; its sessions are deleted afterwards."""
    prefix = f"fleet{os.getpid()}{tag}"
    run = Run(target, args, n, prefix, args.duration)
    run.start()
    spy = start_profiler(target.pid, run.window, args.profile_raw) if profile else None
    try:
        result = run.measure()
    finally:
        deleted = target.delete_sessions(prefix)
    result["sessions_deleted"] = deleted
    if spy is not None:
        result["profile"] = finish_profiler(spy)
    return result
