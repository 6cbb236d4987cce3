"""Cells and masks out as QuPath GeoJSON, read back by real GeoJSON clients (geojson, shapely)."""

from __future__ import annotations

import json

import geojson
import numpy as np
import pytest
import shapely
import tifffile
from shapely.geometry import shape
from skimage import data
from skimage.io import imsave

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.export.geojson import (
    cell_features,
    mask_features,
    write_geojson,
    write_label_tiff,
)
from napari_virtual_ihc.stain.analysis import AnalysisSettings, analyze_image
from napari_virtual_ihc.stain.her2 import CELL_CLASSES


@pytest.fixture(scope="module")
def result():
    """A real IHC image (scikit-image's DAB immunohistochemistry sample), analysed with classical nuclei."""
    return analyze_image(data.immunohistochemistry()[:256, :256], AnalysisSettings(nuclei_method="classical"))


def test_cells_read_back_with_same_count_classes_centroids(result, tmp_path):
    cells = result.cells
    assert len(cells) > 20
    path = write_geojson(cell_features(cells, result.mpp), tmp_path / "cells.geojson")
    fc = geojson.loads(path.read_text())
    assert fc.is_valid and fc["type"] == "FeatureCollection"
    feats = fc["features"]
    assert len(feats) == len(cells)
    assert [f["properties"]["objectType"] for f in feats] == ["detection"] * len(cells)
    assert [f["properties"]["classification"]["name"] for f in feats] == [
        CELL_CLASSES[c] for c in cells.cell_class
    ]
    points = [shape(f["geometry"]) for f in feats]
    np.testing.assert_allclose([p.x for p in points], cells.x, atol=1e-5)  # geojson keeps 6 decimals
    np.testing.assert_allclose([p.y for p in points], cells.y, atol=1e-5)
    areas = [f["properties"]["measurements"]["Area µm^2"] for f in feats]
    np.testing.assert_allclose(areas, cells.area_px * result.mpp**2)


def test_mask_polygons_cover_the_mask_holes_included(result, tmp_path):
    mask = np.zeros((40, 50), bool)
    mask[5:30, 5:35] = True
    mask[10:20, 10:20] = False  # a hole
    mask[33:36, 40:48] = True  # a second part
    feats = mask_features(mask, "Membrane", (255, 0, 0), downsample=4, origin=(100, 200))
    polys = [shape(f["geometry"]) for f in feats]
    assert len(polys) == 2 and all(p.is_valid for p in polys)
    assert sum(p.area for p in polys) == pytest.approx(mask.sum() * 16)
    assert sorted(len(p.interiors) for p in polys) == [0, 1]
    assert shapely.union_all(polys).bounds == (120.0, 220.0, 292.0, 344.0)
    # the analysis' own membrane mask, as QuPath annotations, covers the mask's pixels
    membrane = result.membrane_mask
    ds = result.map_downsample
    feats = mask_features(membrane, "Membrane", (255, 0, 0), downsample=ds)
    covered = shapely.union_all([shape(f["geometry"]) for f in feats]).area
    assert covered == pytest.approx(membrane.sum() * ds * ds)


def test_label_tiff_reads_back(result, tmp_path):
    path = write_label_tiff(result.labels, tmp_path / "nuclei.tif", mpp=result.mpp, downsample=1)
    with tifffile.TiffFile(path) as tif:
        np.testing.assert_array_equal(tif.asarray(), result.labels)
        assert tif.pages[0].tags["XResolution"].value[0] > 0


def test_analyze_cli_writes_cells_geojson(tmp_path):
    img = tmp_path / "ihc.png"
    imsave(img, data.immunohistochemistry()[:200, :200])
    out = tmp_path / "out"
    assert main(["analyze", str(img), "--out", str(out), "--nuclei", "classical", "--cells-geojson"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    fc = json.loads((out / summary["cells_geojson"]).read_text())
    assert len(fc["features"]) == summary["nuclei_count"] > 10


def test_cells_classified_by_a_nuclear_markers_call(result, tmp_path):
    """Ki-67/ER/PR: each detection carries the marker's positive/negative call (QuPath's own class names)."""
    from napari_virtual_ihc.export.errors import ExportError
    from napari_virtual_ihc.export.geojson import CALL_COLORS, result_cell_features
    from napari_virtual_ihc.stain.markers import marker_calls

    cells = result.cells
    calls = marker_calls("ki67", cells, result.bins)
    assert {"positive", "negative"} <= set(calls)
    path = write_geojson(cell_features(cells, result.mpp, calls), tmp_path / "ki67.geojson")
    feats = geojson.loads(path.read_text())["features"]
    assert [f["properties"]["classification"]["name"] for f in feats] == calls
    assert [tuple(f["properties"]["classification"]["color"]) for f in feats] == [
        CALL_COLORS[c] for c in calls
    ]
    np.testing.assert_allclose(
        [f["properties"]["measurements"]["Nucleus DAB OD"] for f in feats], cells.nuclear_dab_od
    )
    # a result exports with its own marker's calls (HER2 here: the membrane classes)
    assert [f["properties"]["classification"]["name"] for f in result_cell_features(result)] == [
        CELL_CLASSES[c] for c in cells.cell_class
    ]
    with pytest.raises(ExportError, match="calls for"):
        cell_features(cells, result.mpp, calls[:-1])
