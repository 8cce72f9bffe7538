"""Per-session master playlist / MPD rewriting (pure).  See spec/sessions.md section 5.

Edits (all compose, applied in one pass):

* ``content_strip_codecs`` — drop ``CODECS`` (HLS) / every ``codecs`` attribute (DASH);
* ``content_strip_average_bandwidth`` — drop ``AVERAGE-BANDWIDTH`` (HLS only);
* ``content_overstate_bandwidth`` — ``BANDWIDTH``/``AVERAGE-BANDWIDTH`` (HLS) and
  ``Representation@bandwidth`` (DASH) × 1.10, rounded half up to an integer;
* ``content_allowed_variants`` — keep only the rungs named (variant URI, file name or rung
  id; empty keeps all).  DASH drops the other video Representations (and a video
  AdaptationSet left empty); audio renditions are always kept;
* ``content_live_offset`` — HLS ``#EXT-X-START:TIME-OFFSET=-<s>,PRECISE=YES`` (replacing
  any existing one); DASH ``MPD@suggestedPresentationDelay=PT<s>S`` and, for LL-DASH, the
  ``ServiceDescription/Latency@target`` (ms) so the offset also steers low-latency players.

Only the lines/attributes touched change; everything else is passed through as is.
"""

from __future__ import annotations

import posixpath
import re
import xml.dom.minidom
from collections.abc import Mapping, Sequence
from typing import Any

from streamlab.proxy.classify import _clean, playlist_variant

_ATTR = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


# --------------------------------------------------------------------------- allow-list


def variant_ids(url: str) -> set[str]:
    """Every spelling that names the variant at *url*: the URI, its file name, its rung id."""
    clean = _clean(url) if url else ""
    out = {url, clean, posixpath.basename(clean)}
    rung = playlist_variant(clean)
    if rung:
        out.add(rung)
    out.discard("")
    return out


def allowed(url: str, allowed_list: Sequence[str]) -> bool:
    """Whether the variant at *url* (URI or Representation id) is kept by
    ``content_allowed_variants`` (an empty list keeps all)."""
    entries = [a.strip() for a in allowed_list if a and a.strip()]
    if not entries:
        return True
    ids = variant_ids(url)
    for entry in entries:
        if entry in ids or posixpath.basename(_clean(entry)) in ids or playlist_variant(entry) in ids:
            return True
    return False


def allowed_matches_any(variants: Sequence[Mapping[str, Any]], allowed_list: Sequence[str]) -> bool:
    """PATCH-time check: does a non-empty allow-list keep at least one known variant?

    True when the list is empty or the ladder is unknown (no variants yet).
    """
    entries = [a for a in allowed_list if a and a.strip()]
    if not entries or not variants:
        return True
    return any(allowed(str(v.get("url", "")), entries) for v in variants)


# --------------------------------------------------------------------------- helpers


def rewrite_needed(controls: Mapping[str, Any]) -> bool:
    """Whether any master edit is on (callers skip buffering/rewriting otherwise)."""
    return bool(controls.get("content_strip_codecs") or controls.get("content_strip_average_bandwidth")
                or controls.get("content_overstate_bandwidth") or controls.get("content_allowed_variants")
                or controls.get("content_live_offset"))


def overstate(value: int) -> int:
    """``value`` × 1.10 rounded half up, in exact integer arithmetic."""
    return (int(value) * 11 + 5) // 10


def _fmt_seconds(value: float) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(round(value, 3))


def parse_attributes(text: str) -> list[tuple[str, str]]:
    """An HLS attribute list as ordered ``(name, raw value)`` pairs (quotes kept)."""
    return [(m.group(1), m.group(2)) for m in _ATTR.finditer(text)]


def _format_attributes(attrs: list[tuple[str, str]]) -> str:
    return ",".join(f"{k}={v}" for k, v in attrs)


def _edit_attrs(attrs: list[tuple[str, str]], controls: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key, value in attrs:
        if key == "CODECS" and controls.get("content_strip_codecs"):
            continue
        if key == "AVERAGE-BANDWIDTH" and controls.get("content_strip_average_bandwidth"):
            continue
        if key in ("BANDWIDTH", "AVERAGE-BANDWIDTH") and controls.get("content_overstate_bandwidth") \
                and value.isdecimal():
            value = str(overstate(int(value)))
        out.append((key, value))
    return out


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


# --------------------------------------------------------------------------- HLS


def rewrite_hls_master(text: str, controls: Mapping[str, Any]) -> str:
    """Apply the session's master edits to an HLS master playlist."""
    if not rewrite_needed(controls):
        return text
    allow = list(controls.get("content_allowed_variants") or [])
    offset = float(controls.get("content_live_offset") or 0)
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#EXT-X-STREAM-INF:"):
            attrs = parse_attributes(line[len("#EXT-X-STREAM-INF:"):])
            j = i + 1
            between = []
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith("#")):
                between.append(lines[j])
                j += 1
            uri = lines[j] if j < len(lines) else ""
            if allowed(uri.strip(), allow):
                out.append("#EXT-X-STREAM-INF:" + _format_attributes(_edit_attrs(attrs, controls)))
                out.extend(between)
                if j < len(lines):
                    out.append(uri)
            i = j + 1
            continue
        if line.startswith("#EXT-X-I-FRAME-STREAM-INF:"):
            attrs = parse_attributes(line[len("#EXT-X-I-FRAME-STREAM-INF:"):])
            uri = _unquote(dict(attrs).get("URI", ""))
            if allowed(uri, allow):
                out.append("#EXT-X-I-FRAME-STREAM-INF:" + _format_attributes(_edit_attrs(attrs, controls)))
            i += 1
            continue
        if line.startswith("#EXT-X-START:") and offset > 0:
            i += 1
            continue
        out.append(line)
        i += 1
    if offset > 0:
        start = f"#EXT-X-START:TIME-OFFSET=-{_fmt_seconds(offset)},PRECISE=YES"
        at = next((k + 1 for k, ln in enumerate(out) if ln.startswith("#EXT-X-VERSION")), None)
        if at is None:
            at = next((k + 1 for k, ln in enumerate(out) if ln.startswith("#EXTM3U")), 0)
        out.insert(at, start)
    trailer = newline if text.endswith(("\n", "\r")) else ""
    return newline.join(out) + trailer


def variants_of_master(text: str) -> list[dict[str, Any]]:
    """The ladder of an (unmodified) master: HLS ``EXT-X-STREAM-INF`` rungs or DASH video
    Representations, as ``{url, bandwidth, average_bandwidth, resolution}`` (missing -> None;
    for DASH ``url`` is the Representation id)."""
    if text.lstrip().startswith("<"):
        return variants_of_mpd(text)
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("#EXT-X-STREAM-INF:"):
            continue
        attrs = {k: _unquote(v) for k, v in parse_attributes(line[len("#EXT-X-STREAM-INF:"):])}
        uri = next((ln.strip() for ln in lines[i + 1:] if ln.strip() and not ln.startswith("#")), "")
        out.append({
            "url": uri,
            "bandwidth": int(attrs["BANDWIDTH"]) if attrs.get("BANDWIDTH", "").isdecimal() else None,
            "average_bandwidth": int(attrs["AVERAGE-BANDWIDTH"])
            if attrs.get("AVERAGE-BANDWIDTH", "").isdecimal() else None,
            "resolution": attrs.get("RESOLUTION"),
        })
    return out


# --------------------------------------------------------------------------- DASH


def _elements(node: Any, local: str) -> list[Any]:
    return [e for e in node.getElementsByTagName("*") if e.localName == local]


def _children(node: Any, local: str) -> list[Any]:
    return [e for e in node.childNodes if e.nodeType == e.ELEMENT_NODE and e.localName == local]


def _is_video_set(aset: Any) -> bool:
    ctype = aset.getAttribute("contentType")
    mime = aset.getAttribute("mimeType")
    if ctype:
        return ctype == "video"
    if mime:
        return mime.startswith("video/")
    return any(r.getAttribute("mimeType").startswith("video/") for r in _children(aset, "Representation"))


def _serialise(doc: Any, original: str) -> str:
    prologue = ""
    m = re.match(r"\s*(<\?xml[^>]*\?>)", original)
    if m:
        prologue = m.group(1) + "\n"
    body = doc.documentElement.toxml()
    return prologue + body + ("\n" if original.endswith("\n") else "")


def rewrite_mpd(text: str, controls: Mapping[str, Any]) -> str:
    """Apply the session's master edits to a DASH MPD (see the module docstring)."""
    if not rewrite_needed(controls):
        return text
    if not (controls.get("content_strip_codecs") or controls.get("content_overstate_bandwidth")
            or controls.get("content_allowed_variants") or controls.get("content_live_offset")):
        return text                          # AVERAGE-BANDWIDTH has no DASH meaning
    doc = xml.dom.minidom.parseString(text.encode("utf-8"))
    root = doc.documentElement
    if root is None:
        return text
    allow = list(controls.get("content_allowed_variants") or [])
    if allow:
        for aset in _elements(root, "AdaptationSet"):
            if not _is_video_set(aset):
                continue
            reps = _children(aset, "Representation")
            for rep in reps:
                if not allowed(rep.getAttribute("id"), allow):
                    aset.removeChild(rep)
            if reps and not _children(aset, "Representation"):
                aset.parentNode.removeChild(aset)
    if controls.get("content_strip_codecs"):
        for el in [root, *root.getElementsByTagName("*")]:
            if el.hasAttribute("codecs"):
                el.removeAttribute("codecs")
    if controls.get("content_overstate_bandwidth"):
        for rep in _elements(root, "Representation"):
            value = rep.getAttribute("bandwidth")
            if value.isdecimal():
                rep.setAttribute("bandwidth", str(overstate(int(value))))
    offset = float(controls.get("content_live_offset") or 0)
    if offset > 0:
        root.setAttribute("suggestedPresentationDelay", f"PT{_fmt_seconds(offset)}S")
        target_ms = int(round(offset * 1000))
        for latency in _elements(root, "Latency"):
            latency.setAttribute("target", str(target_ms))
            if latency.getAttribute("max").isdecimal() and int(latency.getAttribute("max")) < target_ms:
                latency.setAttribute("max", str(target_ms))
            if latency.getAttribute("min").isdecimal() and int(latency.getAttribute("min")) > target_ms:
                latency.setAttribute("min", str(target_ms))
    return _serialise(doc, text)


def variants_of_mpd(text: str) -> list[dict[str, Any]]:
    """Video Representations of an MPD as ``{url: id, bandwidth, average_bandwidth: None,
    resolution}``, de-duplicated by id across Periods."""
    doc = xml.dom.minidom.parseString(text.encode("utf-8"))
    out: list[dict[str, Any]] = []
    seen = set()
    for aset in _elements(doc.documentElement, "AdaptationSet"):
        if not _is_video_set(aset):
            continue
        for rep in _children(aset, "Representation"):
            rid = rep.getAttribute("id")
            if rid in seen:
                continue
            seen.add(rid)
            width = rep.getAttribute("width") or aset.getAttribute("width")
            height = rep.getAttribute("height") or aset.getAttribute("height")
            bw = rep.getAttribute("bandwidth")
            out.append({
                "url": rid,
                "bandwidth": int(bw) if bw.isdecimal() else None,
                "average_bandwidth": None,
                "resolution": f"{width}x{height}" if width and height else None,
            })
    return out


def rewrite_master(text: str, controls: Mapping[str, Any]) -> str:
    """Dispatch on the body: ``#EXTM3U`` -> HLS, XML -> MPD, anything else unchanged."""
    head = text.lstrip()
    if head.startswith("#EXTM3U"):
        return rewrite_hls_master(text, controls)
    if head.startswith("<"):
        return rewrite_mpd(text, controls)
    return text
