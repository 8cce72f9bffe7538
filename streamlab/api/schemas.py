"""JSON Schemas of request bodies, shared by the handlers (type checks) and the OpenAPI
document (:mod:`streamlab.api.openapi` publishes exactly these), so they cannot drift.

Each schema is built from the module that validates the values: encode options from
:mod:`streamlab.jobs.options`, session control fields from :mod:`streamlab.proxy.fields`.
:func:`check_types` enforces the JSON types of the top-level properties of a schema
(range and cross-field rules stay with the domain validators, which explain them best).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamlab.errors import Invalid
from streamlab.jobs.options import CODEC_SELECTIONS, HLS_FORMATS, PADDINGS, RESOLUTIONS

ENCODE_OPTION_PROPERTIES: dict[str, Any] = {
    "codec_selection": {"type": "string", "enum": list(CODEC_SELECTIONS)},
    "max_resolution": {"type": "string", "enum": list(RESOLUTIONS)},
    "hls_format": {"type": "string", "enum": list(HLS_FORMATS)},
    "padding": {"type": "string", "enum": list(PADDINGS)},
    "segment_duration": {"type": "number", "minimum": 1, "maximum": 60},
    "gop_duration": {"type": "number", "minimum": 0.1, "maximum": 10},
    "partial_durations": {"type": "array", "minItems": 1, "maxItems": 8,
                          "items": {"type": "integer", "minimum": 33, "maximum": 2000}},
    "output_name": {"type": "string", "maxLength": 200},
}

ENCODE_OPTIONS: dict[str, Any] = {"type": "object", "properties": ENCODE_OPTION_PROPERTIES}

BATCH_REENCODE: dict[str, Any] = {
    "type": "object",
    "required": ["source_ids"],
    "properties": {"source_ids": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                   **ENCODE_OPTION_PROPERTIES},
}

UPLOAD_INIT: dict[str, Any] = {
    "type": "object",
    "required": ["filename", "file_size"],
    "properties": {
        "filename": {"type": "string", "minLength": 1, "maxLength": 255},
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
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),),
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
