"""What the shaping service keeps for one session port (plain state, no behaviour)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from streamlab.shaping.goodput import CapWatch
from streamlab.shaping.meter import RateMeter
from streamlab.shaping.model import Effective, FaultWindow, PatternPosition, PortConfig
from streamlab.shaping.pattern import FaultRunner, PatternRunner
from streamlab.shaping.route import Placement, Route


@dataclass
class PortRuntime:
    """Everything the service keeps for one session port."""

    port: int
    session_id: str | None = None
    config: PortConfig | None = None
    variants: list[Any] = field(default_factory=list)
    pattern: PatternRunner | None = None
    position: PatternPosition | None = None
    faults: FaultRunner | None = None
    window: FaultWindow = field(default_factory=lambda: FaultWindow(False, None))
    fault_started_at: float | None = None
    meter: RateMeter = field(default_factory=RateMeter)
    effective: Effective = field(default_factory=Effective)
    error: str = ""
    peer: str = ""
    route: Route = field(default_factory=Route)
    placement: Placement = field(default_factory=Placement)
    refused: dict[str, str] = field(default_factory=dict)
    watch: CapWatch = field(default_factory=CapWatch)
    acked: dict[Any, int] = field(default_factory=dict)
    acked_total: int = 0
    #: the port's written-bytes counter when every byte written had been acknowledged
    acked_settled: int | None = None
    last_apply: defer.Deferred[Any] | None = None
