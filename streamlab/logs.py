"""Log observers for ``twistd --logger``.

``twistd --nodaemon --logger streamlab.logs.json streamlab ...`` writes one JSON object
per line to standard output (journald, ``docker logs``, Loki...)::

    {"time": "2026-11-26T05:40:01.123Z", "level": "info", "namespace": "streamlab.proxy.registry",
     "message": "session 3 on port 30181 removed (deleted)", "sid": "3", "port": 30181}

Keys: ``time`` (UTC, ms), ``level``, ``namespace``, ``message`` (the formatted text),
``traceback`` when the event carries a failure, plus the event's own scalar fields
(str/int/float/bool/None; ``log_*`` internals and other objects are left out).
"""

from __future__ import annotations

import json as _json
import sys
from typing import IO, Any

from twisted.logger import ILogObserver, formatEvent
from zope.interface import implementer

from streamlab.formats import iso_ms

_SCALARS = (str, int, float, bool, type(None))


def event_record(event: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready dict of one twisted.logger event."""
    ts = event.get("log_time")
    level = event.get("log_level")
    record: dict[str, Any] = {
        "time": iso_ms(ts if ts is not None else 0),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:  # noqa: BLE001 - a broken failure must not break logging
            record["traceback"] = repr(failure)
    for key, value in event.items():
        if key.startswith("log_") or key in record or key in ("format", "message", "isError", "system",
                                                                "time", "why", "failure"):
            continue
        if isinstance(value, _SCALARS):
            record[key] = value
    return record


@implementer(ILogObserver)
class JsonLinesObserver:
    """Writes :func:`event_record` of every event as one line of JSON to *out*."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: dict[str, Any]) -> None:
        try:
            line = _json.dumps(event_record(event), ensure_ascii=False, default=str)
        except Exception:  # noqa: BLE001 - never lose an event entirely
            line = _json.dumps({"level": "error", "message": f"unserialisable log event {event!r:.500}"})
        self.out.write(line + "\n")
        self.out.flush()


def json() -> JsonLinesObserver:
    """Observer factory for ``--logger streamlab.logs.json``: JSON lines on stdout.

    twistd redirects ``sys.stdout`` into the log once logging starts, so the observer
    writes to the process's real standard output."""
    return JsonLinesObserver(sys.__stdout__ or sys.stdout)
