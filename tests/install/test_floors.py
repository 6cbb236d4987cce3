"""The tested floors (.ci/floors.txt, what .ci/test-floors installs) are exactly pyproject.toml's lower bounds."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _floor(req: Requirement) -> str | None:
    lower = [s.version for s in req.specifier if s.operator == ">="]
    return lower[0] if lower else None


def test_every_dependency_has_a_floor_and_the_floors_file_pins_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    declared += [
        Requirement(r) for r in project["optional-dependencies"]["all"] if not r.startswith("napari[")
    ]
    pins = {}
    for line in (ROOT / ".ci" / "floors.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    for req in declared:
        floor = _floor(req)
        assert floor is not None, f"{req}: no lower bound"
        pinned = pins.get(canonicalize_name(req.name))
        assert pinned is not None, f"{req.name}: not in .ci/floors.txt"
        # the pin is the floor itself, written out in full (2.4 -> 2.4.0)
        assert pinned.split(".")[: len(floor.split("."))] == floor.split(".") and all(
            p == "0" for p in pinned.split(".")[len(floor.split(".")) :]
        ), f"{req.name}: floor {floor} but .ci/floors.txt tests {pinned}"
    assert set(pins) == {canonicalize_name(r.name) for r in declared}  # nothing pinned that is not declared
