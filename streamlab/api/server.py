"""``/api/health`` and ``/api/version``."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

import streamlab
import twisted
from streamlab.api import errors
from streamlab.api.jsonio import respond


def _git_commit() -> str:
    """The checkout's commit, read once at start (empty when not a checkout)."""
    top = Path(__file__).resolve().parents[2]
    if not (top / ".git").exists():
        return ""
    try:
        out = subprocess.run(["git", "-C", str(top), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


COMMIT = _git_commit()


def version_info() -> dict[str, str]:
    """What ``/api/version`` answers."""
    return {"version": streamlab.__version__, "commit": COMMIT,
            "python": platform.python_version(), "twisted": twisted.__version__}


class ServerApi:
    """Liveness and build identity."""

    app = Klein()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._started = clock.seconds()

    @app.route("/health", methods=["GET"])
    def health(self, request: IRequest) -> bytes:
        """``{"status":"ok","uptime_s":...}``."""
        body: dict[str, Any] = {"status": "ok",
                                "uptime_s": round(self._clock.seconds() - self._started, 3),
                                "version": streamlab.__version__}
        return respond(request, body)

    @app.route("/version", methods=["GET"])
    def version(self, request: IRequest) -> bytes:
        """Version, commit, Python and Twisted versions."""
        return respond(request, version_info())

    errors.install(app)
