"""Per-session master playlist / MPD rewriting (pure).  See spec/sessions.md section 5."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from streamlab.proxy.classify import _clean, playlist_variant


def variant_ids(url: str) -> set[str]:
    """Every spelling that names the variant at *url*: the URI, its file name, its rung id."""
    clean = _clean(url) if url else ""
    out = {url, clean, posixpath.basename(clean)}
    rung = playlist_variant(clean)
    if rung:
        out.add(rung)
    elif clean and "/" not in clean and "." not in clean:
        out.add(clean)                      # a bare rung / Representation id
    out.discard("")
    return out


def allowed(url: str, allowed_list: Sequence[str]) -> bool:
    """Whether the variant at *url* is kept by ``content_allowed_variants`` (empty keeps all)."""
    entries = [a.strip() for a in allowed_list if a and a.strip()]
    if not entries:
        return True
    ids = variant_ids(url)
    for entry in entries:
        if entry in ids or posixpath.basename(_clean(entry)) in ids or playlist_variant(entry) in ids:
            return True
    return False


def allowed_matches_any(variants: Sequence[Mapping[str, Any]], allowed_list: Sequence[str]) -> bool:
    """PATCH-time check: does a non-empty allow-list keep at least one known variant?"""
    entries = [a for a in allowed_list if a and a.strip()]
    if not entries or not variants:
        return True
    return any(allowed(str(v.get("url", "")), entries) for v in variants)
