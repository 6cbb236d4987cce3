"""Real slides through open_slide and slide_layer_data, checked against OpenSlide pixel for pixel."""

from __future__ import annotations

import warnings

import numpy as np
import openslide
import pytest

from napari_virtual_ihc._sample_data import CMU1_REGION
from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.slides.layers import MissingMppWarning, slide_layer_data
from napari_virtual_ihc.slides.openslide_backend import OpenSlideSlide
from napari_virtual_ihc.slides.tiff_backend import TiffSlide


def _osr_rgb(osr: openslide.OpenSlide, loc: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
    """OpenSlide's pixels; its (rare, sub-pixel-edge) transparency composited on white as the reader does."""
    rgba = np.asarray(osr.read_region(loc, level, size)).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    return np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def test_cmu1_layer_is_micrometres_and_matches_openslide(cmu1_path):
    slide = open_slide(cmu1_path)
    assert isinstance(slide, OpenSlideSlide)
    data, kw, kind = slide_layer_data(slide)
    assert kind == "image"
    assert [d.shape for d in data] == [(2967, 2220, 3)]
    assert kw["multiscale"] is True and kw["rgb"] is True
    assert kw["scale"] == pytest.approx((0.499, 0.499))
    assert kw["units"] == ("um", "um")
    assert kw["contrast_limits"] == (0, 255)
    md = kw["metadata"]
    assert md["vendor"] == "aperio" and md["mpp_known"] is True and md["slide"] is slide
    assert md["objective_power"] == 20
    assert set(md["associated_images"]) == {"label", "macro", "thumbnail"}
    assert kw["name"] == "CMU-1-Small-Region"
    with openslide.OpenSlide(str(cmu1_path)) as osr:
        # a region spanning several dask chunks (512 px) and native tiles (240 px)
        got = np.asarray(data[0][1100:1900, 700:1500])
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, _osr_rgb(osr, (700, 1100), 0, (800, 800)))
        label = slide.associated_image("label")
        np.testing.assert_array_equal(label, np.asarray(osr.associated_images["label"].convert("RGB")))
    thumb = slide.thumbnail(256)
    assert max(thumb.shape[:2]) == 256 and thumb.dtype == np.uint8
    slide.close()


def test_tcga_two_levels_no_mpp_warns_and_matches_openslide(tcga_path):
    slide = open_slide(tcga_path)
    with pytest.warns(MissingMppWarning, match="pixel size"):
        data, kw, _ = slide_layer_data(slide)
    assert [d.shape for d in data] == [(3567, 4443, 3), (1783, 2221, 3)]
    assert kw["scale"] == (1.0, 1.0) and kw["metadata"]["mpp_known"] is False
    assert kw["multiscale"] is True
    with openslide.OpenSlide(str(tcga_path)) as osr:
        got0 = np.asarray(data[0][1000:1700, 2000:2600])  # JPEG 2000 tiles of 256 px, 3 x 4 chunks
        np.testing.assert_array_equal(got0, _osr_rgb(osr, (2000, 1000), 0, (600, 700)))
        # Level 1 (downsample 2.0005, not an integer): OpenSlide resamples by the sub-pixel remainder of
        # location / downsample, so each chunk is OpenSlide's read at the level-0 location of its first
        # pixel. Check every chunk of a 3 x 3-chunk region (chunk = native 256-px tile) pixel for pixel.
        ds = osr.level_downsamples[1]
        assert data[1].chunksize[:2] == (256, 256)
        for cy in range(3, 6):
            for cx in range(2, 5):
                y, x = cy * 256, cx * 256
                got = np.asarray(data[1][y : y + 256, x : x + 256])
                want = _osr_rgb(osr, (round(x * ds), round(y * ds)), 1, (256, 256))
                np.testing.assert_array_equal(got, want)
        # the first chunk is anchored at (0, 0), where OpenSlide needs no resampling
        np.testing.assert_array_equal(np.asarray(data[1][:256, :256]), _osr_rgb(osr, (0, 0), 1, (256, 256)))
    slide.close()


def test_read_outside_is_white_and_closed_slide_refuses(cmu1_path):
    slide = open_slide(cmu1_path)
    out = slide.read_region((2200, 2950), 0, (64, 64))
    assert (out[30:, :] == 255).all() and (out[:, 30:] == 255).all()
    slide.close()
    with pytest.raises(Exception, match="closed"):
        slide.read_region((0, 0), 0, (8, 8))


def test_packaged_sample_opens_with_true_mpp():
    slide = open_slide(CMU1_REGION)
    assert isinstance(slide, TiffSlide)
    assert slide.level_dimensions == [(1024, 1024), (512, 512)]
    assert slide.mpp == pytest.approx((0.499, 0.499))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no conversion or missing-mpp warnings for the sample
        data, kw, _ = slide_layer_data(slide)
    assert kw["scale"] == pytest.approx((0.499, 0.499))
    rgb = np.asarray(data[0][::4, ::4]).reshape(-1, 3).astype(int)
    # H&E: many pixels that are pink/purple (red and blue above green), not a blank image
    he = (rgb[:, 0] > rgb[:, 1] + 20) & (rgb[:, 2] > rgb[:, 1] + 10)
    assert he.mean() > 0.5
    assert slide.tile_size == (256, 256)
    assert slide.tiles_read_per_level() == [16, 0]  # each 256-px JPEG tile of level 0 decoded once
    assert CMU1_REGION.stat().st_size < 1_000_000
    slide.close()
