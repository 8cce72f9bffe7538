"""Expectations evaluated over what a run observed (pure).

Inputs (:class:`Observations`): the player's metric posts sampled during the run, the
session's network-log entries of the run, when each step took effect and was restored,
and the ladder (``manifest_variants``).  :func:`evaluate` returns the verdict JSON:
``{"passed", "expectations": [{"name","kind","expr","observed","passed","detail"}]}``.

Renditions: a video segment's rung comes from its path (``classify.variant_of``); its
rank is the rung's ``BANDWIDTH`` in the ladder, else the number in its name (``720p`` ->
720).  Where the network log holds no video segment at all, the player's reported
``player_metrics_bitrate_mbps`` samples are used instead.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamlab.proxy import classify
from streamlab.proxy.netlog import parse_time_ms
from streamlab.scenario.model import Expectation

OPS: Mapping[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne,
}
STALL_STATES = frozenset({"buffering", "stalled", "waiting", "rebuffering"})
OUTSIDE_STATUSES = frozenset({404, 410, 416})
"""Unfaulted answers of the origin meaning "no such segment now": ahead of the live edge
(404) or gone."""


@dataclass
class Observations:
    """What a run saw (times are unix seconds)."""

    started_at: float
    ended_at: float
    #: (time, metrics) for every new metrics post seen during the run
    samples: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    #: the player's metrics when the run started (for ``agg: delta``)
    baseline: dict[str, Any] = field(default_factory=dict)
    #: the session's network-log entries during the run (netlog JSON)
    entries: list[dict[str, Any]] = field(default_factory=list)
    #: step index -> [(applied at, restored at or None), ...]
    step_times: dict[int, list[tuple[float, float | None]]] = field(default_factory=dict)
    #: the session's ladder: [{"url", "bandwidth", ...}]
    variants: list[dict[str, Any]] = field(default_factory=list)
    #: (path, unix time) -> "behind" | "ahead" | "in" | None (unknown): the origin's window
    window_check: Callable[[str, float], str | None] | None = None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _metric_key(metric: str) -> str:
    return metric if metric.startswith("player_metrics_") else "player_metrics_" + metric


def _stall_seconds(obs: Observations) -> float | None:
    """Seconds the player reported a stalled state, from its ``player_metrics_state``
    samples after it first reported ``playing`` (start-up buffering is not a stall)."""
    states = [(t, m.get("player_metrics_state")) for t, m in obs.samples if "player_metrics_state" in m]
    if not states:
        return None
    total = 0.0
    playing = obs.baseline.get("player_metrics_state") == "playing"
    for (t, state), (t_next, _s) in zip(states, [*states[1:], (obs.ended_at, None)], strict=True):
        if state == "playing":
            playing = True
        elif playing and state in STALL_STATES:
            total += max(0.0, min(t_next, obs.ended_at) - t)
    return round(total, 3)


def observe_metric(spec: Mapping[str, Any], obs: Observations) -> tuple[float | None, str]:
    """``(observed value, detail)`` of a metric expectation."""
    key = _metric_key(str(spec["metric"]))
    agg = spec.get("agg", "last")
    # the player's last report before the run still stands: it counts as the first sample
    reports = ([obs.baseline] if key in obs.baseline else []) + [m for _t, m in obs.samples if key in m]
    values = [v for v in (_num(m.get(key)) for m in reports) if v is not None]
    if not values and key == "player_metrics_stall_seconds_total":
        derived = _stall_seconds(obs)
        if derived is not None:
            return derived, "derived from player_metrics_state samples"
    if not values:
        return None, f"the player reported no {key} ({len(obs.samples)} metric posts during the run)"
    if agg == "max":
        value = max(values)
    elif agg == "min":
        value = min(values)
    elif agg == "mean":
        value = sum(values) / len(values)
    elif agg == "delta":
        base = _num(obs.baseline.get(key))
        value = values[-1] - (base if base is not None else values[0])
        return round(value, 6), f"last minus first of {len(values)} values of {key}"
    else:
        value = values[-1]
    return round(value, 6), f"{agg} of {len(values)} samples of {key}"


def _time(entry: Mapping[str, Any]) -> float:
    return parse_time_ms(entry["timestamp"]) / 1000.0


def _rank_of(rung: str, variants: Sequence[Mapping[str, Any]]) -> float | None:
    for v in variants:
        url = str(v.get("url", ""))
        if url.endswith(f"_{rung}.m3u8") or f"/{rung}/" in url or url == rung or v.get("id") == rung:
            bw = _num(v.get("bandwidth"))
            if bw:
                return bw
    m = re.search(r"(\d+)", rung)
    return float(m.group(1)) if m else None


def _levels(obs: Observations) -> tuple[list[tuple[float, float, str]], str]:
    """``[(time, rank, label)]`` of the video renditions the player fetched, and the source."""
    out: list[tuple[float, float, str]] = []
    for e in obs.entries:
        if e.get("request_kind") != "segment":
            continue
        path = str(e.get("path") or e.get("url") or "")
        if classify.is_audio(path, "segment"):
            continue
        rung = classify.variant_of(path)
        rank = _rank_of(rung, obs.variants) if rung else None
        if rank is not None and rung:
            out.append((_time(e), rank, rung))
    if out:
        return sorted(out), "network log"
    for t, m in obs.samples:
        rate = _num(m.get("player_metrics_bitrate_mbps"))
        if rate:
            out.append((t, rate, f"{rate:g} Mbps"))
    return out, "player_metrics_bitrate_mbps"


def _t0(exp: Expectation, obs: Observations) -> tuple[float | None, str]:
    times = obs.step_times.get(exp.after_step if exp.after_step is not None else -1) or []
    if not times:
        return None, "the step never took effect"
    applied, restored = times[0]
    if exp.spec.get("from", "applied") == "restored":
        if restored is None:
            return None, "the step was never restored"
        return restored, ""
    return applied, ""


def observe_switch(exp: Expectation, obs: Observations) -> tuple[float | None, bool, str]:
    """``switch_down_within`` / ``recover_top_within``: seconds from the step to the
    first segment of a lower rung than before it / of the top rung."""
    t0, why = _t0(exp, obs)
    if t0 is None:
        return None, False, why
    levels, source = _levels(obs)
    if not levels:
        return None, False, "no video segment in the network log and no player bitrate reported"
    seconds = float(exp.spec["seconds"])
    later = [lv for lv in levels if lv[0] > t0]
    if exp.kind == "switch_down_within":
        before = [lv for lv in levels if lv[0] <= t0]
        if not before:
            return None, False, f"no rendition was fetched before the step ({source})"
        base_rank, base_label = before[-1][1], before[-1][2]
        hit = next((lv for lv in later if lv[1] < base_rank), None)
        if hit is None:
            return None, False, f"stayed at or above {base_label} after the step ({source})"
        observed = round(hit[0] - t0, 3)
        return observed, observed <= seconds, f"{base_label} -> {hit[2]} after {observed:g} s ({source})"
    ladder = [b for b in (_num(v.get("bandwidth")) for v in obs.variants) if b] \
        if source == "network log" else []
    top = max(ladder) if ladder else max(lv[1] for lv in levels)
    hit = next((lv for lv in later if lv[1] >= top), None)
    if hit is None:
        return None, False, f"never back at the top rung after the step ({source})"
    observed = round(hit[0] - t0, 3)
    return observed, observed <= seconds, f"top rung {hit[2]} after {observed:g} s ({source})"


def _matches(entry: Mapping[str, Any], match: Mapping[str, Any]) -> bool:
    for key, want in match.items():
        if key == "path_contains":
            if want not in str(entry.get("path") or entry.get("url") or ""):
                return False
        elif key == "status_class":
            if str(entry.get("status", 0))[:1] != str(want)[:1]:
                return False
        elif key == "faulted":
            if bool(entry.get("faulted")) != want:
                return False
        elif key == "method":
            if str(entry.get("method", "")).upper() != str(want).upper():
                return False
        elif entry.get(key) != want:
            return False
    return True


def observe_requests(exp: Expectation, obs: Observations) -> tuple[int, str]:
    """How many network-log entries of the run (or of a step's active time) match."""
    entries = obs.entries
    where = "during the run"
    if exp.after_step is not None:
        spans = [(a, r if r is not None else obs.ended_at) for a, r in obs.step_times.get(exp.after_step, [])]
        entries = [e for e in entries if any(a <= _time(e) <= r for a, r in spans)]
        where = f"while step {exp.spec.get('during_step')} was active"
    count = sum(1 for e in entries if _matches(e, exp.spec.get("match") or {}))
    return count, f"{count} of {len(entries)} requests {where} matched"


def observe_outside(obs: Observations) -> tuple[int, str]:
    """Segment requests outside the live window: unfaulted 404/410/416 answers (ahead of
    the live edge or gone), and requests the origin's window says are behind or ahead."""
    bad: list[str] = []
    for e in obs.entries:
        if e.get("request_kind") != "segment" or e.get("faulted"):
            continue
        path = str(e.get("path") or e.get("url") or "")
        where = obs.window_check(path, _time(e)) if obs.window_check is not None else None
        if where in ("behind", "ahead") or (where is None and e.get("status") in OUTSIDE_STATUSES):
            bad.append(f"{path} ({where or e.get('status')})")
    detail = f"{len(bad)} segment requests outside the window"
    if bad:
        detail += ": " + ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
    return len(bad), detail


def expression(exp: Expectation) -> str:
    """The expectation in words, e.g. ``stalls <= 1``."""
    s = exp.spec
    if exp.kind == "metric":
        agg = s.get("agg", "last")
        return f"{'' if agg == 'last' else agg + ' '}{s['metric']} {s['op']} {s['value']:g}"
    if exp.kind in ("switch_down_within", "recover_top_within"):
        what = "switch down" if exp.kind == "switch_down_within" else "back at the top rung"
        side = "end" if s.get("from") == "restored" else "start"
        return f"{what} within {s['seconds']:g} s of the {side} of step {s['after_step']}"
    if exp.kind == "no_request_outside_window":
        return "outside-window segment requests == 0"
    return f"requests{s.get('match') or {}} {s['op']} {s['value']:g}"


def evaluate(expect: Sequence[Expectation], obs: Observations) -> dict[str, Any]:
    """The verdict: every expectation with its observed value; passed when all passed."""
    results = []
    for exp in expect:
        observed: Any
        if exp.kind == "metric":
            observed, detail = observe_metric(exp.spec, obs)
            passed = observed is not None and OPS[exp.spec["op"]](observed, exp.spec["value"])
        elif exp.kind in ("switch_down_within", "recover_top_within"):
            observed, passed, detail = observe_switch(exp, obs)
        elif exp.kind == "no_request_outside_window":
            observed, detail = observe_outside(obs)
            passed = observed == 0
        else:
            observed, detail = observe_requests(exp, obs)
            passed = OPS[exp.spec["op"]](observed, exp.spec["value"])
        results.append({"name": exp.name, "kind": exp.kind, "expr": expression(exp), "observed": observed,
                        "passed": bool(passed), "detail": detail})
    return {"passed": all(r["passed"] for r in results), "expectations": results}
