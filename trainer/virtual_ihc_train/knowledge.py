"""TDKstain's task-specific error analysis (Peng et al. 2024, section 3 'Task-specific Domain Knowledge
Analysis'): nuclei-count error and membrane-staining-intensity error between generated and real IHC.

- nuclei: count nuclei on the haematoxylin channel of both images; error = generated - real count;
- membrane: the DAB channel (HED deconvolution) rendered alone, to HSV, mask = saturation > t for
  t = 0.10, 0.12, ..., 0.50; error = mean over t of |mask fraction(generated) - mask fraction(real)|.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

THRESHOLDS = np.round(np.arange(0.10, 0.50 + 1e-9, 0.02), 2)

NucleiCounter = Callable[[np.ndarray], int]


def hed(rgb: np.ndarray) -> np.ndarray:
    """HED optical densities (H, W, 3), the project's deconvolution when available, else scikit-image's."""
    try:
        from napari_virtual_ihc import stain

        fn = getattr(stain, "rgb_to_hed", None)
        if fn is not None:
            return np.asarray(fn(rgb), dtype=np.float64)
    except ImportError:  # pragma: no cover
        pass
    from skimage.color import rgb2hed

    return rgb2hed(rgb)


def dab_saturation(rgb: np.ndarray) -> np.ndarray:
    """Saturation (0..1) of the DAB-only rendering of an IHC image."""
    from skimage.color import hed2rgb, rgb2hsv

    d = hed(rgb)
    only_dab = np.zeros_like(d)
    only_dab[..., 2] = d[..., 2]
    return rgb2hsv(np.clip(hed2rgb(only_dab), 0, 1))[..., 1]


def membrane_fractions(rgb: np.ndarray) -> np.ndarray:
    s = dab_saturation(rgb)
    return np.array([(s > t).mean() for t in THRESHOLDS])


def membrane_intensity_error(real: np.ndarray, fake: np.ndarray) -> float:
    return float(np.abs(membrane_fractions(fake) - membrane_fractions(real)).mean())


def classical_nuclei_count(rgb: np.ndarray, min_area: int = 20) -> int:
    """Otsu on haematoxylin, opening, connected components larger than ``min_area`` px (TDKstain's
    preprocessing, without its Cellpose step)."""
    from skimage.filters import threshold_otsu
    from skimage.measure import label, regionprops
    from skimage.morphology import disk, opening

    h = hed(rgb)[..., 0]
    if np.ptp(h) == 0:
        return 0
    mask = opening(h > threshold_otsu(h), disk(2))
    return sum(1 for r in regionprops(label(mask)) if r.area >= min_area)


def default_nuclei_counter() -> tuple[NucleiCounter, str]:
    """The project's nuclei segmenter (Cellpose when it can run, its fallback otherwise) or the classical count."""
    try:
        from napari_virtual_ihc import nuclei

        fn = getattr(nuclei, "count_nuclei", None)
        if fn is not None:
            return (lambda rgb: int(fn(rgb))), "napari_virtual_ihc.nuclei.count_nuclei"
    except ImportError:  # pragma: no cover
        pass
    return classical_nuclei_count, "classical (Otsu on haematoxylin + connected components)"


def nuclei_count_error(real: np.ndarray, fake: np.ndarray, counter: NucleiCounter) -> int:
    return int(counter(fake)) - int(counter(real))
