"""Tissue vs blank glass from a low-resolution view: which tiles need the model at all."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage  # at import, not on the first run's path to its first tile (~0.2 s)

from ..slides.base import Slide
from .resample import low_resolution_view

# Optical density -log10(I / 255) of each 8-bit intensity (0 clipped to 1, as 0 has no finite density).
_OD_LUT = (-np.log10(np.clip(np.arange(256, dtype=np.float64), 1, 255) / 255.0)).astype(np.float32)


def tissue_mask(
    rgb: np.ndarray, min_saturation: float = 0.07, min_optical_density: float = 0.25
) -> np.ndarray:
    """Boolean mask of stained tissue in an RGB uint8 image.

    Glass is bright and grey; H&E tissue is coloured (saturation) or dense (optical density). Small specks
    (dust) are removed and the mask is grown by a couple of pixels so tissue edges are never cut off.
    """
    # Integer channel maxima and a lookup table for optical density: several times faster than float
    # reductions over the 3-long colour axis, which matters on the way to a run's first tile.
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    mx_f = mx.astype(np.float32)
    coloured = (mx_f - mn) > np.float32(min_saturation) * mx_f  # saturation (max - min) / max
    od = _OD_LUT[r] + _OD_LUT[g] + _OD_LUT[b]
    mask = (coloured & (mx_f < np.float32(0.98 * 255))) | (od > np.float32(min_optical_density * 3))
    mask = dilate_3x3(erode_3x3(mask))  # ndimage.binary_opening with a 3x3 square, ~20x faster
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        keep = sizes >= 8
        keep[0] = False
        mask = keep[labels]
    return dilate_3x3(dilate_3x3(mask))


# A 3x3 square is separable: a row pass then a column pass of three shifted copies each. Exactly what
# ``ndimage.binary_erosion`` / ``binary_dilation`` give with that structure (outside the image counts as
# background, ndimage's default ``border_value=0``), in a few vectorised boolean operations that release
# the GIL: ndimage's loop took ~45 ms per megapixel here, holding it, beside the first tiles of a run.
def erode_3x3(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1, constant_values=False)
    rows = p[:, :-2] & p[:, 1:-1] & p[:, 2:]
    return rows[:-2] & rows[1:-1] & rows[2:]


def dilate_3x3(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1, constant_values=False)
    rows = p[:, :-2] | p[:, 1:-1] | p[:, 2:]
    return rows[:-2] | rows[1:-1] | rows[2:]


def rect_has_tissue(mask: np.ndarray, mask_downsample: float, rect: tuple[int, int, int, int]) -> bool:
    """Whether ``rect`` (x, y, w, h in the mask's reference pixels, i.e. ``mask_downsample`` px per mask px)
    touches tissue; rounded outward so thin tiles still see the mask."""
    x, y, w, h = rect
    mh, mw = mask.shape
    x0 = max(0, int(np.floor(x / mask_downsample)) - 1)
    y0 = max(0, int(np.floor(y / mask_downsample)) - 1)
    x1 = min(mw, int(np.ceil((x + w) / mask_downsample)) + 1)
    y1 = min(mh, int(np.ceil((y + h) / mask_downsample)) + 1)
    if x1 <= x0 or y1 <= y0:
        return False
    return bool(mask[y0:y1, x0:x1].any())


def plane_tissue_mask(slide: Slide, d: float) -> tuple[np.ndarray, float]:
    """The tissue mask of the slide's low-resolution view and its scale (working-plane px per mask px, for a
    plane at downsample ``d`` from level 0)."""
    view, view_ds = low_resolution_view(slide)
    return tissue_mask(view), view_ds / d


def tile_tissue_flags(
    mask: np.ndarray, scale: float, cores: Iterable[tuple[int, tuple[int, int, int, int]]]
) -> dict[int, bool]:
    """{tile index: whether its core (working-plane px) touches tissue} on :func:`plane_tissue_mask`'s mask."""
    return {i: rect_has_tissue(mask, scale, core) for i, core in cores}
