"""Encode options: parsing, validation and the content names they produce (pure).

:func:`parse_encode_options` turns a form/JSON mapping into a frozen
:class:`EncodeOptions` or raises :class:`~streamlab.errors.Invalid` (400) naming every
bad field, before anything is queued.  Names of the content items an encode produces
follow spec/content.md: ``<output_name>[_p<ms>]_<codec>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from streamlab.errors import Invalid

CODEC_SELECTIONS = ("h264", "hevc", "both", "av1", "all")
HLS_FORMATS = ("fmp4", "ts", "both")
PADDINGS = ("none", "black", "pink")
RESOLUTIONS = {"360p": 360, "540p": 540, "720p": 720, "1080p": 1080, "1440p": 1440, "2160p": 2160}
AV1_ENCODERS = ("libsvtav1", "libaom-av1")
DEFAULT_PARTIAL_MS = (200,)
#: "exact": the loop is also a whole number of AAC frames when that drops at most one more
#: segment of the source (audio and video then end together at every loop seam);
#: "segments": whole segments only, the last AAC frame is cut at the loop end
LOOP_ALIGNMENTS = ("exact", "segments")


@dataclass(frozen=True)
class EncodeOptions:
    """Validated options of one encode request (one job per partial duration)."""

    codec_selection: str = "both"
    max_resolution: str = "720p"
    hls_format: str = "fmp4"
    segment_duration: float = 6.0
    partial_durations: tuple[int, ...] = DEFAULT_PARTIAL_MS
    gop_duration: float = 1.0
    padding: str = "none"
    output_name: str = "content"
    loop_alignment: str = "exact"

    def to_json(self) -> dict[str, Any]:
        """Plain-data form (a job's ``config``)."""
        out = asdict(self)
        out["partial_durations"] = list(self.partial_durations)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EncodeOptions:
        """Inverse of :meth:`to_json` (for persisted configs; no validation)."""
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "partial_durations" in values:
            values["partial_durations"] = tuple(int(v) for v in values["partial_durations"])
        return cls(**values)

    def codecs(self, encoders: Iterable[str] = ()) -> tuple[str, ...]:
        """The codecs this selection encodes (``all`` includes av1 only with an encoder)."""
        return codecs_for(self.codec_selection, set(encoders))


def codecs_for(selection: str, encoders: set[str]) -> tuple[str, ...]:
    """Codec list for a ``codec_selection``."""
    if selection == "both":
        return ("h264", "hevc")
    if selection == "all":
        base: tuple[str, ...] = ("h264", "hevc")
        return base + (("av1",) if av1_encoder(encoders) else ())
    return (selection,)


def av1_encoder(encoders: set[str]) -> str | None:
    """The AV1 encoder to use (``libsvtav1`` preferred), or None."""
    for name in AV1_ENCODERS:
        if name in encoders:
            return name
    return None


def sanitize_name(raw: str) -> str:
    """Lower-case ``[a-z0-9_-]`` form of *raw* (extension dropped, runs of others -> ``_``)."""
    text = raw.strip().lower()
    text = re.sub(r"\.[a-z0-9]{1,5}$", "", text)
    text = re.sub(r"[^a-z0-9_-]+", "_", text).strip("_-")
    return text[:80]


def height_to_rung(height: int | None) -> str:
    """The largest rung name not above *height* (``360p`` for anything smaller)."""
    best = "360p"
    for name, h in RESOLUTIONS.items():
        if height is not None and h <= height:
            best = name
    return best


def _first(raw: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in raw:
            value = raw[name]
            # form posts may repeat a scalar field: take the single value
            if isinstance(value, list) and len(value) == 1 and not name.startswith("partial"):
                value = value[0]
            return value
    return None


def _number(value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool):
        raise ValueError("not a number")
    number = float(value)
    if not math.isfinite(number) or not lo <= number <= hi:
        raise ValueError(f"must be between {lo:g} and {hi:g}")
    return number


def _partials(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        items: list[Any] = [v for v in re.split(r"[,\s]+", value) if v]
    elif isinstance(value, (list, tuple)):
        items = []
        for v in value:
            items.extend([x for x in re.split(r"[,\s]+", v) if x] if isinstance(v, str) else [v])
    else:
        items = [value]
    if not items:
        raise ValueError("needs at least one value")
    out: list[int] = []
    for item in items:
        number = _number(item, 33, 2000)
        if number != int(number):
            raise ValueError("whole milliseconds expected")
        if int(number) not in out:
            out.append(int(number))
    return tuple(out)


def parse_encode_options(raw: Mapping[str, Any], *, source_name: str, source_height: int | None,
                         encoders: set[str]) -> EncodeOptions:
    """Validate *raw* (form or JSON) into :class:`EncodeOptions`.

    Raises ``Invalid("invalid encode options", fields={name: reason})`` listing every bad
    field; ``codec_selection=av1`` without an AV1 encoder in *encoders* is a 400 too.
    """
    fields: dict[str, str] = {}
    values: dict[str, Any] = {}

    def choice(name: str, allowed: Iterable[str], default: str) -> None:
        value = _first(raw, name)
        if value is None or value == "":
            values[name] = default
            return
        text = str(value).strip().lower()
        if text not in allowed:
            fields[name] = f"must be one of {', '.join(allowed)}"
        else:
            values[name] = text

    choice("codec_selection", CODEC_SELECTIONS, "both")
    if values.get("codec_selection") == "av1" and not av1_encoder(encoders):
        fields["codec_selection"] = "av1 needs an AV1 encoder (libsvtav1 or libaom-av1) in ffmpeg; none found"
    # unknown height (a chunked upload before it is probed): no cap here; the ladder is
    # capped by the real source height when the job runs
    choice("max_resolution", tuple(RESOLUTIONS), height_to_rung(source_height) if source_height else "2160p")
    choice("hls_format", HLS_FORMATS, "fmp4")
    choice("padding", PADDINGS, "none")
    choice("loop_alignment", LOOP_ALIGNMENTS, "exact")
    for name, default, lo, hi in (("segment_duration", 6.0, 1.0, 60.0), ("gop_duration", 1.0, 0.1, 10.0)):
        value = _first(raw, name)
        if value is None or value == "":
            values[name] = default
            continue
        try:
            values[name] = _number(value, lo, hi)
        except (TypeError, ValueError) as exc:
            fields[name] = str(exc) if "between" in str(exc) else "must be a number"
    value = _first(raw, "partial_durations", "partial_durations[]", "partial_duration")
    if value is None or value == "" or value == []:
        values["partial_durations"] = DEFAULT_PARTIAL_MS
    else:
        try:
            values["partial_durations"] = _partials(value)
        except (TypeError, ValueError) as exc:
            fields["partial_durations"] = f"milliseconds between 33 and 2000: {exc}"
    name_raw = _first(raw, "output_name")
    if name_raw is not None and not isinstance(name_raw, str):
        fields["output_name"] = "must be a string"
    else:
        name = sanitize_name(name_raw or "") or sanitize_name(source_name) or "content"
        values["output_name"] = name
    if not fields:
        seg = values["segment_duration"]
        gop = values["gop_duration"]
        ratio = seg / gop
        if abs(ratio - round(ratio)) > 1e-6:
            fields["gop_duration"] = "segment_duration must be a whole multiple of gop_duration"
        for ms in values["partial_durations"]:
            parts = gop * 1000.0 / ms
            if ms / 1000.0 > gop + 1e-9:
                fields["partial_durations"] = "a part may not be longer than gop_duration"
            elif abs(parts - round(parts)) > 1e-6:
                fields["partial_durations"] = f"gop_duration must be a whole number of parts ({ms} ms)"
    if fields:
        raise Invalid("invalid encode options", detail="; ".join(f"{k}: {v}" for k, v in fields.items()),
                      fields=fields)
    return EncodeOptions(**values)


def job_names(options: EncodeOptions) -> list[tuple[str, int]]:
    """``(job name, partial ms)`` per job: a ``_p<ms>`` suffix when there are several."""
    if len(options.partial_durations) == 1:
        return [(options.output_name, options.partial_durations[0])]
    return [(f"{options.output_name}_p{ms}", ms) for ms in options.partial_durations]


def content_names(job_name: str, options: EncodeOptions, encoders: Iterable[str] = ()) -> list[str]:
    """Content item names a job produces, e.g. ``["myshow_p200_h264", "myshow_p200_hevc"]``."""
    return [f"{job_name}_{codec}" for codec in options.codecs(encoders)]
