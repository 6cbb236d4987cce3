"""Deconvolution and DAB masks on real IHC: skimage's immunohistochemistry() and the rat-kidney pan-CK."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from skimage.color import rgb2hed
from skimage.io import imread

from napari_virtual_ihc.stain import (
    DabBins,
    StainMatrix,
    StainVectorError,
    dab_bins,
    deconvolve,
    hdab_matrix,
    rgb_to_hed,
    tdkstain_membrane_mask,
)


@pytest.fixture(scope="module")
def ihc() -> np.ndarray:
    return data.immunohistochemistry()


@pytest.fixture(scope="module")
def kidney(data_dir) -> np.ndarray:
    return imread(data_dir / "Rat-Kidney_PanCytokeratin.jpg")[..., :3]


def test_hed_matches_skimage_up_to_log_base(ihc):
    ours = rgb_to_hed(ihc[ihc.min(axis=-1) > 0][None])  # no zero pixels (skimage clips them to 1e-6)
    ref = rgb2hed(ihc[ihc.min(axis=-1) > 0][None])
    np.testing.assert_allclose(ours / 6.0, np.maximum(ref, 0), atol=2e-3)


def test_pure_stains_decompose_to_themselves():
    m = hdab_matrix()
    for name, vec in (("hematoxylin", m.matrix[0]), ("dab", m.matrix[1])):
        rgb = np.clip(255 * 10 ** (-0.5 * vec), 0, 255)[None, None].repeat(4, 0).repeat(4, 1)
        d = deconvolve(rgb, m)
        other = "dab" if name == "hematoxylin" else "hematoxylin"
        assert d[name].mean() == pytest.approx(0.5, abs=0.02)
        assert d[other].mean() < 0.02


def test_bad_stain_vectors_are_refused():
    with pytest.raises(StainVectorError):
        StainMatrix(("a", "b"), ((0.6, 0.7, 0.3), (0.6, 0.7, 0.3)))
    with pytest.raises(StainVectorError):
        StainMatrix(("a", "b"), ((0, 0, 0), (0.3, 0.5, 0.7)))
    with pytest.raises(ValueError):
        DabBins(0.4, 0.2, 0.6)


def _brown_and_blue(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels brown or blue by plain colour, independent of the deconvolution under test."""
    r, g, b = (rgb[..., i].astype(float) for i in range(3))
    brown = (r > b + 25) & (g > b + 5) & (r < 200)
    blue = (b > r + 15) & (b < 200)
    return brown, blue


@pytest.mark.parametrize("which", ["ihc", "kidney"])
def test_dab_bins_brown_positive_blue_negative(which, ihc, kidney):
    rgb = ihc if which == "ihc" else kidney
    d = deconvolve(rgb)
    classes = dab_bins(d["dab"])
    brown, blue = _brown_and_blue(rgb)
    assert brown.sum() > 500 and blue.sum() > 500
    assert (classes[brown] >= 1).mean() > 0.8
    assert (classes[blue] == 0).mean() > 0.8
    # strong bins darker than weak ones (monotone in real brown intensity)
    lum = rgb.astype(float).mean(axis=-1)
    assert lum[classes == 3].mean() < lum[classes == 1].mean()
    mask = tdkstain_membrane_mask(rgb)
    assert mask[brown].mean() > 0.8 and mask[blue].mean() < 0.2


def test_hematoxylin_and_dab_anticorrelated_on_stained_cells(ihc):
    d = deconvolve(ihc)
    stained = (d["hematoxylin"] + d["dab"]) > 0.3
    r = np.corrcoef(d["hematoxylin"][stained], d["dab"][stained])[0, 1]
    assert r < -0.3, r
