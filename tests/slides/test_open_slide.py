"""open_slide on real slides: levels, µm/px, pixels identical to OpenSlide, lazy layer data."""

from __future__ import annotations

import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import openslide
import pytest
import tifffile

from napari_virtual_ihc.slides import ArraySlide, Slide, open_slide
from napari_virtual_ihc.slides.layers import MissingMppWarning, slide_layer_data


def _openslide_rgb(path: Path, loc: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as osr:
        rgba = np.asarray(osr.read_region(loc, level, size))
    assert (rgba[..., 3] == 255).all(), "region chosen inside the slide"
    return rgba[..., :3]


def test_cmu1_levels_mpp_metadata(cmu1_path: Path) -> None:
    with open_slide(cmu1_path) as slide:
        assert slide.level_dimensions == [(2220, 2967)]
        assert slide.mpp == pytest.approx((0.499, 0.499))
        assert slide.vendor == "aperio"
        assert slide.objective_power == 20.0
        md = slide.metadata()
        assert md["mpp_known"] is True
        assert md["level_dimensions"] == [[2220, 2967]]
        assert set(md["associated_images"]) == {"label", "macro", "thumbnail"}
        for name in md["associated_images"]:
            img = slide.associated_image(name)
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.size > 0
        with pytest.raises(KeyError):
            slide.associated_image("no-such-image")
        thumb = slide.thumbnail(256)
        assert max(thumb.shape[:2]) == 256 and thumb.dtype == np.uint8


def test_cmu1_layer_data_matches_openslide_pixel_for_pixel(cmu1_path: Path) -> None:
    slide = open_slide(cmu1_path)
    data, kwargs, kind = slide_layer_data(slide)
    assert kind == "image"
    assert kwargs["multiscale"] is True and kwargs["rgb"] is True
    assert kwargs["scale"] == pytest.approx((0.499, 0.499))
    assert kwargs["units"] == ("um", "um")
    assert kwargs["contrast_limits"] == (0, 255)
    assert kwargs["name"] == "CMU-1-Small-Region"
    assert kwargs["metadata"]["slide"] is slide and kwargs["metadata"]["mpp_known"] is True
    assert [a.shape for a in data] == [(2967, 2220, 3)]
    assert all(isinstance(a, da.Array) and a.dtype == np.uint8 for a in data)
    assert max(data[0].chunksize[:2]) <= 1024, "level 0 must be read in tiles, never whole"
    # a region straddling dask chunk borders, through the layer's dask data
    y, x, h, w = 1000, 700, 700, 900
    mine = data[0][y : y + h, x : x + w].compute()
    np.testing.assert_array_equal(mine, _openslide_rgb(cmu1_path, (x, y), 0, (w, h)))
    slide.close()
    assert slide.closed


def test_tcga_two_level_jpeg2000_no_mpp(tcga_path: Path) -> None:
    slide = open_slide(tcga_path)
    assert slide.level_dimensions == [(4443, 3567), (2221, 1783)]
    assert slide.mpp is None
    with pytest.warns(MissingMppWarning, match="pixel size"):
        data, kwargs, _ = slide_layer_data(slide)
    assert [a.shape for a in data] == [(3567, 4443, 3), (1783, 2221, 3)]
    assert kwargs["scale"] == (1.0, 1.0)
    assert kwargs["metadata"]["mpp_known"] is False
    # Level 1: OpenSlide takes level-0 locations and interpolates when location / downsample (2.0005
    # here) is fractional, so each dask chunk is exactly OpenSlide's read_region at the chunk's level-0
    # location; check a 2 x 2 block of chunks pixel for pixel.
    c = data[1].chunksize[0]
    ds = slide.level_downsamples[1]
    mine = data[1][c : 3 * c, c : 3 * c].compute()
    for iy in (1, 2):
        for ix in (1, 2):
            ref = _openslide_rgb(tcga_path, (round(ix * c * ds), round(iy * c * ds)), 1, (c, c))
            np.testing.assert_array_equal(mine[(iy - 1) * c : iy * c, (ix - 1) * c : ix * c], ref)
    mine0 = data[0][2000:2300, 1500:1900].compute()
    np.testing.assert_array_equal(mine0, _openslide_rgb(tcga_path, (1500, 2000), 0, (400, 300)))
    slide.close()


def test_read_region_outside_is_white(cmu1_path: Path) -> None:
    with open_slide(cmu1_path) as slide:
        out = slide.read_region((2100, -50), 0, (200, 100))
        assert out.shape == (100, 200, 3)
        assert (out[:50] == 255).all() and (out[:, 120:] == 255).all()
        assert not (out[60:, :100] == 255).all()


def test_sample_tiff_opens_with_true_mpp(sample_tif: Path, cmu1_path: Path) -> None:
    slide = open_slide(sample_tif)
    assert type(slide).__name__ == "TiffSlide"
    assert slide.level_dimensions == [(1024, 1024), (512, 512)]
    assert slide.mpp == pytest.approx((0.499, 0.499))
    data, kwargs, _ = slide_layer_data(slide)
    assert kwargs["scale"] == pytest.approx((0.499, 0.499))
    assert data[0].chunksize[:2] == (256, 256)  # the file's native tiles
    region = data[0][100:400, 200:600].compute()
    ref = _openslide_rgb(cmu1_path, (768 + 200, 1664 + 100), 0, (400, 300))
    # JPEG re-encoding (quality 95): close to the source, not identical; a 1-px shift would be far worse
    assert np.abs(region.astype(int) - ref.astype(int)).mean() < 8
    shifted = _openslide_rgb(cmu1_path, (768 + 201, 1664 + 100), 0, (400, 300))
    assert np.abs(region.astype(int) - shifted.astype(int)).mean() > 12
    assert sample_tif.stat().st_size < 1_000_000
    slide.close()


def test_ome_tiff_pyramid_physical_size(tmp_path: Path, he_full: np.ndarray) -> None:
    p = tmp_path / "pyr.ome.tif"
    lvl1 = he_full[::2, ::2]
    with tifffile.TiffWriter(p) as tw:
        meta = {"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.26, "PhysicalSizeXUnit": "µm"}
        opts = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
        tw.write(he_full, subifds=1, metadata=meta, **opts)
        tw.write(lvl1, subfiletype=1, **opts)
    slide = open_slide(p)
    assert slide.vendor == "ome-tiff"
    assert slide.level_dimensions == [(1000, 1000), (500, 500)]
    assert slide.mpp == pytest.approx((0.25, 0.26))
    np.testing.assert_array_equal(slide.read_region((100, 200), 0, (300, 250)), he_full[200:450, 100:400])
    np.testing.assert_array_equal(slide.read_region((200, 400), 1, (100, 50)), lvl1[200:250, 100:200])
    data, kwargs, _ = slide_layer_data(slide, name="mine")
    assert kwargs["name"] == "mine" and kwargs["scale"] == pytest.approx((0.26, 0.25))
    np.testing.assert_array_equal(data[1].compute(), lvl1)
    slide.close()


def test_series_level_pyramid_and_resolution_tags(tmp_path: Path, he_full: np.ndarray) -> None:
    """A pyramid stored as reduced-resolution pages (not SubIFDs), mpp from XResolution in cm."""
    p = tmp_path / "pages.tif"
    with tifffile.TiffWriter(p) as tw:
        res = (1e4 / 0.5, 1e4 / 0.5)
        tw.write(he_full, tile=(256, 256), photometric="rgb", resolution=res, resolutionunit="CENTIMETER")
        tw.write(he_full[::4, ::4], tile=(256, 256), photometric="rgb", subfiletype=1)
    slide = open_slide(p)
    assert slide.level_count >= 1
    assert slide.dimensions == (1000, 1000)
    assert slide.mpp == pytest.approx((0.5, 0.5))
    np.testing.assert_array_equal(slide.read_region((0, 0), 0, (1000, 1000)), he_full)
    slide.close()


def test_plain_tiff_screen_dpi_is_not_mpp(tmp_path: Path, he_full: np.ndarray) -> None:
    """A 72-dpi resolution tag (352 µm/px) is not a microscope pixel size: treated as unknown."""
    p = tmp_path / "plain.tiff"
    tifffile.imwrite(p, he_full, photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    with open_slide(p) as slide:
        assert slide.mpp is None
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (1000, 1000)), he_full)


def test_png_and_jpeg_open_as_one_level(data_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an RGB PNG needs no conversion
        png = open_slide(data_dir / "tiatoolbox-target-image.png")
    assert png.level_dimensions == [(1000, 1000)] and png.mpp is None
    jpg = open_slide(data_dir / "Rat-Kidney_HE.jpg")
    assert jpg.level_count == 1 and jpg.read_region((0, 0), 0, (10, 10)).shape == (10, 10, 3)


def test_array_slide_layer_data() -> None:
    arr = np.zeros((300, 700, 3), np.uint8)
    arr[:, 350:] = 200
    s: Slide = ArraySlide(arr, mpp=0.5)
    data, kwargs, _ = slide_layer_data(s)
    assert kwargs["scale"] == (0.5, 0.5) and kwargs["name"] == "slide"
    np.testing.assert_array_equal(data[0].compute(), arr)


def test_dask_names_unique_per_layer(tmp_path: Path, he_full: np.ndarray) -> None:
    """napari caches dask chunks by task name: two slides must never share names, even at the same id()."""
    a = ArraySlide(he_full)
    b = ArraySlide(he_full[::-1].copy())
    da_a = slide_layer_data(a)[0][0]
    da_b = slide_layer_data(b)[0][0]
    assert da_a.name != da_b.name
    assert slide_layer_data(a)[0][0].name != da_a.name
