"""Positive or negative per nucleus for nuclear markers (Ki-67, ER, PR): mean DAB OD inside the nucleus mask.

A nucleus is positive when its mean DAB optical density reaches a cut-off. Marker profiles choose the cut-off
(``stain`` owns the named calibrations); :data:`NUCLEAR_DAB_CUTOFF` is the one chosen on the "tune" half of
the validation set (tests/data/nuclei-any-stain/README.md).
"""

from __future__ import annotations

import numpy as np

NUCLEAR_DAB_CUTOFF = 0.15  # OD; tuned on the "tune" half


def nuclear_dab_od(labels: np.ndarray, dab_od: np.ndarray) -> np.ndarray:
    """(labels.max(),) mean DAB OD of nuclei 1..max (0 for an id with no pixels)."""
    if labels.shape != dab_od.shape:
        raise ValueError(f"labels {labels.shape} and DAB {dab_od.shape} differ in shape")
    n = int(labels.max()) if labels.size else 0
    if n == 0:
        return np.zeros(0, np.float64)
    flat = labels.ravel()
    sums = np.bincount(flat, weights=dab_od.astype(np.float64).ravel(), minlength=n + 1)[1:]
    areas = np.bincount(flat, minlength=n + 1)[1:]
    return np.divide(sums, areas, out=np.zeros(n, np.float64), where=areas > 0)


def nuclear_dab_positive(
    labels: np.ndarray, dab_od: np.ndarray, cutoff: float = NUCLEAR_DAB_CUTOFF
) -> np.ndarray:
    """(labels.max(),) bool: nucleus i+1 is DAB-positive (mean DAB OD inside its mask >= ``cutoff``)."""
    return nuclear_dab_od(labels, dab_od) >= cutoff
