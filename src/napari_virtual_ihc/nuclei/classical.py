"""Classical nuclei segmentation: hematoxylin OD -> Otsu -> distance-transform watershed.

Used only when Cellpose weights cannot be had; outputs say so (method "classical").
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed


def otsu_threshold(hematoxylin_od: np.ndarray, min_od: float = 0.05) -> float:
    """Otsu cut on a hematoxylin OD map (at least ``min_od`` so blank glass stays empty)."""
    h = hematoxylin_od.astype(np.float32)
    if h.size == 0 or float(h.max()) <= min_od:
        return float("inf")
    return max(float(threshold_otsu(h)), min_od)


def segment_classical(
    hematoxylin_od: np.ndarray, diameter_px: float, threshold: float | None = None, min_od: float = 0.05
) -> np.ndarray:
    """int32 labels of nuclei in a hematoxylin OD map (nuclei bright).

    ``threshold`` (OD) should come from the whole image/slide (:func:`otsu_threshold` on an overview) so
    that tiles agree; without it Otsu runs on this array alone.
    """
    h = ndi.gaussian_filter(hematoxylin_od.astype(np.float32), max(diameter_px / 10, 0.5))
    t = otsu_threshold(h, min_od) if threshold is None else max(threshold, min_od)
    if not np.isfinite(t) or float(h.max()) <= t:
        return np.zeros(h.shape, np.int32)
    fg = ndi.binary_opening(h > t, iterations=1)
    fg = ndi.binary_fill_holes(fg)
    min_area = max(int(np.pi * (diameter_px / 4) ** 2), 4)
    fg = remove_small_objects(fg, max_size=min_area)
    dist = ndi.distance_transform_edt(fg)
    dist = ndi.gaussian_filter(dist, max(diameter_px / 10, 0.5))
    peaks = peak_local_max(
        dist, min_distance=max(int(diameter_px * 0.35), 2), labels=ndi.label(fg)[0], exclude_border=False
    )
    markers = np.zeros(h.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    return watershed(-dist, markers, mask=fg).astype(np.int32)
