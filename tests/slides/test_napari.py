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
    # napari is still fine: a good image opens afterwards, with conversions applied
    gray = write_png(tmp_path / "gray.png", he_rgb[..., 0].copy())
    with pytest.warns(UserWarning):
        viewer.open(str(gray), plugin=PLUGIN)
    assert len(viewer.layers) == 1
    np.testing.assert_array_equal(np.asarray(viewer.layers[0].data[0])[..., 1], he_rgb[..., 0])


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
