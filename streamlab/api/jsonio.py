"""JSON in and out for API handlers: bounded parsing, typed access, one encoder."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from streamlab.errors import Invalid, TooLarge

MAX_JSON_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
"""Deepest nesting of arrays/objects a request body may have (a control PATCH needs 4)."""


def respond(request: IRequest, body: Any, status: int = 200) -> bytes:
    """Serialise *body* as the JSON answer with *status*."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body, separators=(",", ":")).encode()


def read_body(request: IRequest, limit: int = MAX_JSON_BYTES) -> bytes:
    """The request body, refusing more than *limit* bytes with 413."""
    content = request.content
    if content is None:
        return b""
    content.seek(0, 2)
    size = content.tell()
    if size > limit:
        raise TooLarge("body too large", detail={"limit": limit, "size": size})
    content.seek(0)
    return bytes(content.read())


def read_json(request: IRequest, limit: int = MAX_JSON_BYTES, *, empty: Any = None) -> Any:
    """Parse the body as JSON (400 ``invalid json`` when it is not)."""
    raw = read_body(request, limit)
    if not raw.strip():
        if empty is not None:
            return empty
        raise Invalid("invalid json", detail="empty body")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid("invalid json", detail=str(exc)) from None
    except RecursionError:  # deeper than the interpreter's stack
        raise Invalid("invalid json", detail=f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    check_depth(value)
    return value


def check_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """400 ``invalid json`` when *value* nests arrays/objects deeper than *limit*
    (checked without recursion, so any parsed value is safe to walk)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            raise Invalid("invalid json", detail=f"nested deeper than {limit} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def read_no_fields(request: IRequest) -> None:
    """For calls that take no input: no body, or an empty JSON object; anything else is a
    400 (a caller sending fields expects them to matter)."""
    raw = read_body(request)
    if not raw.strip():
        return
    value = read_json(request)
    if value != {}:
        fields = {str(k): "unknown field" for k in value} if isinstance(value, dict) else None
        raise Invalid("invalid", detail="this call takes no fields (send no body or {})", fields=fields)


def is_form(request: IRequest) -> bool:
    """Is the body a form post (url-encoded or multipart) rather than JSON?"""
    ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    return ctype in (b"application/x-www-form-urlencoded", b"multipart/form-data")


def read_object(request: IRequest, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """Parse the body as a JSON object, or form fields when it is a form post."""
    if is_form(request):
        args = request.args or {}
        out: dict[str, Any] = {}
        for key, values in args.items():
            name = key.decode("utf-8", "replace")
            decoded = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]
            out[name] = decoded if name.endswith("[]") or len(decoded) > 1 else decoded[0]
        return out
    value = read_json(request, limit, empty={})
    if not isinstance(value, dict):
        raise Invalid("invalid json", detail="expected a JSON object")
    return value


def query(request: IRequest, name: str, default: str | None = None) -> str | None:
    """First value of query argument *name*, decoded."""
    values = (request.args or {}).get(name.encode())
    if not values:
        return default
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
