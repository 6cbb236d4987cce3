"""The plugin's menu contributions in a real napari viewer, and the export command they run."""

from __future__ import annotations

import openslide
from app_model.types import MenuItem
from napari._app_model import get_app_model

PLUGIN = "napari-virtual-ihc"


def _menu_commands(menu_id: str) -> set[str]:
    return {item.command.id for item in get_app_model().menus.get_menu(menu_id) if isinstance(item, MenuItem)}


def test_menus_hold_stain_analyze_register_export(make_napari_viewer):
    make_napari_viewer()
    assert f"{PLUGIN}.stain_widget" in _menu_commands("napari/layers/filter")
    assert f"{PLUGIN}.overlay_widget" in _menu_commands("napari/layers/measure")
    assert f"{PLUGIN}.registration_widget" in _menu_commands("napari/layers/register")
    assert f"{PLUGIN}.export_ome_tiff" in _menu_commands("napari/file/io_utilities")


def test_export_menu_command_writes_the_active_layer(make_napari_viewer, ihc_store, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    viewer = make_napari_viewer()
    viewer.open(str(ihc_store), plugin=PLUGIN)
    out = tmp_path / "menu.ome.tif"
    # the user's answer in the save dialog
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    get_app_model().commands.execute_command(f"{PLUGIN}.export_ome_tiff").result()
    with openslide.OpenSlide(str(out)) as o:
        assert o.dimensions == (900, 700) and o.properties["openslide.mpp-x"] == "0.5"
