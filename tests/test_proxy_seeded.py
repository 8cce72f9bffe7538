"""Seeded probability faults: ``<prefix>_failure_probability`` and the session ``seed``."""

import pytest

from streamlab.errors import Invalid
from streamlab.proxy.faults import FaultEngine
from streamlab.proxy.fields import FIELD_SCHEMAS, MAX_SEED, control_defaults, validate

SEG = "/go-live/clip/video/720p/seg_{:05d}.m4s"


def engine(**set_):
    controls = control_defaults()
    controls.update(validate(set_, None, controls))
    return FaultEngine(controls, 0.0), controls


def pattern(eng, n, t0=0.0):
    return "".join("X" if eng.decide("segment", SEG.format(i), t0 + i * 0.1) else "." for i in range(n))


def test_same_seed_replays_the_same_fault_sequence():
    a, _ = engine(seed=1234, segment_failure_type="404", segment_failure_probability=0.3)
    b, _ = engine(seed=1234, segment_failure_type="404", segment_failure_probability=0.3)
    seq = pattern(a, 200)
    assert seq == pattern(b, 200)
    assert "X" in seq and "." in seq


def test_another_seed_gives_another_sequence():
    a, _ = engine(seed=1, segment_failure_type="404", segment_failure_probability=0.3)
    b, _ = engine(seed=2, segment_failure_type="404", segment_failure_probability=0.3)
    assert pattern(a, 200) != pattern(b, 200)


@pytest.mark.parametrize("p", [0.05, 0.25, 0.5, 0.9])
def test_rate_is_about_the_probability(p):
    eng, _ = engine(seed=77, segment_failure_type="503", segment_failure_probability=p)
    n = 4000
    rate = pattern(eng, n).count("X") / n
    assert abs(rate - p) < 0.03, rate


def test_probability_replaces_the_cycle():
    # consecutive 1 of every 10 would give exactly 10 % in a fixed pattern; p=1 faults all
    eng, _ = engine(seed=5, segment_failure_type="404", segment_consecutive_failures=1,
                    segment_failure_frequency=10, segment_failure_probability=1)
    assert pattern(eng, 30) == "X" * 30


def test_probability_zero_keeps_the_cycle():
    eng, _ = engine(seed=5, segment_failure_type="404", segment_consecutive_failures=1,
                    segment_failure_frequency=3)
    assert pattern(eng, 9) == "X..X..X.."


def test_reseeding_restarts_the_draws_and_replays():
    eng, controls = engine(seed=9, segment_failure_type="404", segment_failure_probability=0.5)
    first = pattern(eng, 50)
    pattern(eng, 17)                        # the sequence moved on
    controls.update(validate({"seed": 9}, None, controls))
    eng.configure(controls, ["seed"], 10.0)
    assert pattern(eng, 50, t0=10.0) == first


def test_rules_draw_independently_per_prefix():
    eng, _ = engine(seed=3, segment_failure_type="404", segment_failure_probability=0.5,
                    manifest_failure_type="404", manifest_failure_probability=0.5)
    seg = pattern(eng, 64)
    man = "".join("X" if eng.decide("manifest", "/go-live/clip/playlist_6s_720p.m3u8", 0) else "."
                  for _ in range(64))
    assert seg != man


def test_new_sessions_get_a_random_seed_in_range():
    seeds = {control_defaults()["seed"] for _ in range(20)}
    assert len(seeds) > 1
    assert all(0 <= s <= MAX_SEED for s in seeds)


def test_seed_and_probability_validation_and_schema():
    current = control_defaults()
    assert validate({"seed": 42, "all_failure_probability": 0.25}, None, current) == {
        "seed": 42, "all_failure_probability": 0.25}
    assert validate({"seed": "42"}, None, current, coerce_strings=True) == {"seed": 42}
    with pytest.raises(Invalid) as exc:
        validate({"seed": -1, "segment_failure_probability": 1.5, "manifest_failure_probability": "x"},
                 None, current)
    assert set(exc.value.extra["fields"]) == {
        "seed", "segment_failure_probability", "manifest_failure_probability"}
    with pytest.raises(Invalid) as exc:
        validate({"seed": 1.5}, None, current)
    assert "whole" in exc.value.extra["fields"]["seed"]
    assert FIELD_SCHEMAS["seed"] == {"type": "integer", "minimum": 0, "maximum": MAX_SEED}
    assert FIELD_SCHEMAS["master_manifest_failure_probability"]["maximum"] == 1


def test_marker_names_probability_and_seed():
    from streamlab.proxy import markers
    values = {**control_defaults(), "segment_failure_type": "404", "segment_failure_probability": 0.2,
              "seed": 7}
    assert markers.describe(["segment_failure_probability"], values) == \
        ("fault", "segment: 404 armed (p=0.2, seed 7)")


def test_patching_the_same_seed_again_replays_from_the_start():
    from tests.test_sessions_registry import _registry
    reg, reactor, _ = _registry()
    s, _ = reg.get_or_create("seeded")
    reg.patch(s.session_id, {"seed": 99, "segment_failure_type": "404", "segment_failure_probability": 0.5})

    def run(n):
        return "".join("X" if s.engine.decide("segment", SEG.format(i), reactor.seconds()) else "."
                       for i in range(n))
    first = run(40)
    run(13)
    reg.patch(s.session_id, {"seed": 99})
    assert reg.to_json(s)["seed"] == 99
    assert run(40) == first
