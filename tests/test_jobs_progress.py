import os

import pytest

from streamlab.jobs.progress import JobProgress, ProgressBlock, ProgressParser

DATA = os.path.join(os.path.dirname(__file__), "data", "ffmpeg_progress_360p_12s.txt")


def recorded() -> bytes:
    with open(DATA, "rb") as fh:
        return fh.read()


def test_recorded_output_parses_in_any_chunking():
    data = recorded()
    whole = ProgressParser().feed(data)
    assert len(whole) >= 3
    assert whole[0].out_time == 0.0 and not whole[0].end
    assert whole[-1].end and whole[-1].frame == 360 and whole[-1].out_time == pytest.approx(11.900065)
    assert whole[-1].speed == pytest.approx(10.6)
    times = [b.out_time for b in whole]
    assert times == sorted(times)
    for size in (1, 7, 64):
        p = ProgressParser()
        blocks = []
        for i in range(0, len(data), size):
            blocks += p.feed(data[i:i + size])
        assert blocks == whole


def test_job_progress_weighted_across_steps():
    p = JobProgress([1.0, 3.0], [12.0, 12.0], started=100.0, package_share=0.2)
    assert p.percent == 0.0 and p.eta(100.0) is None
    p.step_started(0)
    p.update(ProgressBlock(6.0, 180, 1.0, False))
    assert p.percent == pytest.approx(10.0)  # half of 20 %
    p.update(ProgressBlock(12.0, 360, 1.0, True))
    assert p.percent == pytest.approx(20.0)
    p.step_started(1)
    p.update(ProgressBlock(6.0, 180, 1.0, False))
    assert p.percent == pytest.approx(50.0)
    assert p.eta(110.0) == pytest.approx(10.0)  # half done in 10 s
    p.update(ProgressBlock(3.0, 90, 1.0, False))  # never goes backwards
    assert p.percent == pytest.approx(50.0)
    p.packaging(0.5)
    assert p.percent == pytest.approx(90.0)
    p.packaging(1.0)
    assert p.percent == pytest.approx(100.0) and p.eta(120.0) == 0.0


def test_recorded_sample_drives_job_progress():
    p = JobProgress([1.0], [12.0], started=0.0, package_share=0.0)
    p.step_started(0)
    seen = []
    for block in ProgressParser().feed(recorded()):
        p.update(block)
        seen.append(p.percent)
    assert seen == sorted(seen) and 0 < seen[1] < 100 and seen[-1] == 100.0
