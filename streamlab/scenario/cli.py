"""``streamlab scenario run FILE --server URL --player-id ID [--wait]``: the CI runner.

Standard library only (urllib), so it runs on any CI machine with Python 3.11.  It
validates the scenario on the server, finds or creates the player's session, starts the
run and, with ``--wait``, follows it on the sessions SSE stream until it ends, prints the
step log and the verdict table and exits **0** passed, **1** failed or stopped, **2**
usage, server or run error (docs/scenarios.md "The CI runner").
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any, TextIO

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
SSE_TIMEOUT = 5.0


class CliError(Exception):
    """A usage or server problem: printed, exit 2."""


class Client:
    """A tiny JSON client of the streamlab API."""

    def __init__(self, server: str, token: str | None = None, timeout: float = 30.0) -> None:
        if not server.startswith(("http://", "https://")):
            server = "http://" + server
        self.base = server.rstrip("/")
        self.timeout = timeout
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``(status, parsed JSON or raw text)``; HTTP error statuses are returned, not raised.
        *body* is sent as JSON, or as it is when it is a :class:`Document` (YAML text)."""
        headers = dict(self.headers)
        if isinstance(body, Document):
            data: bytes | None = body.text.encode("utf-8")
            headers["Content-Type"] = body.content_type
        else:
            data = json.dumps(body).encode() if body is not None else None
            if data is not None:
                headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - the user's server
                return resp.status, _decode(resp.read(), resp.headers.get("content-type", ""))
        except urllib.error.HTTPError as exc:
            return exc.code, _decode(exc.read(), exc.headers.get("content-type", "") if exc.headers else "")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(f"cannot reach {self.base}: {reason}") from None

    def events(self, path: str) -> Iterator[dict[str, Any] | None]:
        """Server-sent events of *path* as parsed JSON data; None when nothing came for
        :data:`SSE_TIMEOUT` seconds (the caller checks on the run then)."""
        headers = dict(self.headers, Accept="text/event-stream")
        req = urllib.request.Request(self.base + path, headers=headers)
        try:
            resp = urllib.request.urlopen(req, timeout=SSE_TIMEOUT)  # noqa: S310
        except (urllib.error.URLError, OSError):
            yield None
            return
        with resp:
            data: list[str] = []
            while True:
                try:
                    raw = resp.readline()
                except TimeoutError:
                    yield None
                    continue
                except OSError:
                    yield None
                    return
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                elif not line and data:
                    try:
                        yield json.loads("\n".join(data))
                    except ValueError:
                        pass
                    data = []


def _decode(raw: bytes, ctype: str) -> Any:
    if "json" in ctype:
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw.decode("utf-8", "replace")


def _error_text(status: int, body: Any) -> str:
    if isinstance(body, dict):
        text = str(body.get("error", ""))
        if body.get("detail"):
            text += f": {body['detail']}"
        return f"HTTP {status} {text}".strip()
    return f"HTTP {status} {str(body)[:200]}".strip()


class Document:
    """A scenario sent as text (YAML: the server parses it; the runner needs no YAML library)."""

    def __init__(self, text: str, content_type: str) -> None:
        self.text = text
        self.content_type = content_type


def load_scenario(path: str, stdin: TextIO = sys.stdin) -> Any:
    """The scenario in *path* (``-`` = stdin): parsed JSON, or a YAML :class:`Document`
    for ``.yaml``/``.yml`` files."""
    try:
        if path == "-":
            text = stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if path.lower().endswith((".yaml", ".yml")):
        return Document(text, "application/yaml")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CliError(f"{path} is not JSON (YAML files end in .yaml or .yml): {exc}") from None


def _fmt(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return " ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(_fmt(v) for v in value)
    return str(value)


def log_line(entry: dict[str, Any]) -> str:
    """One run-log entry as a line."""
    step = "-" if entry.get("step") is None else str(entry["step"])
    line = f"{entry.get('t_s', 0):8.1f} s  step {step:>3}  {entry.get('event', ''):<9} " \
        f"{_fmt(entry.get('fields'))}"
    if entry.get("kept"):
        line += f"  (left as the tester set: {_fmt(entry['kept'])})"
    if entry.get("error"):
        line += f"  {entry['error']}"
    return line.rstrip()


def verdict_table(run: dict[str, Any]) -> str:
    """The verdict as a fixed-width table plus a summary line."""
    results = (run.get("verdict") or {}).get("expectations", [])
    rows = [("result", "expectation", "observed", "detail")]
    rows += [("PASS" if r["passed"] else "FAIL", str(r["name"]), _fmt(r.get("observed")),
              str(r.get("detail", ""))) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip() for a, b, c, d in rows]
    passed = sum(1 for r in results if r["passed"])
    state = run.get("state", "?")
    summary = f"scenario {run.get('name', '')!r}: {state.upper()}"
    if results:
        summary += f" ({passed} of {len(results)} expectations passed)"
    if run.get("error"):
        summary += f": {run['error']}"
    return "\n".join([*lines, summary]) if results else summary


def exit_code(run: dict[str, Any]) -> int:
    """0 passed, 1 failed or stopped, 2 error (or still running)."""
    state = run.get("state")
    if state == "passed":
        return EXIT_PASS
    if state in ("failed", "stopped"):
        return EXIT_FAIL
    return EXIT_ERROR


class Runner:
    """One ``scenario run`` invocation."""

    def __init__(self, client: Client, out: TextIO, err: TextIO) -> None:
        self.client = client
        self.out = out
        self.err = err
        self._printed = 0

    def say(self, text: str) -> None:
        """Print a line of progress or result."""
        print(text, file=self.out, flush=True)

    def validate(self, scenario: Any) -> dict[str, Any]:
        """The server's validation answer; every error printed and CliError when invalid."""
        status, body = self.client.call("POST", "/api/scenarios/validate", scenario)
        if status == 400 and isinstance(body, dict) and body.get("errors"):
            for e in body["errors"]:
                print(f"invalid scenario: {e['path'] or '/'}: {e['message']}", file=self.err)
            raise CliError(f"the scenario has {len(body['errors'])} error(s)")
        if status != 200 or not isinstance(body, dict):
            raise CliError(f"validating the scenario: {_error_text(status, body)}")
        return body

    def session(self, player_id: str) -> dict[str, Any]:
        """The session of *player_id* (created when it has none yet)."""
        status, body = self.client.call("POST", "/api/sessions", {"player_id": player_id})
        if status not in (200, 201) or not isinstance(body, dict):
            raise CliError(f"finding the session of {player_id!r}: {_error_text(status, body)}")
        return body

    def start(self, sid: str, scenario: Any) -> dict[str, Any]:
        """Start the run on session *sid*; the run JSON."""
        status, body = self.client.call("POST", f"/api/sessions/{urllib.parse.quote(sid)}/scenario", scenario)
        if status != 201 or not isinstance(body, dict):
            raise CliError(f"starting the run: {_error_text(status, body)}")
        return body

    def fetch(self, sid: str) -> dict[str, Any]:
        """The session's current (last) run."""
        status, body = self.client.call("GET", f"/api/sessions/{urllib.parse.quote(sid)}/scenario")
        if status != 200 or not isinstance(body, dict):
            raise CliError(f"reading the run: {_error_text(status, body)}")
        return body

    def show_log(self, run: dict[str, Any]) -> None:
        """Print the run-log entries not printed yet."""
        entries = run.get("log", [])
        for entry in entries[self._printed:]:
            self.say(log_line(entry))
        self._printed = len(entries)

    def wait(self, sid: str, run: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Follow *run* until it ends (or *timeout* s: then stop it)."""
        deadline = time.monotonic() + timeout
        last_fetch = 0.0
        while run.get("state") == "running":
            for event in self.client.events("/api/sessions/stream"):
                now = time.monotonic()
                if now >= deadline:
                    break
                summary = None
                if isinstance(event, dict):
                    summary = next((s.get("scenario") for s in event.get("sessions", [])
                                    if str(s.get("session_id")) == sid), None)
                    if summary is None and not any(str(s.get("session_id")) == sid
                                                   for s in event.get("sessions", [])):
                        raise CliError(f"session {sid} is gone")
                ended = isinstance(summary, dict) and summary.get("id") == run["id"] \
                    and summary.get("state") != "running"
                if ended or event is None or now - last_fetch >= 1.0:
                    run = self.fetch(sid)
                    last_fetch = now
                    self.show_log(run)
                    if run.get("state") != "running":
                        return run
            if time.monotonic() >= deadline:
                print(f"timed out after {timeout:g} s: stopping the run", file=self.err)
                status, body = self.client.call("DELETE", f"/api/sessions/{urllib.parse.quote(sid)}/scenario")
                if status != 200 or not isinstance(body, dict):
                    raise CliError(f"stopping the run: {_error_text(status, body)}")
                self.show_log(body)
                return body
            run = self.fetch(sid)  # the stream ended: look again, then reconnect
            self.show_log(run)
        return run


def run_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``scenario run``."""
    client = Client(args.server, args.token or os.environ.get("STREAMLAB_TOKEN"))
    runner = Runner(client, out, err)
    scenario = load_scenario(args.file)
    checked = runner.validate(scenario)
    session = runner.session(args.player_id)
    sid = str(session["session_id"])
    run = runner.start(sid, scenario)
    runner.say(f"session {sid} (port {session.get('x_forwarded_port_external', '?')}): run {run['id']} "
               f"{run['name']!r} started, {checked.get('duration_s', run.get('duration_s'))} s")
    runner.show_log(run)
    if not args.wait:
        return EXIT_PASS
    timeout = args.timeout if args.timeout is not None else float(run.get("duration_s") or 0) + 60.0
    run = runner.wait(sid, run, timeout)
    runner.say(verdict_table(run))
    if args.junit:
        status, xml = client.call("GET", f"/api/sessions/{urllib.parse.quote(sid)}/scenario/report.xml")
        if status != 200:
            raise CliError(f"fetching the JUnit report: {_error_text(status, xml)}")
        with open(args.junit, "w", encoding="utf-8") as fh:
            fh.write(xml if isinstance(xml, str) else json.dumps(xml))
        runner.say(f"JUnit report: {args.junit}")
    return exit_code(run)


def validate_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``scenario validate``."""
    runner = Runner(Client(args.server, args.token or os.environ.get("STREAMLAB_TOKEN")), out, err)
    checked = runner.validate(load_scenario(args.file))
    runner.say(f"valid: {checked['name']!r}, {checked['duration_s']:g} s, {len(checked['steps'])} steps")
    return EXIT_PASS


def parser() -> argparse.ArgumentParser:
    """The ``streamlab scenario`` command line."""
    top = argparse.ArgumentParser(prog="streamlab scenario",
                                  description="Run streamlab scenarios (CI runner).")
    sub = top.add_subparsers(dest="command", required=True)
    for name, helptext in (("run", "start a scenario on a player's session (and wait for the verdict)"),
                           ("validate", "check a scenario on the server, print every error")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("file", metavar="FILE", help="the scenario (JSON; - for stdin)")
        p.add_argument("--server", required=True, metavar="URL", help="the daemon, e.g. http://lab:30000")
        p.add_argument("--token", metavar="USER:PASSWORD", help="HTTP Basic credentials (or STREAMLAB_TOKEN)")
        if name == "run":
            p.add_argument("--player-id", required=True, metavar="ID", help="the player's id (its session)")
            p.add_argument("--wait", action="store_true", help="follow the run and exit with its verdict")
            p.add_argument("--timeout", type=float, metavar="S",
                           help="with --wait: stop the run after S s (default: its duration + 60)")
            p.add_argument("--junit", metavar="PATH", help="with --wait: write the JUnit XML report here")
    return top


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Entry point: ``streamlab scenario ...`` and ``python -m streamlab.scenario ...``."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, usage errors 2
        return int(exc.code or 0)
    try:
        if args.command == "validate":
            return validate_command(args, out, err)
        return run_command(args, out, err)
    except CliError as exc:
        print(f"streamlab scenario: {exc}", file=err)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
