"""`make deb` builds an installable package: control fields, conffile, unit, the venv under
/opt/streamlab/venv with no trace of the build tree, and the unit's ExecStart line runs
the daemon (from a scratch root, with a scratch config) until /api/health answers.

The package is NOT installed on this machine: it is unpacked with ``dpkg-deb -x``.
"""

from __future__ import annotations

import configparser
import io
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import streamlab
from streamlab.testing.daemon import free_port, free_port_block, request

TOP = Path(__file__).resolve().parents[2]
VENV = "/opt/streamlab/venv"
EXEC_START = (f"{VENV}/bin/twistd --nodaemon --pidfile= streamlab "
              "--config /etc/streamlab/streamlab.conf")

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg-buildpackage") is None or shutil.which("dh") is None,
    reason="dpkg-buildpackage/debhelper not installed (make system installs them)")


@pytest.fixture(scope="module")
def deb() -> Path:
    """Build (or reuse the cached build of) the package with `make deb`."""
    out = subprocess.run(["make", "-s", "deb"], cwd=TOP, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path.is_file(), out.stdout
    return path


@pytest.fixture(scope="module")
def root(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package unpacked into a scratch root."""
    r = tmp_path_factory.mktemp("debroot")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(r)], check=True)
    return r


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], check=True, capture_output=True,
                          text=True).stdout.strip()


def _control_file(deb: Path, name: str) -> str:
    tar = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        member = tf.extractfile(f"./{name}")
        assert member is not None, name
        return member.read().decode()


def test_file_name_and_control_fields(deb: Path) -> None:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    assert deb.name == f"streamlab_{streamlab.__version__}_{arch}.deb"
    assert _field(deb, "Package") == "streamlab"
    assert _field(deb, "Version") == streamlab.__version__
    assert _field(deb, "Architecture") == arch
    depends = [d.strip() for d in _field(deb, "Depends").split(",")]
    for needed in ("python3 (>= 3.11)", "ffmpeg", "nftables", "iproute2", "adduser"):
        assert needed in depends, depends


def test_conffile_unit_and_maintainer_scripts(deb: Path, root: Path) -> None:
    assert _control_file(deb, "conffiles").split() == ["/etc/streamlab/streamlab.conf"]
    conf = (root / "etc/streamlab/streamlab.conf").read_text()
    assert conf == (TOP / "etc/streamlab.conf").read_text()
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.read_string(conf)
    assert parser["paths"]["state_dir"] == "/var/lib/streamlab"
    assert parser["paths"]["media_dir"].startswith("/var/lib/streamlab/")

    unit = (root / "lib/systemd/system/streamlab.service").read_text()
    lines = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in unit.splitlines()
             if "=" in line and not line.startswith("#")}
    assert lines["ExecStart"] == EXEC_START
    assert lines["User"] == "streamlab"
    assert lines["Restart"] == "on-failure"
    caps = {"CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"}
    assert set(lines["AmbientCapabilities"].split()) == caps
    assert set(lines["CapabilityBoundingSet"].split()) == caps
    for key, value in (("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("NoNewPrivileges", "yes"), ("StateDirectory", "streamlab")):
        assert lines[key] == value, key
    assert "/var/lib/streamlab" in lines["ReadWritePaths"]

    postinst = _control_file(deb, "postinst")
    assert "adduser --system" in postinst and "streamlab" in postinst
    assert "deb-systemd-helper enable streamlab.service" in postinst \
        or "deb-systemd-helper' enable" in postinst or "enable 'streamlab.service'" in postinst
    postrm = _control_file(deb, "postrm")
    purge_branch = postrm.split("purge)", 1)[1].split(";;", 1)[0]
    assert "rm -rf /var/lib/streamlab" in purge_branch
    assert postrm.count("/var/lib/streamlab") == purge_branch.count("/var/lib/streamlab") + \
        postrm.split("purge)", 1)[0].count("/var/lib/streamlab")


def test_venv_is_relocated_to_opt(root: Path) -> None:
    venv = root / VENV.lstrip("/")
    assert (venv / "bin/twistd").is_file()
    assert (venv / "bin/twistd").read_text().splitlines()[0] == f"#!{VENV}/bin/python"
    assert os.readlink(venv / "bin/python3").startswith("/usr/bin/python3")
    site = venv / "lib/python3.11/site-packages"
    assert (site / "streamlab/__init__.py").is_file()
    assert (site / "twisted/plugins/streamlab_plugin.py").is_file()
    assert (site / "streamlab/dashboard/index.html").is_file()
    assert (site / "streamlab/api/openapi.json").is_file()
    leaked = subprocess.run(["grep", "-rIl", "-e", "/debian/streamlab/", "-e", str(TOP), str(venv)],
                            capture_output=True, text=True).stdout.split()
    assert leaked == []


def test_unit_exec_start_runs_the_daemon(root: Path, tmp_path: Path) -> None:
    """The ExecStart line, with /opt and /etc mapped into the scratch root."""
    venv = root / VENV.lstrip("/")
    conf = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    conf.read(root / "etc/streamlab/streamlab.conf")
    port, boot = free_port(), free_port()
    lo, hi = free_port_block(4)
    conf["server"]["listen"] = f"tcp:{port}:interface=127.0.0.1"
    conf["server"]["bootstrap_listen"] = f"tcp:{boot}:interface=127.0.0.1"
    conf["server"]["session_ports"] = f"{lo}-{hi}"
    conf["paths"]["state_dir"] = str(tmp_path / "state")
    conf["paths"]["media_dir"] = str(tmp_path / "state/media")
    conf["shaping"]["backend"] = "userspace"
    cfg = tmp_path / "streamlab.conf"
    with open(cfg, "w") as fh:
        conf.write(fh)
    argv = shlex.split(EXEC_START.replace(VENV, str(venv)).replace(
        "/etc/streamlab/streamlab.conf", str(cfg)))
    # the shebang names /opt/streamlab/venv/bin/python, which is not installed here:
    # run the script with the scratch venv's interpreter (same venv, relocated)
    argv = [str(venv / "bin/python3"), *argv]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        health = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = request(port, "GET", "/api/health", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        assert health is not None, proc.stdout.read().decode() if proc.poll() is not None else "timeout"
        assert health.status == 200
        assert health.json()["status"] == "ok"
        assert health.json()["version"] == streamlab.__version__
        # the daemon runs from the venv, not from the checkout
        version = request(port, "GET", "/api/version").json()
        assert version["version"] == streamlab.__version__
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        out = proc.stdout.read().decode()
        assert str(venv) in out  # twistd names its interpreter (the scratch venv)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_systemd_analyze_verify(root: Path, tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not available")
    venv = root / VENV.lstrip("/")
    unit = (root / "lib/systemd/system/streamlab.service").read_text().replace(VENV, str(venv))
    path = tmp_path / "streamlab.service"
    path.write_text(unit)
    out = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if "streamlab.service" in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr
