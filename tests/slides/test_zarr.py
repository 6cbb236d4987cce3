"""OME-Zarr stores written by the inference engine's TileStore read back through open_slide."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtual_ihc.ihc_store import TileStore
from napari_virtual_ihc.slides import UnsupportedImageError, open_slide
from napari_virtual_ihc.slides.layers import slide_layer_data
from napari_virtual_ihc.slides.zarr_backend import ZarrSlide


def _store(tmp_path, he_rgb, mpp=(0.5, 0.5), downsample=2.0):
    path = tmp_path / "virtual.ome.zarr"
    ts = TileStore.open(
        path,
        plane=(300, 200),
        tile=128,
        factors=[1, 2, 4],
        mpp=mpp,
        run_key={"model": "test"},
        provenance={"model": "test", "level0_downsample": downsample, "source_size": [600, 400]},
    )
    ts.write_tile((0, 0, 128, 128), he_rgb[:128, :128])  # one tile of level 0 done, the rest unwritten
    ts.close()
    return path


def test_engine_store_reads_back_exactly(tmp_path, he_rgb):
    path = _store(tmp_path, he_rgb)
    slide = open_slide(path)
    assert isinstance(slide, ZarrSlide)
    assert slide.level_dimensions == [(300, 200), (150, 100), (75, 50)]
    assert slide.mpp == pytest.approx((0.5, 0.5))
    md = slide.metadata()
    assert md["level0_downsample"] == 2.0 and md["virtual_ihc"]["model"] == "test"
    got = slide.read_region((0, 0), 0, (300, 200))
    np.testing.assert_array_equal(got[:128, :128], he_rgb[:128, :128])
    assert (got[:, 128:] == 255).all() and (got[128:] == 255).all()  # unwritten chunks read as white
    data, kw, _ = slide_layer_data(slide)
    assert [d.shape for d in data] == [(200, 300, 3), (100, 150, 3), (50, 75, 3)]
    assert kw["scale"] == pytest.approx((0.5, 0.5)) and kw["name"] == "virtual"
    np.testing.assert_array_equal(np.asarray(data[0][:128, :128]), he_rgb[:128, :128])
    # level 1 holds the engine's 2 x 2 block means of the written tile
    blocks = he_rgb[:128, :128].astype(np.float32).reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert np.abs(np.asarray(data[1][:64, :64]).astype(int) - np.rint(blocks)).max() <= 1
    slide.close()


def test_store_without_mpp_and_multichannel_store(tmp_path, he_rgb):
    path = _store(tmp_path, he_rgb, mpp=None, downsample=1.0)
    with open_slide(path) as s:
        assert s.mpp is None and s.metadata()["level0_downsample"] == 1.0
    import zarr

    g = zarr.open_group(str(tmp_path / "mif.ome.zarr"), mode="w", zarr_format=2)
    g.create_array("0", shape=(6, 32, 32), dtype="uint8", chunks=(6, 32, 32))
    g.attrs["multiscales"] = [
        {"version": "0.4", "axes": [{"name": "c"}, {"name": "y"}, {"name": "x"}], "datasets": [{"path": "0"}]}
    ]
    with pytest.raises(UnsupportedImageError, match="6 channels"):
        open_slide(tmp_path / "mif.ome.zarr")


def test_store_through_the_napari_reader(tmp_path, he_rgb):
    from napari_virtual_ihc._reader import napari_get_reader

    path = _store(tmp_path, he_rgb)
    reader = napari_get_reader(str(path))
    assert reader is not None
    ((data, kw, kind),) = reader(str(path))
    assert kind == "image" and len(data) == 3 and kw["metadata"]["level0_downsample"] == 2.0
    kw["metadata"]["slide"].close()
