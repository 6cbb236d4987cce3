"""Stain overlays widget in a real viewer: threaded run, layers placed on the source, keys toggle."""

from __future__ import annotations

import json

import numpy as np
from napari.utils.key_bindings import coerce_keybinding
from skimage import data

from napari_virtual_ihc._widgets.overlay import StainOverlayWidget


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


def _rows(w) -> dict[str, str]:
    return {w.table.item(i, 0).text(): w.table.item(i, 1).text() for i in range(w.table.rowCount())}


def test_draw_a_tumour_polygon_and_analyze_counts_only_its_cells(make_napari_viewer, qtbot, tmp_path):
    """Issue 32: a Shapes polygon chosen as the tumour region; Analyze; the estimate counts only the cells
    inside it, and says so next to the category. Then a Labels layer, a saved and loaded calibration."""
    viewer = make_napari_viewer()
    # the round gland of scikit-image's IHC and the stroma around it (262 x 220 px, small for speed)
    viewer.add_image(data.immunohistochemistry()[250:512, 200:420], rgb=True, name="ihc", scale=(0.5, 0.5))
    w = StainOverlayWidget(viewer)
    w.source.setCurrentText("ihc")
    w.scope.setCurrentText("whole image")
    w.nuclei.setCurrentText("classical")
    w.marker.setCurrentIndex(w.marker.findData("her2"))
    assert w.run_button.text() == "Analyze"
    w.start()
    qtbot.waitUntil(lambda: w.result is not None or w.error is not None, timeout=60000)
    assert w.error is None
    assert "all cells (no tumour region given)" in _rows(w)["HER2 estimate"]
    everything = w.result.cells
    # the round gland's top, drawn in world coordinates (the image is at 0.5 per pixel)
    gland = np.array([[75, 55], [75, 160], [150, 160], [150, 55]], float) * 0.5
    viewer.add_shapes([gland], shape_type="polygon", name="tumour")
    w.region_shapes.setCurrentText("tumour")
    w.result = None
    w.start()
    qtbot.waitUntil(lambda: w.result is not None or w.error is not None, timeout=60000)
    assert w.error is None
    inside = (
        (everything.y >= 75) & (everything.y <= 150) & (everything.x >= 55) & (everything.x <= 160)
    ).sum()
    assert w.summary["tumour_cells"] == w.summary["her2"]["n_cells"] == inside
    assert 10 < inside < len(everything) / 3
    assert "tumour region: 1 polygon" in _rows(w)["HER2 estimate"]
    assert w.summary["her2"]["category"] == "3+"
    assert "tumour" in w.status.text()

    # the same area painted in a Labels layer at half the image's resolution
    lab = np.zeros((131, 110), np.uint8)
    lab[75 // 2 : 150 // 2, 55 // 2 : 160 // 2] = 1
    viewer.add_labels(lab, name="painted", scale=(1.0, 1.0))
    w.region_shapes.setCurrentText("painted")
    w.result = None
    w.start()
    qtbot.waitUntil(lambda: w.result is not None or w.error is not None, timeout=60000)
    assert w.error is None and abs(w.summary["tumour_cells"] - inside) <= 3
    assert "mask" in w.summary["cells_counted"]

    # save this run's calibration, load it (other cut-offs in it), and it is used and shown
    path = tmp_path / "lab1.json"
    w.save_calibration(str(path))
    assert path.is_file() and "lab1" in w.status.text()
    doc = json.loads(path.read_text())
    doc["dab_cutoffs_od"] = {"weak": 0.25, "moderate": 0.45, "strong": 0.7}
    path.write_text(json.dumps(doc))
    w.load_calibration(str(path))
    assert [c.value() for c in w.cuts] == [0.25, 0.45, 0.7]
    s = w.settings(viewer.layers["ihc"])
    assert s.calibration_name == "lab1" and s.background == "default"
    assert s.stains.background == tuple(doc["stains"]["background"])


def test_bad_regions_are_refused_in_the_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(data.immunohistochemistry()[:128, :128], rgb=True, name="ihc")
    w = StainOverlayWidget(viewer)
    w.source.setCurrentText("ihc")
    w.scope.setCurrentText("whole image")
    viewer.add_shapes(name="empty shapes")
    w.region_shapes.setCurrentText("empty shapes")
    w.start()
    assert w.error is not None and "no polygon" in w.error
    viewer.add_shapes(
        [np.array([[900, 900], [900, 990], [990, 990]], float)], shape_type="polygon", name="far"
    )
    w.region_shapes.setCurrentText("far")
    w.start()
    assert "outside the image" in w.error
    viewer.add_labels(np.zeros((128, 128), np.uint8), name="nothing painted")
    w.region_shapes.setCurrentText("nothing painted")
    w.start()
    assert "empty" in w.error
    w.marker.setCurrentIndex(w.marker.findData("ki67"))
    assert w.settings(viewer.layers["ihc"]).marker == "ki67"
    w.load_calibration("/nonexistent/cal.json")
    assert "cannot read" in w.error


def test_the_nuclei_calibration_windows_of_a_whole_slide_are_shown_where_they_were_read(
    make_napari_viewer, qtbot
):
    """A whole slide's nuclei are calibrated on level-0 windows of its tissue (stain.nuclei_sample); the widget
    draws them as rectangles on the source, so the pathologist sees what the cuts were read on."""
    import dataclasses

    from napari_virtual_ihc.stain import AnalysisSettings, analyze_image

    viewer = make_napari_viewer()
    rgb = data.immunohistochemistry()[:256, :320]
    src = viewer.add_image(rgb, rgb=True, name="ihc", scale=(0.5, 0.5), translate=(100.0, 40.0))
    result = analyze_image(rgb, AnalysisSettings(nuclei_method="classical", mpp=0.5))
    windows = (
        (10, 20, 64, 64),
        (100, 20, 64, 64),
        (10, 150, 64, 64),
        (100, 150, 64, 64),
    )  # level-0 x, y, w, h
    result = dataclasses.replace(
        result, nuclei_calibration_windows=windows, nuclei_calibration_note="four windows"
    )
    w = StainOverlayWidget(viewer)
    w._show(result, None, "ihc", src.scale, src.translate)
    shapes = w.overlay_layers["calibration windows"]
    assert shapes.name in [layer.name for layer in viewer.layers] and len(shapes.data) == 4
    np.testing.assert_allclose(shapes.scale, src.scale)
    np.testing.assert_allclose(shapes.translate, src.translate)
    assert np.allclose(shapes.data[1].min(axis=0), (20, 100)) and np.allclose(
        shapes.data[1].max(axis=0), (84, 164)
    )
    assert "four windows" in w.status.text()
    offered = [w.region_shapes.itemText(i) for i in range(w.region_shapes.count())]
    assert not any(layer.name in offered for layer in w.overlay_layers.values())  # overlays are not regions
