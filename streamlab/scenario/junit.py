"""A run's verdict as JUnit XML (pure), the form CI systems show as tests.

``<testsuites>`` holding one ``<testsuite name=<scenario>>`` with one ``<testcase>`` per
expectation; a failed expectation has ``<failure message="observed X, expected ...">``;
a run that ended in ``error`` adds a ``run`` testcase with ``<error>``; a stopped run is
marked in the suite's properties (its expectations were judged on what was seen until the
stop).  The layout is the common Jenkins/Ant JUnit schema.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def report(run: Mapping[str, Any]) -> bytes:
    """The JUnit XML document of *run* (the run JSON of the API)."""
    verdict = run.get("verdict") or {"expectations": []}
    cases = list(verdict.get("expectations", []))
    failures = sum(1 for c in cases if not c["passed"])
    errors = 1 if run.get("state") == "error" else 0
    name = str(run.get("name") or "scenario")
    classname = "streamlab.scenario." + (_SAFE.sub("_", name).strip("_") or "scenario")
    suites = ET.Element("testsuites", name="streamlab scenarios", tests=str(len(cases) + errors),
                        failures=str(failures), errors=str(errors), time=f"{run.get('elapsed_s') or 0:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=name, tests=str(len(cases) + errors),
                          failures=str(failures), errors=str(errors), skipped="0",
                          time=f"{run.get('elapsed_s') or 0:.3f}",
                          timestamp=str(run.get("started_at") or "")[:19],  # xs:dateTime, UTC
                          hostname="streamlab", id=str(run.get("id", "")))
    props = ET.SubElement(suite, "properties")
    for key in ("id", "session_id", "seed", "state", "started_at", "ended_at", "duration_s"):
        ET.SubElement(props, "property", name=key, value=_text(run.get(key)))
    for case in cases:
        tc = ET.SubElement(suite, "testcase", name=str(case["name"]), classname=classname, time="0")
        if not case["passed"]:
            message = f"observed {_text(case.get('observed'))}, expected {case.get('expr', '')}"
            failure = ET.SubElement(tc, "failure", message=message, type="expectation")
            failure.text = f"{message}\n{case.get('detail', '')}"
        else:
            out = ET.SubElement(tc, "system-out")
            out.text = (f"observed {_text(case.get('observed'))} ({case.get('expr', '')}): "
                        f"{case.get('detail', '')}")
    if errors:
        tc = ET.SubElement(suite, "testcase", name="run", classname=classname,
                           time=f"{run.get('elapsed_s') or 0:.3f}")
        err = ET.SubElement(tc, "error", message=str(run.get("error") or "the run ended in error"),
                            type="run")
        err.text = str(run.get("error") or "")
    log_out = ET.SubElement(suite, "system-out")
    log_out.text = "\n".join(f"{e['t_s']:8.3f} s  step {e['step'] if e['step'] is not None else '-'}  "
                             f"{e['event']}  {e.get('fields') or ''}" for e in run.get("log", []))
    ET.indent(suites)
    body: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return body
