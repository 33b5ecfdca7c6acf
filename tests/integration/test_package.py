"""The distribution: its name, one version everywhere, and a wheel (built by `python -m build`, as CI does) that
carries every file the packages keep in git, so an installed Warden has its migrations, playbooks and examples.
.ci/run goes further: it installs the wheel into a fresh venv and runs `warden demo` from it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from warden import __version__

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("warden", "streams", "responders", "playbooks", "service")
DISTRIBUTION = "warden-incident-response"


def test_the_distribution_name_is_ours_and_the_version_comes_from_the_package() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["name"] == DISTRIBUTION
    assert project["project"]["dynamic"] == ["version"] and "version" not in project["project"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "warden.__version__"}
    assert project["project"]["scripts"] == {"warden": "service.cli:main"}


def test_warden_version_prints_the_package_version() -> None:
    out = subprocess.run([sys.executable, "-m", "service", "--version"], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=True)
    assert out.stdout.strip() == f"warden, version {__version__}"


def test_the_wheel_carries_every_file_the_packages_keep_in_git(tmp_path: Path) -> None:
    """Built from a copy of the tracked files (setuptools writes build/ beside the sources)."""
    tracked = subprocess.run(["git", "ls-files", *PACKAGES], capture_output=True, text=True, cwd=REPO,
                             check=True).stdout.split()
    source = tmp_path / "src"
    for f in [*tracked, "pyproject.toml", "README.md"]:
        (source / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, source / f)
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(source)],
                   capture_output=True, text=True, timeout=300, check=True)
    [wheel] = tmp_path.glob("*.whl")
    assert wheel.name == f"{DISTRIBUTION.replace('-', '_')}-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        inside = set(zf.namelist())
        metadata = zf.read(f"{DISTRIBUTION.replace('-', '_')}-{__version__}.dist-info/METADATA").decode()
    missing = sorted(f for f in tracked if f not in inside)
    assert missing == [], f"package-data in pyproject.toml misses: {missing}"
    assert f"Name: {DISTRIBUTION}\n" in metadata and f"Version: {__version__}\n" in metadata
    assert not [f for f in inside if f.startswith(("tests/", "bench/"))]
