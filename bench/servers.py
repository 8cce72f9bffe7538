"""Servers side by side in one run (issue #14): nginx, ``twistd web``, the streamlab main
port, a streamlab session port and mitmdump (reverse proxy in front of that nginx), all
serving the same bytes on loopback, measured with wrk.

    .venv/bin/python bench/servers.py [--seconds 3] [--rounds 3] [--connections 8] [--threads 1] [--mb 2]

Per server: MB/s of a complete *--mb* MiB segment (body bytes: requests/s x size) and
requests/s of the test item's LL-HLS media playlist, each with wrk's p50/p99 latency; the
median of *--rounds* rounds, interleaved (every server once per round, the order rotated)
so the box's noise spreads evenly.  The daemon is started here (``Daemon``, enlarged
segments as in bench/proxy.py); nginx (1 worker, sendfile on) and ``twistd web --path``
serve static copies of the exact bytes fetched once from the main port; mitmdump sits in
front of the nginx.  Tools: ``make bench-tools`` (wrk, nginx-light, mitmproxy in
build/bench-tools).  A missing tool is a row saying so.  Prints a table, then one JSON
document; never fails on speed.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from proxy import _enlarge_segments, complete_segment  # noqa: E402

from streamlab.testing.daemon import Daemon, _die_with_parent, free_port, request  # noqa: E402
from streamlab.testing.fixtures import install_test_item  # noqa: E402

LL_PLAYLIST = "/go-live/testclip/playlist_360p.m3u8"
STATIC_SEGMENT, STATIC_PLAYLIST = "/segment.m4s", "/playlist.m3u8"
HOW_TO_GET = "not installed: `make bench-tools`"
NGINX_CONF = """worker_processes 1;
error_log {d}/error.log;
pid {d}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    tcp_nopush on;
    access_log {d}/access.log;
    types {{ application/vnd.apple.mpegurl m3u8; video/iso.segment m4s; }}
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


@dataclass
class Row:
    """One server: where to reach it, or why it has no figures."""

    name: str
    port: int = 0
    segment: Callable[[], str] = lambda: STATIC_SEGMENT
    playlist: str = STATIC_PLAYLIST
    missing: str = ""
    runs: dict[str, list[dict[str, float]]] = field(default_factory=lambda: {"segment": [], "playlist": []})
    same_segment_bytes: bool | None = None


def tool(name: str, *extra: str) -> str | None:
    """An executable from PATH, else the first of *extra* paths that exists."""
    return shutil.which(name) or next((p for p in extra if os.access(p, os.X_OK)), None)


def spawn(stack: ExitStack, cmd: list[str], log_path: str) -> subprocess.Popen[bytes]:
    """Start *cmd* in its own session (dies with us), stopped when *stack* closes."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)
    stack.callback(stop, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_ready(proc: subprocess.Popen[bytes] | None, port: int, path: str, log_path: str = "",
               timeout: float = 30.0) -> None:
    """Poll GET *path* until 200; raise with the log's tail when the process exits or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if request(port, "GET", path, timeout=2).status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    tail = pathlib.Path(log_path).read_text(errors="replace")[-400:] if log_path else ""
    raise RuntimeError(f"not serving {path} on :{port} {tail.strip()}")


def start_static(stack: ExitStack, row: Row, cmd: Callable[[int], list[str]], work: str) -> None:
    """Start a server that listens on *row*'s new port; a failure is the row's note."""
    row.port = free_port()
    log_path = os.path.join(work, row.name.split()[0] + ".log")
    try:
        wait_ready(spawn(stack, cmd(row.port), log_path), row.port, STATIC_PLAYLIST, log_path)
    except (OSError, RuntimeError) as exc:
        row.missing = f"did not start: {exc}"


def nginx_cmd(nginx: str, work: str, root: str) -> Callable[[int], list[str]]:
    def cmd(port: int) -> list[str]:
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as fh:
            fh.write(NGINX_CONF.format(d=work, port=port, root=root))
        return [nginx, "-p", work, "-e", os.path.join(work, "error.log"), "-c", conf, "-g", "daemon off;"]
    return cmd


def streamlab_rows(stack: ExitStack, work: str, mb: int) -> tuple[Row, Row, bytes, bytes]:
    """Start the daemon with enlarged segments, open a session port, capture the bytes."""
    os.makedirs(os.path.join(work, "daemon"))
    d = Daemon(os.path.join(work, "daemon"), session_ports=4)
    _enlarge_segments(install_test_item(d.media_dir), mb)
    d.start()
    stack.callback(d.stop)
    wait_ready(None, d.port, complete_segment())
    session = d.request("POST", "/api/sessions", {"player_id": "bench-servers"}).json()
    main = Row("streamlab main port", d.port, complete_segment, LL_PLAYLIST)
    sess = Row("streamlab session port", int(session["x_forwarded_port"]), complete_segment, LL_PLAYLIST)
    return main, sess, d.get(complete_segment()).body, d.get(LL_PLAYLIST).body


_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/sec, p50/p99 latency (ms) and errors (socket errors + non-2xx/3xx)."""
    out: dict[str, float] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", text):
        out["req_s"] = float(m[1])
    for pct in ("50", "99"):
        if m := re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M):
            out[f"p{pct}_ms"] = round(float(m[1]) * _MS[m[2]], 3)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["errors"] = errors + (int(m[1]) if m else 0)
    return out


def run_wrk(wrk: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [wrk, "-t", str(args.threads), "-c", str(args.connections), "-d", f"{args.seconds}s",
           "--timeout", "10s", "--latency", url]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.seconds + 60)
    except subprocess.TimeoutExpired:
        return {"errors": -1}
    return parse_wrk(done.stdout)


def summary(runs: list[dict[str, float]], size: int) -> dict[str, Any]:
    """The median round (by requests/s) with every round's figures."""
    ok = sorted((r for r in runs if "req_s" in r), key=lambda r: r["req_s"])
    if not ok:
        return {"rounds": runs}
    mid = ok[len(ok) // 2]
    return {**mid, "mb_s": round(mid["req_s"] * size / 1e6, 1), "rounds": runs}


def cell(s: dict[str, Any], key: str, fmt: str) -> str:
    if key not in s:
        return f"{'no figures':>27}"
    return f"{s[key]:{fmt}} {s.get('p50_ms', 0):7.2f} /{s.get('p99_ms', 0):7.2f}"


def measure(rows: list[Row], wrk: str, args: argparse.Namespace, seg_hash: str) -> None:
    live = [r for r in rows if not r.missing]
    for row in live:
        body = request(row.port, "GET", row.segment()).body
        row.same_segment_bytes = hashlib.sha256(body).hexdigest() == seg_hash
    for n in range(args.rounds):
        for row in live[n % len(live):] + live[:n % len(live)]:
            for kind, path in (("segment", row.segment()), ("playlist", row.playlist)):
                row.runs[kind].append(run_wrk(wrk, f"http://127.0.0.1:{row.port}{path}", args))


def report(rows: list[Row], args: argparse.Namespace, sizes: tuple[int, int], when: str) -> None:
    print(f"\nwrk: {args.connections} connections, {args.threads} thread(s), {args.seconds} s each, "
          f"median of {args.rounds} interleaved rounds; segment {sizes[0]:,} B, playlist {sizes[1]:,} B")
    print(f"{'server':<34}{'segment MB/s  p50 / p99 ms':>29}{'playlist req/s  p50 / p99 ms':>31}")
    doc_rows = []
    for row in rows:
        seg, pl = summary(row.runs["segment"], sizes[0]), summary(row.runs["playlist"], sizes[1])
        line = row.missing or f"{cell(seg, 'mb_s', '10.1f')}  {cell(pl, 'req_s', '10.0f')}"
        flag = "  (segment bytes differ!)" if row.same_segment_bytes is False else ""
        print(f"{row.name:<34}{line}{flag}")
        doc_rows.append({"server": row.name, "missing": row.missing or None, "segment": seg,
                         "playlist": pl, "same_segment_bytes": row.same_segment_bytes})
    doc = {"bench": "servers", "when": when, "cpus": os.cpu_count(),
           "loadavg_end": [round(x, 2) for x in os.getloadavg()],
           "wrk": {"connections": args.connections, "threads": args.threads, "seconds": args.seconds,
                   "rounds": args.rounds},
           "segment_bytes": sizes[0], "playlist_bytes": sizes[1], "rows": doc_rows}
    print(json.dumps(doc, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=3, help="length of one wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median counts)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (2 cores: the server has the other)")
    ap.add_argument("--mb", type=int, default=2, help="segment size in MiB")
    args = ap.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    when = f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, load average {load}"
    print(f"bench/servers.py {when}")
    bench_bin = os.path.join(ROOT, "build", "bench-tools", "bin")
    wrk, nginx = tool("wrk"), tool("nginx", "/usr/sbin/nginx")
    mitmdump = tool("mitmdump", os.path.join(bench_bin, "mitmdump"))
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    nginx_row = Row("nginx (1 worker, sendfile)", missing="" if nginx else f"nginx {HOW_TO_GET}")
    twistd_row = Row("twistd web --path")
    mitm_row = Row("mitmdump reverse -> nginx", missing="" if mitmdump else
                   f"mitmdump {HOW_TO_GET} (build/bench-tools/bin/mitmdump)")
    with tempfile.TemporaryDirectory() as work, ExitStack() as stack:
        os.chmod(work, 0o755)  # nginx's worker runs as nobody when we are root
        main_row, sess_row, segment, playlist = streamlab_rows(stack, work, args.mb)
        rows = [nginx_row, twistd_row, main_row, sess_row, mitm_row]
        root = os.path.join(work, "static")
        os.makedirs(root)
        for path, data in ((STATIC_SEGMENT, segment), (STATIC_PLAYLIST, playlist)):
            with open(root + path, "wb") as fh:
                fh.write(data)
        if nginx:
            start_static(stack, nginx_row, nginx_cmd(nginx, work, root), work)
        start_static(stack, twistd_row, lambda port: [
            twistd, "--nodaemon", "--pidfile=", "--logfile", os.path.join(work, "twistd-web.log"),
            "web", "--listen", f"tcp:{port}:interface=127.0.0.1", "--path", root], work)
        if mitmdump and nginx_row.missing:
            mitm_row.missing = "needs the nginx row"
        elif mitmdump:
            start_static(stack, mitm_row, lambda port: [
                mitmdump, "-q", "--mode", f"reverse:http://127.0.0.1:{nginx_row.port}",
                "--listen-host", "127.0.0.1", "--listen-port", str(port),
                "--set", f"confdir={os.path.join(work, 'mitmproxy')}"], work)
        if wrk is None:
            for row in rows:
                row.missing = row.missing or f"wrk {HOW_TO_GET}"
        else:
            measure(rows, wrk, args, hashlib.sha256(segment).hexdigest())
    report(rows, args, (len(segment), len(playlist)), when)
    return 0


if __name__ == "__main__":
    sys.exit(main())
