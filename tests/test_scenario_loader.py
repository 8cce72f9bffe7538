"""YAML scenarios: the same document as JSON, and nothing JSON cannot say."""

from __future__ import annotations

import pytest

from streamlab.errors import Invalid
from streamlab.scenario import loader, model

YAML = """
name: rate drop
seed: 7
steps:
  - id: rate-drop
    at: 2
    for: 10
    set:
      nftables_bandwidth_mbps: 1.5
      segment_failure_type: 404
expect:
  - {metric: stalls, op: "<=", value: 1}
"""


def test_a_yaml_scenario_is_its_json_twin():
    doc = loader.load_yaml(YAML.encode())
    assert doc == {"name": "rate drop", "seed": 7,
                   "steps": [{"id": "rate-drop", "at": 2, "for": 10,
                              "set": {"nftables_bandwidth_mbps": 1.5, "segment_failure_type": 404}}],
                   "expect": [{"metric": "stalls", "op": "<=", "value": 1}]}
    assert model.parse(doc).steps[0].for_s == 10
    assert loader.is_yaml(b"application/yaml; charset=utf-8") and loader.is_yaml("text/yaml")
    assert not loader.is_yaml(b"application/json") and not loader.is_yaml(None)


@pytest.mark.parametrize("text, why", [
    ("a: &x [1, 2]\nb: *x\n", "anchors and aliases"),
    ("a: [" * 5 + "1" + "]" * 5 + "\nb: 2001-12-14\n", "not representable as JSON"),
    ("a: .nan\n", "not representable as JSON"),
    ("a: !!python/object:os.system {}\n", "could not determine a constructor"),
    ("a: [1, 2\n", "expected ',' or ']'"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_what_json_cannot_say_is_refused(text, why):
    with pytest.raises(Invalid) as exc:
        loader.load_yaml(text)
    assert exc.value.error == "invalid yaml" and why in exc.value.detail, exc.value.detail
