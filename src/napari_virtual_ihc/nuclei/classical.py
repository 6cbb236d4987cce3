"""Classical nuclei segmentation: hematoxylin OD -> Otsu -> distance-transform watershed.

Used only when Cellpose weights cannot be had; outputs say so (method "classical").

On IHC the DAB OD is passed too: nuclei of stained cells sit inside brown membranes that touch their
neighbours', so hematoxylin alone merges them into one blob (and one centroid). There the seeds and the
watershed landscape use the nuclear signal (hematoxylin intensity plus distance to the blob edge) minus the
DAB OD, so membranes become ridges between cells, as TDKstain separates cells on its DAB membrane mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import apply_hysteresis_threshold, threshold_otsu
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed

HYSTERESIS_LOW = 0.8  # IHC: low cut of the hysteresis, as a share of the Otsu cut


def otsu_threshold(hematoxylin_od: np.ndarray, min_od: float = 0.05) -> float:
    """Otsu cut on a hematoxylin OD map (at least ``min_od`` so blank glass stays empty)."""
    h = hematoxylin_od.astype(np.float32)
    if h.size == 0 or float(h.max()) <= min_od:
        return float("inf")
    return max(float(threshold_otsu(h)), min_od)


def nuclear_signal(hematoxylin_od: np.ndarray, dab_od: np.ndarray) -> np.ndarray:
    """Hematoxylin minus DAB OD, clipped at 0: nuclei bright, stained membranes dark (also Cellpose's input
    on IHC)."""
    if hematoxylin_od.shape != dab_od.shape:
        raise ValueError(f"hematoxylin {hematoxylin_od.shape} and DAB {dab_od.shape} differ in shape")
    return np.maximum(hematoxylin_od.astype(np.float32) - dab_od.astype(np.float32), 0.0)


DAB_COMPARTMENTS = ("membrane", "nuclear", "cytoplasm")


def check_compartment(dab_compartment: str) -> None:
    """A clear error for a compartment name that is not one of :data:`DAB_COMPARTMENTS`."""
    if dab_compartment not in DAB_COMPARTMENTS:
        raise ValueError(f"dab_compartment must be one of {DAB_COMPARTMENTS}, not {dab_compartment!r}")


def dab_is_nuclear(dab_od: np.ndarray | None, dab_compartment: str) -> bool:
    """DAB is given and stains nuclei (Ki-67, ER, PR): nuclei are then found on H + DAB, not on H alone."""
    return dab_od is not None and dab_compartment == "nuclear"


def nuclear_od(hematoxylin_od: np.ndarray, dab_od: np.ndarray | None, dab_compartment: str) -> np.ndarray:
    """The optical density nuclei show on this stain: H + DAB when DAB is nuclear (Ki-67, ER, PR), else H."""
    check_compartment(dab_compartment)
    if dab_od is None or not dab_is_nuclear(dab_od, dab_compartment):
        return hematoxylin_od
    if hematoxylin_od.shape != dab_od.shape:
        raise ValueError(f"hematoxylin {hematoxylin_od.shape} and DAB {dab_od.shape} differ in shape")
    return hematoxylin_od.astype(np.float32) + dab_od.astype(np.float32)


def segment_classical(
    hematoxylin_od: np.ndarray,
    diameter_px: float,
    threshold: float | None = None,
    min_od: float = 0.05,
    dab_od: np.ndarray | None = None,
    dab_compartment: str = "membrane",
) -> np.ndarray:
    """int32 labels of nuclei in a hematoxylin OD map (nuclei bright).

    ``threshold`` (OD) should come from the whole image/slide (:func:`otsu_threshold` on an overview) so
    that tiles agree; without it Otsu runs on this array alone. ``dab_od`` (IHC) with ``dab_compartment``
    "membrane" or "cytoplasm": DAB-stained membranes separate the nuclei of touching stained cells (see the
    module docstring); "nuclear": DAB is nuclear signal, nuclei are found on H + DAB.
    """
    if dab_is_nuclear(dab_od, dab_compartment):
        hematoxylin_od, dab_od = nuclear_od(hematoxylin_od, dab_od, dab_compartment), None
    check_compartment(dab_compartment)
    sigma = max(diameter_px / 10, 0.5)
    h = ndi.gaussian_filter(hematoxylin_od.astype(np.float32), sigma)
    t = otsu_threshold(h, min_od) if threshold is None else max(threshold, min_od)
    if not np.isfinite(t) or float(h.max()) <= t:
        return np.zeros(h.shape, np.int32)
    if dab_od is None:
        fg = h > t
    else:  # nuclei of stained cells are paler: keep their rims when connected to a core above the cut
        fg = apply_hysteresis_threshold(h, HYSTERESIS_LOW * t, t)
    fg = ndi.binary_opening(fg, iterations=1)
    fg = ndi.binary_fill_holes(fg)
    min_area = max(int(np.pi * (diameter_px / 4) ** 2), 4)
    fg = remove_small_objects(fg, max_size=min_area)
    dist = ndi.distance_transform_edt(fg)
    dist = ndi.gaussian_filter(dist, sigma)
    surface = dist
    if dab_od is not None:
        # OD units: hematoxylin counts as it is, half a radius of depth adds as much as the brightest
        # nucleus, DAB subtracts (membranes become ridges of -surface)
        scale = max(float(h.max()), 1e-6)
        b = ndi.gaussian_filter(dab_od.astype(np.float32), sigma)
        surface = (h + 0.5 * scale * dist / max(diameter_px / 2, 1.0) - b).astype(np.float32)
    peaks = peak_local_max(
        surface, min_distance=max(int(diameter_px * 0.35), 2), labels=ndi.label(fg)[0], exclude_border=False
    )
    markers = np.zeros(h.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1, dtype=np.int32)
    return watershed(-surface, markers, mask=fg).astype(np.int32)
