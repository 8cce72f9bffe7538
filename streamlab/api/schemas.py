"""JSON Schemas of request bodies, shared by the handlers (type checks) and the OpenAPI
document (:mod:`streamlab.api.openapi` publishes exactly these), so they cannot drift.

Each schema is built from the module that validates the values: encode options from
:mod:`streamlab.jobs.options`, session control fields from :mod:`streamlab.proxy.fields`.
:func:`check_types` enforces the JSON types of the top-level properties of a schema
(range and cross-field rules stay with the domain validators, which explain them best).

Why this module is ~450 lines: it is one table (a schema per request body of the API),
and the OpenAPI document needs them all in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamlab.errors import Invalid
from streamlab.jobs.options import CODEC_SELECTIONS, HLS_FORMATS, PADDINGS, RESOLUTIONS
from streamlab.proxy.fields import MARGIN_PCTS, STEP_SECONDS, TEMPLATE_MODES

# "" (an untouched form field) means the default, as parse_encode_options reads it
ENCODE_OPTION_PROPERTIES: dict[str, Any] = {
    "codec_selection": {"type": "string", "enum": [*CODEC_SELECTIONS, ""]},
    "max_resolution": {"type": "string", "enum": [*RESOLUTIONS, ""]},
    "hls_format": {"type": "string", "enum": [*HLS_FORMATS, ""]},
    "padding": {"type": "string", "enum": [*PADDINGS, ""]},
    "segment_duration": {"type": "number", "minimum": 1, "maximum": 60},
    "gop_duration": {"type": "number", "minimum": 0.1, "maximum": 10},
    "partial_durations": {
        "type": "array",
        "minItems": 1,
        "maxItems": 8,
        "items": {"type": "integer", "minimum": 33, "maximum": 2000},
    },
    "output_name": {"type": "string", "maxLength": 200},
}

ENCODE_OPTIONS: dict[str, Any] = {"type": "object", "properties": ENCODE_OPTION_PROPERTIES}

BATCH_REENCODE: dict[str, Any] = {
    "type": "object",
    "required": ["source_ids"],
    "properties": {
        "source_ids": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        **ENCODE_OPTION_PROPERTIES,
    },
}

UPLOAD_INIT: dict[str, Any] = {
    "type": "object",
    "required": ["filename", "file_size"],
    "properties": {
        "filename": {"type": "string", "minLength": 1},  # long names are shortened, not refused
        "file_size": {"type": "integer", "minimum": 1},
        "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
        **ENCODE_OPTION_PROPERTIES,
    },
}

UPLOAD_COMPLETE: dict[str, Any] = {
    "type": "object",
    "properties": {"sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}},
}

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _type_ok(value: Any, schema: Mapping[str, Any]) -> bool:
    wanted = schema.get("type")
    if wanted is None:
        alternatives = schema.get("oneOf") or schema.get("anyOf")
        return not alternatives or any(_type_ok(value, alt) for alt in alternatives)
    names = wanted if isinstance(wanted, list) else [wanted]
    for name in names:
        if isinstance(value, bool) and name in ("integer", "number"):
            continue
        if isinstance(value, _PY_TYPES[name]):
            return True
    return False


def type_errors(body: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, str]:
    """``{field: reason}`` for each top-level property of *body* whose JSON type is not
    the one *schema* declares (array items are checked one level deep)."""
    errors: dict[str, str] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if name not in body:
            continue
        value = body[name]
        if not _type_ok(value, prop):
            want = prop.get("type") or "/".join(str(a.get("type")) for a in prop.get("oneOf", ()))
            errors[name] = f"must be of type {want}"
            continue
        items = prop.get("items")
        if isinstance(value, list) and items and not all(_type_ok(v, items) for v in value):
            errors[name] = f"items must be of type {items.get('type')}"
    return errors


def check_types(body: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """400 ``invalid`` naming every property of *body* with the wrong JSON type."""
    errors = type_errors(body, schema)
    if errors:
        raise Invalid("invalid", detail="; ".join(f"{k}: {v}" for k, v in errors.items()), fields=errors)


# --------------------------------------------------------------------------- the API's bodies
#
# Request bodies by "METHOD /path" (as in the OpenAPI document) and the 200/201 response
# bodies.  streamlab.api.openapi puts them into the published document; the API fuzzer
# test (tests/integration/test_ops_fuzz.py) generates requests from them and checks every
# answer against them.


def _obj(props: dict[str, Any], required: tuple[str, ...] = (), *, closed: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    if closed:
        out["additionalProperties"] = False
    return out


S: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
N: dict[str, Any] = {"type": "number"}
B: dict[str, Any] = {"type": "boolean"}
NS: dict[str, Any] = {"type": ["string", "null"]}
NN: dict[str, Any] = {"type": ["number", "null"]}
OBJ: dict[str, Any] = {"type": "object"}
STRS: dict[str, Any] = {"type": "array", "items": S}
EMPTY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {},
    "description": "no fields (an empty object or no body)",
}


def session_schema() -> dict[str, Any]:
    """The session object: every control field as :mod:`streamlab.proxy.fields` declares
    it, plus the read-only identity, counters and measurements."""
    from streamlab.proxy.fields import FIELD_SCHEMAS

    props: dict[str, Any] = {name: dict(schema) for name, schema in FIELD_SCHEMAS.items()}
    props.update(
        {
            "session_id": S,
            "player_id": S,
            "group_id": NS,
            "control_revision": S,
            "player_ip": NS,
            "x_forwarded_port": NS,
            "manifest_variants": {"type": "array"},
            "segments_count": INT,
            "all_requests_count": INT,
            "fault_count_total": INT,
            # which backend carries what, and what the player gets (docs/shaping.md)
            "shaping_backend": {"type": "string", "enum": ["kernel", "userspace"]},
            "shaping_interface": S,
            "shaping_carriers": {"type": "object", "additionalProperties": _obj(
                {"backend": S, "interface": S, "reason": S})},
            "shaping_route": _obj({"peer": S, "kind": S, "interface": S, "gateway": S, "reason": S}),
            "shaping_cap_mbps": NN,
            "shaping_goodput_mbps": N,
            "shaping_warning": S,
            "shaping_error": S,
            "client_rtt_tcp_ms": N,
            "client_rtt_shaper_ms": N,
        }
    )
    return _obj(props, ("session_id", "player_id", "control_revision"))


def _session_change() -> dict[str, Any]:
    return _obj({"session": session_schema(), "control_revision": S}, ("session", "control_revision"))


_RATE = {"type": "number", "minimum": 0, "maximum": 10000}
_DELAY = {"type": "number", "minimum": 0, "maximum": 10000}
_LOSS = {"type": "number", "minimum": 0, "maximum": 100}
_METRIC_VALUE = {"type": ["string", "number", "boolean", "null"], "maxLength": 4096}
_METRICS = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 200,
    "propertyNames": {"pattern": "^player_metrics_[A-Za-z0-9_]{1,100}$"},
    "additionalProperties": _METRIC_VALUE,
}
#: an upstream as the API shows it (streamlab.upstream.service.Upstream.describe)
_UPSTREAM = _obj(
    {"name": S, "url": S, "upstream": B, "usable": B, "headers": STRS, "verify_tls": B,
     "format": {"type": "string", "enum": ["hls", "dash"]}, "low_latency": B, "live": B,
     "variant_count": INT, "created_at": S, "has_hls": B, "has_dash": B,
     "urls": {"type": "object", "additionalProperties": S}},
    ("name", "url", "upstream", "format", "live", "urls"),
)
_JOB = _obj(
    {
        "job_id": S,
        "name": S,
        "source_id": S,
        "status": S,
        "progress": N,
        "stage": S,
        "config": OBJ,
        "output_paths": STRS,
        "created_at": S,
        "started_at": NS,
        "completed_at": NS,
        "error": NS,
        "eta_seconds": NN,
    },
    ("job_id", "name", "source_id", "status"),
)
_SOURCE = _obj({"source_id": S, "name": S, "status": S}, ("source_id", "status"))
_CONTENT = _obj({"name": S, "usable": B}, ("name", "usable"))
_SETUP = _obj(
    {
        "status": S,
        "media_dir": S,
        "state_dir": S,
        "initialized": B,
        "ffmpeg": OBJ,
        "issues": {"type": "array"},
        "recommendations": {"type": "array"},
    },
    ("status", "initialized"),
)
_TICKS = _obj(
    {
        "content": S,
        "last_tick_at": NS,
        "tick_interval_ms": NN,
        "avg_tick_interval_ms_5m": NN,
        "last_render_ms": NN,
        "avg_render_ms_5m": NN,
        "variant_count": INT,
        "audio_count": INT,
    },
    ("content", "variant_count", "audio_count"),
)
_FEATURES = {"type": "object", "additionalProperties": {"type": ["string", "boolean"]}}


def _one_of_names(props: dict[str, Any]) -> dict[str, Any]:
    """An object that needs (at least) one of the spellings in *props*."""
    return dict(_obj(props), anyOf=[{"required": [name]} for name in props])


def _steps_schema() -> dict[str, Any]:
    from streamlab.proxy.fields import STEPS_SCHEMA

    return dict(STEPS_SCHEMA, type="array")


def request_bodies() -> dict[str, dict[str, Any]]:
    """JSON request body schema of every operation that takes one."""
    from streamlab.proxy.fields import control_set_schema

    control = control_set_schema()
    flat = dict(control, properties={**control["properties"], "base_revision": S})
    return {
        "POST /api/sessions": _obj(
            {"player_id": {"type": "string", "minLength": 1, "maxLength": 256}, "set": control},
            ("player_id",),
            closed=True,
        ),
        "PATCH /api/session/{sid}": _obj(
            {"set": control, "fields": STRS, "base_revision": S}, ("set",), closed=True
        ),
        "POST /api/session/{sid}/update": flat,
        "POST /api/failure-settings/{sid}": flat,
        "POST /api/session/{sid}/keep": _obj({"keep": B}, ("keep",), closed=True),
        "POST /api/session/{sid}/metrics": {"anyOf": [
            _obj({"set": _METRICS}, ("set",), closed=True),
            _METRICS,  # the legacy flat form: the metrics themselves
        ]},
        "POST /api/session-group/link": _obj(
            {"session_ids": {"type": "array", "items": S, "minItems": 1}, "group_id": S},
            ("session_ids",),
            closed=True,
        ),
        "POST /api/session-group/unlink": _obj({"session_id": S}, ("session_id",), closed=True),
        # The shaping doors accept their legacy spellings and ignore other keys (spec/shaping.md).
        "POST /api/nftables/bandwidth/{port}": _one_of_names(
            {"rate_mbps": _RATE, "rate": _RATE, "bandwidth_mbps": _RATE}),
        "POST /api/nftables/loss/{port}": _one_of_names({"percent": _LOSS, "loss_pct": _LOSS, "loss": _LOSS}),
        "POST /api/nftables/shape/{port}": _obj(
            {"rate_mbps": _RATE, "rate": _RATE, "delay_ms": _DELAY, "delay": _DELAY, "loss_pct": _LOSS,
             "percent": _LOSS, "loss": _LOSS}
        ),
        "POST /api/nftables/pattern/{port}": _obj(
            {"steps": _steps_schema(), "delay_ms": _DELAY, "loss_pct": _LOSS,
             "template_mode": {"type": "string", "enum": list(TEMPLATE_MODES)},
             "margin_pct": {"type": "integer", "enum": list(MARGIN_PCTS)},
             "step_seconds": {"type": "integer", "enum": list(STEP_SECONDS)}}
        ),
        "POST /api/upload/init": dict(UPLOAD_INIT, additionalProperties=False),
        "POST /api/upload/complete/{job_id}": dict(UPLOAD_COMPLETE, additionalProperties=False),
        "POST /api/sources/batch-reencode-json": dict(BATCH_REENCODE, additionalProperties=False),
        "POST /api/sources/{source_id}/reencode": dict(ENCODE_OPTIONS, additionalProperties=False),
        "POST /api/announce-now": EMPTY,
        "POST /api/clear-sessions": EMPTY,
        "POST /api/jobs/{job_id}/cancel": EMPTY,
        "POST /api/setup/initialize": EMPTY,
        "POST /api/setup/seed": EMPTY,
        "POST /api/sources/scan-originals": EMPTY,
        "POST /api/content/{name}/generate-byteranges": EMPTY,
        **_scenario_bodies("request_bodies"),
    }


def response_bodies() -> dict[str, dict[str, Any]]:
    """JSON schema of the success body of every JSON operation."""
    session = session_schema()
    return {
        "GET /api/health": _obj(
            {"status": {"const": "ok"}, "uptime_s": N, "version": S}, ("status", "uptime_s", "version")
        ),
        "GET /api/version": _obj(
            {"version": S, "commit": S, "python": S, "twisted": S}, ("version", "commit", "python", "twisted")
        ),
        "GET /api/content": {"type": "array", "items": _CONTENT},
        "GET /api/content/{name}": _CONTENT,
        "POST /api/content/{name}/generate-byteranges": _obj(
            {"content": S, "segments": INT, "parts": INT}, ("content",)
        ),
        "GET /api/external-ips": _obj(
            {"rolling": {"type": "array"}, "lifetime": {"type": "array"}, "lifetime_count": INT},
            ("rolling", "lifetime"),
        ),
        "GET /api/jobs": {"type": "array", "items": _JOB},
        "GET /api/jobs/{job_id}": _JOB,
        "DELETE /api/jobs/{job_id}": _obj({"deleted": S}, ("deleted",)),
        "POST /api/jobs/{job_id}/cancel": _JOB,
        "GET /api/nftables/capabilities": _obj(
            {"status": S, "backend": S, "features": _FEATURES}, ("backend", "features")
        ),
        "GET /api/nftables/status": _obj(
            {"backend": S, "features": _FEATURES, "ports": OBJ}, ("backend", "ports")
        ),
        "GET /api/nftables/port/{port}": _obj(
            {"port": INT, "session_id": S, "backend": S}, ("port", "session_id")
        ),
        "POST /api/nftables/bandwidth/{port}": _obj(
            {"success": B, "port": INT, "rate_mbps": N}, ("success", "port", "rate_mbps")
        ),
        "POST /api/nftables/loss/{port}": _obj(
            {"success": B, "port": INT, "loss_pct": N}, ("success", "port", "loss_pct")
        ),
        "POST /api/nftables/shape/{port}": _obj(
            {"success": B, "port": INT, "rate_mbps": N, "delay_ms": N, "loss_pct": N}, ("success", "port")
        ),
        "POST /api/nftables/pattern/{port}": _obj(
            {"success": B, "port": INT, "pattern_enabled": B, "steps": {"type": "array"}}, ("success", "port")
        ),
        "GET /api/rendezvous": _obj({"enabled": B, "url": S, "announces": INT}, ("enabled",)),
        "GET /api/upstreams": {"type": "array", "items": _UPSTREAM},
        "POST /api/upstreams": _UPSTREAM,
        "GET /api/upstreams/{name}": _UPSTREAM,
        "DELETE /api/upstreams/{name}": _obj({"deleted": S}, ("deleted",)),
        "POST /api/announce-now": _obj({"ok": B, "enabled": B}, ("ok", "enabled")),
        "GET /api/sessions": {"type": "array", "items": session},
        "POST /api/sessions": session,
        "POST /api/clear-sessions": _obj({"cleared": INT}, ("cleared",)),
        "GET /api/session/{sid}": session,
        "DELETE /api/session/{sid}": _obj({"deleted": S}, ("deleted",)),
        "PATCH /api/session/{sid}": _session_change(),
        "POST /api/session/{sid}/update": _session_change(),
        "POST /api/failure-settings/{sid}": _session_change(),
        "POST /api/session/{sid}/metrics": _obj({"status": S}, ("status",)),
        "GET /api/session/{sid}/network": _obj(
            {"session_id": S, "count": INT, "entries": {"type": "array", "items": OBJ},
             "markers": {"type": "array", "items": OBJ}, "log": OBJ},
            ("session_id", "count", "entries"),
        ),
        "GET /api/session/{sid}/network/entry/{seq}": _obj(
            {"seq": INT, "path": S, "status": INT, "request_headers": {"type": "array"},
             "response_headers": {"type": "array"}},
            ("seq",),
        ),
        "POST /api/session/{sid}/keep": _obj({"session": session}, ("session",)),
        "GET /api/session/{sid}/network.har": _obj({"log": OBJ}, ("log",)),
        "POST /api/session-group/link": _obj(
            {"group_id": S, "session_ids": STRS}, ("group_id", "session_ids")
        ),
        "POST /api/session-group/unlink": _obj({"session_id": S, "group_id": S}, ("session_id",)),
        "GET /api/session-group/{gid}": _obj({"group_id": S, "session_ids": STRS}, ("group_id",)),
        "GET /api/setup": _SETUP,
        "POST /api/setup/initialize": _SETUP,
        "POST /api/setup/seed": _obj({"status": S}, ("status",)),
        "GET /api/sources": {"type": "array", "items": _SOURCE},
        "GET /api/sources/{source_id}": _SOURCE,
        "DELETE /api/sources/{source_id}": _obj({"deleted": S}, ("deleted",)),
        "POST /api/sources/scan-originals": _obj(
            {"scanned": INT, "new": INT, "removed": INT, "invalid": INT},
            ("scanned", "new", "removed", "invalid"),
        ),
        "POST /api/sources/batch-reencode-json": _obj(
            {"jobs": {"type": "array"}, "errors": {"type": "array"}}, ("jobs", "errors")
        ),
        "POST /api/sources/{source_id}/reencode": _obj(
            {"job_ids": STRS, "source_id": S, "status": S}, ("job_ids", "source_id", "status")
        ),
        "POST /api/upload": _obj({"job_id": NS, "job_ids": STRS, "source_id": S, "status": S}, ("job_id",)),
        "GET /api/upload/active": _obj(
            {"active_uploads": INT, "queue_length": INT, "uploads": {"type": "array"}},
            ("active_uploads", "queue_length", "uploads"),
        ),
        "POST /api/upload/init": _obj({"job_id": S}, ("job_id",)),
        "POST /api/upload/chunk/{job_id}": _obj({"received_size": INT}, ("received_size",)),
        "PUT /api/upload/chunk/{job_id}": _obj({"received_size": INT}, ("received_size",)),
        "POST /api/upload/complete/{job_id}": _obj({"job_id": S, "status": S}, ("job_id", "status")),
        "GET /api/upload/{job_id}": _obj(
            {"received_size": INT, "expected_size": INT, "status": S},
            ("received_size", "expected_size", "status"),
        ),
        "DELETE /api/upload/{job_id}": _obj({"cancelled": S}, ("cancelled",)),
        "GET /api/openapi.json": _obj({"openapi": S, "paths": OBJ}, ("openapi", "paths")),
        "GET /go-live/healthz": _obj({"status": {"const": "ok"}}, ("status",), closed=True),
        "GET /go-live/api/status": _obj({"workers": {"type": "array", "items": OBJ}}, ("workers",)),
        "GET /go-live/api/tick-stats/{content}": _TICKS,
        "GET /go-live/api/dash-tick-stats/{content}": dict(
            _TICKS, properties={**_TICKS["properties"], "duration": S}
        ),
        "DELETE /go-live/api/stop/{worker_id}": _obj({"stopped": S}, ("stopped",)),
        **_scenario_bodies("response_bodies"),
    }


def _scenario_bodies(which: str) -> dict[str, dict[str, Any]]:
    """The scenario operations' bodies (streamlab.api.scenarios owns them)."""
    from streamlab.api import scenarios

    bodies: dict[str, dict[str, Any]] = getattr(scenarios, which)()
    return bodies


def multipart_upload(key: str) -> dict[str, Any]:
    """Multipart bodies of ``POST /api/upload`` (file + encode options as form fields) and
    ``/api/upload/chunk/{job_id}`` (one ``file`` part)."""
    props: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
    if key == "POST /api/upload":
        props.update({name: {"type": "string"} for name in ENCODE_OPTION_PROPERTIES})
    return {"type": "object", "required": ["file"], "properties": props}
