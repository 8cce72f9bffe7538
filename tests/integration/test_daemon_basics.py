"""The real daemon starts, answers health/version, maps errors to JSON and stops on SIGTERM."""

import os
import subprocess
import sys


def test_health_and_version(daemon):
    r = daemon.get("/api/health")
    assert r.status == 200
    assert r.json()["status"] == "ok"
    assert r.headers["access-control-allow-origin"] == "*"
    assert "no-store" in r.headers["cache-control"]
    v = daemon.get("/api/version").json()
    assert set(v) >= {"version", "commit", "python", "twisted"}


def test_unknown_paths_are_json_404(daemon):
    for path in ("/api/nope", "/nope", "/api/health/../../etc/passwd"):
        r = daemon.get(path)
        assert r.status == 404, path
        assert "error" in r.json()


def test_twistd_check_config_rejects_bad_key(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[jobs]\nencode_workers = many\n")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    out = subprocess.run([twistd, "--nodaemon", "--pidfile=", "streamlab", "--config", str(conf),
                          "--check-config"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "[jobs] encode_workers" in out.stderr + out.stdout
