import pytest

from streamlab.errors import Invalid
from streamlab.jobs.options import (
    EncodeOptions,
    content_names,
    height_to_rung,
    job_names,
    parse_encode_options,
    sanitize_name,
)

ENC = {"libx264", "libx265", "aac"}
ENC_AV1 = ENC | {"libsvtav1"}


def parse(raw, height=1080, encoders=ENC, name="My Show.mp4"):
    return parse_encode_options(raw, source_name=name, source_height=height, encoders=encoders)


def test_defaults_follow_the_spec():
    o = parse({}, height=800)
    assert o == EncodeOptions(codec_selection="both", max_resolution="720p", hls_format="fmp4",
                              segment_duration=6.0, partial_durations=(200,), gop_duration=1.0,
                              padding="none", output_name="my_show")


def test_form_values_are_accepted():
    o = parse({"codec_selection": "H264", "max_resolution": "540p", "segment_duration": "4",
               "partial_durations[]": ["200", "500"], "gop_duration": "1", "padding": "pink",
               "hls_format": "both", "output_name": "Big Buck!"})
    assert o.codec_selection == "h264" and o.max_resolution == "540p" and o.segment_duration == 4.0
    assert o.partial_durations == (200, 500) and o.padding == "pink" and o.output_name == "big_buck"


@pytest.mark.parametrize("raw,field", [
    ({"codec_selection": "vp9"}, "codec_selection"),
    ({"max_resolution": "480p"}, "max_resolution"),
    ({"hls_format": "mkv"}, "hls_format"),
    ({"padding": "green"}, "padding"),
    ({"segment_duration": "abc"}, "segment_duration"),
    ({"segment_duration": 0}, "segment_duration"),
    ({"partial_durations": [5]}, "partial_durations"),
    ({"partial_durations": ["x"]}, "partial_durations"),
    ({"gop_duration": 4, "segment_duration": 6}, "gop_duration"),
    ({"output_name": 5}, "output_name"),
    ({"partial_durations": [300]}, "partial_durations"),
    ({"partial_durations": [2000]}, "partial_durations"),
])
def test_bad_fields_are_named(raw, field):
    with pytest.raises(Invalid) as exc:
        parse(raw)
    assert exc.value.status == 400
    assert field in exc.value.body()["fields"]


def test_av1_needs_an_encoder():
    with pytest.raises(Invalid) as exc:
        parse({"codec_selection": "av1"})
    assert "AV1 encoder" in exc.value.body()["fields"]["codec_selection"]
    assert parse({"codec_selection": "av1"}, encoders=ENC_AV1).codecs(ENC_AV1) == ("av1",)


def test_all_includes_av1_only_when_available():
    o = parse({"codec_selection": "all"})
    assert o.codecs(ENC) == ("h264", "hevc")
    assert o.codecs(ENC_AV1) == ("h264", "hevc", "av1")


def test_names_with_several_partial_durations():
    o = parse({"output_name": "myshow", "partial_durations": "200,500", "codec_selection": "both"})
    assert job_names(o) == [("myshow_p200", 200), ("myshow_p500", 500)]
    assert content_names("myshow_p200", o) == ["myshow_p200_h264", "myshow_p200_hevc"]
    single = parse({"output_name": "myshow", "codec_selection": "h264"})
    assert job_names(single) == [("myshow", 200)]
    assert content_names("myshow", single) == ["myshow_h264"]


def test_sanitize_and_rung_rounding():
    assert sanitize_name("  Hello World.MOV ") == "hello_world"
    assert sanitize_name("../../etc/passwd") == "etc_passwd"
    assert height_to_rung(1079) == "720p" and height_to_rung(2160) == "2160p"
    assert height_to_rung(180) == "360p"
    assert parse({}, height=None).max_resolution == "2160p"  # capped by the real height at encode time


def test_round_trip_json():
    o = parse({"partial_durations": [100, 200]})
    assert EncodeOptions.from_json(o.to_json()) == o


def test_loop_alignment_is_an_option_and_defaults_to_exact():
    from streamlab.errors import Invalid
    from streamlab.jobs.options import EncodeOptions, parse_encode_options

    opts = parse_encode_options({}, source_name="a.mp4", source_height=720, encoders=set())
    assert opts.loop_alignment == "exact" and opts.to_json()["loop_alignment"] == "exact"
    opts = parse_encode_options({"loop_alignment": "Segments"}, source_name="a.mp4", source_height=720,
                                encoders=set())
    assert EncodeOptions.from_json(opts.to_json()).loop_alignment == "segments"
    with pytest.raises(Invalid) as exc:
        parse_encode_options({"loop_alignment": "sloppy"}, source_name="a.mp4", source_height=720,
                             encoders=set())
    assert "loop_alignment" in exc.value.body()["fields"]
