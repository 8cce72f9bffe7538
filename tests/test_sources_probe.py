"""ffprobe JSON parsing (recorded output) and the probe child process."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from streamlab.errors import Unavailable, Unprocessable
from streamlab.sources.probe import parse_probe, probe

DATA = os.path.join(os.path.dirname(__file__), "data", "sources")


def recorded(name: str) -> bytes:
    with open(os.path.join(DATA, name), "rb") as fh:
        return fh.read()


def test_h264_mp4_with_audio():
    result = parse_probe(recorded("ffprobe_h264_aac.json"))
    assert (result.width, result.height, result.codec, result.fps) == (160, 90, "h264", 25.0)
    assert result.duration == 2.0
    assert result.audio_codec == "aac" and result.has_audio and result.has_video


def test_webm_duration_from_format_and_fractional_rate():
    result = parse_probe(recorded("ffprobe_vp9_webm.json"))
    assert result.codec == "vp9" and result.audio_codec is None and not result.has_audio
    assert result.duration == 1.001
    assert result.fps == 29.97


@pytest.mark.parametrize("name", ["ffprobe_audio_only.json", "ffprobe_png.json"])
def test_not_a_video(name):
    with pytest.raises(Unprocessable) as info:
        parse_probe(recorded(name))
    assert info.value.error == "not a video file"


def test_garbage_output():
    for data in (b"", b"{not json", b"[]", b"{}"):
        with pytest.raises(Unprocessable):
            parse_probe(data)


ffprobe = shutil.which("ffprobe")


@pytest.mark.skipif(ffprobe is None, reason="ffprobe not installed")
@pytest_twisted.inlineCallbacks
def test_probe_child_process(tmp_path):
    clip = tmp_path / "c.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x36:rate=10", "-t", "1",
                    "-c:v", "mpeg4", str(clip)], check=True, timeout=60)
    result = yield probe(reactor, "ffprobe", str(clip))
    assert (result.width, result.height, result.codec) == (64, 36, "mpeg4")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(Unprocessable) as info:
        yield probe(reactor, "ffprobe", str(text))
    assert "Invalid data" in str(info.value.detail) and str(tmp_path) not in str(info.value.detail)


@pytest_twisted.inlineCallbacks
def test_missing_ffprobe_is_unavailable(tmp_path):
    with pytest.raises(Unavailable):
        yield probe(reactor, "/nonexistent/ffprobe", str(tmp_path))


def test_hanging_ffprobe_is_killed_after_timeout(tmp_path):
    """A fake process reactor: spawnProcess records, the Clock fires the timeout."""
    from twisted.internet import error
    from twisted.python.failure import Failure

    signals = []

    class FakeTransport:
        def closeStdin(self):
            pass

        def signalProcess(self, sig):
            signals.append(sig)
            proto.processEnded(Failure(error.ProcessTerminated(signal=sig)))

    class FakeReactor(Clock):
        def spawnProcess(self, protocol, executable, args, env=None, childFDs=None):  # noqa: N803
            nonlocal proto
            proto = protocol
            return FakeTransport()

    proto = None
    fake = FakeReactor()
    fake_ffprobe = tmp_path / "ffprobe"
    fake_ffprobe.write_text("#!/bin/sh\n")
    fake_ffprobe.chmod(0o755)
    d = probe(fake, str(fake_ffprobe), "x.mp4", timeout=5)
    failures = []
    d.addErrback(failures.append)
    fake.advance(4.9)
    assert not failures and not signals
    fake.advance(0.2)
    assert signals and failures and failures[0].check(Unprocessable)
    assert "timed out" in failures[0].value.detail
