"""The /debug page renders the daemon's internals from the wired service (no sockets)."""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock

from streamlab import config as configmod
from streamlab.tap import build
from streamlab.web.debug import DebugPage


def test_debug_page_lists_sessions_ports_components_and_config(tmp_path):
    cfg = configmod.load(None, {"media-dir": str(tmp_path / "m"), "state-dir": str(tmp_path / "s"),
                                "session-ports": "44000-44009"})
    configmod.check_paths(cfg)
    svc = build(cfg, MemoryReactorClock())
    registry = svc.sessions.registry
    registry.get_or_create("debug-player<script>")
    html = DebugPage(svc).page()
    assert "44000-44009" in html and "debug-player&lt;script&gt;" in html
    assert "<script>" not in html  # everything is escaped
    for section in ("Sessions", "Session ports", "origin", "jobs", "shaping", "Config (secrets redacted)"):
        assert section in html
    assert "session_idle_timeout" in html
    registry.stop()
