"""The CLI runner without a server: dispatch from the ``streamlab`` console script,
usage and connection errors (exit 2), the verdict table and exit codes."""

from __future__ import annotations

import io
import json

from streamlab.scenario import cli
from streamlab.tap import check_config_main
from streamlab.testing.daemon import free_port

RUN = {"name": "t", "state": "failed", "verdict": {"passed": False, "expectations": [
    {"name": "stalls <= 1", "observed": 3, "passed": False, "detail": "last of 4 samples"},
    {"name": "requests == 0", "observed": 0, "passed": True, "detail": "0 of 9 requests"}]}}


def test_the_console_script_dispatches_scenario(capsys):
    assert check_config_main(["scenario", "--help"]) == 0
    assert "{run,validate}" in capsys.readouterr().out
    assert check_config_main(["scenario", "run"]) == 2          # missing FILE/--server/--player-id


def test_unreachable_server_and_bad_files_exit_2(tmp_path):
    good = tmp_path / "s.json"
    good.write_text(json.dumps({"steps": [{"at": 0, "set": {"seed": 1}}]}))
    bad = tmp_path / "s.txt"
    bad.write_text("{nope")
    err = io.StringIO()
    server = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["run", str(good), "--server", server, "--player-id", "p"], io.StringIO(), err) == 2
    assert "cannot reach" in err.getvalue()
    err = io.StringIO()
    assert cli.main(["run", str(bad), "--server", server, "--player-id", "p"], io.StringIO(), err) == 2
    assert "is not JSON" in err.getvalue()
    assert cli.main(["validate", str(tmp_path / "missing.json"), "--server", server], io.StringIO(), err) == 2


def test_verdict_table_and_exit_codes():
    table = cli.verdict_table(RUN)
    lines = table.splitlines()
    assert lines[0].split() == ["result", "expectation", "observed", "detail"]
    assert lines[1].split(None, 1)[0] == "FAIL" and "stalls <= 1" in lines[1] and " 3 " in lines[1]
    assert lines[2].split(None, 1)[0] == "PASS" and "requests == 0" in lines[2]
    assert lines[-1] == "scenario 't': FAILED (1 of 2 expectations passed)"
    assert [cli.exit_code({"state": s}) for s in ("passed", "failed", "stopped", "error", "running")] == \
        [0, 1, 1, 2, 2]
    assert cli.log_line({"t_s": 1.5, "step": 0, "event": "restored", "fields": {"nftables_delay_ms": 0},
                         "kept": {"seed": 4}}) == \
        "     1.5 s  step   0  restored  nftables_delay_ms=0  (left as the tester set: seed=4)"
