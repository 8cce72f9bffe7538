"""/api/openapi.json describes every route the daemon serves, and nothing else."""

from __future__ import annotations

import json
import re

import pytest
from twisted.internet import reactor

import streamlab
from streamlab import config as configmod
from streamlab.api.openapi import OpenApiResource, build_document, klein_routes
from streamlab.tap import build

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

# The origin's paths (docs/origin.md); the daemon test in
# tests/integration/test_ops_observability.py checks that each one answers.
GO_LIVE = {
    "/go-live/healthz", "/go-live/time", "/go-live/api/status", "/go-live/api/status/stream",
    "/go-live/api/tick-stats/{content}", "/go-live/api/dash-tick-stats/{content}",
    "/go-live/api/stop/{worker_id}",
    "/go-live/{content}/master.m3u8", "/go-live/{content}/master_2s.m3u8",
    "/go-live/{content}/master_6s.m3u8",
    "/go-live/{content}/playlist_{variant}.m3u8", "/go-live/{content}/playlist_2s_{variant}.m3u8",
    "/go-live/{content}/playlist_6s_{variant}.m3u8",
    "/go-live/{content}/manifest.mpd", "/go-live/{content}/manifest_2s.mpd",
    "/go-live/{content}/manifest_6s.mpd",
    "/go-live/{content}/video/{path}", "/go-live/{content}/audio/{path}", "/go-live/{content}/ts/{path}",
}


@pytest.fixture(scope="module")
def doc() -> dict:
    return build_document()


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    d = tmp_path_factory.mktemp("openapi")
    cfg = configmod.load(None, {"media-dir": str(d / "media"), "state-dir": str(d / "state"),
                                "shaping-backend": "userspace"})
    configmod.check_paths(cfg)
    return build(cfg, reactor)


def _described(doc: dict, prefix: str) -> dict[str, set[str]]:
    return {path: set(ops) & METHODS for path, ops in doc["paths"].items() if path.startswith(prefix)}


def test_document_shape(doc):
    from openapi_spec_validator import validate

    validate(doc)  # a valid OpenAPI 3.1 document
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["version"] == streamlab.__version__
    ids = []
    for path, ops in doc["paths"].items():
        assert path.startswith("/")
        for method, op in ops.items():
            assert method in METHODS, (path, method)
            assert op["summary"] and op["responses"], (path, method)
            ids.append(op["operationId"])
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == set(re.findall(r"\{(\w+)\}", path)), (path, method)
            for resp in op["responses"].values():
                ref = resp.get("$ref")
                if ref:
                    assert ref.split("/")[-1] in doc["components"]["responses"]
    assert len(ids) == len(set(ids)), "operationId must be unique"


def test_every_klein_route_is_described_and_nothing_else(doc, svc):
    served = klein_routes(svc.api)
    served["/api/openapi.json"] = {"get"}
    described = _described(doc, "/api/")
    missing = {p: sorted(m - described.get(p, set())) for p, m in served.items()
               if m - described.get(p, set())}
    extra = {p: sorted(m - served.get(p, set())) for p, m in described.items()
             if m - served.get(p, set())}
    assert missing == {}, f"routes served but not described: {missing}"
    assert extra == {}, f"described but not served: {extra}"


def test_root_resources_and_go_live_paths(doc, svc):
    mounted = {name.decode() for name in svc.root.children} - {"", "api"}
    roots = {p.split("/")[1] for p in doc["paths"] if not p.startswith("/api/")}
    assert roots == mounted
    assert set(_described(doc, "/go-live/")) == GO_LIVE
    assert set(_described(doc, "/metrics")) == {"/metrics"}
    assert set(_described(doc, "/debug")) == {"/debug"}


def test_protected_operations_say_so(doc):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            needs = method not in ("get", "head", "options") or path.startswith(("/debug", "/dashboard"))
            assert ("401" in op["responses"]) == needs, (path, method)


def test_resource_serves_the_file(doc):
    from twisted.web.test.requesthelper import DummyRequest

    req = DummyRequest([b""])
    body = OpenApiResource().render_GET(req)
    assert json.loads(body) == doc
    assert req.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]


def _ops(doc: dict):
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method in METHODS:
                yield path, method, op


def test_every_body_has_a_real_schema(doc):
    """No bare ``{}`` or ``{"type": "object"}``: each request and response body says what
    it holds (issue #17: 9 operations rejected schema-valid bodies, 5 accepted anything)."""
    vague = []
    for path, method, op in _ops(doc):
        for ctype, media in op.get("requestBody", {}).get("content", {}).items():
            if media.get("schema") in (None, {}, {"type": "object"}):
                vague.append(("request", method, path, ctype))
        for code, answer in op["responses"].items():
            for ctype, media in answer.get("content", {}).items():
                schema = media.get("schema")
                generic = ({"type": "object"}, {"type": "string"})
                if schema in (None, {}) or (ctype == "application/json" and schema in generic):
                    vague.append((code, method, path, ctype))
    assert vague == []


def test_go_live_status_and_healthz_are_objects(doc):
    for path in ("/go-live/api/status", "/go-live/healthz"):
        schema = doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["type"] == "object" and schema["required"]


def test_control_schema_is_the_validators_table(doc):
    """The PATCH body lists exactly the control fields (and input aliases) the validator
    knows, and each field's default is valid under its schema and accepted back."""
    from jsonschema import Draft202012Validator

    from streamlab.proxy import fields

    set_schema = doc["paths"]["/api/session/{sid}"]["patch"]["requestBody"]["content"]["application/json"][
        "schema"]["properties"]["set"]
    assert set(set_schema["properties"]) == set(fields.CONTROL_DEFAULTS) | set(fields.FIELD_ALIASES)
    assert set_schema["additionalProperties"] is False
    for name, default in fields.CONTROL_DEFAULTS.items():
        Draft202012Validator(set_schema["properties"][name]).validate(default)
        assert fields.parse_value(name, default) == default
    bad = Draft202012Validator(set_schema)
    assert not bad.is_valid({"content_allowed_variants": "720p"})
    assert not bad.is_valid({"segment_failure_type": True})
    assert bad.is_valid({"segment_failure_type": 503, "nftables_pattern_steps": [
        {"rate_mbps": 2, "duration_seconds": 5}]})


def test_upload_init_schema_is_what_the_handler_checks(doc):
    from jsonschema import Draft202012Validator

    from streamlab.api import schemas

    schema = doc["paths"]["/api/upload/init"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body = {"filename": ["a"], "file_size": "10"}
    assert not Draft202012Validator(schema).is_valid(body)
    assert set(schemas.type_errors(body, schema)) == {"filename", "file_size"}
    assert schemas.type_errors({"filename": "a.mp4", "file_size": 10}, schema) == {}
