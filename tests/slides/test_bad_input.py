"""Every bad or unusual input the issue lists: a typed error naming the file, or a documented conversion."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_virtual_ihc._reader import napari_get_reader
from napari_virtual_ihc.slides import (
    CorruptSlideError,
    SlideConversionWarning,
    UnsupportedFormatError,
    UnsupportedImageError,
    open_slide,
)
from napari_virtual_ihc.slides.layers import slide_layer_data

from .conftest import write_palette_png, write_png, write_tiff


def _all_pixels(path: Path) -> np.ndarray:
    with open_slide(path) as s:
        w, h = s.dimensions
        return s.read_region((0, 0), 0, (w, h))


# --- typed errors -----------------------------------------------------------------------------------------
def test_text_file_renamed_svs(tmp_path):
    p = tmp_path / "notes.svs"
    p.write_text("Patient 12, block B: H&E, see slide 3\n" * 20)
    with pytest.raises(CorruptSlideError, match=r"notes\.svs.*not an image format"):
        open_slide(p)


@pytest.mark.parametrize("ext", [".svs", ".ndpi", ".tif", ".png", ".jpg"])
def test_zero_size_file(tmp_path, ext):
    p = tmp_path / f"empty{ext}"
    p.touch()
    with pytest.raises(CorruptSlideError, match=r"empty.*0 bytes"):
        open_slide(p)


@pytest.mark.parametrize("keep", [0.001, 0.3, 0.67, 0.999])
def test_truncated_svs(tmp_path, cmu1_path, keep):
    data = cmu1_path.read_bytes()
    p = tmp_path / "cut.svs"
    p.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CorruptSlideError, match=r"cut\.svs.*(truncated|corrupt)"):
        open_slide(p)


def test_truncated_tiff_and_png(tmp_path, data_dir):
    from napari_virtual_ihc._sample_data import CMU1_REGION

    tif = tmp_path / "cut.tif"
    tif.write_bytes(CMU1_REGION.read_bytes()[:200_000])
    with pytest.raises(CorruptSlideError, match=r"cut\.tif"):
        open_slide(tif)
    png = tmp_path / "cut.png"
    png.write_bytes((data_dir / "tiatoolbox-target-image.png").read_bytes()[:50_000])
    with pytest.raises(CorruptSlideError, match=r"cut\.png.*(truncated|corrupt)"):
        open_slide(png)


def test_unsupported_extension(tmp_path, cmu1_path):
    p = tmp_path / "slide.czi"
    shutil.copy(cmu1_path, p)  # even with real slide content, the extension is not one we read
    with pytest.raises(UnsupportedFormatError, match=r"slide\.czi.*unsupported file type '\.czi'"):
        open_slide(p)
    assert napari_get_reader(str(p)) is None


def test_content_does_not_match_extension(tmp_path, data_dir):
    p = tmp_path / "really_png.tif"
    shutil.copy(data_dir / "tiatoolbox-target-image.png", p)
    with pytest.raises(CorruptSlideError, match=r"really_png\.tif.*content is PNG"):
        open_slide(p)


def test_directory_that_is_not_a_zarr_store(tmp_path):
    d = tmp_path / "folder"
    d.mkdir()
    (d / "a.txt").write_text("x")
    with pytest.raises(UnsupportedFormatError, match="not an OME-Zarr"):
        open_slide(d)
    assert napari_get_reader(str(d)) is None


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        open_slide(tmp_path / "nope.svs")


@pytest.mark.parametrize(
    ("channels", "names"),
    [
        (5, ["DAPI", "CD3", "CD8", "PD-L1", "PanCK"]),
        (3, ["DAPI", "FITC", "TRITC"]),
        (2, ["DAPI", "GFP"]),
    ],
)
def test_multichannel_ome_tiff_refused(tmp_path, channels, names):
    p = tmp_path / "mif.ome.tif"
    arr = np.random.default_rng(0).integers(0, 4000, (channels, 64, 80), dtype=np.uint16)
    tifffile.imwrite(p, arr, ome=True, metadata={"axes": "CYX", "Channel": {"Name": names}})
    with pytest.raises(UnsupportedImageError, match=r"mif\.ome\.tif.*channels"):
        open_slide(p)


def test_many_samples_per_pixel_refused(tmp_path):
    p = write_tiff(tmp_path / "spectral.tif", np.zeros((32, 32, 6), np.uint8), planarconfig="contig")
    with pytest.raises(UnsupportedImageError, match=r"spectral\.tif.*(samples|channels)"):
        open_slide(p)


# --- conversions ------------------------------------------------------------------------------------------
def test_rgb_ome_tiff_channels_and_physical_size(tmp_path, he_rgb):
    p = tmp_path / "rgb.ome.tiff"
    tifffile.imwrite(
        p,
        np.moveaxis(he_rgb, -1, 0),
        ome=True,
        metadata={
            "axes": "CYX",
            "Channel": {"Name": ["R", "G", "B"]},
            "PhysicalSizeX": 0.5,
            "PhysicalSizeY": 0.5,
        },
    )
    with open_slide(p) as s:
        assert s.mpp == pytest.approx((0.5, 0.5))
        np.testing.assert_array_equal(s.read_region((0, 0), 0, (300, 200)), he_rgb)
        _data, kw, _ = slide_layer_data(s, name=None)
        assert kw["name"] == "rgb" and kw["scale"] == pytest.approx((0.5, 0.5))


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_grayscale_becomes_rgb_with_warning(tmp_path, he_rgb, fmt):
    gray = he_rgb[..., 1].copy()
    p = tmp_path / f"gray.{fmt}"
    write_png(p, gray) if fmt == "png" else write_tiff(p, gray)
    with pytest.warns(SlideConversionWarning, match="grayscale"):
        got = _all_pixels(p)
    np.testing.assert_array_equal(got, np.repeat(gray[..., None], 3, axis=-1))


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_rgba_composited_on_white(tmp_path, he_rgb, fmt):
    alpha = np.zeros(he_rgb.shape[:2], np.uint8)
    alpha[:, 150:] = 255
    alpha[:, 100:150] = 128
    rgba = np.dstack([he_rgb, alpha])
    p = tmp_path / f"rgba.{fmt}"
    write_png(p, rgba) if fmt == "png" else write_tiff(
        p, rgba, photometric="rgb", extrasamples=["unassalpha"]
    )
    with pytest.warns(SlideConversionWarning, match="alpha"):
        got = _all_pixels(p)
    assert (got[:, :100] == 255).all()  # transparent -> white glass
    np.testing.assert_array_equal(got[:, 150:], he_rgb[:, 150:])  # opaque -> unchanged
    half = np.rint(he_rgb[:, 100:150] * (128 / 255) + 255 * (127 / 255))
    assert np.abs(got[:, 100:150].astype(int) - half).max() <= 1


@pytest.mark.parametrize("fmt", ["png", "tif"])
def test_16bit_rescaled_to_8bit_with_warning(tmp_path, he_rgb, fmt):
    rgb16 = he_rgb.astype(np.uint16) * 257  # the exact 16-bit version of the 8-bit image
    p = tmp_path / f"deep.{fmt}"
    write_png(p, rgb16) if fmt == "png" else write_tiff(p, rgb16, photometric="rgb")
    with pytest.warns(SlideConversionWarning, match="uint16 samples rescaled to 8-bit"):
        got = _all_pixels(p)
    lo, hi = int(he_rgb.min()), int(he_rgb.max())  # range fixed from the image itself
    want = np.rint((he_rgb.astype(np.float64) - lo) * 255.0 / (hi - lo)).astype(np.uint8)
    assert np.abs(got.astype(int) - want).max() <= 1
    assert got.min() == 0 and got.max() == 255


def test_palette_png_and_tiff(tmp_path, he_rgb):
    p, want = write_palette_png(tmp_path / "pal.png", he_rgb)
    with pytest.warns(SlideConversionWarning, match="palette"):
        got = _all_pixels(p)
    np.testing.assert_array_equal(got, want)
    # a palette TIFF: 8-bit indices plus a 16-bit colormap
    idx = (he_rgb[..., 0] // 16).astype(np.uint8)
    cmap = np.zeros((3, 256), np.uint16)
    cmap[0, :16] = np.arange(16) * 4369
    cmap[1, :16] = 65535 - np.arange(16) * 4369
    cmap[2, :16] = 30000
    t = write_tiff(tmp_path / "pal.tif", idx, photometric="palette", colormap=cmap)
    with pytest.warns(SlideConversionWarning, match="palette"):
        got = _all_pixels(t)
    lut = np.rint(cmap.T.astype(np.float64) * 255 / 65535).astype(np.uint8)
    assert np.abs(got.astype(int) - lut[idx].astype(int)).max() <= 1


@pytest.mark.parametrize("shape", [(1, 1), (2, 3)])
def test_single_tiny_level(tmp_path, he_rgb, shape):
    tiny = np.ascontiguousarray(he_rgb[: shape[0], : shape[1]])
    for p in (
        write_png(tmp_path / "tiny.png", tiny),
        write_tiff(tmp_path / "tiny.tif", tiny, photometric="rgb"),
    ):
        with open_slide(p) as s, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data, _kw, _ = slide_layer_data(s)
            assert len(data) == 1 and data[0].shape == (*shape, 3)
            np.testing.assert_array_equal(np.asarray(data[0]), tiny)
            assert s.thumbnail(64).shape == (*shape, 3)


def test_cmyk_jpeg_converted_to_rgb(tmp_path, he_rgb):
    from PIL import Image

    p = tmp_path / "print.jpg"
    Image.fromarray(he_rgb).convert("CMYK").save(p, quality=95)
    with pytest.warns(SlideConversionWarning, match="CMYK"):
        got = _all_pixels(p)
    assert np.abs(got.astype(int) - he_rgb.astype(int)).mean() < 4


def test_slide_in_metadata_survives_deepcopy(cmu1_path):
    import copy

    with open_slide(cmu1_path) as s:
        _, kw, _ = slide_layer_data(s)
        md = copy.deepcopy(kw["metadata"])  # napari copies metadata, e.g. when duplicating a layer
        assert md["slide"] is s and md["mpp"] == [0.499, 0.499]
