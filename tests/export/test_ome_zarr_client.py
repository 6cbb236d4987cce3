"""Our store read by another OME-NGFF client: ome-zarr-py (the reference reader napari-ome-zarr uses)."""

from __future__ import annotations

import numpy as np
from ome_zarr.io import parse_url
from ome_zarr.reader import Multiscales, Reader


def test_store_read_back_by_ome_zarr_py(ihc_store, ihc_rgb):
    location = parse_url(str(ihc_store))
    assert location is not None, "ome-zarr does not recognise the store"
    nodes = list(Reader(location)())
    image = nodes[0]
    assert image.load(Multiscales) is not None
    levels = image.data
    assert [tuple(a.shape) for a in levels] == [(3, 700, 900), (3, 350, 450), (3, 175, 225)]
    np.testing.assert_array_equal(np.asarray(levels[0]).transpose(1, 2, 0), ihc_rgb)
    ms = image.metadata
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    scales = [t[0]["scale"] for t in ms["coordinateTransformations"]]
    assert scales[0][1:] == [0.5, 0.5] and scales[2][1:] == [2.0, 2.0]  # µm/px of each level
