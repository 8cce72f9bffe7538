"""Scenarios: declarative fault timelines run against a session, with a verdict (#16).

* :mod:`streamlab.scenario.model` — the format: parse, validate (every error with its
  JSON-pointer path), the published JSON Schema (pure);
* :mod:`streamlab.scenario.timeline` — when each step takes effect and ends (pure);
* :mod:`streamlab.scenario.verdict` — expectations over player metrics and the network
  log (pure); :mod:`streamlab.scenario.junit` — the verdict as JUnit XML (pure);
* :mod:`streamlab.scenario.run` — one run on an injected ``IReactorTime`` against a
  control target (the core of a run: apply, restore, log);
* :mod:`streamlab.scenario.service` — the adapter onto the session registry (one
  ``IService``); :mod:`streamlab.api.scenarios` — the HTTP API;
* :mod:`streamlab.scenario.cli` — ``streamlab scenario run`` for CI (stdlib only).

See docs/scenarios.md.
"""
