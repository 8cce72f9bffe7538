"""When each step of a scenario takes effect and ends (pure; seconds from the run start).

* ``at`` — the step's first application is at that second;
* ``after`` (+ ``delay``) — at the *end* of the referenced step plus the delay, where a
  step's end is its last application plus its ``for`` (just its last application when it
  has no ``for``);
* ``repeat {every, times}`` — applications at ``start + k * every`` for ``k < times``;
* ``for`` — each application is restored ``for`` seconds after it.

Events at the same second run restores first, then applications, each in step order, so
a step that restores and a step that applies at one instant leave the new value.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamlab.scenario.model import Scenario, Step

APPLY = "apply"
RESTORE = "restore"


@dataclass(frozen=True, order=True)
class Event:
    """One thing the run does at ``t`` seconds: apply or restore occurrence ``occurrence``
    of step ``step``.  Sorted by time, restores before applications, then step order."""

    t: float
    rank: int  # 0 restore, 1 apply
    step: int
    occurrence: int
    action: str


def step_starts(scenario: Scenario) -> dict[int, float]:
    """``{step index: time of its first application}``."""
    starts: dict[int, float] = {}
    for step in scenario.steps:
        if step.at is not None:
            starts[step.index] = step.at
        else:
            assert step.after is not None
            starts[step.index] = step_end(scenario, step.after, starts) + step.delay
    return starts


def _step(scenario: Scenario, index: int) -> Step:
    for step in scenario.steps:
        if step.index == index:
            return step
    raise KeyError(index)


def step_end(scenario: Scenario, index: int, starts: dict[int, float] | None = None) -> float:
    """When step *index* ends: its last application plus its ``for``."""
    if starts is None:
        starts = step_starts(scenario)
    step = _step(scenario, index)
    times = step.repeat.times if step.repeat else 1
    every = step.repeat.every if step.repeat else 0.0
    return starts[step.index] + (times - 1) * every + (step.for_s or 0.0)


def applications(scenario: Scenario, index: int, starts: dict[int, float] | None = None) -> list[float]:
    """The times of every application of step *index*."""
    if starts is None:
        starts = step_starts(scenario)
    step = _step(scenario, index)
    times = step.repeat.times if step.repeat else 1
    every = step.repeat.every if step.repeat else 0.0
    return [starts[index] + k * every for k in range(times)]


def events(scenario: Scenario) -> list[Event]:
    """Every application and restore of the scenario, in the order the run does them."""
    starts = step_starts(scenario)
    out: list[Event] = []
    for step in scenario.steps:
        for k, t in enumerate(applications(scenario, step.index, starts)):
            out.append(Event(t, 1, step.index, k, APPLY))
            if step.for_s is not None:
                out.append(Event(t + step.for_s, 0, step.index, k, RESTORE))
    out.sort()
    return out


def timeline_end(scenario: Scenario) -> float:
    """When the last step ends (0 for none)."""
    starts = step_starts(scenario)
    return max((step_end(scenario, s.index, starts) for s in scenario.steps), default=0.0)


def run_duration(scenario: Scenario) -> float:
    """The run's length: ``duration`` when given, else the end of the last step or of the
    last ``*_within`` expectation window, whichever is later."""
    if scenario.duration is not None:
        return scenario.duration
    end = timeline_end(scenario)
    starts = step_starts(scenario)
    for exp in scenario.expect:
        if exp.kind in ("switch_down_within", "recover_top_within") and exp.after_step is not None:
            step = _step(scenario, exp.after_step)
            t0 = starts[step.index] if exp.spec.get("from", "applied") == "applied" \
                else starts[step.index] + (step.for_s or 0.0)
            end = max(end, t0 + float(exp.spec["seconds"]))
    return end
