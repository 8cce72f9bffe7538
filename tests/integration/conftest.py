"""Fixtures for integration tests: a real daemon per test module."""

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
