"""TDKstain's task-specific error analysis (Peng et al. 2024, section 3 'Task-specific Domain Knowledge
Analysis'): nuclei-count error and membrane-staining-intensity error between generated and real IHC.

- nuclei: count nuclei with the core's segmenter (Cellpose when its weights can be had or a model path is
  given, the core's classical method otherwise; the method used is reported); error = generated - real;
- membrane: the DAB channel rendered alone (the core's :func:`~napari_virtual_ihc.stain.dab_only_rendering`,
  scikit-image's HED scale as in TDKstain's code), to HSV, mask = saturation > t for t = 0.10, 0.12, ...,
  0.50; error = mean over t of |mask fraction(generated) - mask fraction(real)|.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from skimage.color import rgb2hsv

from napari_virtual_ihc.nuclei import make_segmenter
from napari_virtual_ihc.stain import dab_only_rendering, deconvolve

THRESHOLDS = np.round(np.arange(0.10, 0.50 + 1e-9, 0.02), 2)
CELLPOSE_DEFAULT_DIAMETER_PX = 30.0  # cellpose's own default, which TDKstain's preprocessing keeps

NucleiCounter = Callable[[np.ndarray], int]


def dab_saturation(rgb: np.ndarray) -> np.ndarray:
    """Saturation (0..1) of the DAB-only rendering of an IHC image."""
    return rgb2hsv(dab_only_rendering(rgb))[..., 1]


def membrane_fractions(rgb: np.ndarray) -> np.ndarray:
    s = dab_saturation(rgb)
    return np.array([(s > t).mean() for t in THRESHOLDS])


def membrane_intensity_error(real: np.ndarray, fake: np.ndarray) -> float:
    return float(np.abs(membrane_fractions(fake) - membrane_fractions(real)).mean())


def default_nuclei_counter(
    method: str = "auto",
    cellpose_model: str | os.PathLike[str] = "nuclei",
    diameter_px: float = CELLPOSE_DEFAULT_DIAMETER_PX,
) -> tuple[NucleiCounter, str]:
    """The core's nuclei segmenter as a counter, and the name of the method that really runs."""
    segmenter = make_segmenter(method, cellpose_model)

    def count(rgb: np.ndarray) -> int:
        labels = segmenter(deconvolve(rgb)["hematoxylin"], diameter_px)
        return int(np.count_nonzero(np.unique(labels)))

    label = segmenter.method
    if segmenter.fallback_reason and segmenter.cellpose is None and method == "auto":
        label += f" (fallback: {segmenter.fallback_reason})"
    return count, label


def nuclei_count_error(real: np.ndarray, fake: np.ndarray, counter: NucleiCounter) -> int:
    return int(counter(fake)) - int(counter(real))
