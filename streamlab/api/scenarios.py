"""``/api/scenarios/...`` and the ``.../scenario`` routes of sessions and groups.

Thin: parse the body, call the :class:`~streamlab.scenario.service.ScenarioService`,
answer JSON (or JUnit XML); errors go through the one error mapper.

The session routes live under the ``sessions``, ``session`` and ``session-group`` mounts
of the sessions API; :func:`mount` puts a :class:`ScenarioDispatch` in front of that
mount which hands ``.../{id}/scenario`` (and ``.../scenario/report.xml``) to this app and
everything else to the sessions app unchanged.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from streamlab.api import errors
from streamlab.api.jsonio import check_depth, read_body, read_json, respond
from streamlab.errors import Conflict
from streamlab.scenario import junit, loader, model
from streamlab.scenario import timeline as tl
from streamlab.scenario.service import ScenarioService

SESSION_MOUNTS = ("sessions", "session", "session-group")
"""The mounts whose ``/{id}/scenario`` paths this module serves."""
MAX_SCENARIO_BYTES = 1024 * 1024


def _scenario_body(request: IRequest) -> Any:
    """The scenario in the body: the object itself, or ``{"scenario": {...}}``; as JSON,
    or as YAML with a YAML content type (``application/yaml``, ``text/yaml``)."""
    if loader.is_yaml(request.getHeader(b"content-type")):
        body = loader.load_yaml(read_body(request, MAX_SCENARIO_BYTES))
        check_depth(body)
    else:
        body = read_json(request, MAX_SCENARIO_BYTES)
    if isinstance(body, dict) and set(body) == {"scenario"}:
        return body["scenario"]
    return body


def describe(scenario: model.Scenario) -> dict[str, Any]:
    """The valid answer of ``POST /api/scenarios/validate``: the timeline worked out."""
    starts = tl.step_starts(scenario)
    return {
        "valid": True, "name": scenario.name, "seed": scenario.seed,
        "duration_s": round(tl.run_duration(scenario), 3),
        "steps": [{"index": s.index, "id": s.id, "at_s": round(starts[s.index], 3), "for_s": s.for_s,
                   "end_s": round(tl.step_end(scenario, s.index, starts), 3),
                   "applications_s": [round(t, 3) for t in tl.applications(scenario, s.index, starts)]}
                  for s in scenario.steps],
        "expectations": [{"name": e.name, "kind": e.kind} for e in scenario.expect],
        "errors": [],
    }


class ScenariosApi:
    """The scenario API over one :class:`ScenarioService`."""

    app = Klein()

    def __init__(self, service: ScenarioService) -> None:
        self.service = service

    # ------------------------------------------------------------------ the format

    @app.route("/scenarios/schema", methods=["GET"])
    def schema(self, request: IRequest) -> bytes:
        """The JSON Schema (draft 2020-12) of a scenario."""
        return respond(request, model.json_schema())

    @app.route("/scenarios/validate", methods=["POST"])
    def validate(self, request: IRequest) -> bytes:
        """200 ``{"valid": true, ...}`` or 400 with every error and its JSON pointer."""
        return respond(request, describe(model.parse(_scenario_body(request))))

    # ------------------------------------------------------------------ one session

    @app.route("/sessions/<sid>/scenario", methods=["POST"])
    @app.route("/session/<sid>/scenario", methods=["POST"])
    def start(self, request: IRequest, sid: str) -> bytes:
        """Start a run: 201 run; 404 unknown session; 400 invalid; 409 one is running."""
        self.service.registry.get(sid)
        run = self.service.start(sid, _scenario_body(request))
        request.setHeader(b"location", f"/api/session/{run.session_id}/scenario".encode())
        return respond(request, run.to_json(), 201)

    @app.route("/sessions/<sid>/scenario", methods=["GET"])
    @app.route("/session/<sid>/scenario", methods=["GET"])
    def show(self, request: IRequest, sid: str) -> bytes:
        """The session's last run (running or ended)."""
        return respond(request, self.service.last(sid).to_json())

    @app.route("/sessions/<sid>/scenario", methods=["DELETE"])
    @app.route("/session/<sid>/scenario", methods=["DELETE"])
    def stop(self, request: IRequest, sid: str) -> bytes:
        """Stop the run and restore what it set (an ended run is returned as it is)."""
        return respond(request, self.service.stop(sid).to_json())

    @app.route("/sessions/<sid>/scenario/report.xml", methods=["GET"])
    @app.route("/session/<sid>/scenario/report.xml", methods=["GET"])
    def report(self, request: IRequest, sid: str) -> bytes:
        """The verdict as JUnit XML (409 while the run is still going)."""
        run = self.service.last(sid)
        if run.running:
            raise Conflict("scenario running",
                           detail="the verdict exists once the run has ended or was stopped")
        request.setHeader(b"content-type", b"application/xml; charset=utf-8")
        request.setHeader(b"content-disposition",
                          f'inline; filename="scenario-{run.session_id}-{run.id}.xml"'.encode())
        return junit.report(run.to_json())

    # ------------------------------------------------------------------ groups

    @app.route("/session-group/<gid>/scenario", methods=["POST"])
    def start_group(self, request: IRequest, gid: str) -> bytes:
        """One run per member: 201 ``{"group_id", "runs"}``."""
        self.service.registry.group(gid)
        runs = self.service.start_group(gid, _scenario_body(request))
        return respond(request, {"group_id": gid, "runs": [r.to_json() for r in runs]}, 201)

    @app.route("/session-group/<gid>/scenario", methods=["GET"])
    def show_group(self, request: IRequest, gid: str) -> bytes:
        """The last run of every member."""
        runs = self.service.group_runs(gid)
        return respond(request, {"group_id": gid, "runs": [r.to_json() for r in runs]})

    @app.route("/session-group/<gid>/scenario", methods=["DELETE"])
    def stop_group(self, request: IRequest, gid: str) -> bytes:
        """Stop every member's run."""
        runs = self.service.group_runs(gid)
        for run in runs:
            run.stop()
        return respond(request, {"group_id": gid, "runs": [r.to_json() for r in runs]})

    errors.install(app)


def _is_scenario_path(postpath: list[bytes]) -> bool:
    """``<mount>/<id>/scenario`` or ``<mount>/<id>/scenario/report.xml``."""
    return len(postpath) in (3, 4) and postpath[0].decode("latin-1") in SESSION_MOUNTS \
        and postpath[2] == b"scenario" and (len(postpath) == 3 or postpath[3] == b"report.xml")


class ScenarioDispatch(Resource):
    """In front of a sessions-API mount: scenario paths to the scenario app, the rest to
    the sessions app (whose Klein app stays visible as ``_app`` for the OpenAPI check)."""

    isLeaf = True

    def __init__(self, scenarios: IResource, sessions: IResource) -> None:
        super().__init__()
        self.scenarios = scenarios
        self.sessions = sessions
        self._app = getattr(sessions, "_app", None)

    def render(self, request: IRequest) -> Any:
        """Route by path (both apps see the same path below /api)."""
        target = self.scenarios if _is_scenario_path(list(request.postpath or [])) else self.sessions
        return target.render(request)


def mount(api_root: Any, service: ScenarioService, sessions: IResource) -> None:
    """Mount ``/api/scenarios`` and the scenario paths of the session mounts on *api_root*
    (*sessions* is the sessions API resource already mounted there)."""
    resource = ScenariosApi(service).app.resource()
    api_root.mount("scenarios", resource)
    for name in SESSION_MOUNTS:
        api_root.mount(name, ScenarioDispatch(resource, sessions))



# --------------------------------------------------------------------------- OpenAPI bodies

_S: dict[str, Any] = {"type": "string"}
_NS: dict[str, Any] = {"type": ["string", "null"]}
_N: dict[str, Any] = {"type": "number"}
_NN: dict[str, Any] = {"type": ["number", "null"]}
_NI: dict[str, Any] = {"type": ["integer", "null"]}
_STATES = ["running", "passed", "failed", "stopped", "error"]


def _obj(props: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required)}


def run_schema() -> dict[str, Any]:
    """JSON Schema of the run JSON (docs/scenarios.md)."""
    step = _obj({"index": {"type": "integer"}, "id": _NS, "at_s": _N, "for_s": _NN,
                 "set": {"type": "object"},
                 "state": {"type": "string", "enum": ["pending", "active", "done"]}},
                ("index", "id", "at_s", "for_s", "set", "state"))
    entry = _obj({"t_s": _N, "step": _NI, "fields": {"type": "object"}, "kept": {"type": "object"},
                  "event": {"type": "string", "enum": ["applied", "restored", "stopped", "ended", "error"]}},
                 ("t_s", "step", "event", "fields"))
    expectation = _obj({"name": _S, "kind": _S, "expr": _S, "observed": {}, "passed": {"type": "boolean"},
                        "detail": _S}, ("name", "expr", "observed", "passed", "detail"))
    verdict = {"type": ["object", "null"], "required": ["passed", "expectations"],
               "properties": {"passed": {"type": "boolean"},
                              "expectations": {"type": "array", "items": expectation}}}
    return _obj({"id": _S, "session_id": _S, "name": _S, "seed": _NI,
                 "state": {"type": "string", "enum": _STATES}, "started_at": _S, "ended_at": _NS,
                 "elapsed_s": _N, "duration_s": _N, "current_step": _NI, "next_step_in_s": _NN,
                 "active": {"type": "object"}, "steps": {"type": "array", "items": step},
                 "log": {"type": "array", "items": entry}, "verdict": verdict, "error": _NS},
                ("id", "session_id", "name", "seed", "state", "started_at", "elapsed_s", "duration_s",
                 "current_step", "next_step_in_s", "active", "steps", "log", "verdict"))


def request_bodies() -> dict[str, dict[str, Any]]:
    """Request body schemas of the scenario operations (``api/schemas.py`` merges them)."""
    scenario = model.json_schema()
    scenario.pop("$schema", None)
    scenario.pop("$id", None)
    paths = ("/api/sessions/{sid}/scenario", "/api/session/{sid}/scenario",
             "/api/session-group/{gid}/scenario")
    return {"POST /api/scenarios/validate": scenario, **{f"POST {p}": scenario for p in paths}}


def response_bodies() -> dict[str, dict[str, Any]]:
    """Success body schemas of the scenario operations (``api/schemas.py`` merges them)."""
    run = run_schema()
    group = _obj({"group_id": _S, "runs": {"type": "array", "items": run}}, ("group_id", "runs"))
    out: dict[str, dict[str, Any]] = {
        "GET /api/scenarios/schema": _obj({"$schema": _S, "type": _S, "properties": {"type": "object"}},
                                          ("$schema", "properties")),
        "POST /api/scenarios/validate": _obj({"valid": {"const": True}, "name": _S, "duration_s": _N,
                                              "steps": {"type": "array"}, "errors": {"type": "array"}},
                                             ("valid", "name", "duration_s", "steps")),
    }
    for p in ("/api/sessions/{sid}/scenario", "/api/session/{sid}/scenario"):
        for method in ("GET", "POST", "DELETE"):
            out[f"{method} {p}"] = run
    for method in ("GET", "POST", "DELETE"):
        out[f"{method} /api/session-group/{{gid}}/scenario"] = group
    return out
