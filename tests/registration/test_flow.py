"""The optical-flow stage on a real H&E's hematoxylin, deformed by a known smooth field."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from napari_virtual_ihc.registration import flow
from napari_virtual_ihc.registration.features import structure
from napari_virtual_ihc.slides import open_slide


def _hematoxylin(data_dir, size: int = 320) -> np.ndarray:
    slide = open_slide(data_dir / "lesion3_HE.jpg")
    rgb = slide.read_region((250, 150), 0, (size, size))
    return structure(rgb)


def test_flow_recovers_a_known_smooth_deformation_across_a_change_of_stain_levels(data_dir):
    fixed = _hematoxylin(data_dir)
    h, w = fixed.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    # a smooth field of up to 6 px: what the affine leaves between consecutive sections
    dx = 6.0 * np.sin(2 * np.pi * ys / h)
    dy = 4.0 * np.cos(2 * np.pi * xs / w)
    # the moving plane shows at x + d(x) what the fixed one shows at x, with its levels changed
    # (a pale counterstain: a monotone map the rank normalisation undoes)
    moving = ndi.map_coordinates(fixed, [ys - dy, xs - dx], order=1, mode="reflect")
    moving = 0.3 * np.sqrt(np.clip(moving, 0, None))
    d = flow.dense_flow(fixed, moving)
    inner = (slice(40, h - 40), slice(40, w - 40))
    # the truth at x: the point of the moving plane that shows fixed x is x + d_true(x + d) ~ x + d_true(x)
    err = np.hypot(d[..., 0] - dx, d[..., 1] - dy)[inner]
    before = np.hypot(dx, dy)[inner]
    print(f"flow error median {np.median(err):.2f} px (deformation median {np.median(before):.2f} px)")
    assert np.median(err) < 0.25 * np.median(before)
    assert np.percentile(err, 90) < 2.0


def test_ranks_equalise_any_monotone_change_of_levels():
    rng = np.random.default_rng(0)
    a = rng.random((40, 50)).astype(np.float32)
    np.testing.assert_array_equal(flow.ranks(a), flow.ranks(np.exp(3 * a) + 7))
    r = flow.ranks(a)
    assert r.dtype == np.uint8 and r.min() == 0 and r.max() == 255
