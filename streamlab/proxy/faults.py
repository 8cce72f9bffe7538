"""The HTTP fault engine of one session (pure: no I/O, time passed in as ``now``).

Rule choice, scope and the three timing modes follow spec/sessions.md section 4; the
decisions taken where the spec is silent are in docs/faults.md.  The engine only
*decides*; the session listener carries the decision out (status answer, RST, hang,
delayed FIN, zeroed body) and records it.
"""

from __future__ import annotations

import http.client
import json
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streamlab.proxy.classify import scope_matches
from streamlab.proxy.fields import CONTROL_DEFAULTS, HTTP_PREFIXES, SOCKET_TYPES, STATUS_ALIASES

RULE_SUFFIXES: tuple[str, ...] = (
    "failure_type", "failure_mode", "consecutive_failures", "failure_frequency",
    "consecutive_units", "frequency_units", "failure_urls", "failure_probability",
)
KIND_PREFIX: Mapping[str, str] = {
    "segment": "segment", "manifest": "manifest", "master_manifest": "master_manifest",
}


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request.

    ``action`` is ``status`` (answer ``status`` with a short JSON body, no upstream work),
    ``reset`` / ``hang`` / ``delayed`` (socket faults, at ``stage`` ``connect`` — no bytes,
    ``first_byte`` — 200 headers only, ``body`` — headers + ``socket_body_bytes``) or
    ``corrupt`` (real headers and length, every body byte 0x00).  ``retry_after`` is set
    for ``rate_limiting`` (seconds for the ``Retry-After`` header).
    """

    fault_type: str
    category: str
    status: int | None
    action: str
    prefix: str
    stage: str | None = None
    retry_after: int | None = None

    @property
    def counter_key(self) -> str:
        """The session counter this fault bumps (``fault_count_<type>``)."""
        return counter_key(self.fault_type)


def counter_key(fault_type: str) -> str:
    """``fault_count_<type>``: lower-cased, ``-`` -> ``_`` (``404`` -> ``fault_count_404``,
    ``transport_drop`` -> ``fault_count_transport_drop``)."""
    return "fault_count_" + str(fault_type).strip().lower().replace("-", "_")


def describe_type(fault_type: str) -> tuple[str, int | None, str, str | None]:
    """``(category, status, action, stage)`` of a canonical fault type."""
    if fault_type.isdecimal():
        return "http", int(fault_type), "status", None
    if fault_type in STATUS_ALIASES:
        return "http", STATUS_ALIASES[fault_type], "status", None
    if fault_type in SOCKET_TYPES:
        body = fault_type[len("request_"):]
        stage, _, action = body.rpartition("_")
        return "socket", None, action, stage
    if fault_type == "corrupted":
        return "corruption", None, "corrupt", None
    raise ValueError(f"not an active fault type: {fault_type!r}")


def fault_body(status: int, fault_type: str) -> bytes:
    """The one JSON body of every injected HTTP error (status faults and transfer
    timeouts): ``{"error": <reason>, "fault_type", "status", "injected": true}``."""
    return json.dumps({
        "error": http.client.responses.get(status, "error").lower(),
        "fault_type": fault_type,
        "status": status,
        "injected": True,
    }, separators=(",", ":")).encode()


def status_body(decision: FaultDecision) -> bytes:
    """The short JSON body of a status fault."""
    return fault_body(decision.status or 500, decision.fault_type)


def transfer_timeouts(controls: Mapping[str, Any], kind: str) -> tuple[float, float]:
    """``(active, idle)`` transfer timeouts in seconds that apply to *kind* (0 = off)."""
    flag = {
        "segment": "transfer_timeout_applies_segments",
        "manifest": "transfer_timeout_applies_manifests",
        "master_manifest": "transfer_timeout_applies_master",
    }.get(kind)
    if flag is None or not controls.get(flag, CONTROL_DEFAULTS[flag]):
        return 0.0, 0.0
    return (float(controls.get("transfer_active_timeout_seconds", 0) or 0),
            float(controls.get("transfer_idle_timeout_seconds", 0) or 0))


class _Rule:
    """Phase state of one prefix's rule since it was (re)armed."""

    def __init__(self, prefix: str, controls: Mapping[str, Any], now: float) -> None:
        def get(suffix: str) -> Any:
            key = f"{prefix}_{suffix}"
            return controls.get(key, CONTROL_DEFAULTS[key])

        self.prefix = prefix
        self.fault_type = str(get("failure_type"))
        self.mode = str(get("failure_mode"))
        self.c = float(get("consecutive_failures") or 0)
        self.f = float(get("failure_frequency") or 0)
        self.urls = list(get("failure_urls") or [])
        self.p = float(get("failure_probability") or 0)
        # Seeded per rule: the same seed and request sequence replays the same faults,
        # and re-arming a rule restarts its draw sequence (docs/faults.md section 12).
        self.rng = random.Random(f"{int(controls.get('seed', 0) or 0)}:{prefix}") if self.p > 0 else None
        self.armed_at = now
        self.start: float | None = None      # first matching request (seconds / fps grid)
        self.n = 0                            # matching requests seen (requests / one-shots)
        self.window = -1                      # fps: current window index
        self.in_window = 0                    # fps: matching requests in that window
        self.disarmed = False
        self.faults = 0
        if self.fault_type != "none":
            self.category, self.status, self.action, self.stage = describe_type(self.fault_type)

    @property
    def active(self) -> bool:
        return self.fault_type != "none" and not self.disarmed

    def one_shot_deadline(self) -> float | None:
        """When a started seconds-mode one-shot disarms (None otherwise)."""
        if self.active and self.rng is None and self.mode == "seconds" and self.c > 0 and self.f == 0 \
                and self.start is not None:
            return self.start + self.c
        return None

    def hit(self, now: float) -> bool:
        """Count one matching request at *now*; True when it is faulted."""
        if self.start is None:
            self.start = now
        if self.rng is not None:              # probability replaces the cycle
            self.n += 1
            return self.rng.random() < self.p
        if self.c == 0:
            return True                       # every matching request while armed
        if self.mode == "seconds":
            elapsed = max(0.0, now - self.start)
            if self.f == 0:
                if elapsed < self.c:
                    return True
                self.disarmed = True
                return False
            return (elapsed % self.f) < self.c
        if self.f == 0 or self.mode not in ("requests", "failures_per_seconds"):
            fault = self.n < self.c           # one-shot: the first C matching requests
            self.n += 1
            if self.n >= self.c:
                self.disarmed = True
            return fault
        if self.mode == "requests":
            period = int(self.c) + max(int(self.f) - int(self.c), 1)
            fault = (self.n % period) < self.c
            self.n += 1
            return fault
        window = math.floor(max(0.0, now - self.start) / self.f)
        if window != self.window:
            self.window, self.in_window = window, 0
        fault = self.in_window < self.c
        self.in_window += 1
        return fault

    def retry_after(self, now: float) -> int:
        if self.rng is None and self.mode == "seconds" and self.c > 0 and self.start is not None:
            elapsed = max(0.0, now - self.start)
            into = elapsed % self.f if self.f > 0 else elapsed
            return max(1, math.ceil(self.c - into))
        return 1

    def state(self) -> dict[str, Any]:
        return {
            "fault_type": self.fault_type, "mode": self.mode, "consecutive": self.c,
            "frequency": self.f, "probability": self.p, "urls": list(self.urls), "armed_at": self.armed_at,
            "phase_start": self.start, "matching_requests": self.n, "faults": self.faults,
            "disarmed": self.disarmed,
        }


class FaultEngine:
    """Decides, request by request, whether a session's HTTP fault rules fire.

    Call :meth:`configure` with the session's controls whenever they change (and once at
    creation with ``changed=None``), :meth:`decide` for every request, and drain
    :meth:`take_disarmed` after each decision/poll: the prefixes returned finished a
    one-shot window, and the caller sets ``<prefix>_failure_type`` to ``none`` (bumping
    ``control_revision``, SSE update).  :meth:`next_deadline` / :meth:`poll` let the
    caller disarm a seconds-mode one-shot on time even when no request arrives.
    """

    def __init__(self, controls: Mapping[str, Any] | None = None, now: float = 0.0) -> None:
        self._rules: dict[str, _Rule] = {}
        self._pending: list[str] = []
        self.configure(controls or CONTROL_DEFAULTS, None, now)

    def configure(self, controls: Mapping[str, Any], changed: Iterable[str] | None, now: float) -> None:
        """Take new control values.  A rule any of whose seven fields is in *changed*
        (``None`` = all) restarts: its phase begins again at the next matching request.
        A new ``seed`` restarts every rule (their random draws start over)."""
        changed_set = None if changed is None else set(changed)
        if changed_set is not None and "seed" in changed_set:
            changed_set = None
        for prefix in HTTP_PREFIXES:
            if changed_set is None or prefix not in self._rules or any(
                    f"{prefix}_{s}" in changed_set for s in RULE_SUFFIXES):
                self._rules[prefix] = _Rule(prefix, controls, now)
                if prefix in self._pending:
                    self._pending.remove(prefix)

    def rule_for(self, kind: str) -> str | None:
        """The prefix whose rule governs *kind* right now (``all`` overrides), or None."""
        if self._rules["all"].active:
            return "all"
        prefix = KIND_PREFIX.get(kind)
        if prefix is not None and self._rules[prefix].active:
            return prefix
        return None

    def decide(self, kind: str, path: str, now: float) -> FaultDecision | None:
        """The fault for one request of *kind* at *path* (decoded or not), or None.

        Out-of-scope requests are never faulted and do not advance the rule's cycle.
        """
        self.poll(now)
        prefix = self.rule_for(kind)
        if prefix is None:
            return None
        rule = self._rules[prefix]
        if not scope_matches(rule.urls, path, kind):
            return None
        fault = rule.hit(now)
        if rule.disarmed:
            self._note_disarm(prefix)
        if not fault:
            return None
        rule.faults += 1
        return FaultDecision(
            fault_type=rule.fault_type, category=rule.category, status=rule.status, action=rule.action,
            prefix=prefix, stage=rule.stage,
            retry_after=rule.retry_after(now) if rule.fault_type == "rate_limiting" else None,
        )

    def poll(self, now: float) -> None:
        """Disarm seconds-mode one-shots whose window ended by *now*."""
        for prefix, rule in self._rules.items():
            deadline = rule.one_shot_deadline()
            if deadline is not None and now >= deadline:
                rule.disarmed = True
                self._note_disarm(prefix)

    def next_deadline(self) -> float | None:
        """The earliest time a pending one-shot disarms by the clock (None = none pending)."""
        times = [d for d in (r.one_shot_deadline() for r in self._rules.values()) if d is not None]
        return min(times) if times else None

    def take_disarmed(self) -> list[str]:
        """Prefixes whose one-shot finished since the last call (each reported once)."""
        out, self._pending = self._pending, []
        return out

    def _note_disarm(self, prefix: str) -> None:
        if prefix not in self._pending:
            self._pending.append(prefix)

    def state(self) -> dict[str, dict[str, Any]]:
        """Per-prefix phase state (for /debug)."""
        return {p: r.state() for p, r in self._rules.items()}
