"""DAB membrane masks: TDKstain's saturation recipe and optical-density bins.

TDKstain (Fig. 1a): deconvolve the IHC image, re-colour the DAB channel alone, convert it to HSV and
threshold the saturation (0.15 by default here). The OD bins follow QuPath's DAB cut-offs; the defaults
0.2 / 0.4 / 0.6 are generic and NEED CALIBRATION per lab, scanner and antibody.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .deconvolution import QUPATH_DAB, StainMatrix, deconvolve, hdab_matrix, stain_only_rgb

BIN_NAMES = ("negative", "weak", "moderate", "strong")
CALIBRATION_NOTE = (
    "DAB OD cut-offs are uncalibrated defaults (0.2/0.4/0.6); calibrate per lab/scanner/antibody"
)


@dataclass(frozen=True)
class DabBins:
    """Cut-offs (OD, log10) between negative|weak|moderate|strong; increasing."""

    weak: float = 0.2
    moderate: float = 0.4
    strong: float = 0.6
    calibrated: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.weak < self.moderate < self.strong):
            raise ValueError(f"DAB cut-offs must increase: {self.weak}, {self.moderate}, {self.strong}")

    @property
    def cutoffs(self) -> tuple[float, float, float]:
        return (self.weak, self.moderate, self.strong)


def calibration_note(bins: DabBins, name: str = "") -> str:
    """What the cut-offs in use are: a named calibration, user values, or the uncalibrated defaults."""
    cuts = f"{bins.weak:g}/{bins.moderate:g}/{bins.strong:g}"
    if name:
        return f"DAB OD cut-offs {cuts} from the calibration {name!r}"
    if bins.cutoffs != DabBins().cutoffs:
        return f"DAB OD cut-offs {cuts} as given (not a saved calibration)"
    return CALIBRATION_NOTE


def dab_bins(dab_od: np.ndarray, bins: DabBins | None = None) -> np.ndarray:
    """uint8 class per pixel: 0 negative, 1 weak, 2 moderate, 3 strong."""
    b = bins or DabBins()
    return np.digitize(dab_od, b.cutoffs).astype(np.uint8)


def bin_fractions(classes: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Share of pixels in each bin (optionally inside ``mask``)."""
    v = classes[mask] if mask is not None else classes.ravel()
    n = max(int(v.size), 1)
    counts = np.bincount(v.ravel(), minlength=4)[:4]
    return {name: float(c) / n for name, c in zip(BIN_NAMES, counts, strict=True)}


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation in [0, 1] ((max - min) / max), as skimage.color.rgb2hsv computes it."""
    a = rgb.astype(np.float32)
    mx = a.max(axis=-1)
    mn = a.min(axis=-1)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0).astype(np.float32)


def tdkstain_membrane_mask(
    rgb: np.ndarray,
    threshold: float = 0.15,
    blur_sigma_px: float = 0.0,
    stains: StainMatrix | None = None,
) -> np.ndarray:
    """TDKstain's membrane staining mask: saturation of the DAB-only image > ``threshold``."""
    s = stains if stains is not None else hdab_matrix()
    dab = deconvolve(rgb, s)["dab"]
    if blur_sigma_px > 0:
        dab = ndi.gaussian_filter(dab, blur_sigma_px)
    idx = list(s.names).index("dab")
    vector = tuple(float(x) for x in s.matrix[idx]) if s.names else QUPATH_DAB
    dab_rgb = stain_only_rgb(dab, vector)  # type: ignore[arg-type]
    return saturation(dab_rgb) > threshold
