"""Throughput of the pure session-proxy cores: fault decisions, validation, rewriting, log.

Run: .venv/bin/python bench/proxy_cores.py   (prints figures, never fails on speed)
"""

from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from streamlab.live import hls  # noqa: E402
from streamlab.proxy import rewrite  # noqa: E402
from streamlab.proxy.faults import FaultEngine  # noqa: E402
from streamlab.proxy.fields import control_defaults, validate  # noqa: E402
from streamlab.proxy.netlog import NetworkLog, make_entry  # noqa: E402
from tests.live_helpers import make_index  # noqa: E402


def rate(label: str, n: int, fn) -> None:
    t0 = time.perf_counter()
    for i in range(n):
        fn(i)
    dt = time.perf_counter() - t0
    print(f"{label:<48} {n / dt:>12,.0f} /s   ({dt * 1e6 / n:8.2f} us each)")


def main() -> None:
    controls = control_defaults()
    controls.update(validate({"segment_failure_type": "404", "segment_consecutive_failures": 2,
                              "segment_failure_frequency": 10,
                              "segment_failure_urls": ["720p", "playlist_6s_360p.m3u8"]}, None, controls))
    eng = FaultEngine(controls, 0.0)
    paths = [f"/go-live/clip/video/{r}/seg_{i:05d}.m4s"
             for i in range(1, 50) for r in ("720p", "360p", "1080p")]
    rate("FaultEngine.decide (scoped requests rule)", 200_000,
         lambda i: eng.decide("segment", paths[i % len(paths)], i * 0.01))
    idle = FaultEngine(control_defaults(), 0.0)
    rate("FaultEngine.decide (no rule armed)", 200_000,
         lambda i: idle.decide("segment", paths[i % len(paths)], 0))
    patch = {"segment_failure_type": "socket_reject_mid_body", "segment_failure_mode": "seconds",
             "segment_consecutive_failures": 2, "segment_failure_frequency": 6, "nftables_delay_ms": 40}
    rate("fields.validate (5-field PATCH)", 50_000, lambda i: validate(patch, None, controls))
    master = hls.render_master(make_index(), "6s")
    edits = dict(controls, content_strip_codecs=True, content_overstate_bandwidth=True,
                 content_allowed_variants=["720p"], content_live_offset=18)
    rate("rewrite_hls_master (all edits)", 20_000, lambda i: rewrite.rewrite_hls_master(master, edits))
    log = NetworkLog(200)
    rate("make_entry + NetworkLog.append", 100_000, lambda i: log.append(make_entry(
        timestamp=1.7e9 + i, path="/go-live/c/video/720p/seg_00001.m4s", request_kind="segment", status=200,
        parsed=1.7e9 + i, first_byte=1.7e9 + i + 0.01, last_byte=1.7e9 + i + 0.2)))


if __name__ == "__main__":
    main()
