"""Per-session manifest faults (pure: text in, text out, time passed in as ``now``).

One control picks the fault (``manifest_fault_type``), one number tunes it
(``manifest_fault_value``, 0 = the default below) and a list names the variants a
``variant_removed`` fault takes away (``manifest_fault_variants``).  What each fault does,
and the decisions taken, are in docs/manifest-faults.md.

:func:`apply` is called only when a manifest fault is set (the listener buffers a media
playlist only then), with the rendered body of a 200 answer, and returns the body to send
and the fault's name when it changed what the player sees ("" otherwise).  The little
memory some faults need (when the fault was armed, which media sequence number it targets,
the frozen playlist, the frozen ``publishTime``) lives in a :class:`ManifestFaultState`
the session keeps and replaces whenever a ``manifest_fault_*`` control changes.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamlab.formats import iso_ms
from streamlab.proxy import rewrite

HLS_MEDIA_FAULTS: frozenset[str] = frozenset({
    "stale_playlist", "sequence_jump", "sequence_regression", "remove_segment", "duplicate_segment",
    "gap_segments", "wrong_extinf", "missing_extinf", "wrong_targetduration", "missing_discontinuity",
    "pdt_drift",
})
MPD_FAULTS: frozenset[str] = frozenset({"mpd_publish_time_frozen", "mpd_ast_jump"})

DEFAULT_VALUES: Mapping[str, float] = {
    "stale_playlist": 10.0,        # seconds the live edge stays frozen
    "sequence_jump": 10.0,         # MEDIA-SEQUENCE + N
    "sequence_regression": 3.0,    # MEDIA-SEQUENCE - N
    "gap_segments": 1.0,           # segments marked EXT-X-GAP
    "wrong_extinf": 0.0,           # 0: twice the real duration, else this many seconds
    "wrong_targetduration": 0.0,   # 0: half the real one (at least 1), else this value
    "pdt_drift": 10.0,             # seconds of PROGRAM-DATE-TIME drift per minute
    "mpd_ast_jump": 10.0,          # seconds availabilityStartTime moves forward
}

# Tags that belong to the segment after them (everything else before the first one is header).
_SEGMENT_TAGS = ("#EXTINF:", "#EXT-X-PROGRAM-DATE-TIME:", "#EXT-X-PART:", "#EXT-X-GAP", "#EXT-X-BYTERANGE:")
_PUBLISH = re.compile(r'\bpublishTime="([^"]*)"')
_AST = re.compile(r'\bavailabilityStartTime="([^"]*)"')


@dataclass
class ManifestFaultState:
    """What a session's manifest fault remembers between responses (reset on re-arm)."""

    armed_at: float | None = None
    target_msn: int | None = None
    frozen: dict[str, tuple[float, str]] = field(default_factory=dict)
    publish_time: str | None = None


def fault_value(controls: Mapping[str, Any], fault: str) -> float:
    """``manifest_fault_value``, or the fault's default when it is 0."""
    value = float(controls.get("manifest_fault_value") or 0)
    return value if value > 0 else DEFAULT_VALUES.get(fault, 0.0)


def apply(text: str, kind: str, path: str, controls: Mapping[str, Any], now: float,
          state: ManifestFaultState) -> tuple[str, str]:
    """The body to send for one 200 manifest answer and the applied fault's name ("" = none).

    *kind* is the request kind (``manifest`` = media playlist, ``master_manifest`` = HLS
    master or MPD), *path* the request path without query (a stale playlist is frozen per
    path).  Faults that do not fit the body (an HLS fault on an MPD, ...) pass it through.
    """
    fault = str(controls.get("manifest_fault_type") or "none")
    if fault == "none":
        return text, ""
    if state.armed_at is None:
        state.armed_at = now
    head = text.lstrip()
    hls = head.startswith("#EXTM3U")
    if kind == "manifest" and hls and fault in HLS_MEDIA_FAULTS:
        if fault == "stale_playlist":
            return _stale(text, path, fault_value(controls, fault), now, state)
        out = hls_media(text, fault, fault_value(controls, fault), now, state)
    elif kind == "master_manifest" and fault == "variant_removed":
        out = remove_variants(text, list(controls.get("manifest_fault_variants") or []))
    elif kind == "master_manifest" and head.startswith("<") and fault in MPD_FAULTS:
        out = mpd(text, fault, fault_value(controls, fault), state)
    else:
        return text, ""
    return out, (fault if out != text else "")


# --------------------------------------------------------------------------- HLS media


def _stale(text: str, path: str, seconds: float, now: float, state: ManifestFaultState) -> tuple[str, str]:
    frozen = state.frozen.get(path)
    if frozen is None:
        state.frozen[path] = (now, text)
        return text, "stale_playlist"
    since, body = frozen
    if now - since < seconds:
        return body, "stale_playlist"
    return text, ""                          # the window is over: live again until re-armed


@dataclass
class _Playlist:
    header: list[str]
    blocks: list[list[str]]                 # one per segment, its URI last
    tail: list[str]
    first_msn: int


def _split(text: str) -> _Playlist:
    lines = text.splitlines()
    header: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(_SEGMENT_TAGS) or line == "#EXT-X-DISCONTINUITY" \
                or (line.strip() and not line.startswith("#")):
            break
        header.append(line)
        i += 1
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in lines[i:]:
        current.append(line)
        if line.strip() and not line.startswith("#"):
            blocks.append(current)
            current = []
    first = 0
    for line in header:
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            first += int(line.split(":", 1)[1].strip() or 0)
        elif line.startswith("#EXT-X-SKIP:"):
            skipped = dict(rewrite.parse_attributes(line[len("#EXT-X-SKIP:"):])).get("SKIPPED-SEGMENTS", "0")
            first += int(skipped) if skipped.isdecimal() else 0
    return _Playlist(header, blocks, current, first)


def _join(pl: _Playlist, original: str) -> str:
    newline = "\r\n" if "\r\n" in original else "\n"
    lines = [*pl.header, *(ln for block in pl.blocks for ln in block), *pl.tail]
    return newline.join(lines) + (newline if original.endswith(("\n", "\r")) else "")


def _extinf(block: list[str]) -> float | None:
    for line in block:
        if line.startswith("#EXTINF:"):
            try:
                return float(line[len("#EXTINF:"):].split(",", 1)[0])
            except ValueError:
                return None
    return None


def _fmt(value: float) -> str:
    return f"{value:.5f}"


def _shift_pdt(line: str, seconds: float) -> str:
    stamp = line.split(":", 1)[1].strip()
    try:
        t = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return line
    return "#EXT-X-PROGRAM-DATE-TIME:" + _iso(t + datetime.timedelta(seconds=seconds))


def _iso(t: datetime.datetime) -> str:
    return iso_ms(t.timestamp())


def hls_media(text: str, fault: str, value: float, now: float, state: ManifestFaultState) -> str:
    """Apply *fault* (one of :data:`HLS_MEDIA_FAULTS` but ``stale_playlist``) to a media
    playlist.  Faults on one segment target a media sequence number chosen at the first
    answer after arming (the second newest complete segment) and keep hitting that same
    segment on every reload (and every rung) while it is in the window."""
    pl = _split(text)
    if fault in ("sequence_jump", "sequence_regression"):
        delta = int(value) if fault == "sequence_jump" else -int(value)
        pl.header = [f"#EXT-X-MEDIA-SEQUENCE:{max(0, int(ln.split(':', 1)[1]) + delta)}"
                     if ln.startswith("#EXT-X-MEDIA-SEQUENCE:") else ln for ln in pl.header]
        return _join(pl, text)
    if fault == "wrong_targetduration":
        def target(line: str) -> str:
            real = int(line.split(":", 1)[1].strip() or 1)
            return f"#EXT-X-TARGETDURATION:{int(value) if value > 0 else max(1, real // 2)}"
        pl.header = [target(ln) if ln.startswith("#EXT-X-TARGETDURATION:") else ln for ln in pl.header]
        return _join(pl, text)
    if fault == "missing_discontinuity":
        pl.blocks = [[ln for ln in b if ln != "#EXT-X-DISCONTINUITY"] for b in pl.blocks]
        return _join(pl, text)
    if fault == "pdt_drift":
        drift = value * max(0.0, now - (state.armed_at if state.armed_at is not None else now)) / 60.0
        if drift:
            pl.header = [_shift_pdt(ln, drift) if ln.startswith("#EXT-X-PROGRAM-DATE-TIME:") else ln
                         for ln in pl.header]
            pl.blocks = [[_shift_pdt(ln, drift) if ln.startswith("#EXT-X-PROGRAM-DATE-TIME:") else ln
                          for ln in b] for b in pl.blocks]
        return _join(pl, text)
    if not pl.blocks:
        return text
    if state.target_msn is None:
        state.target_msn = pl.first_msn + max(0, len(pl.blocks) - 2)
    index = state.target_msn - pl.first_msn
    count = max(1, int(value)) if fault == "gap_segments" else 1
    hit = [k for k in range(index, index + count) if 0 <= k < len(pl.blocks)]
    if not hit:
        return text
    k = hit[0]
    block = pl.blocks[k]
    if fault == "remove_segment":
        # Keep what applies to later segments (discontinuity, map, key); drop the segment.
        keep = [ln for ln in block[:-1] if ln.startswith("#") and not ln.startswith(_SEGMENT_TAGS)]
        pl.blocks[k] = []
        if k + 1 < len(pl.blocks):
            pl.blocks[k + 1] = keep + pl.blocks[k + 1]
        else:
            pl.tail = keep + pl.tail
    elif fault == "duplicate_segment":
        copy = [ln for ln in block if not ln.startswith(("#EXT-X-PART:", "#EXT-X-PROGRAM-DATE-TIME:"))
                and ln != "#EXT-X-DISCONTINUITY"]
        pl.blocks.insert(k + 1, copy)
    elif fault == "gap_segments":
        for j in hit:
            b = pl.blocks[j]
            if "#EXT-X-GAP" not in b:
                pl.blocks[j] = [ln for ln in b[:-1] if not ln.startswith("#EXT-X-PART:")] \
                    + ["#EXT-X-GAP", b[-1]]
        pl.header = [_at_least_version(ln, 8) if ln.startswith("#EXT-X-VERSION:") else ln for ln in pl.header]
    elif fault == "wrong_extinf":
        real = _extinf(block) or 0.0
        wrong = value if value > 0 else real * 2
        pl.blocks[k] = [f"#EXTINF:{_fmt(wrong)}," if ln.startswith("#EXTINF:") else ln for ln in block]
    elif fault == "missing_extinf":
        pl.blocks[k] = [ln for ln in block if not ln.startswith("#EXTINF:")]
    return _join(pl, text)


def _at_least_version(line: str, version: int) -> str:
    try:
        current = int(line.split(":", 1)[1])
    except ValueError:
        return line
    return f"#EXT-X-VERSION:{max(current, version)}"


# --------------------------------------------------------------------------- master


def remove_variants(text: str, names: list[str]) -> str:
    """The master without the variants *names* matches (URI, file name or rung id; an
    empty list removes the highest-bandwidth one).  The last variant is never removed."""
    ladder = rewrite.variants_of_master(text)
    urls = [str(v.get("url", "")) for v in ladder]
    if len(urls) < 2:
        return text
    if names:
        gone = [u for u in urls if rewrite.allowed(u, names)]
    else:
        gone = [max(ladder, key=lambda v: v.get("bandwidth") or 0)["url"]]
    keep = [u for u in urls if u not in gone]
    if not gone or not keep:
        return text
    if text.lstrip().startswith("<"):
        return rewrite.rewrite_mpd(text, {"content_allowed_variants": keep})
    return rewrite.rewrite_hls_master(text, {"content_allowed_variants": keep})


# --------------------------------------------------------------------------- DASH


def _parse_time(value: str) -> datetime.datetime | None:
    try:
        t = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=datetime.UTC)


def mpd(text: str, fault: str, value: float, state: ManifestFaultState) -> str:
    """``mpd_publish_time_frozen``: ``MPD@publishTime`` stays at the first value served
    after arming; ``mpd_ast_jump``: ``MPD@availabilityStartTime`` moves *value* s later."""
    if fault == "mpd_publish_time_frozen":
        match = _PUBLISH.search(text)
        if match is None:
            return text
        if state.publish_time is None:
            state.publish_time = match.group(1)
            return text
        return text[:match.start(1)] + state.publish_time + text[match.end(1):]
    match = _AST.search(text)
    if match is None:
        return text
    t = _parse_time(match.group(1))
    if t is None:
        return text
    return text[:match.start(1)] + _iso(t + datetime.timedelta(seconds=value)) + text[match.end(1):]
