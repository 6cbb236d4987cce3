"""Stain overlays widget in a real viewer: threaded run, layers placed on the source, keys toggle."""

from __future__ import annotations

import numpy as np
from napari.utils.key_bindings import coerce_keybinding
from skimage import data

from napari_virtual_ihc._widgets.overlay_widget import StainOverlayWidget


def test_overlays_added_with_source_scale_and_translate(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    src = viewer.add_image(
        data.immunohistochemistry()[:256, :320],
        rgb=True,
        name="ihc",
        scale=(0.5, 0.5),
        translate=(100.0, 40.0),
    )
    w = StainOverlayWidget(viewer)
    w.source.setCurrentText("ihc")
    w.scope.setCurrentText("whole image")
    w.nuclei.setCurrentText("classical")
    w.start()
    qtbot.waitUntil(lambda: w.result is not None or w.error is not None, timeout=60000)
    assert w.error is None
    assert w.result.nuclei_method == "classical"
    names = [layer.name for layer in viewer.layers]
    for which in ("nuclei", "density", "membrane", "her2"):
        layer = w.overlay_layers[which]
        assert layer.name in names
    for which in ("nuclei", "density", "membrane"):
        layer = w.overlay_layers[which]
        np.testing.assert_allclose(layer.scale, src.scale)
        np.testing.assert_allclose(layer.translate, src.translate)
        assert layer.data.shape[:2] == (256, 320)
    assert "classical" in w.overlay_layers["nuclei"].name
    assert w.overlay_layers["nuclei"].contour == 1
    tiles = w.overlay_layers["her2"]
    np.testing.assert_allclose(tiles.scale, np.asarray(src.scale) * 1024)
    assert w.table.rowCount() >= 5
    assert w.summary["mpp"] == 0.5 and not w.summary["mpp_assumed"]
    # D / C / M toggle visibility (bound on the viewer)
    for key, which in (("d", "nuclei"), ("c", "density"), ("m", "membrane")):
        before = w.overlay_layers[which].visible
        viewer.keymap[coerce_keybinding(key)](viewer)
        assert w.overlay_layers[which].visible is not before


def test_visible_region_only(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(data.immunohistochemistry(), rgb=True, name="ihc")
    viewer.camera.center = (0, 100, 100)
    viewer.camera.zoom = 8
    w = StainOverlayWidget(viewer)
    w.source.setCurrentText("ihc")
    w.mode.setCurrentIndex(1)  # H&E: nuclei only
    w.nuclei.setCurrentText("classical")
    w.start()
    qtbot.waitUntil(lambda: w.result is not None or w.error is not None, timeout=60000)
    assert w.error is None
    x, y, rw, rh = w.result.region
    assert rw < 512 and rh < 512
    assert "membrane" not in w.overlay_layers
    dens = w.overlay_layers["density"]
    np.testing.assert_allclose(dens.translate, (y, x))


def test_stain_vectors_are_shown_estimated_and_editable(make_napari_viewer, qtbot):
    """QuPath's habit: the run shows the white point and vectors it used; typed vectors are used as typed."""
    viewer = make_napari_viewer()
    viewer.add_image(data.immunohistochemistry(), rgb=True, name="ihc")
    w = StainOverlayWidget(viewer)
    w.source.setCurrentText("ihc")
    w.scope.setCurrentText("whole image")
    w.nuclei.setCurrentText("classical")
    w.vectors.setCurrentText("estimated from the slide")
    w.start()
    qtbot.waitUntil(lambda: w.result is not None or w.error is not None, timeout=60000)
    assert w.error is None
    cal = w.summary["stain_calibration"]
    assert cal["vectors_source"] == "estimated" and cal["background_source"] == "glass"
    shown = [float(v) for v in w.vector_fields["dab"].text().split()]
    np.testing.assert_allclose(shown, cal["vectors"][1], atol=1e-3)
    assert any(
        k == "white point"
        for k, _ in (
            w.table.item(i, 0) and (w.table.item(i, 0).text(), "") for i in range(w.table.rowCount())
        )
    )

    w.vectors.setCurrentText("as typed below")
    w.vector_fields["dab"].setText("0.30 0.55 0.78")
    s = w.settings(viewer.layers["ihc"])
    np.testing.assert_allclose(
        s.stains.matrix[1], np.array([0.30, 0.55, 0.78]) / np.linalg.norm([0.30, 0.55, 0.78])
    )
    w.vector_fields["dab"].setText("0.3 0.5")
    w.start()
    assert w.error is not None and "three numbers" in w.error
