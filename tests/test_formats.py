"""The one timestamp and number formatter (streamlab/formats.py)."""

from __future__ import annotations

import datetime

import pytest

from streamlab import formats


def _by_datetime(seconds: float) -> str:
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@pytest.mark.parametrize("seconds", [0, 0.25, 1.001, 1.0005, 59.9999, 1764720000.123, 1764720061.9996,
                                     1700000000, 2000000000.5])
def test_iso_ms_matches_the_datetime_rendering(seconds):
    assert formats.iso_ms(seconds) == _by_datetime(seconds)


def test_iso_variants():
    assert formats.iso_ms(1764720000.25) == "2025-12-03T00:00:00.250Z"
    assert formats.iso_of_ms(1764720000250) == "2025-12-03T00:00:00.250Z"
    assert formats.iso_s(1764720000.9) == "2025-12-03T00:00:00Z"
    assert formats.iso_ms_or_none(None) is None
    assert formats.iso_ms_or_none(0) == "1970-01-01T00:00:00.000Z"
    # the cached second is not reused for another second
    assert formats.iso_ms(1764720001) == "2025-12-03T00:00:01.000Z"
    assert formats.iso_ms(1764720000.5) == "2025-12-03T00:00:00.500Z"


def test_numbers():
    assert formats.json_number(8.0) == 8 and isinstance(formats.json_number(8.0), int)
    assert formats.json_number(0.25) == 0.25
    assert formats.number_text(8) == "8"
    assert formats.number_text(8.0) == "8"
    assert formats.number_text(0.25) == "0.25"
    assert formats.number_text(1e-05) == "1e-05"
    assert formats.number_text(1 / 3, 3) == "0.333"
    assert formats.number_text(2.5, 6) == "2.5"
    assert formats.number_text(0.0000001, 6) == "0"
