"""When an idle session may go away (pure; docs/sessions.md "Session lifetime").

A session idle for ``idle_timeout`` (no request on its port) expires, except:

* its ``keep`` flag is on -> it stays (``idle_kept``);
* a Testing-session page watches it (its network-log stream has a client) -> it stays
  (``idle_watched``), since a tester is looking at it;
* its controls are set away from the defaults (faults armed, shaping, ...) -> it expires
  only after a visible countdown of ``grace`` seconds (``expiring``, with the deadline),
  which any request, a watcher or ``keep`` cancels.

Otherwise it expires at ``last_activity + idle_timeout`` as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ACTIVE = "active"
IDLE_KEPT = "idle_kept"
IDLE_WATCHED = "idle_watched"
EXPIRING = "expiring"
EXPIRED = "expired"


@dataclass(frozen=True)
class Lifetime:
    """The verdict at one instant: *state*, the expiry deadline (epoch s, None = none
    planned), and when to look again (epoch s)."""

    state: str
    expires_at: float | None
    recheck_at: float
    countdown_from: float | None = None


def controls_set(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """Control fields whose value differs from the default (sorted).  ``seed`` is drawn
    per session, so it never counts as a control someone set."""
    return sorted(k for k, d in defaults.items() if k in values and values[k] != d and k != "seed")


def decide(now: float, last_activity: float, idle_timeout: float, grace: float, *,
           keep: bool, watched: bool, has_controls: bool, in_flight: int,
           countdown_from: float | None) -> Lifetime:
    """The lifetime verdict (see the module docstring).  *countdown_from* is when a
    running countdown started (None when none runs); the verdict carries it on."""
    idle_due = last_activity + idle_timeout
    if in_flight > 0 or now < idle_due - 1e-6:
        return Lifetime(ACTIVE, None if (keep or watched or has_controls) else idle_due,
                        max(idle_due, now + 1.0) if in_flight > 0 else idle_due)
    if keep:
        return Lifetime(IDLE_KEPT, None, now + 2.0)
    if watched:
        return Lifetime(IDLE_WATCHED, None, now + 2.0)
    if has_controls and grace > 0:
        start = countdown_from if countdown_from is not None else now
        deadline = start + grace
        if now < deadline - 1e-6:
            return Lifetime(EXPIRING, deadline, min(deadline, now + 2.0), start)
    return Lifetime(EXPIRED, now, now)
