"""The error collector and the small value checks every part of the scenario format
shares (pure): JSON pointers, seconds, unknown keys, references to earlier steps.
The format itself is :mod:`streamlab.scenario.model` (steps) and
:mod:`streamlab.scenario.expectations`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MAX_SECONDS = 86400.0


def pointer(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) of *parts*."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class Errors:
    """Every error found so far, as ``[{"path", "message"}]`` (JSON-pointer paths)."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, path: str, message: str) -> None:
        """One more error at *path*."""
        self.items.append({"path": path, "message": message})


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def seconds(value: Any, path: str, errors: Errors, *, positive: bool = False) -> float | None:
    """*value* as seconds (0 or more, or more than 0 when *positive*; at most
    :data:`MAX_SECONDS`), or None with the error added."""
    if not is_number(value):
        errors.add(path, "must be a number of seconds")
        return None
    if (positive and value <= 0) or value < 0:
        errors.add(path, "must be greater than 0" if positive else "must be 0 or more")
        return None
    if value > MAX_SECONDS:
        errors.add(path, f"must be at most {MAX_SECONDS:g} s")
        return None
    return float(value)


def unknown_keys(obj: Mapping[str, Any], allowed: tuple[str, ...], path: str, errors: Errors) -> None:
    """An error for every key of *obj* not in *allowed*."""
    for key in obj:
        if key not in allowed:
            errors.add(pointer(*split_pointer(path), key), f"unknown key (allowed: {', '.join(allowed)})")


def split_pointer(path: str) -> list[str]:
    """The parts of JSON pointer *path* (the inverse of :func:`pointer`)."""
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]] if path else []


def step_ref(value: Any, ids: Mapping[str, int], before: int, path: str, errors: Errors) -> int | None:
    """Index of the step *value* names (an index or an id) among the first *before* steps."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        errors.add(path, "must be a step index or a step id")
        return None
    if isinstance(value, int):
        if not 0 <= value < before:
            errors.add(path, f"step {value} is not an earlier step (0..{before - 1})" if before
                       else "the first step cannot come after another one")
            return None
        return value
    index = ids.get(value)
    if index is None:
        errors.add(path, f"no step has id {value!r}")
        return None
    if index >= before:
        errors.add(path, f"step {value!r} is not an earlier step")
        return None
    return index
