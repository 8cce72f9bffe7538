"""Per-field revisions and conflicts (streamlab.proxy.controls)."""

import itertools

import pytest

from streamlab.errors import Conflict, Invalid
from streamlab.proxy.controls import ControlState
from streamlab.proxy.fields import control_defaults, validate


def test_apply_reports_changes_and_bumps_only_on_change():
    st = ControlState(control_defaults())
    r0 = st.revision
    assert st.apply({"segment_failure_type": "404"}, None) == ["segment_failure_type"]
    r1 = st.revision
    assert r1 != r0 and int(r1) > int(r0)
    assert st.values["segment_failure_type"] == "404"
    assert st.apply({"segment_failure_type": "404"}, None) == []
    assert st.revision == r1


def test_two_testers_editing_different_fields_never_conflict():
    st = ControlState(control_defaults())
    base = st.revision
    st.apply({"segment_failure_type": "404"}, base)          # tester A
    st.apply({"nftables_delay_ms": 100}, base)               # tester B, same stale base
    assert st.values["segment_failure_type"] == "404"
    assert st.values["nftables_delay_ms"] == 100


def test_same_field_after_base_conflicts_and_changes_nothing():
    st = ControlState(control_defaults())
    base = st.revision
    st.apply({"segment_failure_type": "404"}, base)
    rev = st.revision
    with pytest.raises(Conflict) as info:
        st.apply({"segment_failure_type": "500", "nftables_delay_ms": 5}, base)
    assert info.value.error == "revision_conflict"
    assert info.value.status == 409
    assert info.value.extra["conflicts"] == ["segment_failure_type"]
    assert st.values["segment_failure_type"] == "404"
    assert st.values["nftables_delay_ms"] == 0
    assert st.revision == rev
    # With the fresh revision it goes through; without any base, last writer wins.
    assert st.apply({"segment_failure_type": "500"}, rev) == ["segment_failure_type"]
    assert st.apply({"segment_failure_type": "503"}, None) == ["segment_failure_type"]


def test_same_value_never_conflicts():
    st = ControlState(control_defaults())
    base = st.revision
    st.apply({"segment_failure_type": "404"}, base)
    assert st.apply({"segment_failure_type": "404"}, base) == []


def test_bump_marks_server_side_changes():
    st = ControlState(control_defaults())
    st.apply({"segment_failure_type": "404"}, None)
    base = st.revision
    st.values["segment_failure_type"] = "none"
    new = st.bump(["segment_failure_type"])
    assert int(new) > int(base)
    with pytest.raises(Conflict):
        st.apply({"segment_failure_type": "500"}, base)
    assert st.set_server({"transport_failure_type": "none"}) == []
    assert st.set_server({"transport_failure_type": "drop"}) == ["transport_failure_type"]


def test_bad_base_revision():
    st = ControlState(control_defaults())
    with pytest.raises(Invalid):
        st.apply({"segment_failure_type": "404"}, "abc")


def test_shared_counter_and_explicit_revision():
    counter = itertools.count(100)
    a = ControlState(control_defaults(), next_revision=lambda: next(counter))
    b = ControlState(control_defaults(), next_revision=lambda: next(counter))
    a.apply({"nftables_delay_ms": 1})
    b.apply({"nftables_delay_ms": 1})
    assert (a.revision, b.revision) == ("100", "101")
    a.apply({"nftables_delay_ms": 2}, revision=500)
    b.apply({"nftables_delay_ms": 2}, revision=500)
    assert a.revision == b.revision == "500"


def test_validate_then_apply_flow():
    st = ControlState(control_defaults())
    changes = validate({"segment_failure_mode": "seconds"}, None, st.values)
    changed = st.apply(changes, st.revision)
    assert set(changed) == {"segment_failure_mode", "segment_consecutive_units", "segment_frequency_units"}
