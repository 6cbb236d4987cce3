"""Tumour regions (issue 32): GeoJSON (QuPath export) with holes and multipolygons, masks, and refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from skimage.io import imsave

from napari_virtual_ihc.stain.regions import (
    RegionError,
    mask_region,
    polygon_region,
    polygons_from_geojson,
    read_region,
)

SQUARE = [[10, 10], [90, 10], [90, 90], [10, 90], [10, 10]]  # [x, y]
HOLE = [[40, 40], [60, 40], [60, 60], [40, 60], [40, 40]]
FAR = [[200, 300], [260, 300], [260, 360], [200, 360], [200, 300]]


def _fc(*geoms: dict) -> dict:
    return {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"objectType": "annotation"}, "geometry": g} for g in geoms
        ],
    }


def test_geojson_polygon_with_a_hole_and_a_multipolygon(tmp_path):
    doc = _fc(
        {"type": "Polygon", "coordinates": [SQUARE, HOLE]},
        {"type": "MultiPolygon", "coordinates": [[FAR], [[[400, 20], [450, 20], [450, 70], [400, 20]]]]},
        {"type": "Point", "coordinates": [5, 5]},  # QuPath exports points too: not an area, skipped
    )
    path = tmp_path / "tumour.geojson"
    path.write_text(json.dumps(doc))
    region = read_region(path, 512, 512)
    assert len(region.polygons) == 3 and len(region.polygons[0].holes) == 1
    y = np.array([20.0, 50.0, 330.0, 30.0, 500.0])  # rows
    x = np.array([20.0, 50.0, 230.0, 440.0, 500.0])  # cols
    assert region.contains(y, x).tolist() == [True, False, True, True, False]  # the hole is not tumour
    assert "1 hole" in region.describe()
    # a single Feature and a bare geometry read the same
    assert len(polygons_from_geojson(doc["features"][0])) == 1
    assert len(polygons_from_geojson({"type": "Polygon", "coordinates": [SQUARE]})) == 1


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            _fc({"type": "Polygon", "coordinates": [[[3000, 10], [3100, 10], [3100, 90], [3000, 10]]]}),
            "another image",
        ),
        (_fc({"type": "Point", "coordinates": [5, 5]}), "no Polygon"),
        ({"hello": 1}, "not GeoJSON"),
        (_fc({"type": "Polygon", "coordinates": [[[1, 1], [2, 2]]]}), ">= 3"),
        (_fc({"type": "Polygon", "coordinates": []}), "outer ring"),
    ],
)
def test_bad_geojson_is_refused_clearly(tmp_path, doc, message):
    path = tmp_path / "r.geojson"
    path.write_text(json.dumps(doc))
    with pytest.raises(RegionError, match=message):
        read_region(path, 512, 512)


def test_masks_of_the_image_size_only(tmp_path):
    m = np.zeros((64, 80), np.uint8)
    m[10:30, 20:40] = 255
    imsave(tmp_path / "mask.png", m, check_contrast=False)
    region = read_region(tmp_path / "mask.png", 80, 64)
    assert region.contains(np.array([15.0, 50.0]), np.array([25.0, 25.0])).tolist() == [True, False]
    with pytest.raises(RegionError, match="must have the image's size"):
        read_region(tmp_path / "mask.png", 160, 128)
    imsave(tmp_path / "empty.png", np.zeros((64, 80), np.uint8), check_contrast=False)
    with pytest.raises(RegionError, match="empty"):
        read_region(tmp_path / "empty.png", 80, 64)
    with pytest.raises(RegionError, match="does not exist"):
        read_region(tmp_path / "nope.geojson", 80, 64)
    (tmp_path / "bad.geojson").write_text("{not json")
    with pytest.raises(RegionError, match="cannot read"):
        read_region(tmp_path / "bad.geojson", 80, 64)


def test_a_labels_mask_placed_by_scale_and_a_polygon_off_the_image():
    # a Labels layer at half resolution: mask pixel (r, c) covers level-0 (2r..2r+1, 2c..2c+1)
    m = np.zeros((32, 32), bool)
    m[5:10, 5:10] = True
    region = mask_region(m, "labels", 64, 64, scale=(2.0, 2.0))
    assert region.contains(np.array([12.0, 30.0]), np.array([12.0, 30.0])).tolist() == [True, False]
    with pytest.raises(RegionError, match="outside the image"):
        polygon_region([np.array([[600.0, 600], [600, 700], [700, 700]])], "shapes", 512, 512)
    with pytest.raises(RegionError, match="no polygon"):
        polygon_region([], "shapes", 512, 512)
