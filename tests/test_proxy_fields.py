"""Validation of every control-field family (streamlab.proxy.fields)."""

import copy

import pytest

from streamlab.errors import Invalid
from streamlab.proxy import fields
from streamlab.proxy.fields import CONTROL_DEFAULTS, GROUP_FIELDS, validate


def current():
    return fields.control_defaults()


def invalid(set_, fields_=None, cur=None, **kw):
    cur = cur if cur is not None else current()
    before = copy.deepcopy(cur)
    with pytest.raises(Invalid) as info:
        validate(set_, fields_, cur, **kw)
    assert cur == before  # nothing applied
    return info.value


# --------------------------------------------------------------------------- schema


def test_every_prefix_has_the_seven_http_fields_and_defaults():
    for p in ("all", "segment", "manifest", "master_manifest"):
        assert CONTROL_DEFAULTS[f"{p}_failure_type"] == "none"
        assert CONTROL_DEFAULTS[f"{p}_failure_mode"] == "requests"
        assert CONTROL_DEFAULTS[f"{p}_consecutive_failures"] == 1
        assert CONTROL_DEFAULTS[f"{p}_failure_frequency"] == 10
        assert CONTROL_DEFAULTS[f"{p}_consecutive_units"] == "requests"
        assert CONTROL_DEFAULTS[f"{p}_frequency_units"] == "requests"
        assert CONTROL_DEFAULTS[f"{p}_failure_urls"] == []
    assert "group_id" not in CONTROL_DEFAULTS
    assert CONTROL_DEFAULTS["transfer_timeout_applies_segments"] is True
    assert CONTROL_DEFAULTS["transfer_timeout_applies_master"] is False


def test_group_fields_cover_faults_transport_shaping_not_content():
    assert "segment_failure_type" in GROUP_FIELDS
    assert "all_failure_urls" in GROUP_FIELDS
    assert "transport_failure_type" in GROUP_FIELDS
    assert "nftables_pattern_steps" in GROUP_FIELDS
    assert "nftables_bandwidth_mbps" in GROUP_FIELDS
    assert "content_strip_codecs" not in GROUP_FIELDS
    assert not any(k.startswith("player_metrics") for k in GROUP_FIELDS)
    assert GROUP_FIELDS <= set(CONTROL_DEFAULTS)


def test_control_defaults_is_a_fresh_copy_and_takes_default_rate():
    a = fields.control_defaults(default_rate_mbps=5)
    a["segment_failure_urls"].append("x")
    assert CONTROL_DEFAULTS["segment_failure_urls"] == []
    assert a["nftables_bandwidth_mbps"] == 5


# --------------------------------------------------------------------------- fault types


@pytest.mark.parametrize("value,canonical", [
    ("404", "404"), (404, "404"), (503.0, "503"), ("599", "599"), ("400", "400"),
    ("none", "none"), (None, "none"), ("", "none"), ("NONE", "none"),
    ("timeout", "timeout"), ("connection_refused", "connection_refused"),
    ("dns_failure", "dns_failure"), ("rate_limiting", "rate_limiting"),
    ("corrupted", "corrupted"), ("request_body_reset", "request_body_reset"),
    ("request-first-byte-delayed", "request_first_byte_delayed"),
    ("hung", "request_connect_hang"), ("socket_timeout", "request_connect_hang"),
    ("socket_drop", "request_connect_hang"), ("socket_drop_before_headers", "request_connect_hang"),
    ("socket_reject", "request_connect_reset"), ("socket_reject_before_headers", "request_connect_reset"),
    ("socket_drop_after_headers", "request_first_byte_hang"),
    ("socket_reject_after_headers", "request_first_byte_reset"),
    ("socket_drop_mid_body", "request_body_hang"), ("socket_reject_mid_body", "request_body_reset"),
])
def test_fault_type_normalisation(value, canonical):
    assert fields.normalise_fault_type(value) == canonical
    assert validate({"segment_failure_type": value}, None, current()) == {"segment_failure_type": canonical}


@pytest.mark.parametrize("value", ["399", 600, 200, "fast", True, 1.5, ["404"], {"a": 1}, "request_reset"])
def test_bad_fault_types(value):
    err = invalid({"manifest_failure_type": value})
    assert set(err.extra["fields"]) == {"manifest_failure_type"}
    with pytest.raises(ValueError):
        fields.normalise_fault_type(value)


# --------------------------------------------------------------------------- errors


def test_empty_input():
    err = invalid({})
    assert err.error == "no fields provided"
    err = invalid({"segment_failure_type": "404"}, [])
    assert err.error == "no fields provided"


def test_every_bad_key_is_listed_and_nothing_returned():
    err = invalid({
        "segment_failure_type": "404",          # fine
        "bogus": 1,                              # unknown
        "manifest_consecutive_failures": "3",    # wrong type (JSON string)
        "nftables_delay_ms": 10001,              # range
        "all_failure_mode": "sometimes",         # enum
        "group_id": "G1",                        # read-only
        "player_metrics_x": 1,                   # not a control field
        "segments_count": 3,                     # read-only counter
    })
    assert err.error == "invalid"
    bad = err.extra["fields"]
    assert set(bad) == {"bogus", "manifest_consecutive_failures", "nftables_delay_ms", "all_failure_mode",
                        "group_id", "player_metrics_x", "segments_count"}
    assert bad["bogus"] == "unknown field"
    assert "read-only" in bad["group_id"]
    assert "out of range" in bad["nftables_delay_ms"]
    assert err.body()["fields"] == bad


def test_fields_list_limits_what_is_validated_and_returned():
    out = validate({"segment_failure_type": "404", "bogus": 1, "nftables_delay_ms": -1},
                   ["segment_failure_type"], current())
    assert out == {"segment_failure_type": "404"}
    err = invalid({"segment_failure_type": "404"}, ["segment_failure_type", "manifest_failure_type"])
    assert err.extra["fields"] == {"manifest_failure_type": "listed in fields but missing from set"}
    err = invalid({"a": 1}, "a")
    assert "fields" in err.extra["fields"]


def test_not_an_object():
    with pytest.raises(Invalid):
        validate(["segment_failure_type"], None, current())


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("key,good,bad", [
    ("segment_consecutive_failures", [0, 1, 1000000], [-1, 1000001, "2", True, None, float("nan")]),
    ("segment_failure_frequency", [0, 6, 12.0], [-0.5, "x", [1]]),
    ("transfer_active_timeout_seconds", [0, 2.5], [-1, "1", False]),
    ("transfer_idle_timeout_seconds", [0, 30], [86401, None]),
    ("nftables_bandwidth_mbps", [0, 0.5, 10000], [-0.1, 10000.1, "5"]),
    ("nftables_delay_ms", [0, 250, 10000], [-1, 10001]),
    ("nftables_packet_loss", [0, 2.5, 100], [-1, 100.5, True]),
    ("content_live_offset", [0, 6, 18, 24], [-6, "6"]),
])
def test_numbers(key, good, bad):
    for value in good:
        assert validate({key: value}, None, current())[key] == value
    for value in bad:
        err = invalid({key: value})
        assert list(err.extra["fields"]) == [key], value


def test_whole_numbers_required_for_request_units():
    err = invalid({"segment_consecutive_failures": 1.5})
    assert "whole number" in err.extra["fields"]["segment_consecutive_failures"]
    out = validate({"segment_failure_mode": "seconds", "segment_consecutive_failures": 1.5}, None, current())
    assert out["segment_consecutive_failures"] == 1.5
    err = invalid({"transport_consecutive_units": "packets", "transport_consecutive_failures": 2.5})
    assert "transport_consecutive_failures" in err.extra["fields"]


def test_numeric_strings_only_with_coercion():
    out = validate({"segment_consecutive_failures": "3", "content_strip_codecs": "true",
                    "nftables_pattern_margin_pct": "10", "segment_failure_urls[]": "a,b"},
                   None, current(), coerce_strings=True)
    assert out == {"segment_consecutive_failures": 3, "content_strip_codecs": True,
                   "nftables_pattern_margin_pct": 10, "segment_failure_urls": ["a", "b"]}


# --------------------------------------------------------------------------- enums / bools / lists


@pytest.mark.parametrize("key,good,bad", [
    ("segment_failure_mode", ["requests", "seconds", "failures_per_seconds"], ["packets", "", 1]),
    ("transport_failure_mode", ["failures_per_seconds", "failures_per_packets"], ["requests", "seconds"]),
    ("transport_failure_type", ["none", "drop", "reject", "DROP"], ["404", "hang", 1]),
    ("nftables_pattern_template_mode", ["sliders", "square_wave", "ramp_up", "ramp_down", "pyramid"],
     ["triangle"]),
    ("nftables_pattern_margin_pct", [0, 5, 10, 25, 50], [15, "10", -5]),
    ("nftables_pattern_step_seconds", [6, 12, 18, 24], [7, 0]),
    ("content_strip_codecs", [True, False], ["yes", 1, None]),
    ("transfer_timeout_applies_manifests", [True, False], [0]),
    ("nftables_pattern_enabled", [False], ["on"]),
])
def test_enums_and_bools(key, good, bad):
    for value in good:
        out = validate({key: value}, None, current())
        assert out[key] == (value.lower() if isinstance(value, str) else value)
    for value in bad:
        err = invalid({key: value})
        assert key in err.extra["fields"], value


def test_url_lists():
    assert validate({"segment_failure_urls": ["720p", " All "]}, None, current())["segment_failure_urls"] == [
        "720p", "All"]
    # a bare string is a JSON type error; legacy form posts may still send one
    invalid({"segment_failure_urls": "720p"})
    invalid({"content_allowed_variants": "720p"})
    assert validate({"segment_failure_urls": "720p"}, None, current(), coerce_strings=True)[
        "segment_failure_urls"] == ["720p"]
    assert validate({"content_allowed_variants": []}, None, current())["content_allowed_variants"] == []
    for bad in ([1], {"a": 1}, ["x" * 2000], ["a"] * 101):
        invalid({"segment_failure_urls": bad})


def test_transport_alias():
    assert validate({"transport_fault_type": "drop"}, None, current()) == {"transport_failure_type": "drop"}
    err = invalid({"transport_fault_type": "drop", "transport_failure_type": "reject"})
    assert "transport_failure_type" in err.extra["fields"] or "transport_fault_type" in err.extra["fields"]


# --------------------------------------------------------------------------- mode <-> units


@pytest.mark.parametrize("sent,expect", [
    ({"segment_failure_mode": "seconds"}, ("seconds", "seconds", "seconds")),
    ({"segment_failure_mode": "failures_per_seconds"}, ("failures_per_seconds", "requests", "seconds")),
    ({"segment_consecutive_units": "requests", "segment_frequency_units": "seconds"},
     ("failures_per_seconds", "requests", "seconds")),
    ({"segment_consecutive_units": "seconds", "segment_frequency_units": "seconds"},
     ("seconds", "seconds", "seconds")),
    ({"segment_consecutive_units": "seconds"}, ("seconds", "seconds", "seconds")),
    ({"segment_frequency_units": "seconds"}, ("failures_per_seconds", "requests", "seconds")),
    ({"segment_frequency_units": "requests"}, ("requests", "requests", "requests")),
    ({"segment_failure_units": "seconds"}, ("seconds", "seconds", "seconds")),
    ({"segment_failure_units": "requests"}, ("requests", "requests", "requests")),
    ({"segment_failure_mode": "seconds", "segment_consecutive_units": "seconds"},
     ("seconds", "seconds", "seconds")),
])
def test_mode_and_units_are_derived_both_ways(sent, expect):
    out = validate(sent, None, current())
    got = (out["segment_failure_mode"], out["segment_consecutive_units"], out["segment_frequency_units"])
    assert got == expect
    assert "segment_failure_units" not in out


def test_one_unit_uses_the_current_other_unit():
    cur = current()
    cur.update(segment_failure_mode="seconds", segment_consecutive_units="seconds",
               segment_frequency_units="seconds")
    out = validate({"segment_consecutive_units": "requests"}, None, cur)
    assert out["segment_failure_mode"] == "failures_per_seconds"


@pytest.mark.parametrize("sent", [
    {"segment_failure_mode": "requests", "segment_frequency_units": "seconds"},
    {"segment_failure_mode": "seconds", "segment_consecutive_units": "requests"},
    {"segment_consecutive_units": "seconds", "segment_frequency_units": "requests"},
    {"segment_failure_units": "seconds", "segment_consecutive_units": "requests"},
    {"segment_failure_units": "packets"},
    {"transport_failure_mode": "failures_per_packets", "transport_consecutive_units": "seconds"},
    {"transport_frequency_units": "packets"},
])
def test_mode_units_disagreement_is_400(sent):
    err = invalid(sent)
    assert err.extra["fields"]


def test_transport_units():
    out = validate({"transport_consecutive_units": "packets"}, None, current())
    assert out["transport_failure_mode"] == "failures_per_packets"
    assert out["transport_frequency_units"] == "seconds"
    out = validate({"transport_failure_mode": "failures_per_seconds"}, None, current())
    assert out["transport_consecutive_units"] == "seconds"
    out = validate({"transport_failure_units": "packets"}, None, current())
    assert out["transport_failure_mode"] == "failures_per_packets"


# --------------------------------------------------------------------------- patterns / content


def test_pattern_steps():
    steps = [{"rate_mbps": 8, "duration_seconds": 10},
             {"rate_mbps": 0, "duration_seconds": 2.5, "enabled": False}]
    out = validate({"nftables_pattern_steps": steps, "nftables_pattern_enabled": True}, None, current())
    assert out["nftables_pattern_steps"] == [{"rate_mbps": 8, "duration_seconds": 10, "enabled": True},
                                             {"rate_mbps": 0, "duration_seconds": 2.5, "enabled": False}]
    for bad in ([{"rate_mbps": 8}], [{"rate_mbps": -1, "duration_seconds": 1}],
                [{"rate_mbps": 1, "duration_seconds": 0}], [{"rate_mbps": 1, "duration_seconds": 1, "x": 1}],
                ["step"], {"rate_mbps": 1}, [{"rate_mbps": 1, "duration_seconds": 1, "enabled": "yes"}]):
        err = invalid({"nftables_pattern_steps": bad})
        assert "nftables_pattern_steps" in err.extra["fields"]


def test_pattern_needs_steps_unless_a_template_builds_them():
    err = invalid({"nftables_pattern_enabled": True})
    assert "nftables_pattern_enabled" in err.extra["fields"]
    out = validate({"nftables_pattern_enabled": True, "nftables_pattern_template_mode": "square_wave"},
                   None, current())
    assert out["nftables_pattern_enabled"] is True
    validate({"nftables_pattern_enabled": False, "nftables_pattern_steps": []}, None, current())


def test_allowed_variants_checked_against_known_ladder():
    variants = [{"url": "playlist_6s_720p.m3u8"}, {"url": "playlist_6s_360p.m3u8"}]
    assert validate({"content_allowed_variants": ["720p"]}, None, current(), variants=variants)
    err = invalid({"content_allowed_variants": ["1080p"]}, variants=variants)
    assert "content_allowed_variants" in err.extra["fields"]
    # Unknown ladder (no master seen yet): accepted.
    assert validate({"content_allowed_variants": ["1080p"]}, None, current(), variants=None)


# --------------------------------------------------------------------------- metrics


def test_metrics_validation():
    assert fields.validate_metrics({"player_metrics_bitrate": 5.5, "player_metrics_state": "playing",
                                    "player_metrics_x": None}) == {
        "player_metrics_bitrate": 5.5, "player_metrics_state": "playing", "player_metrics_x": None}
    with pytest.raises(Invalid) as info:
        fields.validate_metrics({"segment_failure_type": "404", "player_metrics_a": [1], "foo": 1})
    assert set(info.value.extra["fields"]) == {"segment_failure_type", "player_metrics_a", "foo"}
    with pytest.raises(Invalid) as info:
        fields.validate_metrics({})
    assert info.value.error == "no fields provided"


@pytest.mark.parametrize("text", [" 404", "404\n", "\u0664\u0660\u0664", "\uff14\uff10\uff14"])
def test_a_status_code_string_is_three_ascii_digits_as_the_schema_says(text):
    """The OpenAPI schema allows ``^[45][0-9][0-9]$``; the validator must not accept more
    (the API fuzzer found padded and non-ASCII digit strings answered 200)."""
    with pytest.raises(ValueError):
        fields.normalise_fault_type(text)
    assert fields.normalise_fault_type("404") == "404"
