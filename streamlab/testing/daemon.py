"""Start a real streamlab daemon (``twistd -n streamlab``) for integration tests and
benchmarks: free ports on 127.0.0.1, media and state in a temporary directory, blocking
HTTP helpers.  Waits by polling ``/api/health`` with a deadline, never by sleeping blind."""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(size: int) -> tuple[int, int]:
    """A range of *size* consecutive ports that are all free right now."""
    for _ in range(200):
        # below Linux's ephemeral range (32768-60999): client sockets in TIME-WAIT there
        # can make whole blocks unbindable when something hammers a local port
        lo = random.randrange(20000, 32700 - size)
        socks = []
        try:
            for p in range(lo, lo + size):
                s = socket.socket()
                socks.append(s)
                # like Twisted's listeners: ports in TIME-WAIT count as free
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
            return lo, lo + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port block")


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, so a killed test
    run never leaves a daemon holding ports (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Response:
    """A finished HTTP response."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self) -> Any:
        """Body decoded as JSON."""
        return json.loads(self.body)

    @property
    def text(self) -> str:
        """Body decoded as UTF-8."""
        return self.body.decode("utf-8")


def request(port: int, method: str, path: str, body: Any = None,
            headers: Mapping[str, str] | None = None, timeout: float = 30.0,
            host: str = "127.0.0.1", context: ssl.SSLContext | None = None) -> Response:
    """One blocking HTTP request (HTTPS with *context*); dict/list bodies are sent as JSON."""
    hdrs = dict(headers or {})
    data: bytes | None
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    else:
        data = body
    conn = (http.client.HTTPConnection(host, port, timeout=timeout) if context is None
            else http.client.HTTPSConnection(host, port, timeout=timeout, context=context))
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, dict(resp.getheaders()), resp.read())
    finally:
        conn.close()


class Daemon:
    """A running daemon.  Use as a context manager or call start()/stop()."""

    def __init__(self, workdir: str, config: Mapping[str, Mapping[str, Any]] | None = None,
                 session_ports: int = 20, twistd_args: Sequence[str] = ()) -> None:
        """*twistd_args* go before the plugin name (e.g. ``--logger streamlab.logs.json``)."""
        self.workdir = workdir
        self.twistd_args = list(twistd_args)
        self.port = free_port()
        self.bootstrap_port = free_port()
        self.session_range = free_port_block(session_ports)
        self.media_dir = os.path.join(workdir, "media")
        self.state_dir = os.path.join(workdir, "state")
        sections: dict[str, dict[str, Any]] = {
            "server": {"listen": f"tcp:{self.port}:interface=127.0.0.1",
                       "bootstrap_listen": f"tcp:{self.bootstrap_port}:interface=127.0.0.1",
                       "session_ports": f"{self.session_range[0]}-{self.session_range[1]}",
                       "session_interface": "127.0.0.1"},
            "paths": {"media_dir": self.media_dir, "state_dir": self.state_dir},
            "shaping": {"backend": "userspace"},
        }
        for section, values in (config or {}).items():
            sections.setdefault(section, {}).update(values)
        self.config_path = os.path.join(workdir, "streamlab.conf")
        with open(self.config_path, "w", encoding="utf-8") as fh:
            for section, values in sections.items():
                fh.write(f"[{section}]\n")
                for k, v in values.items():
                    fh.write(f"{k} = {v}\n")
        self.log_path = os.path.join(workdir, "twistd.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Daemon:
        """Start twistd and wait until /api/health answers."""
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [twistd, "--nodaemon", "--pidfile=", *self.twistd_args, "streamlab",
             "--config", self.config_path],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/api/health", timeout=2).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"daemon did not answer within {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()

    def log(self) -> str:
        """What the daemon printed so far."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Response:
        """HTTP request to the main listener."""
        return request(self.port, method, path, body, **kw)

    def get(self, path: str, **kw: Any) -> Response:
        """GET on the main listener."""
        return self.request("GET", path, **kw)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
