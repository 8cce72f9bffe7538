"""``debian/check-deps``: the package build checks the venv's own distributions and their
dependency closure, and ignores unrelated broken system packages (issue #17 item 8:
python3-gi without python3-cairo made ``pip check``, and so ``make deb``, fail)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "debian" / "check-deps"


def _dist(site: Path, name: str, version: str, *requires: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")


def _run(venv: Path, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), str(venv), *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


def _layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    venv = tmp_path / "opt" / "venv"
    shipped = venv / "lib" / "python3.11" / "site-packages"
    system = tmp_path / "usr" / "lib" / "python3" / "dist-packages"
    _dist(shipped, "streamlab", "1.0", "twisted[tls]>=23", "klein")
    _dist(shipped, "twisted", "25.5.0", "attrs>=22", 'pyopenssl>=21; extra == "tls"',
          'h2>=3; extra == "http2"')
    _dist(shipped, "klein", "24.8.0", "werkzeug")
    _dist(shipped, "werkzeug", "3.1.9")
    _dist(shipped, "attrs", "26.1.0")
    _dist(system, "pyOpenSSL", "23.0.0", "cryptography>=38")
    _dist(system, "cryptography", "38.0.4", "cffi>=1.12")
    _dist(system, "cffi", "1.15.1", "pycparser")
    _dist(system, "pycparser", "2.21")
    return venv, shipped, system


def test_an_unrelated_broken_system_package_is_ignored(tmp_path):
    venv, shipped, system = _layout(tmp_path)
    _dist(system, "PyGObject", "3.42.2", "pycairo>=1.16")  # python3-gi without python3-cairo
    result = _run(venv, shipped, system)
    assert result.returncode == 0, result.stderr
    # pip check, as the build used it, fails on exactly this layout
    assert "pygobject" not in result.stderr.lower()


def test_a_missing_dependency_of_the_closure_fails_the_build(tmp_path):
    venv, shipped, system = _layout(tmp_path)
    (system / "pycparser-2.21.dist-info" / "METADATA").unlink()
    (system / "pycparser-2.21.dist-info").rmdir()
    result = _run(venv, shipped, system)
    assert result.returncode == 1
    assert "cffi 1.15.1 requires pycparser, which is not installed" in result.stderr


def test_a_wrong_version_and_an_extra_are_checked(tmp_path):
    venv, shipped, system = _layout(tmp_path)
    _dist(shipped, "h2", "2.0.0")  # only twisted[http2] would need h2>=3: nobody asks for it
    assert _run(venv, shipped, system).returncode == 0
    (shipped / "attrs-26.1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: attrs\n"
                                                                   "Version: 21.0\n")
    result = _run(venv, shipped, system)
    assert result.returncode == 1 and "requires attrs>=22, but attrs 21.0 is installed" in result.stderr


def test_the_real_test_venv_passes():
    result = subprocess.run([sys.executable, str(CHECK), sys.prefix], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_one_systemd_unit_file():
    """debian/ installs the unit through a symlink to systemd/streamlab.service: one file
    to edit, no second copy to drift."""
    link = ROOT / "debian" / "streamlab.service"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "systemd" / "streamlab.service").resolve()
    assert not (ROOT / "systemd" / "streamlab.service").is_symlink()
