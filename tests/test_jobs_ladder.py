import pytest

from streamlab.jobs.ladder import (
    SourceFacts,
    output_duration,
    output_frame_rate,
    plan_encode,
    select_rungs,
)
from streamlab.jobs.options import parse_encode_options

ENC = {"libx264", "libx265", "libsvtav1"}
FONT = "/fonts/mono.ttf"


def source(height=720, width=None, audio=True, duration=120.0, fps=30.0):
    return SourceFacts(path="/media/originals/src.mp4", width=width or height * 16 // 9, height=height,
                       fps=fps, duration=duration, has_audio=audio)


def plan(raw=None, src=None, font=FONT):
    src = src or source()
    opts = parse_encode_options(raw or {}, source_name="src.mp4", source_height=src.height, encoders=ENC)
    return plan_encode(ffmpeg="ffmpeg", source=src, options=opts, codecs=opts.codecs(ENC), encoders=ENC,
                       work_dir="/work/j1", font=font)


def arg(argv, flag):
    return argv[list(argv).index(flag) + 1]


@pytest.mark.parametrize("height,expected", [
    (360, ["360p"]), (540, ["360p", "540p"]), (720, ["360p", "540p", "720p"]),
    (1080, ["360p", "540p", "720p", "1080p"]), (1079, ["360p", "540p", "720p"]), (180, ["360p"]),
])
def test_rungs_per_source_height(height, expected):
    assert select_rungs(height, "2160p") == expected
    steps = plan({"codec_selection": "h264"}, source(height))
    assert [s.rung for s in steps if s.kind == "video"] == expected


def test_max_resolution_caps_the_ladder():
    assert select_rungs(1080, "540p") == ["360p", "540p"]


@pytest.mark.parametrize("codec,rung,kbps", [
    ("h264", "360p", 600), ("h264", "540p", 1200), ("h264", "720p", 2400), ("h264", "1080p", 5000),
    ("hevc", "360p", 300), ("hevc", "540p", 900), ("hevc", "720p", 1500), ("hevc", "1080p", 4500),
])
def test_bitrate_maxrate_bufsize(codec, rung, kbps):
    steps = plan({"codec_selection": codec}, source(1080))
    step = next(s for s in steps if s.rung == rung)
    assert arg(step.argv, "-b:v") == f"{kbps}k"
    assert arg(step.argv, "-maxrate") == f"{round(kbps * 1.24)}k"
    assert arg(step.argv, "-bufsize") == f"{kbps * 2}k"
    assert f"{rung} {codec} {kbps}k" in arg(step.argv, "-filter_complex")


def test_both_is_h264_then_hevc_with_stage_names():
    steps = plan({"codec_selection": "both"}, source(720))
    assert steps[0].kind == "audio" and steps[0].stage == "encode audio"
    assert [s.stage for s in steps[1:]] == [
        "encode 360p h264 (1/6)", "encode 540p h264 (2/6)", "encode 720p h264 (3/6)",
        "encode 360p hevc (4/6)", "encode 540p hevc (5/6)", "encode 720p hevc (6/6)"]


def test_gop_flags_closed_fixed_no_scenecut():
    steps = plan({"codec_selection": "both", "gop_duration": 2, "segment_duration": 6}, source(360, fps=25))
    h264, hevc = steps[1], steps[2]
    for s in (h264, hevc):
        assert arg(s.argv, "-g") == "50" and arg(s.argv, "-keyint_min") == "50"
        assert arg(s.argv, "-sc_threshold") == "0"
        assert arg(s.argv, "-force_key_frames") == "expr:gte(t,n_forced*2)"
    assert arg(h264.argv, "-c:v") == "libx264" and "open_gop=0" in arg(h264.argv, "-x264-params")
    assert arg(h264.argv, "-flags") == "+cgop"
    x265 = arg(hevc.argv, "-x265-params")
    assert "keyint=50" in x265 and "min-keyint=50" in x265 and "scenecut=0" in x265 and "open-gop=0" in x265
    assert arg(hevc.argv, "-tag:v") == "hvc1"
    assert "-tag:v" not in h264.argv


def test_av1_uses_svt():
    steps = plan({"codec_selection": "av1"}, source(360))
    assert arg(steps[1].argv, "-c:v") == "libsvtav1"


def test_audio_is_aac_lc_128k_48k_stereo():
    a = plan({}, source(360)).pop(0)
    assert arg(a.argv, "-c:a") == "aac" and arg(a.argv, "-profile:a") == "aac_low"
    assert arg(a.argv, "-b:a") == "128k" and arg(a.argv, "-ar") == "48000" and arg(a.argv, "-ac") == "2"
    assert arg(a.argv, "-i") == "/media/originals/src.mp4" and "apad" in arg(a.argv, "-af")


def test_silent_track_when_no_audio():
    a = plan({}, source(360, audio=False))[0]
    assert arg(a.argv, "-f") == "lavfi" and arg(a.argv, "-i").startswith("anullsrc=r=48000:cl=stereo")
    assert "/media/originals/src.mp4" not in a.argv


@pytest.mark.parametrize("padding,color", [("black", "black"), ("pink", "0xFF69B4")])
def test_padding_letterboxes_to_16_9(padding, color):
    steps = plan({"padding": padding, "codec_selection": "h264"}, source(720, width=720))  # 1:1 source
    graph = arg(steps[1].argv, "-filter_complex")
    assert "scale=640:360:force_original_aspect_ratio=decrease" in graph
    assert f"pad=640:360:(ow-iw)/2:(oh-ih)/2:color={color}" in graph
    assert (steps[1].width, steps[1].height) == (640, 360)


def test_no_padding_keeps_aspect():
    steps = plan({"padding": "none", "codec_selection": "h264"}, source(720, width=720))
    assert "scale=360:360" in arg(steps[1].argv, "-filter_complex")
    assert "pad=" not in arg(steps[1].argv, "-filter_complex")


def test_labels_and_counter_and_missing_font():
    graph = arg(plan({"codec_selection": "h264"}, source(360))[1].argv, "-filter_complex")
    assert graph.count("drawtext=") == 2 and "fontfile=/fonts/mono.ttf" in graph
    assert "%{pts\\:hms}" in graph and "%{frame_num}" in graph
    # the rung label sits top right, clear of a title the source carries top left (the demo's)
    assert "x=w-tw-16:y=16:text='360p" in graph
    bare = arg(plan({"codec_selection": "h264"}, source(360), font=None)[1].argv, "-filter_complex")
    assert "drawtext" not in bare and "scale=640:360" in bare


def test_duration_is_whole_segments():
    assert output_duration(120.0, 6) == 120.0
    assert output_duration(125.9, 6) == 120.0
    assert output_duration(11.999, 6) == 12.0
    assert output_duration(3.0, 6) == 6.0
    steps = plan({}, source(360, duration=3.0))
    assert arg(steps[1].argv, "-t") == "6" and "tpad=stop_mode=clone" in arg(steps[1].argv, "-filter_complex")
    assert "tpad" not in arg(plan({}, source(360, duration=12.0))[1].argv, "-filter_complex")


def test_frame_rate_and_progress_output():
    assert output_frame_rate(29.97) == 30 and output_frame_rate(None) == 30 and output_frame_rate(120) == 60
    for s in plan({}, source(360)):
        assert arg(s.argv, "-progress") == "pipe:1" and "-nostats" in s.argv
        assert s.output.startswith("/work/j1/")


def test_weights_favour_big_rungs_and_hevc():
    steps = plan({"codec_selection": "both"}, source(720))
    w = {(s.codec, s.rung): s.weight for s in steps}
    assert w[("h264", "720p")] > w[("h264", "360p")]
    assert w[("hevc", "360p")] > w[("h264", "360p")]
    assert w[("aac", "")] < w[("h264", "360p")]


# --------------------------------------------------------------------------- the loop seam


def test_loop_length_prefers_whole_aac_frames_and_says_what_it_cut():
    from streamlab.media.seam import exact_unit, loop_plan

    assert exact_unit(6, 30) == 24 and exact_unit(2, 30) == 8 and exact_unit(5, 30) == 40
    p = loop_plan(30.0, 6, 30)  # 30 s = 1406.25 AAC frames: one segment less makes it exact
    assert (p.duration, p.exact, p.shortened_by, p.audio_frames) == (24.0, True, 6.0, 1125)
    p = loop_plan(30.0, 6, 30, prefer_exact=False)
    assert (p.duration, p.exact, p.shortened_by, p.audio_frames) == (30.0, False, 0.0, 1406.25)
    assert "not used" not in p.describe() and "cut at T" in p.describe()
    assert (loop_plan(48.0, 6, 30).duration, loop_plan(120.7, 6, 30).exact) == (48.0, True)
    # an exact loop would drop more than one segment: whole segments, audio cut at T
    p = loop_plan(45.0, 6, 30)
    assert (p.duration, p.exact, p.shortened_by) == (42.0, False, 3.0)
    p = loop_plan(15.0, 6, 30)
    assert (p.duration, p.exact) == (12.0, False) and "3 s of the source not used" in p.describe()
    p = loop_plan(3.0, 6, 30)
    assert (p.duration, p.padded_by, p.exact) == (6.0, 3.0, False) and "padded by 3 s" in p.describe()
    assert loop_plan(17.0, 2, 30).duration == 16.0 and loop_plan(17.0, 2, 30).exact
    assert loop_plan(30.0, 6, 30).to_json() == {
        "source_duration": 30.0, "duration": 24.0, "exact": True, "exact_unit": 24.0, "shortened_by": 6.0,
        "padded_by": 0.0, "audio_frames": 1125}


def test_the_job_follows_the_loop_plan_in_every_step():
    steps = plan({"codec_selection": "h264"}, source(360, duration=30.0))
    assert {s.duration for s in steps} == {24.0}
    assert arg(steps[1].argv, "-t") == "24"
    audio = steps[0].argv
    assert "-t" not in audio  # atrim sets the exact length
    assert arg(audio, "-af") == ("aresample=48000,apad,atrim=start_sample=1024:end_sample=1152000,"
                                 "asetpts=N/SR/TB,afade=t=in:st=0:d=0.01,afade=t=out:st=23.968667:d=0.01")
    steps = plan({"codec_selection": "h264", "loop_alignment": "segments"}, source(360, duration=30.0))
    assert arg(steps[1].argv, "-t") == "30" and "end_sample=1440000" in arg(steps[0].argv, "-af")
    silent = plan({"codec_selection": "h264"}, source(360, audio=False, duration=24.0))[0].argv
    assert "anullsrc=r=48000:cl=stereo" in silent and "end_sample=1152000" in arg(silent, "-af")


def test_no_b_frames_so_no_composition_delay():
    steps = plan({"codec_selection": "both"}, source(360))
    h264 = next(s for s in steps if s.codec == "h264").argv
    hevc = next(s for s in steps if s.codec == "hevc").argv
    assert arg(h264, "-bf") == "0"
    assert ":bframes=0" in arg(hevc, "-x265-params")
