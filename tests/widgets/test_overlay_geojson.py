"""The overlay widget talks to QuPath: cells out as GeoJSON detections, an annotation GeoJSON in as the region."""

from __future__ import annotations

import json

import geojson
import numpy as np
from shapely.geometry import shape
from skimage import data

from napari_virtual_ihc._widgets.overlay import StainOverlayWidget
from napari_virtual_ihc.stain.markers import marker_calls
from napari_virtual_ihc.stain.regions import read_geojson

# the round gland of scikit-image's IHC and the stroma around it (262 x 220 px, small for speed)
GLAND = (slice(250, 512), slice(200, 420))


def _analyze(w: StainOverlayWidget, qtbot) -> None:
    w.result = None
    w.start()
    qtbot.waitUntil(lambda: w.result is not None or w.error is not None, timeout=60000)
    assert w.error is None


def _widget(viewer, marker: str) -> StainOverlayWidget:
    w = StainOverlayWidget(viewer)
    w.source.setCurrentText("ihc")
    w.scope.setCurrentText("whole image")
    w.nuclei.setCurrentText("classical")
    w.marker.setCurrentIndex(w.marker.findData(marker))
    return w


def test_export_cells_after_analyze_reads_back_with_the_marker_call(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(data.immunohistochemistry()[GLAND], rgb=True, name="ihc", translate=(10.0, 20.0))
    w = _widget(viewer, "her2")
    assert not w.export_cells_button.isEnabled()
    w.export_cells(str(tmp_path / "early.geojson"))
    assert "analyze an image first" in w.error and not (tmp_path / "early.geojson").exists()
    _analyze(w, qtbot)
    assert w.export_cells_button.isEnabled()
    path = tmp_path / "cells.geojson"
    w.export_cells(str(path))
    assert str(path) in w.status.text()
    fc = geojson.loads(path.read_text())
    assert fc.is_valid
    cells = w.result.cells
    assert len(fc["features"]) == len(cells) == w.result.n_nuclei > 20
    names = [f["properties"]["classification"]["name"] for f in fc["features"]]
    assert names == marker_calls("her2", cells, w.result.bins)  # HER2: the membrane class of each cell
    assert {"none", "complete_strong"} <= set(names)  # the gland's membranes stain, the stroma's do not
    points = [shape(f["geometry"]) for f in fc["features"]]
    # level-0 pixels of the image (QuPath's coordinates), not napari's world (the translate)
    np.testing.assert_allclose([p.x for p in points], cells.x, atol=1e-5)
    np.testing.assert_allclose([p.y for p in points], cells.y, atol=1e-5)
    w.export_cells(str(tmp_path / "missing-dir" / "cells.geojson"))
    assert "cannot export the cells" in w.error


def _annotation(rings: list[list[list[float]]]) -> dict:
    """QuPath's annotation export: a FeatureCollection of Polygon annotations, [x, y] level-0 px."""
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
            }
        ],
    }


def test_imported_annotation_is_the_region_analyze_counts(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(
        data.immunohistochemistry()[GLAND], rgb=True, name="ihc", scale=(0.5, 0.5), translate=(7.0, 3.0)
    )
    w = _widget(viewer, "her2")
    # the gland's top as QuPath draws it: [x, y] in the image's pixels (a rotated quadrilateral)
    outer = [[55, 75], [160, 70], [165, 150], [50, 155], [55, 75]]
    path = tmp_path / "tumour.geojson"
    path.write_text(json.dumps(_annotation([outer])))
    shapes = w.import_region(str(path))
    assert w.error is None and shapes in viewer.layers
    assert w.region_shapes.currentText() == shapes.name == "tumour"
    np.testing.assert_allclose(shapes.scale, (0.5, 0.5))
    np.testing.assert_allclose(shapes.translate, (7.0, 3.0))
    np.testing.assert_allclose(shapes.data[0], np.asarray(outer, float)[:-1, ::-1])
    _analyze(w, qtbot)
    core = w.result.tumour_cells(read_geojson(path, 220, 262))  # the core's region on the same polygon
    assert w.summary["tumour_cells"] == w.summary["her2"]["n_cells"] == len(core)
    assert 10 < len(core) < w.result.n_nuclei / 2
    assert "tumour region: 1 polygon" in w.summary["cells_counted"]

    # a hole: not drawn (napari Shapes have none) but excluded by Analyze, as the core does
    hole = [[90, 95], [130, 95], [130, 135], [90, 135], [90, 95]]
    holed = tmp_path / "holed.geojson"
    holed.write_text(json.dumps(_annotation([outer, hole])))
    shapes = w.import_region(str(holed))
    assert "1 hole(s) not drawn" in w.status.text() and len(shapes.data) == 1
    src = viewer.layers["ihc"]
    region = w.tumour_region(src, (220, 262))  # what Analyze uses (the run above holds the same cells)
    core_holed = w.result.tumour_cells(read_geojson(holed, 220, 262))
    assert len(w.result.tumour_cells(region)) == len(core_holed) < len(core)
    assert "1 hole(s)" in region.describe()
    # once edited, the drawn outer rings are the region (what the user sees is what is counted)
    shapes.add_polygons([np.array([[10.0, 10.0], [10.0, 30.0], [30.0, 30.0]])])
    region = w.tumour_region(src, (220, 262))
    assert "hole(s)" not in region.describe() and len(region.polygons) == 2
    assert len(w.result.tumour_cells(region)) >= len(core)

    # another image's coordinates and a file without polygons: refused, no layer added
    far = tmp_path / "far.geojson"
    far.write_text(json.dumps(_annotation([[[5000, 5000], [5100, 5000], [5100, 5100], [5000, 5000]]])))
    n_layers = len(viewer.layers)
    assert w.import_region(str(far)) is None and "outside the image" in w.error
    points = tmp_path / "points.geojson"
    points.write_text(json.dumps({"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}))
    assert w.import_region(str(points)) is None and "no Polygon" in w.error
    assert len(viewer.layers) == n_layers
