"""Issue 29: where results go when no folder is named (15), and the demo's refusal of a foreign store (12)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from napari_virtual_ihc._sample_data import CMU1_REGION, SAMPLE_DIR
from napari_virtual_ihc.cli import main
from napari_virtual_ihc.ihc_store.output import default_output_dir


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    return tmp_path / "data-home" / "napari-virtual-ihc" / "results"


# --- 15. never into the package, nor a read-only folder ------------------------------------------------------
def test_the_packaged_sample_gets_its_results_in_the_users_data_folder(data_home: Path):
    assert default_output_dir(CMU1_REGION) == data_home
    assert default_output_dir(None) == data_home


def test_a_slide_in_a_writable_folder_gets_its_results_beside_it(tmp_path: Path, data_home: Path):
    (tmp_path / "s.tif").write_bytes(b"x")
    assert default_output_dir(tmp_path / "s.tif") == tmp_path.resolve()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_slide_in_a_read_only_folder_gets_its_results_in_the_data_folder(tmp_path: Path, data_home: Path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "s.tif").write_bytes(b"x")
    folder.chmod(0o555)
    try:
        assert default_output_dir(folder / "s.tif") == data_home
    finally:
        folder.chmod(0o755)


def test_the_widgets_default_for_the_demo_layer_is_not_the_package(data_home: Path):
    from napari.layers import Image

    from napari_virtual_ihc._widgets._layer_source import store_for_layer
    from napari_virtual_ihc.slides import open_slide

    with open_slide(CMU1_REGION) as slide:
        layer = Image(np.zeros((8, 8, 3), np.uint8), rgb=True, metadata={"slide": slide})
        store = store_for_layer(layer, None)
        assert store.parent == data_home and SAMPLE_DIR not in store.parents
        assert store_for_layer(layer, "/elsewhere").parent == Path("/elsewhere")


# --- 12. the demo keeps a foreign store and says so ------------------------------------------------------------
def test_demo_headless_with_a_foreign_store_in_the_way_exits_with_a_message(tmp_path: Path, capsys):
    foreign = tmp_path / "d1" / "CMU-1-region.ome.zarr"
    foreign.mkdir(parents=True)
    (foreign / "precious.txt").write_text("x")
    assert main(["demo", "--headless", "--out", str(tmp_path / "d1")]) == 1
    err = capsys.readouterr().err
    assert "not a virtual IHC store" in err and "Traceback" not in err
    assert (foreign / "precious.txt").read_text() == "x"
