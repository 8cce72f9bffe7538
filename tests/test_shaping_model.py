"""Pure shaping model: effective shape, kernel desired state, reconciler plans, templates,
capabilities routing."""

import pytest

from streamlab.errors import Conflict, Invalid
from streamlab.shaping import model
from streamlab.shaping.model import (
    Capabilities,
    FaultSpec,
    FaultWindow,
    PortConfig,
    Step,
    config_from_fields,
    effective,
    host_capabilities,
    pattern_position,
)
from streamlab.shaping.reconcile import KernelPort, Op, after, kernel_desired, plan
from streamlab.shaping.route import NftProof, Route, TcProof, place

VETH = Route("10.9.0.2", "device", "veth0")
NFT_ALL = NftProof(drop=True, reject=True, counters=True)
KERNEL_ALL = place("kernel", VETH, TcProof("veth0", htb=True, netem=True), NFT_ALL)
AUTO_NO_NETEM = place("auto", VETH, TcProof("veth0", htb=True, netem=False), NFT_ALL)
USERSPACE = place("userspace", VETH, None, None)


def apply_all(ops, applied):
    for op in ops:
        applied = after(op, applied)
    return applied


def test_same_state_twice_is_an_empty_plan():
    want = {30181: KernelPort(rate_bps=8_000_000), 30182: KernelPort(rule_kind="drop")}
    ops = plan(want, {})
    assert [(o.action, o.port) for o in ops] == [("add_class", 30181), ("add_rule", 30182)]
    applied = apply_all(ops, {})
    assert applied == want
    assert plan(want, applied) == []


def test_change_is_minimal():
    applied = {30181: KernelPort(rate_bps=8_000_000, rule_kind="drop")}
    ops = plan({30181: KernelPort(rate_bps=4_000_000, rule_kind="drop")}, applied)
    assert ops == [Op("change_class", 30181, KernelPort(rate_bps=4_000_000, rule_kind="drop"))]
    ops = plan({30181: KernelPort(rate_bps=8_000_000, rule_kind="reject")}, applied)
    assert [o.action for o in ops] == ["del_rule", "add_rule"]


def test_removal_deletes_exactly_what_exists_and_nothing_else():
    applied = {30181: KernelPort(rate_bps=8_000_000, rule_kind="reject"),
               30182: KernelPort(rate_bps=1_000_000)}
    ops = plan({30182: KernelPort(rate_bps=1_000_000)}, applied)
    assert sorted((o.action, o.port) for o in ops) == [("del_class", 30181), ("del_rule", 30181)]
    assert apply_all(ops, applied) == {30182: KernelPort(rate_bps=1_000_000)}
    assert plan({}, {}) == []


def test_packet_window_restart_replaces_the_rule():
    a = KernelPort(rule_kind="drop", rule_packets=5, rule_epoch=10.0)
    b = KernelPort(rule_kind="drop", rule_packets=5, rule_epoch=20.0)
    assert [o.action for o in plan({1: b}, {1: a})] == ["del_rule", "add_rule"]


def test_effective_pattern_zero_is_stalled_not_uncapped():
    cfg = PortConfig(1, rate_mbps=5, pattern_enabled=True, steps=(Step(0, 5), Step(3, 5)))
    pos = pattern_position(cfg.steps, 0.0, 1.0)
    eff = effective(cfg, pos, FaultWindow(False, None))
    assert eff.rate_mbps == 0.0
    assert effective(PortConfig(1, rate_mbps=0), None, FaultWindow(False, None)).rate_mbps is None
    assert effective(PortConfig(1, rate_mbps=5), None, FaultWindow(False, None)).rate_mbps == 5


def test_kernel_desired_routes_features():
    eff = model.Effective(rate_mbps=8.0, delay_ms=50, loss_pct=1, fault="reject")
    kp = kernel_desired(eff, AUTO_NO_NETEM)
    # delay/loss stay userspace; the class goes on the interface the player's route uses
    assert kp == KernelPort(rate_bps=8_000_000, rule_kind="reject", interface="veth0")
    kp = kernel_desired(eff, KERNEL_ALL)
    assert (kp.delay_ms, kp.loss_pct) == (50, 1)
    assert kernel_desired(eff, USERSPACE) == KernelPort()
    stalled = kernel_desired(model.Effective(rate_mbps=0.0), KERNEL_ALL)
    assert stalled.rate_bps == model.STALL_RATE_BPS


def test_capabilities_say_only_what_was_proven():
    caps = host_capabilities("auto", {"veth0": TcProof("veth0", htb=True, netem=False,
                                                       reason="kernel lacks netem")}, NFT_ALL).as_dict()
    assert caps["status"] == "enabled" and caps["backend"] == "auto" and caps["per_session"] is True
    assert caps["features"] == {"rate": "kernel", "delay": "userspace", "loss": "userspace",
                                "transport_drop": "kernel", "transport_reject": "kernel",
                                "packet_counters": True}
    assert caps["interfaces"]["veth0"]["rate"] == "kernel" and "netem" in caps["reason"]
    us = host_capabilities("userspace", {}, None).as_dict()
    assert set(us["features"].values()) == {"userspace", False} and us["reason"] == ""
    # a refused scratch class and an nft that refused its rules: nothing is claimed
    broken = host_capabilities("auto", {"eth0": TcProof("eth0", reason="scratch u32 filter refused: (2, "
                                                        "'No such file or directory')")},
                               NftProof(reason="drop rule refused"))
    assert broken.status == "degraded" and not broken.uses_kernel and not broken.packet_counters
    assert "No such file" in broken.reason
    assert isinstance(broken, Capabilities)


def test_a_class_moving_to_another_interface_is_deleted_then_added():
    have = {1: KernelPort(rate_bps=1_000_000, interface="eth0")}
    want = {1: KernelPort(rate_bps=1_000_000, interface="veth0")}
    ops = plan(want, have)
    assert [(o.action, o.state.interface) for o in ops] == [("del_class", "eth0"), ("add_class", "veth0")]
    assert apply_all(ops, have) == want
    assert "on veth0" in ops[1].describe()


def test_config_from_session_fields():
    cfg = config_from_fields(30181, {
        "nftables_bandwidth_mbps": 8, "nftables_delay_ms": 20, "nftables_packet_loss": 1.5,
        "nftables_pattern_enabled": True,
        "nftables_pattern_steps": [{"rate_mbps": 2, "duration_seconds": 6, "enabled": True}],
        "transport_failure_type": "drop", "transport_consecutive_failures": 2,
        "transport_failure_frequency": 10, "transport_failure_mode": "failures_per_packets"})
    assert cfg.rate_mbps == 8 and cfg.delay_ms == 20 and cfg.loss_pct == 1.5
    assert cfg.pattern_active and cfg.steps == (Step(2, 6, True),)
    assert cfg.fault == FaultSpec("drop", 2, 10, "packets")


@pytest.mark.parametrize("value", [-1, 10001, "x", None, True, float("nan")])
def test_rate_range_rejected(value):
    with pytest.raises(Invalid) as exc:
        model.check_rate(value)
    assert "rate_mbps" in exc.value.extra["fields"]


LADDER = [{"url": "a", "bandwidth": 5_000_000, "average_bandwidth": 4_000_000},
          {"url": "b", "bandwidth": 1_000_000},
          {"url": "c", "bandwidth": 2_500_000, "average_bandwidth": 2_000_000}]


def test_templates_from_ladder():
    def rates(mode, margin=0):
        return [s.rate_mbps for s in model.template_steps(mode, LADDER, margin, 6)]

    assert rates("ramp_up") == [1.0, 2.0, 4.0]
    assert rates("ramp_down") == [4.0, 2.0, 1.0]
    assert rates("square_wave") == [1.0, 4.0]
    assert rates("pyramid") == [1.0, 2.0, 4.0, 2.0, 1.0]
    assert rates("ramp_up", 25) == [1.25, 2.5, 5.0]
    assert model.template_steps("sliders", LADDER, 0, 6) == ()
    assert all(s.duration_seconds == 6 for s in model.template_steps("pyramid", LADDER, 0, 6))
    fields = model.template_fields("ramp_up", LADDER, 10, 12)
    assert fields["nftables_pattern_enabled"] is True and len(fields["nftables_pattern_steps"]) == 3


def test_template_needs_a_ladder_and_valid_choices():
    with pytest.raises(Conflict) as exc:
        model.template_steps("ramp_up", [], 0, 6)
    assert "manifest_variants" in exc.value.detail
    with pytest.raises(Invalid):
        model.template_steps("ramp_up", LADDER, 7, 6)
    with pytest.raises(Invalid):
        model.template_steps("ramp_up", LADDER, 0, 7)
    with pytest.raises(Invalid):
        model.template_steps("zigzag", LADDER, 0, 6)
