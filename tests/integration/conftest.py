"""Fixtures for integration tests: a real daemon per test module, and a clean-log check
on every daemon a module started."""

from __future__ import annotations

import pytest

from streamlab.testing.daemon import Daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    """A started daemon with default test config (module scope: one per test module)."""
    d = Daemon(str(tmp_path_factory.mktemp("daemon")))
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module", autouse=True)
def daemon_log_is_clean(request: pytest.FixtureRequest):
    """Fail the module when a daemon it started logged ``Unhandled error`` or a
    ``Traceback`` (the offending lines are printed).  Runs after the module's own
    fixtures have stopped their daemons (autouse: set up first, torn down last)."""
    first = len(Daemon.started)
    yield
    problems = []
    for d in Daemon.started[first:]:
        d.stop()  # a test that forgot to: the log is complete only after the exit
        for block in d.log_problems():
            problems.append(f"--- {d.log_path}\n{block}")
    if problems:
        pytest.fail(f"{request.module.__name__}: the daemon logged {len(problems)} problem(s):\n"
                    + "\n".join(problems), pytrace=False)
