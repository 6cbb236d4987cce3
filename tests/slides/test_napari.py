"""The reader and the sample in a real napari viewer (Qt under Xvfb): layers, errors, closing, pixels."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from napari_virtual_ihc.slides.layers import MissingMppWarning

from .conftest import write_png

PLUGIN = "napari-virtual-ihc"


def test_open_cmu1_in_viewer_and_close_on_remove(make_napari_viewer, cmu1_path):
    viewer = make_napari_viewer()
    layers = viewer.open(str(cmu1_path), plugin=PLUGIN)
    assert len(layers) == 1 and len(viewer.layers) == 1
    layer = viewer.layers[0]
    assert layer.multiscale and layer.rgb
    assert tuple(layer.scale) == pytest.approx((0.499, 0.499))
    assert tuple(str(u) for u in layer.units) == ("micrometer", "micrometer")
    assert tuple(layer.contrast_limits) == (0, 255)
    assert [tuple(d.shape) for d in layer.data] == [(2967, 2220, 3)]
    slide = layer.metadata["slide"]
    assert layer.metadata["vendor"] == "aperio" and not slide.closed
    viewer.layers.remove(layer)
    assert slide.closed


def test_open_tcga_warns_missing_mpp(make_napari_viewer, tcga_path):
    viewer = make_napari_viewer()
    with pytest.warns(MissingMppWarning):
        viewer.open(str(tcga_path), plugin=PLUGIN)
    layer = viewer.layers[0]
    assert [tuple(d.shape) for d in layer.data] == [(3567, 4443, 3), (1783, 2221, 3)]
    assert tuple(layer.scale) == (1.0, 1.0) and layer.metadata["mpp_known"] is False


def _bad_files(tmp_path, cmu1_path, he_rgb):
    text = tmp_path / "notes.svs"
    text.write_text("not a slide\n" * 50)
    empty = tmp_path / "empty.tif"
    empty.touch()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(cmu1_path.read_bytes()[:300_000])
    mif = tmp_path / "mif.ome.tif"
    import tifffile

    tifffile.imwrite(mif, np.zeros((5, 16, 16), np.uint8), ome=True, metadata={"axes": "CYX"})
    wrong = tmp_path / "wrong.png"
    shutil.copy(cmu1_path, wrong)
    return [text, empty, cut, mif, wrong]


def test_bad_files_in_viewer_leave_no_layer_and_napari_stays_up(
    make_napari_viewer, tmp_path, cmu1_path, he_rgb
):
    viewer = make_napari_viewer()
    for bad in _bad_files(tmp_path, cmu1_path, he_rgb):
        with pytest.raises(Exception, match=bad.name.replace(".", r"\.")):
            viewer.open(str(bad), plugin=PLUGIN)
        assert len(viewer.layers) == 0, bad
    # an unsupported extension is not ours: napari is told no reader, nothing is added
    odd = tmp_path / "slide.czi"
    shutil.copy(cmu1_path, odd)
    with pytest.raises(Exception):  # noqa: B017 - napari's own "no reader" error type varies
        viewer.open(str(odd), plugin=PLUGIN)
    assert len(viewer.layers) == 0
    # napari is still fine: a good image opens afterwards, with conversions applied (16-bit RGB is not
    # claimed, so it is opened through open_slide directly, as the CLI does)
    rgb = write_png(tmp_path / "rgb.png", he_rgb)
    viewer.open(str(rgb), plugin=PLUGIN)
    assert len(viewer.layers) == 1
    np.testing.assert_array_equal(np.asarray(viewer.layers[0].data[0]), he_rgb)


def _not_brightfield(tmp_path, he_rgb):
    """What napari's own reader should show: (file, layer shape, dtype, rgb) as napari gives them."""
    import tifffile

    grey = tmp_path / "grey_stack.tif"
    tifffile.imwrite(grey, np.arange(5 * 64 * 64, dtype=np.uint32).reshape(5, 64, 64).astype(np.uint8))
    fluo = tmp_path / "fluo.ome.tif"
    planes = np.stack([he_rgb[:64, :64, i].astype(np.uint16) * 257 for i in range(3)])
    tifffile.imwrite(
        fluo, planes, ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "GFP", "Cy5"]}}
    )
    shot = tmp_path / "screenshot.png"
    rgba = np.dstack([he_rgb[:200, :300], np.full((200, 300), 255, np.uint8)])
    write_png(shot, rgba)
    return [
        (grey, (5, 64, 64), np.uint8, False),
        (fluo, (3, 64, 64), np.uint16, False),
        (shot, (200, 300, 4), np.uint8, True),
    ]


def test_non_brightfield_files_go_to_napari_reader(make_napari_viewer, tmp_path, he_rgb, monkeypatch):
    """Grey stacks, fluorescence OME-TIFFs and RGBA screenshots are refused by ours and opened by napari's.

    The GUI path (``File > Open`` after the user told napari to use this plugin for ``*.tif``/``*.png``):
    our reader refuses, napari offers its remaining reader, which shows planes and bit depth as they are.
    """
    from napari._qt.dialogs import qt_reader_dialog
    from napari.settings import get_settings

    from napari_virtual_ihc._reader import napari_get_reader

    viewer = make_napari_viewer()
    offered: list[dict[str, str]] = []

    def pick_napari(self):  # the user's click in napari's reader dialog
        offered.append([b.text() for b in self.reader_btn_group.buttons()])
        return "napari builtins", False

    monkeypatch.setattr(qt_reader_dialog.QtReaderDialog, "get_user_choices", pick_napari)
    monkeypatch.setattr(get_settings().plugins, "extension2reader", {"*.tif": PLUGIN, "*.png": PLUGIN})
    for path, shape, dtype, rgb in _not_brightfield(tmp_path, he_rgb):
        assert napari_get_reader(str(path)) is None, path
        viewer.layers.clear()
        viewer.window._qt_viewer._qt_open([str(path)], stack=False)
        assert len(viewer.layers) == 1, path
        layer = viewer.layers[0]
        assert tuple(layer.data.shape) == shape and layer.data.dtype == dtype and layer.rgb == rgb, path
        assert not layer.multiscale and "slide" not in layer.metadata
        # napari's default reader gives the same
        napari_layer = viewer.open(str(path))[0]
        assert tuple(napari_layer.data.shape) == shape
    assert offered == [["napari builtins"]] * 3  # ours refused, napari offered its own


def test_brightfield_files_still_open_with_ours(make_napari_viewer, tmp_path, he_rgb, sample_tif):
    import tifffile

    viewer = make_napari_viewer()
    rgb_tif = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb_tif, he_rgb, photometric="rgb")
    for path in (sample_tif, rgb_tif, write_png(tmp_path / "tile.png", he_rgb)):
        layers = viewer.open(str(path), plugin=PLUGIN)
        assert layers[0].rgb and "slide" in layers[0].metadata, path


def test_sample_in_viewer_shows_tissue(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "cmu1_region")
    layer = viewer.layers[0]
    assert tuple(layer.scale) == pytest.approx((0.499, 0.499))
    assert [tuple(d.shape) for d in layer.data] == [(1024, 1024, 3), (512, 512, 3)]
    viewer.reset_view()
    qtbot.wait(300)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    rgb = shot[..., :3].reshape(-1, 3).astype(int)
    assert rgb.std() > 10  # not blank
    pink_purple = (rgb[:, 0] > rgb[:, 1] + 30) & (rgb[:, 2] > rgb[:, 1] + 15)
    assert pink_purple.mean() > 0.2, pink_purple.mean()
    slide = layer.metadata["slide"]
    viewer.layers.remove(layer)
    assert slide.closed


def test_kidney_pair_sample_opens_two_real_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    with pytest.warns(MissingMppWarning):  # ANHIR's 5 % images record no pixel size
        viewer.open_sample(PLUGIN, "kidney_he_ihc_pair")
    he, ihc = viewer.layers
    assert "H&E" in he.name and "IHC" in ihc.name
    assert [tuple(d.shape) for d in he.data] == [(787, 1164, 3)]
    assert [tuple(d.shape) for d in ihc.data] == [(724, 1123, 3)]
    pixels = np.asarray(ihc.data[0]).reshape(-1, 3).astype(int)
    brown = (pixels[:, 0] > pixels[:, 2] + 20) & (pixels[:, 0] < 200)  # DAB: red > blue, darker than glass
    assert brown.mean() > 0.02
