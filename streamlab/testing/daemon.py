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
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

#: Lines that mean the daemon hit a bug: the integration fixtures fail a test module
#: whose daemon logged one (tests/integration/conftest.py).
LOG_PROBLEM_MARKERS = ("Unhandled error", "Traceback")

#: Known problems owned by another change in flight: (exact message, why it is tolerated).
#: Keep each entry narrow (the exact text) and remove it with the fix.
KNOWN_LOG_PROBLEMS: list[tuple[str, str]] = []


def log_problems(text: str, allow: Sequence[tuple[str, str]] | None = None, context: int = 60) -> list[str]:
    """The blocks of a daemon log that show a bug: each line with a marker of
    :data:`LOG_PROBLEM_MARKERS` and up to *context* following lines (the traceback), minus
    blocks that contain an allow-listed message (default :data:`KNOWN_LOG_PROBLEMS`)."""
    allow = KNOWN_LOG_PROBLEMS if allow is None else allow
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        if any(marker.lower() in lines[i].lower() for marker in LOG_PROBLEM_MARKERS):
            end = i + 1
            # a traceback's lines are indented or continue it; stop at the next log line
            while end < len(lines) and end - i <= context and not _new_log_line(lines[end]):
                end += 1
            block = "\n".join(lines[i:end])
            if not any(message in block for message, _why in allow):
                out.append(block)
            i = end
        else:
            i += 1
    return out


def _new_log_line(line: str) -> bool:
    """True for a line that starts another twistd log record (``2026-...+0000 [ns] message``);
    a record with an empty message or a ``Traceback`` line still belongs to the block."""
    if not (len(line) > 20 and line[:4].isdecimal() and line[4] == "-" and "[" in line[:40]):
        return False
    message = line.split("] ", 1)[1].strip() if "] " in line else ""
    return bool(message) and not message.startswith("Traceback")


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


_CLONE_NEWNET = 0x40000000


def ns_socket(netns: str | None = None, family: int = socket.AF_INET,
              kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside network namespace *netns* (None: this process's own).

    A namespace is a property of the thread that creates a socket, and the socket keeps
    it: a short-lived thread enters the namespace (``setns``), makes the socket, and ends.
    """
    if not netns:
        return socket.socket(family, kind)
    out: dict[str, Any] = {}

    def make() -> None:
        import ctypes

        fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            out["sock"] = socket.socket(family, kind)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=make)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["sock"]


def ns_connect(host: str, port: int, netns: str | None = None, timeout: float | None = 30.0,
               rcvbuf: int | None = None) -> socket.socket:
    """A TCP connection to *host*:*port* made from inside *netns*."""
    sock = ns_socket(netns)
    try:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


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
            host: str = "127.0.0.1", context: ssl.SSLContext | None = None,
            netns: str | None = None) -> Response:
    """One blocking HTTP request (HTTPS with *context*, from inside *netns* when given);
    dict/list bodies are sent as JSON."""
    hdrs = dict(headers or {})
    data: bytes | None
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    else:
        data = body
    conn = (http.client.HTTPConnection(host, port, timeout=timeout) if context is None
            else http.client.HTTPSConnection(host, port, timeout=timeout, context=context))
    if netns:
        conn._create_connection = (  # type: ignore[attr-defined]
            lambda address, timeout_, source=None: ns_connect(address[0], address[1], netns, timeout_))
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, dict(resp.getheaders()), resp.read())
    finally:
        conn.close()


class Daemon:
    """A running daemon.  Use as a context manager or call start()/stop()."""

    #: Every daemon started in this process, in order (the log check of the fixtures).
    started: ClassVar[list[Daemon]] = []

    def __init__(self, workdir: str, config: Mapping[str, Mapping[str, Any]] | None = None,
                 session_ports: int = 20, twistd_args: Sequence[str] = (), netns: str | None = None,
                 context: ssl.SSLContext | None = None) -> None:
        """*twistd_args* go before the plugin name (e.g. ``--logger streamlab.logs.json``);
        *netns* runs the daemon inside that network namespace (its API is then reached
        from inside it too); *context* speaks HTTPS to it (``tls = auto|files``)."""
        self.workdir = workdir
        self.netns = netns
        self.context = context
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
        self.tls = str(sections["server"].get("tls", "off")) == "auto"
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
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*prefix, twistd, "--nodaemon", "--pidfile=", *self.twistd_args, "streamlab",
             "--config", self.config_path],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        Daemon.started.append(self)
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

    def log_problems(self) -> list[str]:
        """The log blocks showing a bug (``Unhandled error``, ``Traceback``), see
        :func:`log_problems`."""
        return log_problems(self.log())

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Response:
        """HTTP request to the main listener."""
        if self.netns:
            kw.setdefault("netns", self.netns)
        context = self.tls_context()
        if context is not None:
            kw.setdefault("context", context)
        return request(self.port, method, path, body, **kw)

    @property
    def cert_path(self) -> str:
        """Where ``tls = auto`` writes the daemon's certificate."""
        return os.path.join(self.state_dir, "tls", "cert.pem")

    def tls_context(self) -> ssl.SSLContext | None:
        """The client context for a ``tls = auto`` daemon, trusting only its generated
        certificate (None for plain HTTP)."""
        if self.context is None and self.tls:
            if not os.path.exists(self.cert_path):
                raise ConnectionRefusedError("no certificate yet")
            self.context = ssl.create_default_context(cafile=self.cert_path)
        return self.context

    def get(self, path: str, **kw: Any) -> Response:
        """GET on the main listener."""
        return self.request("GET", path, **kw)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
