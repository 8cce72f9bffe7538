"""Scenario documents as JSON or YAML text (pure).

YAML is read with PyYAML's safe loader, and only what JSON can say is accepted: anchors
and aliases are refused (a small document must not expand into a huge one), and the
result must survive a JSON round trip (no dates, sets, NaN, binary), so a YAML scenario
is exactly its JSON twin from here on.
"""

from __future__ import annotations

import json
from typing import Any

from streamlab.errors import Invalid

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
"""Content types a YAML scenario may be sent with."""


def is_yaml(content_type: str | bytes | None) -> bool:
    """Whether *content_type* names YAML."""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    return (content_type or "").split(";")[0].strip().lower() in YAML_TYPES


def load_yaml(text: str | bytes) -> Any:
    """The JSON value of the YAML document *text*; ``Invalid("invalid yaml")`` otherwise."""
    import yaml

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid("invalid yaml", detail="the body is not UTF-8") from None
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise Invalid("invalid yaml", detail="anchors and aliases are not accepted")
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise Invalid("invalid yaml", detail=" ".join(str(exc).split())) from None
    except RecursionError:
        raise Invalid("invalid yaml", detail="nested too deeply") from None
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise Invalid("invalid yaml", detail=f"not representable as JSON: {exc}") from None
    except RecursionError:
        raise Invalid("invalid yaml", detail="nested too deeply") from None
