"""ffprobe: a child process with a timeout (adapter) and a pure parser of its JSON.

``probe(reactor, ffprobe, path)`` runs ``ffprobe -print_format json -show_format
-show_streams`` through ``reactor.spawnProcess``; :func:`parse_probe` turns the JSON into
a :class:`ProbeResult` and decides whether the file is a usable video source (at least
one real video stream; still images and audio-only files are not).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet import defer, error, protocol
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from streamlab.errors import Unavailable, Unprocessable
from streamlab.interfaces import IDaemonReactor

log = Logger()

# Demuxers that read single pictures: a picture has a "video" stream but is not a video.
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "gif", "webp_pipe", "tiff_pipe",
                  "svg_pipe", "apng")
_MAX_OUTPUT = 4 * 1024 * 1024


@dataclass(frozen=True)
class ProbeResult:
    """What a source needs to know about a media file."""

    duration: float | None
    width: int | None
    height: int | None
    codec: str | None
    fps: float | None
    audio_codec: str | None
    has_video: bool
    has_audio: bool
    format_name: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for JSON and storage)."""
        return asdict(self)


def _rate(text: Any) -> float | None:
    """``"30000/1001"`` -> 29.97; ``"0/0"`` and junk -> None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            n, d = float(num), float(den)
            if d == 0 or n == 0:
                return None
            return round(n / d, 3)
        value = float(text)
        return round(value, 3) if value > 0 else None
    except ValueError:
        return None


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and out >= 0 else None  # drop NaN / negatives


def _int(value: Any) -> int | None:
    try:
        out = int(value)
    except (TypeError, ValueError):
        return None
    return out if out > 0 else None


def parse_probe(data: bytes | str | dict[str, Any]) -> ProbeResult:
    """Parse ffprobe's ``-print_format json -show_format -show_streams`` output.

    Raises :class:`Unprocessable` when the output is not JSON, or the file has no video
    stream (audio only, a still image, an empty container).
    """
    if isinstance(data, (bytes, str)):
        try:
            parsed = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise Unprocessable("not a media file", detail="ffprobe output is not JSON") from None
    else:
        parsed = data
    if not isinstance(parsed, dict):
        raise Unprocessable("not a media file", detail="ffprobe output is not an object")
    streams = [s for s in parsed.get("streams") or [] if isinstance(s, dict)]
    raw_format = parsed.get("format")
    fmt: dict[str, Any] = raw_format if isinstance(raw_format, dict) else {}
    format_name = str(fmt.get("format_name") or "")

    def is_video(s: dict[str, Any]) -> bool:
        disposition = s.get("disposition") or {}
        return s.get("codec_type") == "video" and not disposition.get("attached_pic") \
            and not disposition.get("still_image")

    video = next((s for s in streams if is_video(s)), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        kind = "audio only" if audio is not None else "no video stream"
        raise Unprocessable("not a video file", detail=kind)
    if format_name in _IMAGE_FORMATS or format_name.endswith("_pipe"):
        raise Unprocessable("not a video file", detail=f"still image ({format_name})")
    duration = _float(fmt.get("duration"))
    if duration is None:
        duration = _float(video.get("duration"))
    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    return ProbeResult(
        duration=round(duration, 3) if duration is not None else None,
        width=_int(video.get("width")),
        height=_int(video.get("height")),
        codec=video.get("codec_name") or None,
        fps=fps,
        audio_codec=(audio.get("codec_name") or None) if audio is not None else None,
        has_video=True,
        has_audio=audio is not None,
        format_name=format_name,
    )


def ffprobe_argv(ffprobe: str, path: str) -> list[str]:
    """The command line for probing *path*."""
    return [ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
            "--", path]


class _ProbeProtocol(protocol.ProcessProtocol):
    """Collects stdout (bounded) and stderr; fires ``done`` with (exit code, out, err)."""

    def __init__(self) -> None:
        self.done: Deferred[tuple[int | None, bytes, bytes]] = Deferred()
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._size = 0
        self.timed_out = False

    def outReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size <= _MAX_OUTPUT:
            self._out.append(data)

    def errReceived(self, data: bytes) -> None:
        if sum(len(c) for c in self._err) < 64 * 1024:
            self._err.append(data)

    def processEnded(self, reason: Failure) -> None:
        code: int | None = None
        if reason.check(error.ProcessDone):
            code = 0
        elif isinstance(reason.value, error.ProcessTerminated):
            code = reason.value.exitCode
        if not self.done.called:
            self.done.callback((code, b"".join(self._out), b"".join(self._err)))


def probe(reactor: IDaemonReactor, ffprobe: str, path: str, timeout: float = 30) -> Deferred[ProbeResult]:
    """Probe *path* with ffprobe as a child process; :class:`ProbeResult` or Unprocessable.

    The child is killed after *timeout* seconds (then 422 "probe timed out").  A missing
    ffprobe binary is 503 Unavailable.
    """
    executable = shutil.which(ffprobe)
    if executable is None:
        return defer.fail(Unavailable("ffprobe unavailable", detail=f"{ffprobe!r} not found"))
    proto = _ProbeProtocol()
    try:
        transport = reactor.spawnProcess(proto, executable, ffprobe_argv(ffprobe, path),
                                         env=dict(os.environ), childFDs={0: "w", 1: "r", 2: "r"})
    except OSError as exc:
        return defer.fail(Unavailable("ffprobe unavailable", detail=str(exc)))
    transport.closeStdin()

    def kill() -> None:
        proto.timed_out = True
        try:
            transport.signalProcess(signal.SIGKILL)
        except error.ProcessExitedAlready:
            pass

    timer = reactor.callLater(timeout, kill)

    def finished(result: tuple[int | None, bytes, bytes]) -> ProbeResult:
        if timer.active():
            timer.cancel()
        code, out, err = result
        if proto.timed_out:
            raise Unprocessable("not a media file", detail=f"ffprobe timed out after {timeout:g}s")
        if code != 0:
            message = err.decode("utf-8", "replace").strip().splitlines()
            detail = message[-1] if message else f"ffprobe exit code {code}"
            # ffprobe prefixes the message with the path; keep only the reason
            if ": " in detail and path in detail:
                detail = detail.split(": ", 1)[-1] if detail.startswith(path) else detail
            raise Unprocessable("not a media file", detail=detail)
        return parse_probe(out)

    return proto.done.addCallback(finished)
