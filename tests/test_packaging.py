"""The plugin is installable and discoverable: manifest valid, editable install and built wheel both found.

npe2 only reads a manifest inside the import package, so the manifest napari uses is the real file
``src/napari_virtual_ihc/napari.yaml`` (no symlink: those break on Windows clones). The design card keeps a
``napari.yaml`` at the top level too, where a reader of the repository looks first: a copy that must stay
byte-identical (tested here).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "src" / "napari_virtual_ihc" / "napari.yaml"
PLUGIN = "napari-virtual-ihc"

_DISCOVER = """
import json, napari_virtual_ihc
from npe2 import PluginManager
pm = PluginManager(); pm.discover()
m = pm.get_manifest("napari-virtual-ihc")
print(json.dumps({"package": napari_virtual_ihc.__file__, "manifest": str(m._source_file),
                  "readers": len(m.contributions.readers or []),
                  "samples": [s.key for s in m.contributions.sample_data or []]}))
"""


def _discover(python: str) -> dict:
    out = subprocess.run([python, "-c", _DISCOVER], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_top_level_manifest_is_the_package_manifest():
    top = ROOT / "napari.yaml"
    assert not top.is_symlink() and top.read_bytes() == MANIFEST.read_bytes(), (
        "napari.yaml (top level) and src/napari_virtual_ihc/napari.yaml differ: copy the package's over it"
    )


def test_manifest_validates_and_editable_install_is_discovered():
    npe2 = shutil.which("npe2") or pytest.fail("npe2 CLI not on PATH")
    v = subprocess.run([npe2, "validate", PLUGIN], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0 and "valid" in v.stdout, v.stdout + v.stderr
    listed = subprocess.run([npe2, "list"], capture_output=True, text=True, timeout=60, check=True)
    assert PLUGIN in listed.stdout
    found = _discover(sys.executable)
    # the editable install reads the repository's manifest, a regular file inside the package
    assert not MANIFEST.is_symlink() and Path(found["manifest"]).resolve() == MANIFEST.resolve()
    assert found["readers"] == 1 and found["samples"] == ["cmu1_region", "kidney_he_ihc_pair"]


def test_wheel_holds_real_manifest_and_installs_into_fresh_venv(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = dist.glob("napari_virtual_ihc-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = z.getinfo("napari_virtual_ihc/napari.yaml")
        assert (info.external_attr >> 16) & 0o170000 != 0o120000  # a regular file, not a symlink
        assert z.read(info) == MANIFEST.read_bytes()
        assert "napari_virtual_ihc/samples/CMU-1-region.tif" in names
        assert "napari_virtual_ihc/samples/LICENSE.md" in names
        assert "napari_virtual_ihc/samples/Rat-Kidney_PanCytokeratin.jpg" in names
        assert any(
            n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names
        )
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        assert "Requires-Dist: torch>=2.12" in meta and "magicgui" not in meta
        assert "Requires-Dist: napari[all]; extra == 'all'" in meta
        assert "napari_virtual_ihc/models/demo/demo-he-to-dab.safetensors" in names  # the demo model ships
    assert any(n.startswith("virtual_ihc_train/") for n in names)
    assert not any(n.startswith("trainer/") for n in names)  # PyPI's "trainer" is someone else's
    # a fresh venv that sees the global dependencies but gets the plugin only from the wheel
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True
    )
    py = str(venv / "bin" / "python")
    if sys.prefix != sys.base_prefix:
        # Run from a venv (as CI is): ``--system-site-packages`` shows only the base interpreter's packages,
        # so list this environment's site-packages too. A plain path line does not run the .pth files in
        # it, so the editable install of this repository stays out; the wheel's copy comes first.
        (nested_site,) = (venv / "lib").glob("python*/site-packages")
        outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
        (nested_site / "outer-environment.pth").write_text("\n".join(outer) + "\n")
    subprocess.run(
        [py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    found = _discover(py)
    site = venv / "lib"
    assert Path(found["package"]).is_relative_to(site)
    manifest = Path(found["manifest"])
    assert manifest.is_relative_to(site) and not manifest.is_symlink()
    assert manifest.read_bytes() == MANIFEST.read_bytes()
    assert found["readers"] == 1 and found["samples"] == ["cmu1_region", "kidney_he_ihc_pair"]


def test_cli_versions():
    from napari_virtual_ihc import __version__

    for script in ("virtual-ihc", "virtual-ihc-train"):
        exe = shutil.which(script) or pytest.fail(f"{script} not on PATH")
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.strip() == f"{script} {__version__}"
