"""The demo source: a synthetic 1280x720 30 fps test pattern with a large frame counter
and timecode and a 1 kHz tone, made by an ffmpeg child process (lavfi), never on the
reactor thread."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from streamlab.ffmpeg import FFmpegChild

DEMO_NAME = "streamlab_demo"
DEMO_FILENAME = "streamlab_demo.mp4"


def seed_argv(ffmpeg: str, output: str, duration: float, font: str | None) -> list[str]:
    """ffmpeg command line synthesising the demo clip at *output* (pure)."""
    chain = ["format=yuv420p"]
    if font:
        box = f"fontfile={font}:fontcolor=white:box=1:boxcolor=black@0.7:boxborderw=18"
        chain += [
            f"drawtext={box}:fontsize=220:x=(w-tw)/2:y=(h-th)/2-90:text='%{{frame_num}}'",
            f"drawtext={box}:fontsize=80:x=(w-tw)/2:y=(h-th)/2+150:text='%{{pts\\:hms}}'",
            f"drawtext={box}:fontsize=36:x=24:y=24:text='streamlab demo 1280x720 30fps 1kHz'",
        ]
    graph = "[0:v]" + ",".join(chain) + "[v]"
    return [ffmpeg, "-hide_banner", "-nostdin", "-y",
            "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
            "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000",
            "-filter_complex", graph, "-map", "[v]", "-map", "1:a",
            "-t", f"{duration:g}", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-g", "30",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", "48000",
            "-movflags", "+faststart", "-progress", "pipe:1", "-nostats", "-f", "mp4", output]


def synthesize(reactor: Any, *, ffmpeg: str, output: str, duration: float, font: str | None,
               kill_grace: float = 5.0, log_line: Any = None) -> tuple[FFmpegChild, Deferred[None]]:
    """Start the synthesis: the child (``terminate()`` stops it) and a Deferred firing None
    when *output* is written (an :class:`streamlab.ffmpeg.FFmpegError` otherwise)."""
    child = FFmpegChild(reactor, seed_argv(ffmpeg, output, duration, font), kill_grace=kill_grace,
                        on_line=log_line)
    return child, child.start().when_exited()
