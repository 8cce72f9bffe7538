"""The schema of every *control* field of a session, and its validation (pure).

A control field is one a client may change through ``PATCH /api/session/{id}``, the legacy
``/update`` and ``/failure-settings`` doors, ``POST /api/sessions {"set": ...}`` and the
``/api/nftables/*`` endpoints.  Everything else on the session object (identity,
counters, runtime shaping/transport state, server and player metrics) is read-only here.

:func:`validate` never applies anything: it returns the normalised changes, or raises
:class:`streamlab.errors.Invalid` naming *every* bad key.  Decisions where the spec is
silent are documented in ``docs/faults.md`` (defaults, numeric strings, one-unit PATCHes).
The session-object keys that are not controls are :mod:`streamlab.proxy.wire`.

Why this module is longer than ~450 lines: it changes for one reason, the control-field
contract.  Names, defaults, value parsers and JSON Schema are one table (so the validator
and the OpenAPI document cannot disagree), and the PATCH rules that span fields (timing
mode <-> units, whole counts, pattern steps) read that table.  :func:`validate_metrics`
(player-metrics posts) is the one other concern; it is small and stays next to the
control names it must refuse.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

from streamlab.errors import Invalid
from streamlab.formats import json_number as _num_out
from streamlab.proxy.wire import READ_ONLY_FIELDS

# --------------------------------------------------------------------------- constants

HTTP_PREFIXES: tuple[str, ...] = ("all", "segment", "manifest", "master_manifest")
"""The four HTTP-fault rule prefixes; ``all`` overrides the per-kind ones."""

HTTP_MODES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "requests": ("requests", "requests"),
    "seconds": ("seconds", "seconds"),
    "failures_per_seconds": ("requests", "seconds"),
})
"""HTTP timing mode -> (consecutive units, frequency units)."""

TRANSPORT_MODES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "failures_per_seconds": ("seconds", "seconds"),
    "failures_per_packets": ("packets", "seconds"),
})
"""Transport timing mode -> (consecutive units, frequency units)."""

STATUS_ALIASES: Mapping[str, int] = MappingProxyType({
    "timeout": 504,
    "connection_refused": 503,
    "dns_failure": 502,
    "rate_limiting": 429,
})
"""Named HTTP fault types and the status they answer."""

SOCKET_STAGES: tuple[str, ...] = ("connect", "first_byte", "body")
SOCKET_ACTIONS: tuple[str, ...] = ("reset", "hang", "delayed")
SOCKET_TYPES: frozenset[str] = frozenset(
    f"request_{stage}_{action}" for stage in SOCKET_STAGES for action in SOCKET_ACTIONS
)
"""The nine canonical socket fault types."""

LEGACY_FAULT_ALIASES: Mapping[str, str] = MappingProxyType({
    "hung": "request_connect_hang",
    "socket_timeout": "request_connect_hang",
    "socket_drop": "request_connect_hang",
    "socket_drop_before_headers": "request_connect_hang",
    "socket_reject": "request_connect_reset",
    "socket_reject_before_headers": "request_connect_reset",
    "socket_drop_after_headers": "request_first_byte_hang",
    "socket_reject_after_headers": "request_first_byte_reset",
    "socket_drop_mid_body": "request_body_hang",
    "socket_reject_mid_body": "request_body_reset",
})
"""Legacy fault-type spellings accepted on input and normalised."""

MANIFEST_FAULT_TYPES: tuple[str, ...] = (
    "none",
    # HLS media playlists
    "stale_playlist", "sequence_jump", "sequence_regression", "remove_segment", "duplicate_segment",
    "gap_segments", "wrong_extinf", "missing_extinf", "wrong_targetduration", "missing_discontinuity",
    "pdt_drift",
    # the master (HLS master or DASH MPD)
    "variant_removed",
    # DASH MPDs
    "mpd_publish_time_frozen", "mpd_ast_jump",
)
"""``manifest_fault_type`` values (docs/manifest-faults.md; applied by
:mod:`streamlab.proxy.manifest_faults`)."""
MAX_MANIFEST_FAULT_VALUE = 86400.0

NAMED_FAULT_TYPES: frozenset[str] = frozenset({"none", "corrupted", *STATUS_ALIASES, *SOCKET_TYPES})
TRANSPORT_TYPES: tuple[str, ...] = ("none", "drop", "reject")
TEMPLATE_MODES: tuple[str, ...] = ("sliders", "square_wave", "ramp_up", "ramp_down", "pyramid")
MARGIN_PCTS: tuple[int, ...] = (0, 5, 10, 25, 50)
STEP_SECONDS: tuple[int, ...] = (6, 12, 18, 24)

MAX_COUNT = 1_000_000
"""Upper bound of ``*_consecutive_failures`` / ``*_failure_frequency`` (requests or seconds)."""
MAX_URLS = 100
MAX_URL_CHARS = 1024
MAX_STEPS = 100
MAX_STEP_SECONDS = 86400.0
MIN_STEP_SECONDS = 0.1
"""Shortest pattern step: shorter ones would make the pattern timer spin (and a cycle of
1e-300 s overflowed the step arithmetic)."""
MAX_TIMEOUT_SECONDS = 86400.0
MAX_LIVE_OFFSET = 86400.0
MAX_SEED = 2**31 - 1
"""Largest per-session random seed (``seed``; a new session draws one in 0..MAX_SEED)."""
MAX_METRIC_KEYS = 200
MAX_METRIC_STRING = 4096

# --------------------------------------------------------------------------- defaults


def _http_defaults(prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}_failure_type": "none",
        f"{prefix}_failure_mode": "requests",
        f"{prefix}_consecutive_failures": 1,
        f"{prefix}_failure_frequency": 10,
        f"{prefix}_consecutive_units": "requests",
        f"{prefix}_frequency_units": "requests",
        f"{prefix}_failure_urls": [],
        f"{prefix}_failure_probability": 0,
    }


_defaults: dict[str, Any] = {}
for _p in HTTP_PREFIXES:
    _defaults.update(_http_defaults(_p))
_defaults.update({
    "transport_failure_type": "none",
    "transport_failure_mode": "failures_per_seconds",
    "transport_consecutive_failures": 0,
    "transport_failure_frequency": 0,
    "transport_consecutive_units": "seconds",
    "transport_frequency_units": "seconds",
    "transfer_active_timeout_seconds": 0,
    "transfer_idle_timeout_seconds": 0,
    "transfer_timeout_applies_segments": True,
    "transfer_timeout_applies_manifests": False,
    "transfer_timeout_applies_master": False,
    "nftables_bandwidth_mbps": 0,
    "nftables_delay_ms": 0,
    "nftables_packet_loss": 0,
    "nftables_pattern_enabled": False,
    "nftables_pattern_steps": [],
    "nftables_pattern_template_mode": "sliders",
    "nftables_pattern_margin_pct": 0,
    "nftables_pattern_step_seconds": 12,
    "content_strip_codecs": False,
    "content_strip_average_bandwidth": False,
    "content_overstate_bandwidth": False,
    "content_allowed_variants": [],
    "content_live_offset": 0,
    "seed": 0,
    "manifest_fault_type": "none",
    "manifest_fault_value": 0,
    "manifest_fault_variants": [],
})

CONTROL_DEFAULTS: Mapping[str, Any] = MappingProxyType(_defaults)
"""Every control field and its default.  Lists are shared: copy before mutating
(:func:`control_defaults` does)."""

HTTP_FAULT_FIELDS: frozenset[str] = frozenset(k for p in HTTP_PREFIXES for k in _http_defaults(p))
TRANSPORT_FIELDS: frozenset[str] = frozenset(k for k in _defaults if k.startswith("transport_"))
TIMEOUT_FIELDS: frozenset[str] = frozenset(k for k in _defaults if k.startswith("transfer_"))
SHAPING_FIELDS: frozenset[str] = frozenset(k for k in _defaults if k.startswith("nftables_"))
CONTENT_FIELDS: frozenset[str] = frozenset(k for k in _defaults if k.startswith("content_"))
MANIFEST_FAULT_FIELDS: frozenset[str] = frozenset(k for k in _defaults if k.startswith("manifest_fault_"))
"""Manifest faults: per session (not group fields), like content rewriting."""

GROUP_FIELDS: frozenset[str] = HTTP_FAULT_FIELDS | TRANSPORT_FIELDS | TIMEOUT_FIELDS | SHAPING_FIELDS
"""Fields that propagate to every member of a session group (HTTP faults incl. transfer
timeouts, transport faults, shaping incl. patterns).  Content rewriting stays per session."""

FIELD_ALIASES: Mapping[str, str] = MappingProxyType({"transport_fault_type": "transport_failure_type"})
"""Input-only spellings of control fields."""

_LEGACY_UNITS = frozenset(f"{p}_failure_units" for p in (*HTTP_PREFIXES, "transport"))


def control_defaults(default_rate_mbps: float = 0) -> dict[str, Any]:
    """A fresh, mutable copy of :data:`CONTROL_DEFAULTS` (lists copied).

    *default_rate_mbps* is config ``[shaping] default_rate_mbps``: the cap of a new session.
    """
    out = {k: (list(v) if isinstance(v, list) else v) for k, v in CONTROL_DEFAULTS.items()}
    out["nftables_bandwidth_mbps"] = _num_out(float(default_rate_mbps))
    out["seed"] = random.SystemRandom().randint(0, MAX_SEED)  # replayable: shown, settable
    return out


# --------------------------------------------------------------------------- value parsers


class _Bad(ValueError):
    """A reason why one value is invalid."""


def _coerce_str(value: Any, coerce: bool) -> Any:
    if not coerce or not isinstance(value, str):
        return value
    text = value.strip()
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return value


def _number(value: Any, lo: float, hi: float, coerce: bool = False) -> int | float:
    value = _coerce_str(value, coerce)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"must be a number between {_num_out(lo)} and {_num_out(hi)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad("must be a finite number")
    if not lo <= value <= hi:
        raise _Bad(f"out of range: must be between {_num_out(lo)} and {_num_out(hi)}")
    return _num_out(value)


def _boolean(value: Any, coerce: bool = False) -> bool:
    if coerce and isinstance(value, (str, int)) and not isinstance(value, bool):
        low = str(value).strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
    if not isinstance(value, bool):
        raise _Bad("must be true or false")
    return value


def _choice(value: Any, choices: Sequence[Any], coerce: bool = False) -> Any:
    if isinstance(value, str):
        value = value.strip().lower()
        if coerce and all(isinstance(c, int) for c in choices):
            value = _coerce_str(value, True)
    if isinstance(value, bool):
        raise _Bad(f"must be one of {', '.join(str(c) for c in choices)}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value not in choices:
        raise _Bad(f"unknown value {value!r}: must be one of {', '.join(str(c) for c in choices)}")
    return value


def _string_list(value: Any, coerce: bool = False) -> list[str]:
    if isinstance(value, str):
        if not coerce:  # JSON callers send a list; a bare string is a type error
            raise _Bad("must be a list of strings")
        # A single string is one entry, or a comma-separated list (legacy form posts).
        value = [part for part in value.split(",")]
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad("must be a list of strings")
    if len(value) > MAX_URLS:  # counted before blanks are dropped, as the schema counts
        raise _Bad(f"at most {MAX_URLS} entries")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise _Bad("must be a list of strings")
        item = item.strip()
        if len(item) > MAX_URL_CHARS:
            raise _Bad(f"entries must be at most {MAX_URL_CHARS} characters")
        if item:
            out.append(item)
    if len(out) > MAX_URLS:
        raise _Bad(f"at most {MAX_URLS} entries")
    return out


def normalise_fault_type(value: Any) -> str:
    """The canonical HTTP fault type for *value*, or :class:`ValueError` with the reason.

    Canonical types: ``none``, a status code as a string (``"404"``; ints and numeric
    strings 400-599 accepted), ``timeout``, ``connection_refused``, ``dns_failure``,
    ``rate_limiting``, the nine ``request_{connect,first_byte,body}_{reset,hang,delayed}``
    and ``corrupted``.  Legacy aliases (``hung``, ``socket_*``) map to socket types;
    ``null`` and ``""`` mean ``none``.  Matching is case-insensitive; ``-`` equals ``_``.
    """
    if value is None:
        return "none"
    if isinstance(value, bool):
        raise _Bad("must be a fault type name or an HTTP status code 400-599")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        if 400 <= value <= 599:
            return str(value)
        raise _Bad(f"status code {value} out of range: must be 400-599")
    if not isinstance(value, str):
        raise _Bad("must be a fault type name or an HTTP status code 400-599")
    text = value.strip().lower().replace("-", "_")
    if text == "":
        return "none"
    if text.isdecimal():
        # As the schema says (``^[45][0-9][0-9]$``): ASCII digits only, nothing around
        # them ("٤٠٤" or " 404" are not a status code a player would be sent).
        if not (value.isascii() and value.isdecimal()):
            raise _Bad("a status code is three ASCII digits 400-599")
        code = int(text)
        if 400 <= code <= 599:
            return str(code)
        raise _Bad(f"status code {code} out of range: must be 400-599")
    text = LEGACY_FAULT_ALIASES.get(text, text)
    if text in NAMED_FAULT_TYPES:
        return text
    raise _Bad(f"unknown fault type {value!r}")


def normalise_transport_type(value: Any) -> str:
    """The canonical transport fault type (``none|drop|reject``) or :class:`ValueError`."""
    if value is None or value == "":
        return "none"
    if not isinstance(value, str) or value.strip().lower() not in TRANSPORT_TYPES:
        raise _Bad(f"unknown transport fault type {value!r}: must be one of none, drop, reject")
    return value.strip().lower()


def _steps(value: Any, coerce: bool = False) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad("must be a list of {rate_mbps, duration_seconds, enabled} objects")
    if len(value) > MAX_STEPS:
        raise _Bad(f"at most {MAX_STEPS} steps")
    out = []
    for i, step in enumerate(value, 1):
        if not isinstance(step, Mapping):
            raise _Bad(f"step {i}: must be an object")
        extra = sorted(set(step) - {"rate_mbps", "duration_seconds", "enabled"})
        if extra:
            raise _Bad(f"step {i}: unknown key {extra[0]!r}")
        if "rate_mbps" not in step or "duration_seconds" not in step:
            raise _Bad(f"step {i}: needs rate_mbps and duration_seconds")
        try:
            rate = _number(step["rate_mbps"], 0, 10000, coerce)
        except _Bad as exc:
            raise _Bad(f"step {i}: rate_mbps {exc}") from None
        try:
            duration = _number(step["duration_seconds"], 0, MAX_STEP_SECONDS, coerce)
        except _Bad as exc:
            raise _Bad(f"step {i}: duration_seconds {exc}") from None
        if duration < MIN_STEP_SECONDS:
            raise _Bad(f"step {i}: duration_seconds must be at least {MIN_STEP_SECONDS:g}")
        try:
            enabled = _boolean(step.get("enabled", True), coerce)
        except _Bad as exc:
            raise _Bad(f"step {i}: enabled {exc}") from None
        out.append({"rate_mbps": rate, "duration_seconds": duration, "enabled": enabled})
    return out


def _seed(value: Any, coerce: bool = False) -> int:
    number = _number(value, 0, MAX_SEED, coerce)
    if not float(number).is_integer():
        raise _Bad("must be a whole number")
    return int(number)


def _num_schema(lo: float, hi: float, *, exclusive_lo: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "number", "maximum": _num_out(hi)}
    out["exclusiveMinimum" if exclusive_lo else "minimum"] = _num_out(lo)
    return out


def _enum_schema(choices: Sequence[Any]) -> dict[str, Any]:
    kind = "integer" if all(isinstance(c, int) for c in choices) else "string"
    return {"type": kind, "enum": list(choices)}


_LIST_SCHEMA: dict[str, Any] = {"type": ["array", "null"], "maxItems": MAX_URLS,
                                "items": {"type": "string", "maxLength": MAX_URL_CHARS}}
STEPS_SCHEMA: dict[str, Any] = {
    "type": ["array", "null"], "maxItems": MAX_STEPS,
    "items": {"type": "object", "additionalProperties": False, "required": ["rate_mbps", "duration_seconds"],
              "properties": {"rate_mbps": _num_schema(0, 10000),
                             "duration_seconds": _num_schema(MIN_STEP_SECONDS, MAX_STEP_SECONDS),
                             "enabled": {"type": "boolean"}}}}


def _field(name: str) -> tuple[Any, dict[str, Any]]:  # noqa: C901 - a flat table
    """The value parser (``(value, coerce) -> normalised``) and JSON Schema of control
    field *name*: one table for both, so the validator and the OpenAPI document agree."""
    if name.endswith("_failure_type"):
        if name == "transport_failure_type":
            return (lambda v, c: normalise_transport_type(v)), {"type": ["string", "null"],
                                                                "enum": [*TRANSPORT_TYPES, "", None]}
        return (lambda v, c: normalise_fault_type(v)), {
            "anyOf": [{"type": "string", "enum": sorted(NAMED_FAULT_TYPES | set(LEGACY_FAULT_ALIASES))},
                      {"type": "string", "pattern": "^[45][0-9][0-9]$"},
                      {"type": "integer", "minimum": 400, "maximum": 599}, {"type": "null"}]}
    if name.endswith("_failure_mode"):
        modes = TRANSPORT_MODES if name.startswith("transport") else HTTP_MODES
        return (lambda v, c: _choice(v, tuple(modes), c)), _enum_schema(tuple(modes))
    if name.endswith("_consecutive_units"):
        units: tuple[str, ...] = ("seconds", "packets") if name.startswith("transport") \
            else ("requests", "seconds")
        return (lambda v, c: _choice(v, units, c)), _enum_schema(units)
    if name.endswith("_frequency_units"):
        freq: tuple[str, ...] = ("seconds",) if name.startswith("transport") else ("requests", "seconds")
        return (lambda v, c: _choice(v, freq, c)), _enum_schema(freq)
    if name.endswith(("_consecutive_failures", "_failure_frequency")):
        return (lambda v, c: _number(v, 0, MAX_COUNT, c)), _num_schema(0, MAX_COUNT)
    if name == "manifest_fault_type":
        return (lambda v, c: _choice(v, MANIFEST_FAULT_TYPES, c)), _enum_schema(MANIFEST_FAULT_TYPES)
    if name == "manifest_fault_value":
        return (lambda v, c: _number(v, 0, MAX_MANIFEST_FAULT_VALUE, c)), \
            _num_schema(0, MAX_MANIFEST_FAULT_VALUE)
    if name.endswith("_failure_urls") or name in ("content_allowed_variants", "manifest_fault_variants"):
        return _string_list, _LIST_SCHEMA
    if name.endswith("_failure_probability"):
        return (lambda v, c: _number(v, 0, 1, c)), _num_schema(0, 1)
    if name == "seed":
        return _seed, {"type": "integer", "minimum": 0, "maximum": MAX_SEED}
    if name in ("transfer_active_timeout_seconds", "transfer_idle_timeout_seconds"):
        return (lambda v, c: _number(v, 0, MAX_TIMEOUT_SECONDS, c)), _num_schema(0, MAX_TIMEOUT_SECONDS)
    if name == "nftables_bandwidth_mbps":
        return (lambda v, c: _number(v, 0, 10000, c)), _num_schema(0, 10000)
    if name == "nftables_delay_ms":
        return (lambda v, c: _number(v, 0, 10000, c)), _num_schema(0, 10000)
    if name == "nftables_packet_loss":
        return (lambda v, c: _number(v, 0, 100, c)), _num_schema(0, 100)
    if name == "nftables_pattern_steps":
        return _steps, STEPS_SCHEMA
    if name == "nftables_pattern_template_mode":
        return (lambda v, c: _choice(v, TEMPLATE_MODES, c)), _enum_schema(TEMPLATE_MODES)
    if name == "nftables_pattern_margin_pct":
        return (lambda v, c: _choice(v, MARGIN_PCTS, c)), _enum_schema(MARGIN_PCTS)
    if name == "nftables_pattern_step_seconds":
        return (lambda v, c: _choice(v, STEP_SECONDS, c)), _enum_schema(STEP_SECONDS)
    if name == "content_live_offset":
        return (lambda v, c: _number(v, 0, MAX_LIVE_OFFSET, c)), _num_schema(0, MAX_LIVE_OFFSET)
    if name in CONTROL_DEFAULTS and isinstance(CONTROL_DEFAULTS[name], bool):
        return _boolean, {"type": "boolean"}
    raise KeyError(name)


_FIELDS = {name: _field(name) for name in CONTROL_DEFAULTS}
_PARSERS = {name: parser for name, (parser, _schema) in _FIELDS.items()}

FIELD_SCHEMAS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {name: schema for name, (_parser, schema) in _FIELDS.items()})
"""JSON Schema of every control field (what :func:`parse_value` accepts from JSON)."""


def control_set_schema() -> dict[str, Any]:
    """JSON Schema of a ``set`` object: every control field and input alias, nothing else."""
    props = {name: dict(schema) for name, schema in FIELD_SCHEMAS.items()}
    for alias, canonical in FIELD_ALIASES.items():
        props[alias] = dict(FIELD_SCHEMAS[canonical])
    return {"type": "object", "additionalProperties": False, "properties": props}


def parse_value(name: str, value: Any, *, coerce_strings: bool = False) -> Any:
    """Normalise one control value (raises :class:`ValueError` with a reason)."""
    try:
        parser = _PARSERS[name]
    except KeyError:
        raise _Bad("unknown field") from None
    return parser(value, coerce_strings)


# --------------------------------------------------------------------------- validate


def _unknown_reason(key: str) -> str:
    if key in READ_ONLY_FIELDS or key.startswith("fault_count_"):
        if key == "group_id":
            return "read-only (use /api/session-group/link)"
        return "read-only"
    if key.startswith("player_metrics_"):
        return "not a control field (post it to /api/session/{id}/metrics)"
    return "unknown field"


def _resolve_timing(p: str, sent: dict[str, Any], legacy_units: Any, current: Mapping[str, Any],
                    errors: dict[str, str]) -> None:
    """Derive mode <-> units for rule prefix *p* in place (see docs/faults.md)."""
    transport = p == "transport"
    modes = TRANSPORT_MODES if transport else HTTP_MODES
    mk, ck, fk = f"{p}_failure_mode", f"{p}_consecutive_units", f"{p}_frequency_units"
    if legacy_units is not None:
        lk = f"{p}_failure_units"
        try:
            if transport:
                unit = _choice(legacy_units, ("seconds", "packets", *TRANSPORT_MODES))
                pair = TRANSPORT_MODES.get(unit) or (unit, "seconds")
            else:
                unit = _choice(legacy_units, ("requests", "seconds", *HTTP_MODES))
                pair = HTTP_MODES.get(unit) or (unit, unit)
        except _Bad as exc:
            errors[lk] = str(exc)
            return
        for key, want in ((ck, pair[0]), (fk, pair[1])):
            if key in sent and sent[key] != want:
                errors[key] = f"disagrees with {lk}={unit!r}"
                return
            sent[key] = want
    has_mode, has_c, has_f = mk in sent, ck in sent, fk in sent
    if not (has_mode or has_c or has_f):
        return
    if has_mode:
        want_c, want_f = modes[sent[mk]]
        bad = False
        for key, want in ((ck, want_c), (fk, want_f)):
            if key in sent and sent[key] != want:
                errors[key] = f"disagrees with {mk}={sent[mk]!r} (which uses {want} units)"
                bad = True
        if not bad:
            sent[ck], sent[fk] = want_c, want_f
        return
    cur_c = current.get(ck, CONTROL_DEFAULTS[ck])
    cur_f = current.get(fk, CONTROL_DEFAULTS[fk])
    if has_c and has_f:
        pair = (sent[ck], sent[fk])
    elif has_c:
        if transport:
            pair = (sent[ck], "seconds")
        elif sent[ck] == "seconds":
            pair = ("seconds", "seconds")          # seconds/requests does not exist
        else:
            pair = ("requests", cur_f)
    else:
        if sent[fk] == "requests":
            pair = ("requests", "requests")        # seconds/requests does not exist
        else:
            pair = (cur_c, sent[fk])
    for mode, units in modes.items():
        if units == pair:
            sent[ck], sent[fk], sent[mk] = pair[0], pair[1], mode
            return
    errors[ck] = f"{pair[0]}/{pair[1]} is not a timing mode (use requests/requests, " \
                 "seconds/seconds or requests/seconds)"


def validate(set_: Mapping[str, Any], fields: Sequence[str] | None, current: Mapping[str, Any], *,
             coerce_strings: bool = False,
             variants: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Validate a PATCH and return the normalised changes to apply (applies nothing).

    *set_* is the client's object, *fields* the keys it says it changed (``None`` = every
    key of *set_*), *current* the session's current control values (used to derive the
    other half of a one-unit change and for cross-field checks).  Aliases are resolved
    (``transport_fault_type``, legacy fault types, ``P_failure_units``) and timing mode and
    units are both present in the result whenever either was sent.

    *coerce_strings* (legacy form posts) accepts ``"5"``/``"true"`` for numbers/booleans;
    JSON callers leave it off and a string where a number belongs is a type error.
    *variants* is the session's ``manifest_variants``; when known, a non-empty
    ``content_allowed_variants`` matching none of them is rejected.

    Raises ``Invalid("no fields provided")`` for empty input, else
    ``Invalid("invalid", fields={key: reason, ...})`` listing every bad key.
    """
    if not isinstance(set_, Mapping):
        raise Invalid("invalid", detail="set must be a JSON object", fields={"set": "must be an object"})
    errors: dict[str, str] = {}
    if fields is None:
        keys = list(set_)
    else:
        if isinstance(fields, str) or not isinstance(fields, Sequence) \
                or not all(isinstance(f, str) for f in fields):
            raise Invalid("invalid", fields={"fields": "must be a list of field names"})
        keys = list(dict.fromkeys(fields))
        for key in keys:
            if key not in set_:
                errors[key] = "listed in fields but missing from set"
    if not keys:
        raise Invalid("no fields provided")
    sent: dict[str, Any] = {}
    legacy: dict[str, Any] = {}
    for raw_key in keys:
        if raw_key in errors:
            continue
        key = raw_key[:-2] if coerce_strings and raw_key.endswith("[]") else raw_key
        value = set_[raw_key]
        if key in _LEGACY_UNITS:
            legacy[key[: -len("_failure_units")]] = value
            continue
        canonical = FIELD_ALIASES.get(key, key)
        if canonical not in CONTROL_DEFAULTS:
            errors[raw_key] = _unknown_reason(key)
            continue
        try:
            parsed = parse_value(canonical, value, coerce_strings=coerce_strings)
        except ValueError as exc:
            errors[raw_key] = str(exc)
            continue
        if canonical in sent and sent[canonical] != parsed:
            errors[raw_key] = f"disagrees with {canonical}"
            continue
        sent[canonical] = parsed
    for p in (*HTTP_PREFIXES, "transport"):
        _resolve_timing(p, sent, legacy.get(p), current, errors)
    _cross_checks(sent, current, errors, variants)
    if errors:
        raise Invalid("invalid", fields=errors)
    return sent


def _effective(key: str, sent: Mapping[str, Any], current: Mapping[str, Any]) -> Any:
    if key in sent:
        return sent[key]
    return current.get(key, CONTROL_DEFAULTS[key])


def _cross_checks(sent: dict[str, Any], current: Mapping[str, Any], errors: dict[str, str],
                  variants: Sequence[Mapping[str, Any]] | None) -> None:
    # Counts measured in requests/packets are whole numbers.
    for p in (*HTTP_PREFIXES, "transport"):
        for count, unit in ((f"{p}_consecutive_failures", f"{p}_consecutive_units"),
                            (f"{p}_failure_frequency", f"{p}_frequency_units")):
            if count in errors or unit in errors or not (count in sent or unit in sent):
                continue
            value = _effective(count, sent, current)
            unit_value = _effective(unit, sent, current)
            if unit_value in ("requests", "packets") and isinstance(value, (int, float)) \
                    and not float(value).is_integer():
                errors[count] = f"must be a whole number of {unit_value}"
    # A pattern needs steps unless a template builds them.
    keys = ("nftables_pattern_enabled", "nftables_pattern_steps", "nftables_pattern_template_mode")
    if any(k in sent for k in keys) and not any(k in errors for k in keys):
        enabled = _effective("nftables_pattern_enabled", sent, current)
        steps = _effective("nftables_pattern_steps", sent, current) or []
        mode = _effective("nftables_pattern_template_mode", sent, current)
        if enabled and mode == "sliders" and not any(s.get("enabled", True) for s in steps):
            errors["nftables_pattern_enabled"] = "a pattern needs at least one enabled step"
    if variants and sent.get("content_allowed_variants") and "content_allowed_variants" not in errors:
        from streamlab.proxy.rewrite import allowed_matches_any
        if not allowed_matches_any(variants, sent["content_allowed_variants"]):
            errors["content_allowed_variants"] = "matches none of the session's variants"


# --------------------------------------------------------------------------- metrics

_METRIC_KEY = re.compile(r"^player_metrics_[A-Za-z0-9_]{1,100}$")


def validate_metrics(set_: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a metrics post: only ``player_metrics_*`` keys with JSON scalar values.

    Returns a copy of the accepted keys.  Raises ``Invalid("no fields provided")`` when
    empty, else ``Invalid("invalid", fields={...})`` naming every bad key (control keys,
    other keys, lists/objects, non-finite numbers, over-long strings).
    """
    if not isinstance(set_, Mapping):
        raise Invalid("invalid", detail="set must be a JSON object", fields={"set": "must be an object"})
    if not set_:
        raise Invalid("no fields provided")
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    if len(set_) > MAX_METRIC_KEYS:
        raise Invalid("invalid", fields={"set": f"at most {MAX_METRIC_KEYS} metrics per post"})
    for key, value in set_.items():
        if not isinstance(key, str) or not _METRIC_KEY.match(key):
            if isinstance(key, str) and (key in CONTROL_DEFAULTS or key in FIELD_ALIASES):
                errors[str(key)] = "control fields cannot be set through the metrics endpoint"
            else:
                errors[str(key)] = "only player_metrics_* keys are accepted"
            continue
        if value is not None and not isinstance(value, (str, int, float, bool)):
            errors[key] = "must be a JSON scalar (string, number, boolean or null)"
        elif isinstance(value, float) and not math.isfinite(value):
            errors[key] = "must be a finite number"
        elif isinstance(value, str) and len(value) > MAX_METRIC_STRING:
            errors[key] = f"strings are limited to {MAX_METRIC_STRING} characters"
        else:
            out[key] = value
    if errors:
        raise Invalid("invalid", fields=errors)
    return out
