"""`make deb` builds an installable package: control fields, conffile, unit, the venv under
/opt/streamlab/venv with no trace of the build tree and no compiled file (the package is
Architecture: all; Debian's python3-* packages bring the compiled modules), apt resolves
its dependencies, and the unit's ExecStart line runs the daemon (from a scratch root,
with a scratch config) until /api/health answers.

The package is NOT installed on this machine: it is unpacked with ``dpkg-deb -x`` and
its installation is only simulated (``apt-get install -s``).
"""

from __future__ import annotations

import configparser
import fcntl
import io
import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

import streamlab
from streamlab.testing.daemon import Response, free_port, free_port_block, request

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


# Debian's compiled modules the venv relies on (constraints.txt names them too).
DEBIAN_COMPILED = ("python3-cryptography", "python3-openssl", "python3-service-identity",
                   "python3-bcrypt", "python3-zope.interface", "python3-markupsafe", "python3-yaml")


def test_file_name_and_control_fields(deb: Path) -> None:
    assert deb.name == f"streamlab_{streamlab.__version__}_all.deb"
    assert _field(deb, "Package") == "streamlab"
    assert _field(deb, "Version") == streamlab.__version__
    assert _field(deb, "Architecture") == "all"
    depends = [d.strip().split(" ")[0] for d in _field(deb, "Depends").split(",")]
    for needed in ("python3", "python3.11", "ffmpeg", "nftables", "iproute2", "adduser",
                   *DEBIAN_COMPILED):
        assert needed in depends, depends
    assert "python3 (<< 3.12)" in _field(deb, "Depends")  # the venv is lib/python3.11


def test_venv_holds_no_compiled_file(root: Path) -> None:
    """Architecture: all is true: no ELF file anywhere in the package."""
    elf = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                with open(path, "rb") as fh:
                    if fh.read(4) == b"\x7fELF":
                        elf.append(str(path.relative_to(root)))
    assert elf == []
    cfg = (root / VENV.lstrip("/") / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = true" in cfg


def test_venv_ships_the_runtime_pins_only(root: Path) -> None:
    """Exactly the pins above constraints.txt's test-only marker (and streamlab) are in
    the venv; the API fuzzer's pins below it are not shipped."""
    from packaging.utils import canonicalize_name

    text = (TOP / "constraints.txt").read_text()
    runtime, _, test_only = text.partition("# ---- test-only pins")
    pins = lambda part: {canonicalize_name(line.split("==")[0])  # noqa: E731
                         for line in part.splitlines() if "==" in line and not line.startswith("#")}
    site = root / VENV.lstrip("/") / "lib/python3.11/site-packages"
    shipped = {canonicalize_name(p.name.split("-")[0]) for p in site.glob("*.dist-info")}
    assert shipped == pins(runtime) | {"streamlab"}
    assert "schemathesis" in pins(test_only) and not pins(test_only) & shipped


def test_compiled_modules_come_from_debian(root: Path) -> None:
    """The relocated venv imports Twisted from itself and cryptography/pyOpenSSL/bcrypt/
    zope.interface from Debian's dist-packages."""
    venv = root / VENV.lstrip("/")
    code = ("import json, bcrypt, cryptography, OpenSSL, twisted, klein, zope.interface, "
            "autobahn, streamlab; print(json.dumps({m.__name__: m.__file__ for m in "
            "(bcrypt, cryptography, OpenSSL, twisted, klein, zope.interface, autobahn, streamlab)}))")
    out = subprocess.run([str(venv / "bin/python3"), "-c", code], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"}, cwd="/")
    assert out.returncode == 0, out.stderr
    where = json.loads(out.stdout)
    for name in ("bcrypt", "cryptography", "OpenSSL", "zope.interface"):
        assert where[name].startswith("/usr/lib/python3/dist-packages/"), where
    for name in ("twisted", "klein", "autobahn", "streamlab"):
        assert where[name].startswith(str(venv / "lib/python3.11/site-packages")), where


def test_apt_resolves_the_dependencies(deb: Path) -> None:
    """`apt install ./streamlab_*.deb` would succeed here (simulated: nothing is installed)."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("apt-get simulation needs apt and root")
    out = subprocess.run(["apt-get", "install", "-s", "-q", "--no-install-recommends", str(deb)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "Inst streamlab " in out.stdout or "streamlab is already" in out.stdout, out.stdout[-2000:]
    assert "Broken" not in out.stdout


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


def _https_get(port: int, path: str, cafile: Path) -> Response:
    """GET over TLS, trusting only the daemon's generated certificate."""
    if not cafile.exists():
        raise OSError("no certificate yet")
    ctx = ssl.create_default_context(cafile=str(cafile))
    return request(port, "GET", path, timeout=5, host="localhost", context=ctx)


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
    # TLS through Debian's cryptography/pyOpenSSL: a certificate generated on first start
    conf["server"]["tls"] = "auto"
    conf["server"]["tls_san"] = "localhost,127.0.0.1"
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
        cafile = tmp_path / "state/tls/cert.pem"
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = _https_get(port, "/api/health", cafile)
                break
            except OSError:
                time.sleep(0.1)
        assert health is not None, proc.stdout.read().decode() if proc.poll() is not None else "timeout"
        assert health.status == 200
        assert health.json()["status"] == "ok"
        assert health.json()["version"] == streamlab.__version__
        # the daemon runs from the venv, not from the checkout
        version = _https_get(port, "/api/version", cafile).json()
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


# --- a real installation on this machine --------------------------------------------------

def _installable_here() -> str | None:
    """Why the package cannot be installed on this machine for a test (None: it can)."""
    if os.geteuid() != 0:
        return "installing a package needs root"
    if shutil.which("apt-get") is None or shutil.which("setpriv") is None:
        return "apt-get and setpriv are needed"
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "streamlab"],
                            capture_output=True, text=True).stdout
    if "installed" in status or "config-files" in status:
        return f"streamlab is already on this machine ({status.strip()}): the test would remove it"
    if Path("/run/systemd/system").is_dir():
        return "systemd is running here: installing would start the service on port 30000"
    return None


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["apt-get", "-y", "-q", "--no-install-recommends", *args],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def _passwd(name: str) -> list[str] | None:
    out = subprocess.run(["getent", "passwd", name], capture_output=True, text=True).stdout
    return out.strip().split(":") if out.strip() else None


def _run_exec_start_as_streamlab(tmp_path: Path) -> str:
    """The unit's ExecStart line, verbatim, as the streamlab user; ports moved to free
    loopback ports with CLI options (the CLI wins over the config file)."""
    port, boot = free_port(), free_port()
    lo, hi = free_port_block(4)
    argv = [*shlex.split(EXEC_START),
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--bootstrap-listen", f"tcp:{boot}:interface=127.0.0.1",
            "--session-ports", f"{lo}-{hi}", "--shaping-backend", "userspace"]
    argv = ["setpriv", "--reuid=streamlab", "--regid=streamlab", "--init-groups", *argv]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONUNBUFFERED": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(argv, cwd="/var/lib/streamlab", env=env, stdout=subprocess.PIPE,
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
        assert health.status == 200 and health.json()["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        return proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_install_run_upgrade_remove_purge(deb: Path, tmp_path: Path) -> None:
    """`apt install ./streamlab_*.deb` for real: user, directories, conffile, enabled unit;
    the ExecStart line runs as the streamlab user; an upgrade keeps a local config change
    and the data; remove keeps data and config; purge removes them and the user."""
    # one installation at a time on this machine, whichever checkout runs the test
    lock = open("/tmp/streamlab-package-install-test.lock", "a")  # noqa: SIM115 - held for the test
    fcntl.flock(lock, fcntl.LOCK_EX)
    why = _installable_here()
    if why:
        lock.close()
        pytest.skip(why)
    try:
        _apt("install", str(deb))
        user = _passwd("streamlab")
        assert user is not None and int(user[2]) < 1000, user  # a system user
        assert user[5] == "/var/lib/streamlab"
        st = os.stat("/var/lib/streamlab")
        assert (st.st_uid, oct(st.st_mode & 0o777)) == (int(user[2]), "0o750")
        conffiles = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}", "streamlab"],
                                   capture_output=True, text=True).stdout
        assert "/etc/streamlab/streamlab.conf" in conffiles
        assert Path("/etc/systemd/system/multi-user.target.wants/streamlab.service").is_symlink()
        assert Path("/usr/bin/streamlab").exists()

        out = _run_exec_start_as_streamlab(tmp_path)
        assert "/opt/streamlab/venv" in out
        data = sorted(p.name for p in Path("/var/lib/streamlab").iterdir())
        assert data, "the daemon wrote nothing into /var/lib/streamlab"
        st_db = [p for p in Path("/var/lib/streamlab").iterdir() if p.is_file()]
        assert all(p.stat().st_uid == int(user[2]) for p in st_db)

        # upgrade (the same version again: prerm/postrm upgrade + postinst configure)
        conf = Path("/etc/streamlab/streamlab.conf")
        conf.write_text(conf.read_text() + "\n# local change kept across upgrades\n")
        _apt("install", "--reinstall", str(deb))
        assert conf.read_text().endswith("# local change kept across upgrades\n")
        assert sorted(p.name for p in Path("/var/lib/streamlab").iterdir()) == data
        _run_exec_start_as_streamlab(tmp_path)

        _apt("remove", "streamlab")
        assert Path("/var/lib/streamlab").is_dir() and conf.is_file()
        assert _passwd("streamlab") is not None
        assert not Path("/opt/streamlab/venv/bin/twistd").exists()

        _apt("purge", "streamlab")
        assert not Path("/var/lib/streamlab").exists()
        assert not Path("/etc/streamlab").exists()
        assert _passwd("streamlab") is None
        assert not Path("/etc/systemd/system/multi-user.target.wants/streamlab.service").exists()
    finally:
        subprocess.run(["apt-get", "-y", "-q", "purge", "streamlab"], capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, timeout=600)
        lock.close()
