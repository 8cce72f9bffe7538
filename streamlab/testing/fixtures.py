"""A tiny, real content item for tests: synthesised, encoded and packaged with ffmpeg.

The item is what the encoder would produce (spec/streams.md section 1), only small:
by default a 24 s ``testsrc2`` clip at 30 fps with a burned-in frame counter and a
1 kHz tone, two H.264 rungs (``360p`` 640x360 at 600 kbps, ``180p`` 320x180 at
250 kbps, libx264 ultrafast, closed 1 s GOPs), AAC-LC 48 kHz stereo audio, packaged into
4 segments of 6 s made of 0.2 s parts.  It builds in about a second.

Tests use it through the session fixture ``test_item`` (tests/conftest.py) or
:func:`install_test_item`, which copy one cached build (made once per process)::

    d = Daemon(str(tmp_path))
    install_test_item(d.media_dir)            # -> <media_dir>/dynamic_content/testclip
    d.start()

The command line equivalent is
``python -m streamlab.media make-test-item MEDIA_DIR [--name testclip] [--duration 24]
[--rungs 360p:640x360:600,180p:320x180:250] [--segment-duration 6] [--part-duration 0.2] [--ts]``.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import inlineCallbacks

from streamlab.ffmpeg import FFmpegChild
from streamlab.media.packager import RungInput, package
from streamlab.media.seam import audio_filter

DEFAULT_NAME = "testclip"
DEFAULT_DURATION = 24.0
DEFAULT_RUNGS = "360p:640x360:600,180p:320x180:250"
DEFAULT_FPS = 30
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationMono-Bold.ttf",
)


@dataclass(frozen=True)
class RungSpec:
    """One rung of the synthetic ladder: ``360p:640x360:600`` (id, size, kbps)."""

    id: str
    width: int
    height: int
    kbps: int


def parse_rungs(text: str) -> list[RungSpec]:
    """Parse ``id:WxH:kbps,...`` (ValueError when malformed)."""
    out = []
    for item in text.split(","):
        m = re.fullmatch(r"\s*([A-Za-z0-9_-]+):(\d+)x(\d+):(\d+)\s*", item)
        if not m:
            raise ValueError(f"bad rung {item!r}: expected id:WIDTHxHEIGHT:KBPS")
        rung = RungSpec(m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)))
        if rung.width % 2 or rung.height % 2 or rung.kbps <= 0:
            raise ValueError(f"bad rung {item!r}: even sizes and a positive bitrate please")
        out.append(rung)
    if not out:
        raise ValueError("no rungs")
    return out


def find_font() -> str | None:
    """A TrueType font for drawtext, or None (then no text is burned in)."""
    return next((f for f in FONT_CANDIDATES if os.path.isfile(f)), None)


def _text(value: str) -> str:
    """Escape *value* for a drawtext ``text=`` option inside a filtergraph."""
    return value.replace("\\", "\\\\").replace(":", "\\:").replace("'", "\\'").replace(",", "\\,")


def encode_argv(*, ffmpeg: str, work_dir: str, duration: float, rungs: Sequence[RungSpec],
                fps: int = DEFAULT_FPS, gop_duration: float = 1.0, font: str | None = None) -> list[str]:
    """The ffmpeg command that synthesises and encodes every rung plus the audio (pure).

    Writes ``<work_dir>/video_<id>.mp4`` per rung and ``<work_dir>/audio.mp4``."""
    big = max(rungs, key=lambda r: r.width * r.height)
    gop = max(1, round(gop_duration * fps))
    split = "".join(f"[s{i}]" for i in range(len(rungs)))
    chains = []
    base = "[0:v]format=yuv420p"
    if font:
        size = max(24, big.height // 6)
        base += (f",drawtext=fontfile={font}:text='%{{frame_num}}':start_number=0:fontsize={size}"
                 f":fontcolor=white:box=1:boxcolor=black@0.6:x=(w-tw)/2:y=(h-th)/2")
    chains.append(f"{base},split={len(rungs)}{split}")
    for i, r in enumerate(rungs):
        chain = f"[s{i}]scale={r.width}:{r.height}"
        if font:
            label = _text(f"{r.id} h264 {r.kbps}k")
            chain += (f",drawtext=fontfile={font}:text='{label}':fontsize={max(12, r.height // 12)}"
                      ":fontcolor=yellow:box=1:boxcolor=black@0.6:x=8:y=8")
        chains.append(f"{chain}[v{i}]")
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={big.width}x{big.height}:rate={fps}:duration={duration:g}",
            "-f", "lavfi", "-i", f"sine=frequency=1000:sample_rate=48000:duration={duration:g}",
            "-filter_complex", ";".join(chains)]
    for i, r in enumerate(rungs):
        argv += ["-map", f"[v{i}]", "-an", "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "high",
                 "-pix_fmt", "yuv420p", "-r", str(fps),
                 "-b:v", f"{r.kbps}k", "-maxrate", f"{int(r.kbps * 1.24)}k", "-bufsize", f"{r.kbps * 2}k",
                 "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0",
                 "-x264-params", "scenecut=0:open-gop=0", "-bf", "0",
                 os.path.join(work_dir, f"video_{r.id}.mp4")]
    # audio sample-aligned with the video and exactly the loop long (seam.audio_filter)
    argv += ["-map", "1:a", "-vn", "-af", audio_filter(duration), "-c:a", "aac", "-b:a", "128k",
             "-ar", "48000", "-ac", "2",
             os.path.join(work_dir, "audio.mp4")]
    return argv


@inlineCallbacks
def make_test_item(reactor: Any, media_dir: str, *, name: str = DEFAULT_NAME,
                   duration: float = DEFAULT_DURATION, rungs: str | Sequence[RungSpec] = DEFAULT_RUNGS,
                   segment_duration: float = 6.0, part_duration: float = 0.2, gop_duration: float = 1.0,
                   ts: bool = False, ffmpeg: str = "ffmpeg",
                   log: Callable[[str], None] | None = None) -> Any:
    """Synthesise, encode and package a test item into ``<media_dir>/dynamic_content/<name>``.

    Runs ffmpeg as child processes on *reactor*; fires the
    :class:`~streamlab.media.index.ContentIndex`."""
    specs = parse_rungs(rungs) if isinstance(rungs, str) else list(rungs)
    work = yield threads.deferToThreadPool(reactor, reactor.getThreadPool(), tempfile.mkdtemp,
                                           "", "streamlab-encode-")
    try:
        argv = encode_argv(ffmpeg=ffmpeg, work_dir=work, duration=duration, rungs=specs,
                           gop_duration=gop_duration, font=find_font())
        yield FFmpegChild(reactor, argv, on_line=log).start().when_exited()
        out_dir = os.path.join(media_dir, "dynamic_content", name)
        index = yield package(
            reactor, ffmpeg=ffmpeg, out_dir=out_dir, name=name, source=f"{name}.synthetic", codec="h264",
            rungs=[RungInput(r.id, os.path.join(work, f"video_{r.id}.mp4"), "h264") for r in specs],
            audio_path=os.path.join(work, "audio.mp4"), segment_duration=segment_duration,
            part_duration=part_duration, gop_duration=gop_duration, ts=ts, log=log,
            frame_rate=float(DEFAULT_FPS))
    finally:
        yield threads.deferToThreadPool(reactor, reactor.getThreadPool(), shutil.rmtree, work, True)
    return index


# --------------------------------------------------------------------------- blocking helpers for tests


def build_test_item(media_dir: str, *, name: str = DEFAULT_NAME, ts: bool = False,
                    extra_args: Sequence[str] = (), timeout: float = 180.0) -> str:
    """Run ``python -m streamlab.media make-test-item`` (blocking; tests only).

    Returns the item directory ``<media_dir>/dynamic_content/<name>``."""
    argv = [sys.executable, "-m", "streamlab.media", "make-test-item", media_dir, "--name", name,
            *(["--ts"] if ts else []), *extra_args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"make-test-item failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return os.path.join(media_dir, "dynamic_content", name)


_cache: dict[bool, str] = {}
_cache_lock = threading.Lock()


def cached_test_item(ts: bool = False, base_dir: str | None = None) -> str:
    """The directory of the default test item, built once per process (blocking).

    ``ts=True`` gives a separate build that also has MPEG-TS renditions.  The first call
    builds into *base_dir* (default: a temporary directory removed when the process
    exits); later calls return that build.  Never modify it — copy it with
    :func:`install_test_item`."""
    with _cache_lock:
        if ts not in _cache:
            if base_dir is None:
                base_dir = tempfile.mkdtemp(prefix="streamlab-testitem-")
                atexit.register(shutil.rmtree, base_dir, True)
            _cache[ts] = build_test_item(os.path.join(base_dir, "ts" if ts else "fmp4"), ts=ts)
        return _cache[ts]


def install_test_item(media_dir: str, name: str = DEFAULT_NAME, *, ts: bool = False,
                      source: str | None = None) -> str:
    """Copy the test item into ``<media_dir>/dynamic_content/<name>`` (blocking).

    *source* is an item directory to copy (default: :func:`cached_test_item`).  The copy's
    ``content.json`` carries *name*.  An existing item of that name is replaced.  Returns
    the new item directory."""
    src = source or cached_test_item(ts)
    dest = os.path.join(media_dir, "dynamic_content", name)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    shutil.copytree(src, dest)
    path = os.path.join(dest, "content.json")
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    if doc.get("name") != name:
        doc["name"] = name
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, separators=(",", ":"))
    return dest

