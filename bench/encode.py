"""Encode benchmark: wall time and real-time factor per rung for the demo clip.

Synthesises the demo source exactly as ``POST /api/setup/seed`` does (1280x720, 30 fps,
test pattern with frame counter + timecode, 1 kHz tone; ``--duration`` s, default the
``seed_duration`` default), then runs every ffmpeg step of the job's ladder (the same
argv the JobService runs, at nice 10 in its own process group) one after another and
prints per step: wall seconds, real-time factor (media seconds / wall seconds) and the
measured video bitrate.  Never fails on speed.

    .venv/bin/python bench/encode.py [--duration 120] [--codecs h264|hevc|both|all]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from streamlab import config as configmod  # noqa: E402
from streamlab.ffmpeg import wrap_argv  # noqa: E402
from streamlab.jobs.ladder import SourceFacts, font_or_none, plan_encode  # noqa: E402
from streamlab.jobs.options import parse_encode_options  # noqa: E402
from streamlab.jobs.seed import seed_argv  # noqa: E402
from streamlab.jobs.service import parse_encoders  # noqa: E402


def main() -> int:
    defaults = configmod.load(None)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=defaults.jobs.seed_duration)
    ap.add_argument("--codecs", default=defaults.jobs.seed_codecs)
    ap.add_argument("--ffmpeg", default="ffmpeg")
    args = ap.parse_args()
    encoders = parse_encoders(subprocess.run([args.ffmpeg, "-hide_banner", "-encoders"], capture_output=True,
                                             check=True).stdout)
    font = font_or_none()
    with tempfile.TemporaryDirectory(prefix="streamlab-bench-") as work:
        src = os.path.join(work, "demo.mp4")
        t0 = time.monotonic()
        subprocess.run(seed_argv(args.ffmpeg, src, args.duration, font), check=True, capture_output=True)
        synth = time.monotonic() - t0
        print(f"demo source: {args.duration:g} s 1280x720@30 synthesised in {synth:.2f} s "
              f"(RTF {args.duration / synth:.2f}x)")
        opts = parse_encode_options({"codec_selection": args.codecs, "output_name": "bench"},
                                    source_name="demo.mp4", source_height=720, encoders=encoders)
        facts = SourceFacts(path=src, width=1280, height=720, fps=30.0, duration=args.duration,
                            has_audio=True)
        steps = plan_encode(ffmpeg=args.ffmpeg, source=facts, options=opts, codecs=opts.codecs(encoders),
                            encoders=encoders, work_dir=work, font=font)
        print(f"{'step':<28} {'wall s':>8} {'RTF':>7} {'kbps':>8} {'target':>7}")
        total = 0.0
        results = []
        for step in steps:
            argv = wrap_argv([a for a in step.argv if a not in ("-progress", "pipe:1")])
            t0 = time.monotonic()
            subprocess.run(argv, check=True, capture_output=True)
            wall = time.monotonic() - t0
            total += wall
            kbps = os.path.getsize(step.output) * 8 / step.duration / 1000
            results.append({"step": step.stage, "wall_s": round(wall, 3),
                            "rtf": round(step.duration / wall, 2), "kbps": round(kbps),
                            "target_kbps": step.kbps})
            print(f"{step.stage:<28} {wall:8.2f} {step.duration / wall:6.2f}x {kbps:8.0f} {step.kbps:7d}")
        print(f"{'total':<28} {total:8.2f} {args.duration / total:6.2f}x  (media {args.duration:g} s, "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
        print(json.dumps({"duration": args.duration, "codecs": args.codecs, "total_wall_s": round(total, 2),
                          "steps": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
