"""Property-based API fuzzing of a real daemon from its own OpenAPI document (schemathesis,
issue #17 item 7).

Every operation of ``/api/openapi.json`` gets ``FUZZ_EXAMPLES`` generated requests that
follow the published schemas and ``FUZZ_EXAMPLES`` that violate them (Hypothesis,
derandomized so a run is reproducible): path parameters, query strings and bodies; every
other request aims its path parameters at things that exist (a session, its port, its
group, the test item).  Each answer must

* not be a 5xx,
* carry a status the document declares (every operation declares ``default``: the JSON
  error body) and the content type it declares,
* match the declared body schema (success bodies and the JSON error body alike),

and afterwards the daemon log must hold no traceback.  The figures (operations, requests,
status classes, failures) are printed; ``FUZZ_EXAMPLES`` (environment) raises the budget
for a longer local run.

Left out, and why: event streams (``text/event-stream``: they never end),
``POST /api/setup/seed`` (synthesises and encodes the demo clip: minutes of CPU, tested
in test_setup_api.py).
"""

from __future__ import annotations

import collections
import json
import os
import time
from typing import Any

import pytest

from tests.integration.sessions_helpers import serving

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis import checks as st_checks  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402

from streamlab.testing.daemon import Daemon  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
SKIP = {("POST", "/api/setup/seed")}
CHECKS = [st_checks.not_a_server_error, st_checks.status_code_conformance,
          st_checks.content_type_conformance, st_checks.response_schema_conformance]
NEGATIVE_CHECKS = [st_checks.negative_data_rejection]  # schema-violating input is a 4xx
# The legacy shaping doors take the first of several spellings present and ignore the
# others (and unknown keys): a violation in an ignored key is not refused.  Their
# schema-violating requests are still checked for 5xx, status, content type and schema.
LENIENT = {"/api/nftables/bandwidth/{port}", "/api/nftables/loss/{port}", "/api/nftables/shape/{port}",
           "/api/nftables/pattern/{port}"}


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    # POST /api/sessions may create a session per example: enough ports that none runs out
    daemon = Daemon(str(tmp_path_factory.mktemp("ops-fuzz")), session_ports=FUZZ_EXAMPLES + 24,
                    config={"server": {"max_sessions_per_client_ip": 0}})
    with serving(daemon):
        yield daemon


def _streams(operation: Any) -> bool:
    for _code, answer in (operation.definition.raw.get("responses") or {}).items():
        if isinstance(answer, dict) and "text/event-stream" in (answer.get("content") or {}):
            return True
    return False


def _fresh_targets(d: Daemon) -> dict[str, Any]:
    """A clean slate for the next operation (no sessions left by the previous one's
    random creations) and real values for path parameters: a session, its port, its
    group, the test item and its origin worker."""
    assert d.request("POST", "/api/clear-sessions").status == 200
    session = d.request("POST", "/api/sessions", {"player_id": "fuzz"}).json()
    group = d.request("POST", "/api/session-group/link", {"session_ids": [session["session_id"]]}).json()
    d.get("/go-live/testclip/master.m3u8")  # an origin worker to stop
    return {"sid": session["session_id"], "port": int(session["x_forwarded_port"]), "gid": group["group_id"],
            "content": "testclip", "name": "testclip", "worker_id": "testclip"}


def _fuzz(operation: Any, real: dict[str, Any], base: str, session: Any, stats: dict[str, Any],
          mode: Any) -> None:
    """FUZZ_EXAMPLES generated requests for one operation in generation *mode* (positive:
    schema-valid; negative: schema-violating); outcomes go into *stats*."""
    import requests

    calls = [0]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        calls[0] += 1
        if calls[0] % 2:  # every other request aims at things that exist
            for name, value in real.items():
                if name in (case.path_parameters or {}):
                    case.path_parameters[name] = value
        where = f"{case.method} {case.formatted_path}"
        try:
            response = case.call(base_url=base, session=session, timeout=30)
        except requests.RequestException as exc:
            stats["failures"].append(f"{where}: {exc!r}")
            return
        stats["requests"] += 1
        stats["modes"][mode.value] += 1
        stats["classes"][f"{response.status_code // 100}xx"] += 1
        if response.status_code >= 500:
            stats["5xx"] += 1
        try:
            strict = mode is GenerationMode.NEGATIVE and operation.path not in LENIENT
            extra = NEGATIVE_CHECKS if strict else []
            case.validate_response(response, checks=CHECKS + extra)
        except FailureGroup as group:
            for failure in group.exceptions:
                title = getattr(failure, "title", type(failure).__name__)
                message = str(getattr(failure, "message", failure))[:300]
                if os.environ.get("FUZZ_VERBOSE"):
                    flat = message.replace("\n", " ")
                    message = f"{flat} | body={str(case.body)[:300]} query={case.query}"
                stats["failures"].append(f"{where} -> {response.status_code}: {title}: {message}")

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.NEGATIVE:  # nothing in it can be made invalid (string-only inputs)
            stats["nothing_to_negate"] += 1
        else:
            stats["failures"].append(f"{operation.method.upper()} {operation.path}: no request generated")


def test_fuzz_every_operation(d):
    import requests

    doc = d.get("/api/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    # a schema-violating request must be refused with a 4xx: 413 (a declared size over the
    # limit) is as good a refusal as 400; a 5xx never is (not_a_server_error)
    schema.config.checks.negative_data_rejection.expected_statuses = [
        "400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]
    base = f"http://127.0.0.1:{d.port}"
    session = requests.Session()
    stats: dict[str, Any] = {"operations": 0, "requests": 0, "classes": collections.Counter(),
                             "modes": collections.Counter(), "nothing_to_negate": 0,
                             "5xx": 0, "failures": [], "skipped": []}
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        method, path = operation.method.upper(), operation.path
        if (method, path) in SKIP or _streams(operation):
            stats["skipped"].append(f"{method} {path}")
            continue
        stats["operations"] += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, _fresh_targets(d), base, session, stats, mode)
    figures = {"operations": stats["operations"], "requests": stats["requests"],
               "modes": dict(stats["modes"]), "operations_nothing_to_negate": stats["nothing_to_negate"],
               "status_classes": dict(sorted(stats["classes"].items())), "5xx": stats["5xx"],
               "failures": len(stats["failures"]), "skipped": stats["skipped"],
               "examples_per_operation": FUZZ_EXAMPLES, "seconds": round(time.monotonic() - started, 1)}
    print("\nAPI fuzz figures:", json.dumps(figures))
    log = d.log()
    tracebacks = log.count("Traceback")
    print(f"daemon log tracebacks after the run: {tracebacks}")
    by_operation: dict[str, list[str]] = collections.defaultdict(list)
    for failure in stats["failures"]:
        by_operation[failure.split(" -> ")[0].split(": ")[0]].append(failure)
    assert stats["failures"] == [], "\n".join(f"{len(v)} x {v[0]}" for v in by_operation.values())
    assert stats["5xx"] == 0
    assert stats["operations"] >= 60 and stats["requests"] >= stats["operations"]
    assert tracebacks == 0 and "Unhandled" not in log, log[-5000:]
