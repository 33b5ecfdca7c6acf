"""What an image contains is pinned (issue 30): constraints.txt, generated from pyproject.toml by pip-compile, fixes
every dependency's version, and the Dockerfile and .ci/run's wheel check install with it; the LICENSE file is the
licence pyproject declares."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "constraints.txt"


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and ";" not in version, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_constraints_pin_every_dependency_of_pyproject_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = _pins()
    wanted = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["embedded"]]]
    missing = [str(r) for r in wanted if canonicalize_name(r.name) not in pins]
    assert missing == [], "regenerate: pip-compile (the command is in constraints.txt's header)"
    outside = [f"{r} (pinned {pins[canonicalize_name(r.name)]})" for r in wanted
               if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)]
    assert outside == [], "constraints.txt is older than pyproject.toml: regenerate it"
    assert len(pins) > 2 * len(wanted), "the transitive dependencies are pinned too"
    assert "pip-compile --extra=embedded" in CONSTRAINTS.read_text()


def test_the_image_and_the_wheel_check_install_with_the_constraints() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^COPY .*\bconstraints\.txt\b", dockerfile, re.M)
    assert re.search(r"pip install --constraint constraints\.txt /dist/\*\.whl", dockerfile)
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r'pip" install -q --constraint constraints\.txt "\$\{wheel\}\[embedded\]"', ci)


def test_the_license_file_is_the_apache_license_pyproject_declares() -> None:
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"] == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text
