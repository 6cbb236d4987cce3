"""Offline nuclei on any stain: multi-scale LoG blobs at the expected nucleus size, then a seeded watershed.

Nuclei are compact blobs of optical density about one diameter across, whatever colours them. A
scale-normalised Laplacian of Gaussian (LoG) at radii around the expected one (from µm/px) peaks once at each
nucleus centre, also where nuclei touch, where a threshold-then-split method merges them. Seeds are the LoG
maxima whose response clears a share of the slide-level cut (``threshold``, calibrated on an overview so tiles
agree); masks come from a watershed of the smoothed signal from those seeds inside a hysteresis mask.

The signal is the nuclear optical density of the stain (:func:`stain_signal`): hematoxylin on H&E; H + DAB
when DAB is nuclear (Ki-67, ER, PR: stained nuclei are brown, not blue); hematoxylin minus DAB when DAB is on
membranes or in cytoplasm, so stained membranes become troughs between the nuclei of touching cells.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import watershed

from .classical import check_compartment, nuclear_od, nuclear_signal, otsu_threshold

RADIUS_FACTORS = (0.7, 1.0, 1.4)  # LoG radii tried, as shares of the expected radius
SEED_SHARE = 0.35  # a seed's LoG response must reach this share of the cut (tuned on the "tune" half)
MASK_SHARE = 0.6  # mask: smoothed signal above this share of the cut, grown from the seeds


def stain_signal(hematoxylin_od: np.ndarray, dab_od: np.ndarray | None, dab_compartment: str) -> np.ndarray:
    """The optical density in which nuclei are bright on this stain (see the module docstring)."""
    check_compartment(dab_compartment)
    if dab_od is None:
        return hematoxylin_od.astype(np.float32)
    if dab_compartment == "nuclear":
        return nuclear_od(hematoxylin_od, dab_od, dab_compartment).astype(np.float32)
    return nuclear_signal(hematoxylin_od, dab_od)


def log_response(signal: np.ndarray, radius_px: float) -> np.ndarray:
    """Max over scales of the scale-normalised LoG (-sigma² ∇²G), blobs of radius ~ ``radius_px`` positive."""
    best = np.full(signal.shape, -np.inf, np.float32)
    for f in RADIUS_FACTORS:
        sigma = max(radius_px * f / np.sqrt(2.0), 0.7)
        r = -(sigma**2) * ndi.gaussian_laplace(signal, sigma)
        np.maximum(best, r.astype(np.float32), out=best)
    return best


def segment_blobs(
    hematoxylin_od: np.ndarray,
    diameter_px: float,
    threshold: float | None = None,
    dab_od: np.ndarray | None = None,
    dab_compartment: str = "membrane",
    min_od: float = 0.05,
) -> np.ndarray:
    """int32 nuclei labels. ``threshold``: the cut in the stain signal's OD (from an overview, see
    :meth:`NucleiSegmenter.calibrate`); without it Otsu runs on this array alone."""
    signal = stain_signal(hematoxylin_od, dab_od, dab_compartment)
    radius = max(diameter_px / 2.0, 1.5)
    t = otsu_threshold(signal, min_od) if threshold is None else max(threshold, min_od)
    if not np.isfinite(t) or signal.size == 0 or float(signal.max()) <= min_od:
        return np.zeros(signal.shape, np.int32)
    response = log_response(signal, radius)
    smooth = ndi.gaussian_filter(signal, max(radius / 4.0, 0.5))
    peaks = peak_local_max(
        response,
        min_distance=max(int(round(radius * 0.8)), 2),
        threshold_abs=SEED_SHARE * t,
        exclude_border=False,
    )
    if len(peaks):
        peaks = peaks[smooth[tuple(peaks.T)] >= MASK_SHARE * t]
    markers = np.zeros(signal.shape, np.int32)
    if not len(peaks):
        return markers
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    # each nucleus may reach at most ~1.5 radii from its seed, so a seed in a faint field stays a nucleus
    near = ndi.distance_transform_edt(markers == 0) <= 1.5 * radius
    mask = (smooth >= MASK_SHARE * t) & near
    return watershed(-smooth, markers, mask=mask).astype(np.int32)
