"""The one place that turns times and numbers into API/log text.

* :func:`iso_ms` — ``2026-11-26T03:00:00.250Z``: every timestamp the API, the network
  log, the job records and the JSON log carry (UTC, milliseconds, ``Z``).
  :func:`iso_of_ms` is the same for integer epoch milliseconds; :func:`iso_s` drops the
  milliseconds (source and upload records).  The text of the current second is cached:
  a burst of requests in one second costs one string concatenation each (the network
  log formats one timestamp per request).  :func:`parse_time_ms` reads them back (and
  any other ISO-8601 form, or epoch seconds).
* :func:`json_number` — a float that is a whole number becomes an int (``8`` not ``8.0``).
* :func:`number_text` — the shortest decimal text of a number (``"8"``, ``"0.25"``), or
  rounded to *places* decimals with trailing zeros dropped.
"""

from __future__ import annotations

import datetime

_last_second: tuple[int, str] = (-1, "")


def _second_text(second: int) -> str:
    global _last_second
    cached = _last_second  # one read: a log line formatted in a thread may replace it
    if cached[0] == second:
        return cached[1]
    text = datetime.datetime.fromtimestamp(second, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    _last_second = (second, text)
    return text


def iso_of_ms(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with milliseconds and ``Z``."""
    return f"{_second_text(ms // 1000)}.{ms % 1000:03d}Z"


def epoch_ms(seconds: float) -> int:
    """Epoch *seconds* as whole milliseconds, truncated the way ``datetime`` does it
    (to the microsecond first, so ``1.001`` is 1001 ms, not 1000)."""
    return round(seconds * 1_000_000) // 1000


def iso_ms(seconds: float) -> str:
    """Epoch *seconds* as ISO-8601 UTC with milliseconds and ``Z``."""
    return iso_of_ms(epoch_ms(seconds))


def iso_ms_or_none(seconds: float | None) -> str | None:
    """:func:`iso_ms`, with None staying None (a time that has not happened yet)."""
    return None if seconds is None else iso_ms(seconds)


def iso_s(seconds: float) -> str:
    """Epoch *seconds* as ISO-8601 UTC to the second: ``2026-11-26T03:00:00Z``."""
    return _second_text(int(seconds // 1)) + "Z"


def parse_time_ms(value: str | float | int) -> int:
    """Epoch milliseconds of an ISO-8601 timestamp (``Z`` or offset; naive = UTC) or of
    epoch seconds given as a number/numeric string.  ValueError when unparseable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(float(value) * 1000 // 1)
    text = str(value).strip()
    second, prefix = _last_second
    if len(text) == 24 and text[19] == "." and text[23] == "Z" and text[:19] == prefix \
            and text[20:23].isdigit():  # the form iso_of_ms wrote this second: no parsing
        return second * 1000 + int(text[20:23])
    try:
        return int(float(text) * 1000 // 1)
    except ValueError:
        pass
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.datetime.fromisoformat(text.replace(" ", "+") if "T" in text and " " in text else text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    delta = dt - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000


def json_number(value: float) -> int | float:
    """*value* for a JSON body: whole numbers as ints (``8``), others unchanged."""
    return int(value) if float(value).is_integer() else value


def number_text(value: float, places: int | None = None) -> str:
    """The shortest decimal text of *value* (``8``, ``0.25``, ``1e-05``), or rounded to
    *places* decimals with trailing zeros dropped (``number_text(1/3, 3) == "0.333"``)."""
    if places is not None:
        return f"{value:.{places}f}".rstrip("0").rstrip(".") or "0"
    if isinstance(value, int):
        return str(value)
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text
