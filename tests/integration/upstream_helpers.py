"""Real upstreams for the upstream-origin tests: a static ffmpeg-made HLS VOD served by
``twisted.web.static`` in a subprocess (with an access log to prove what was fetched)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from streamlab.testing.daemon import free_port, request

MASTER = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=320x180\nv0/index.m3u8\n"


def make_vod(directory: str, big_mb: int = 0) -> None:
    """An 8 s fMP4 HLS VOD (``master.m3u8`` -> ``v0/index.m3u8`` -> ``v0/seg_00N.m4s``), a
    DASH VOD with ``$Time$`` names (``dash/manifest.mpd`` -> ``dash/chunk-0-<t>.m4s``) and,
    with *big_mb*, a ``v0/big.m4s`` of that many MiB of random bytes."""
    v0 = os.path.join(directory, "v0")
    os.makedirs(v0, exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000", "-t", "8",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
         "-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
         "-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", "v0/seg_%03d.m4s", "v0/index.m3u8"],
        cwd=directory, check=True, timeout=120)
    # the same kind of clip as a DASH VOD with a SegmentTimeline and $Time$ segment names
    os.makedirs(os.path.join(directory, "dash"), exist_ok=True)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25",
         "-t", "8", "-c:v", "libx264", "-preset", "ultrafast", "-g", "25", "-pix_fmt", "yuv420p",
         "-f", "dash", "-seg_duration", "2", "-use_template", "1", "-use_timeline", "1",
         "-init_seg_name", "init-$RepresentationID$.m4s",
         "-media_seg_name", "chunk-$RepresentationID$-$Time$.m4s", "manifest.mpd"],
        cwd=os.path.join(directory, "dash"), check=True, timeout=120)
    with open(os.path.join(directory, "master.m3u8"), "w", encoding="utf-8") as fh:
        fh.write(MASTER)
    with open(os.path.join(directory, "notes.txt"), "w", encoding="utf-8") as fh:
        fh.write("not a manifest\n")
    if big_mb:
        with open(os.path.join(v0, "big.m4s"), "wb") as fh:
            for _ in range(big_mb):
                fh.write(os.urandom(1 << 20))


class StaticServer:
    """``python -m twisted web --path DIR`` on 127.0.0.1 (a separate process)."""

    def __init__(self, directory: str, workdir: str, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.access_log = os.path.join(workdir, f"static-{self.port}.access.log")
        self.out = os.path.join(workdir, f"static-{self.port}.out")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StaticServer:
        """Start and wait until it answers."""
        with open(self.out, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "twisted", "web", "--path", self.directory,
                 f"--logfile={self.access_log}", "--listen", f"tcp:{self.port}:interface=127.0.0.1"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if request(self.port, "GET", "/master.m3u8", timeout=2).status == 200:
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("static server did not start")

    def stop(self) -> None:
        """Terminate it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def fetched(self, path: str) -> int:
        """How many requests for *path* the access log holds (flushed per line)."""
        try:
            with open(self.access_log, encoding="utf-8", errors="replace") as fh:
                return sum(1 for line in fh if f"GET {path} " in line)
        except FileNotFoundError:
            return 0

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"
