"""Fake media files and fake ffmpeg/ffprobe children for the in-memory API harness.

:func:`fake_video` makes the bytes of a file the fake ffprobe takes for a video (its
facts are in a header); :class:`FakeMedia` plays the children the services spawn on the
fake process reactor as ffmpeg and ffprobe would (see :mod:`streamlab.testing.api`).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamlab.testing.fakeprocess import FakeProcess

DEFAULT_ENCODERS = frozenset({"libx264", "libx265", "aac"})
"""What the fake ``ffmpeg -encoders`` lists unless told otherwise: no AV1 encoder."""
FAKE_VERSION = "ffmpeg version 7.1-streamlab-fake"

FAKE_VIDEO_MAGIC = b"streamlab-fake-video\n"


@dataclass(frozen=True)
class ClipFacts:
    """What the fake ffprobe reports for a :func:`fake_video` file."""

    width: int = 160
    height: int = 90
    duration: float = 2.0
    fps: float = 25.0
    codec: str = "h264"
    audio: str | None = "aac"


def fake_video(facts: ClipFacts | None = None, size: int = 40_000) -> bytes:
    """The bytes of a file the fake ffprobe takes for a video with *facts*.

    A header names the facts; the rest is a deterministic pattern without zero bytes (so a
    chunk of zeros is never "the same bytes again").  Anything else is not a video.
    """
    facts = facts or ClipFacts()
    head = FAKE_VIDEO_MAGIC + json.dumps(facts.__dict__, sort_keys=True).encode() + b"\n"
    pattern = bytes(1 + (i * 37 + 11) % 251 for i in range(4096))
    body = (pattern * (size // len(pattern) + 1))[: max(0, size - len(head))]
    return head + body


def _facts_of(path: str) -> ClipFacts | None:
    """The facts in a :func:`fake_video` file's header (None: not one; missing: None)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return None
    if not head.startswith(FAKE_VIDEO_MAGIC):
        return None
    line = head[len(FAKE_VIDEO_MAGIC):].split(b"\n", 1)[0]
    try:
        return ClipFacts(**json.loads(line))
    except (ValueError, TypeError):
        return None


def ffprobe_json(facts: ClipFacts) -> bytes:
    """ffprobe's ``-print_format json -show_format -show_streams`` output for *facts*."""
    streams: list[dict[str, Any]] = [{
        "index": 0, "codec_type": "video", "codec_name": facts.codec, "width": facts.width,
        "height": facts.height, "avg_frame_rate": f"{round(facts.fps * 1000)}/1000",
        "r_frame_rate": f"{round(facts.fps * 1000)}/1000", "duration": f"{facts.duration:.6f}",
        "disposition": {"attached_pic": 0, "still_image": 0}}]
    if facts.audio:
        streams.append({"index": 1, "codec_type": "audio", "codec_name": facts.audio,
                        "sample_rate": "48000", "channels": 2})
    return json.dumps({"streams": streams, "format": {
        "format_name": "mov,mp4,m4a,3gp,3g2,mj2", "duration": f"{facts.duration:.6f}"}}).encode()


def encoders_listing(names: Sequence[str]) -> bytes:
    """``ffmpeg -hide_banner -encoders`` output listing *names*."""
    lines = ["Encoders:", " V..... = Video", " A..... = Audio", " ------"]
    for name in sorted(names):
        kind = "A" if name in ("aac", "libfdk_aac", "libopus") else "V"
        lines.append(f" {kind}....D {name:<20} {name} (fake)")
    return ("\n".join(lines) + "\n").encode()



class FakeMedia:
    """Answers the children the services spawn, as ffmpeg/ffprobe would.

    ``encoders`` is what ``ffmpeg -encoders`` lists (set it before the harness starts:
    the job service probes once).  Encodes (any other ffmpeg run) keep running: they are
    in :attr:`encodes` for the test to inspect or end, and exit when their process group
    gets SIGTERM/SIGKILL, as ffmpeg does.  ``hold_synthesis`` keeps the demo synthesis
    running until the test ends it (:meth:`finish_synthesis`).
    """

    def __init__(self, ffmpeg: str, ffprobe: str, encoders: Sequence[str] = tuple(DEFAULT_ENCODERS)) -> None:
        self.ffmpeg = ffmpeg
        self.ffprobe = ffprobe
        self.encoders = set(encoders)
        self.hold_synthesis = False
        self.encodes: list[FakeProcess] = []
        self.syntheses: list[FakeProcess] = []
        self.probes: list[FakeProcess] = []

    def kind(self, proc: FakeProcess) -> str:
        """``encoders`` | ``version`` | ``ffprobe`` | ``synthesis`` | ``encode`` | ``other``."""
        argv = [proc.executable, *proc.args]
        if self.ffprobe in argv:
            return "ffprobe"
        if self.ffmpeg not in argv:
            return "other"
        tail = argv[argv.index(self.ffmpeg) + 1:]
        if "-encoders" in tail:
            return "encoders"
        if "-version" in tail:
            return "version"
        if "lavfi" in tail and any(a.startswith("testsrc") for a in tail):
            return "synthesis"
        return "encode"

    def answer(self, proc: FakeProcess) -> None:
        """Play the child *proc* (called once, just after it was spawned)."""
        kind = self.kind(proc)
        if kind == "encoders":
            proc.out(encoders_listing(sorted(self.encoders)))
            proc.exit(0)
        elif kind == "version":
            proc.out(f"{FAKE_VERSION} Copyright (c) 2000-2026 the FFmpeg developers\n".encode())
            proc.exit(0)
        elif kind == "ffprobe":
            self.probes.append(proc)
            path = proc.args[-1]
            facts = _facts_of(path)
            if facts is None:
                proc.err(f"{path}: Invalid data found when processing input\n".encode())
                proc.exit(1)
            else:
                proc.out(ffprobe_json(facts))
                proc.exit(0)
        elif kind == "synthesis":
            self.syntheses.append(proc)
            if not self.hold_synthesis:
                self.finish_synthesis(proc)
        elif kind == "encode":
            self.encodes.append(proc)
        else:
            proc.err(f"fake process reactor: nothing plays {proc.args!r}\n".encode())
            proc.exit(127)

    def finish_synthesis(self, proc: FakeProcess) -> None:
        """Write the demo clip the synthesis *proc* was asked for and exit 0."""
        argv = proc.args
        duration = float(argv[argv.index("-t") + 1]) if "-t" in argv else 10.0
        with open(argv[-1], "wb") as fh:
            fh.write(fake_video(ClipFacts(width=1280, height=720, duration=duration, fps=30.0)))
        proc.exit(0)

    def on_signal(self, proc: FakeProcess, sig: int) -> None:
        """A running child ends when its group gets SIGTERM or SIGKILL."""
        if not proc.ended and sig in (signal.SIGTERM, signal.SIGKILL):
            proc.exit(sig=sig)
