"""``/api/nftables/*``: shaping and transport-fault endpoints (spec/shaping.md section 5).

A thin adapter: each handler turns its body (legacy names accepted) into session fields
and hands them to :meth:`ShapingService.change`, which validates them like ``PATCH``,
refuses (400, nothing stored) what no backend can do, stores them through the registry
and answers once the backends applied them, with the carriers that took the change.
"""

from __future__ import annotations

from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from streamlab.api import errors
from streamlab.api.jsonio import read_object, respond
from streamlab.errors import Invalid
from streamlab.formats import json_number as _num
from streamlab.shaping import model
from streamlab.shaping.service import ShapingService


def _pick(body: dict[str, Any], *names: str) -> tuple[str | None, Any]:
    for name in names:
        if name in body and body[name] is not None:
            return name, body[name]
    return None, None


class ShapingApi:
    """Klein app mounted at ``nftables``."""

    app = Klein()

    def __init__(self, service: ShapingService) -> None:
        self.service = service

    # ------------------------------------------------------------------ reads

    @app.route("/nftables/capabilities", methods=["GET"])
    def capabilities(self, request: IRequest) -> bytes:
        """Which backend does each feature on this host."""
        return respond(request, self.service.caps.as_dict())

    @app.route("/nftables/status", methods=["GET"])
    async def status(self, request: IRequest) -> bytes:
        """Backend and per-port summary of every live session (kernel counters read now)."""
        return respond(request, await self.service.status_answer())

    @app.route("/nftables/port/<int:port>", methods=["GET"])
    async def port(self, request: IRequest, port: int) -> bytes:
        """One port's desired and applied state (internal or external port); kernel
        counters are read when asked, not from the last poll."""
        return respond(request, await self.service.port_answer(port))

    # ------------------------------------------------------------------ writes

    @app.route("/nftables/bandwidth/<int:port>", methods=["POST"])
    async def bandwidth(self, request: IRequest, port: int) -> bytes:
        """``{"rate_mbps": N}`` (legacy ``rate``): a plain cap; stops a running pattern."""
        body = read_object(request)
        name, value = _pick(body, "rate_mbps", "rate", "bandwidth_mbps")
        if name is None:
            raise Invalid("invalid", fields={"rate_mbps": "required"})
        rate = model.check_rate(value, name)
        done = await self.service.change(port, {"nftables_bandwidth_mbps": _num(rate),
                                                "nftables_pattern_enabled": False})
        return respond(request, {"success": True, "port": done.port, "rate_mbps": _num(rate),
                                 **done.carriers})

    @app.route("/nftables/loss/<int:port>", methods=["POST"])
    async def loss(self, request: IRequest, port: int) -> bytes:
        """``{"percent": N}`` (legacy ``loss_pct``)."""
        body = read_object(request)
        name, value = _pick(body, "percent", "loss_pct", "loss")
        if name is None:
            raise Invalid("invalid", fields={"percent": "required"})
        loss = model.check_loss(value, name)
        done = await self.service.change(port, {"nftables_packet_loss": _num(loss)})
        return respond(request, {"success": True, "port": done.port, "loss_pct": _num(loss), **done.carriers})

    @app.route("/nftables/shape/<int:port>", methods=["POST"])
    async def shape(self, request: IRequest, port: int) -> bytes:
        """``{"rate_mbps","delay_ms","loss_pct"}`` (any of them); answers the applied values."""
        body = read_object(request)
        set_: dict[str, Any] = {}
        bad: dict[str, str] = {}
        table = ((("rate_mbps", "rate"), "nftables_bandwidth_mbps", model.check_rate),
                 (("delay_ms", "delay"), "nftables_delay_ms", model.check_delay),
                 (("loss_pct", "percent", "loss"), "nftables_packet_loss", model.check_loss))
        for names, key, check in table:
            name, value = _pick(body, *names)
            if name is None:
                continue
            try:
                set_[key] = _num(check(value, name))
            except Invalid as exc:
                bad.update(exc.extra.get("fields", {}))
        if bad:
            raise Invalid("invalid", fields=bad)
        if not set_:
            raise Invalid("no fields provided", detail="send rate_mbps, delay_ms and/or loss_pct")
        if "nftables_bandwidth_mbps" in set_:
            set_["nftables_pattern_enabled"] = False
        done = await self.service.change(port, set_)
        return respond(request, {"success": True, "port": done.port,
                                 "rate_mbps": done.session.get("nftables_bandwidth_mbps"),
                                 "delay_ms": done.session.get("nftables_delay_ms"),
                                 "loss_pct": done.session.get("nftables_packet_loss"), **done.carriers})

    @app.route("/nftables/pattern/<int:port>", methods=["POST"])
    async def pattern(self, request: IRequest, port: int) -> bytes:
        """Step pattern from explicit ``steps`` (``[]`` stops it) or from a server-side
        ``template_mode``; never both (see :func:`pattern_request`)."""
        body = read_object(request)
        self.service.session_on(port)  # 404 before the body's 400s
        mode, steps = pattern_request(body)
        set_: dict[str, Any] = {}
        if mode is not None:
            options: dict[str, Any] = {k: body[k] for k in ("margin_pct", "step_seconds") if k in body}
            set_.update(self.service.pattern_template(port, mode, options))
        else:
            assert steps is not None
            set_["nftables_pattern_steps"] = [s.as_dict() for s in steps]
            set_["nftables_pattern_enabled"] = any(s.enabled and s.duration_seconds > 0 for s in steps)
            if body.get("template_mode") == "sliders":
                set_["nftables_pattern_template_mode"] = "sliders"
        if body.get("delay_ms") is not None:
            set_["nftables_delay_ms"] = _num(model.check_delay(body["delay_ms"], "delay_ms"))
        if body.get("loss_pct") is not None:
            set_["nftables_packet_loss"] = _num(model.check_loss(body["loss_pct"], "loss_pct"))
        done = await self.service.change(port, set_)
        return respond(request, {"success": True, "port": done.port,
                                 "pattern_enabled": bool(done.session.get("nftables_pattern_enabled")),
                                 "steps": done.session.get("nftables_pattern_steps", []), **done.carriers})

    errors.install(app)


def pattern_request(body: dict[str, Any]) -> tuple[str | None, tuple[model.Step, ...] | None]:
    """The one rule of ``POST /api/nftables/pattern/{port}``: a body names the pattern either
    by ``steps`` (a list; ``[]`` stops the pattern; ``template_mode`` absent or
    ``"sliders"``) or by a template (``template_mode`` other than ``sliders``, with
    optional ``margin_pct``/``step_seconds``, and no ``steps`` key at all).  Anything else
    (both, neither, ``"steps": null``, template options without a template) is a 400
    that changes nothing.  Returns ``(template_mode, None)`` or
    ``(None, steps)``."""
    mode = body.get("template_mode")
    if mode is not None and not isinstance(mode, str):
        raise Invalid("invalid", fields={"template_mode": "must be a string"})
    template = mode is not None and mode != "sliders"
    if template and "steps" in body:
        raise Invalid("conflicting pattern input",
                      detail="send either steps or a template_mode, not both: a template builds "
                             f"its own steps (template_mode {mode!r} with a steps field)",
                      fields={"steps": f"not allowed with template_mode {mode!r}"})
    if template:
        if mode not in model.TEMPLATE_MODES:
            raise Invalid("invalid",
                          fields={"template_mode": f"must be one of {', '.join(model.TEMPLATE_MODES)}"})
        return mode, None
    if "margin_pct" in body or "step_seconds" in body:
        given = [k for k in ("margin_pct", "step_seconds") if k in body]
        raise Invalid("invalid", detail="margin_pct and step_seconds apply to a template_mode only",
                      fields={k: "needs a template_mode" for k in given})
    if "steps" not in body:
        raise Invalid("invalid", detail="send steps (a list; [] stops the pattern) or a template_mode",
                      fields={"steps": "required (or a template_mode)"})
    if not isinstance(body["steps"], list):
        raise Invalid("invalid", detail="steps must be a list of steps; [] stops the pattern",
                      fields={"steps": "must be a list ([] stops the pattern)"})
    return None, model.parse_steps(body["steps"], "steps")

