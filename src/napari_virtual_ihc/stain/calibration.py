"""Per-slide stain calibration: the glass white point and the stain vectors, estimated from the pixels.

Optical density is only meaningful against the slide's own background (a grey or yellow scan shifts every
OD if 255 is assumed) and with the lab's own stain vectors. QuPath asks users to estimate both per image;
here they are estimated from an overview of the slide or region, shown and editable in the overlay widget,
and recorded with every result. Everything reads pixels only, so real and virtual IHC are treated alike.

- White point: the median colour of glass, where glass is what has OD < ``GLASS_OD`` against a provisional
  white (the 99.5th percentile per channel); without enough glass, that brightest percentile itself (said so).
- Stain vectors: Macenko et al. (ISBI 2009): SVD of tissue ODs (OD norm > ``TISSUE_OD``, the 0.15 beta of
  the paper), the plane of the two leading directions, robust extreme angles (``alpha`` = 1 percentile),
  each extreme assigned to the reference stain it is closest to. Degenerate regions are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .deconvolution import StainMatrix, StainVectorError, hdab_matrix

GLASS_OD = (
    0.03  # per-channel OD (vs the brightest percentile) below which a pixel counts as glass (within 7 %)
)
TISSUE_OD = 0.15  # Macenko's beta: OD norm of pixels used for the vector estimate
MIN_GLASS_FRACTION = 0.005
GLASS_AREA_PX = 7  # glass is flat over at least this square (overview pixels)
MIN_TISSUE_PIXELS = 2000
MIN_STAIN_ANGLE_DEG = 10.0  # two estimated vectors closer than this are one stain
MIN_REFERENCE_COSINE = 0.85  # an estimate further than ~32 degrees from its reference is not that stain


class StainEstimationError(ValueError):
    """The region cannot give stain vectors (too little tissue, a single stain, or implausible vectors)."""


@dataclass(frozen=True)
class StainCalibration:
    """Stains used for every OD computation of one analysis, and where each part came from."""

    stains: StainMatrix = field(default_factory=hdab_matrix)
    background_source: str = "default"  # default | glass | brightest-percentile | user
    vectors_source: str = "default"  # default | estimated | user
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.stains.names),
            "vectors": [list(v) for v in self.stains.matrix[: len(self.stains.names)].round(4).tolist()],
            "background": [round(float(b), 2) for b in self.stains.background],
            "background_source": self.background_source,
            "vectors_source": self.vectors_source,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StainCalibration:
        vectors = tuple(_triple(v) for v in d["vectors"])
        stains = StainMatrix(tuple(d["names"]), vectors, _triple(d["background"]))
        return cls(stains, d["background_source"], d["vectors_source"], tuple(d.get("notes", ())))


def _triple(v: Any) -> tuple[float, float, float]:
    a, b, c = (float(x) for x in v)
    return (a, b, c)


def _rgb_pixels(rgb: np.ndarray) -> np.ndarray:
    a = np.asarray(rgb)
    if a.ndim < 2 or a.shape[-1] not in (3, 4) or a.size == 0:
        raise ValueError(f"expected an RGB image (h, w, 3), got shape {a.shape}")
    return a[..., :3].reshape(-1, 3).astype(np.float64)


def estimate_background(rgb: np.ndarray) -> tuple[tuple[float, float, float], str]:
    """(white point RGB, source): the glass colour, or the brightest percentile when there is no glass."""
    px = _rgb_pixels(rgb)
    provisional = np.maximum(np.percentile(px, 99.5, axis=0), 1.0)
    od = -np.log10(np.maximum(px, 1.0) / provisional)
    glass = np.all(od < GLASS_OD, axis=1)
    if np.ndim(rgb) == 3:  # glass is flat over areas; pale tissue is bright only in specks
        glass = ndi.binary_opening(
            glass.reshape(np.shape(rgb)[:2]), np.ones((GLASS_AREA_PX, GLASS_AREA_PX))
        ).ravel()
    if glass.mean() >= MIN_GLASS_FRACTION and glass.sum() >= 16:
        white = np.median(px[glass], axis=0)
        source = "glass"
    else:
        white, source = provisional, "brightest-percentile"
    white = np.clip(white, 1.0, 255.0)
    return (float(white[0]), float(white[1]), float(white[2])), source


def _unit_rows(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def estimate_stain_vectors(
    rgb: np.ndarray,
    background: tuple[float, float, float],
    reference: StainMatrix | None = None,
    alpha: float = 1.0,
) -> StainMatrix:
    """Macenko estimate of the reference's two stains (H-DAB by default) on this image's tissue."""
    ref = reference or hdab_matrix(background=background)
    if len(ref.names) != 2:
        raise StainEstimationError("stain estimation needs a two-stain reference (H-DAB or H&E)")
    px = _rgb_pixels(rgb)
    od = -np.log10(np.maximum(px, 1.0) / np.asarray(background, dtype=np.float64))
    od = np.maximum(od, 0.0)
    tissue = od[np.linalg.norm(od, axis=1) > TISSUE_OD]
    if len(tissue) < MIN_TISSUE_PIXELS:
        raise StainEstimationError(
            f"only {len(tissue)} tissue pixels (OD > {TISSUE_OD}); need {MIN_TISSUE_PIXELS}: "
            "choose a region with more stained tissue"
        )
    _, s, vt = np.linalg.svd(tissue, full_matrices=False)  # uncentred: stain rays pass through OD 0
    plane = vt[:2]
    if plane[0].sum() < 0:
        plane[0] = -plane[0]
    if s[1] / max(s[0], 1e-12) < 0.02:
        raise StainEstimationError("the region shows a single stain: vectors cannot be separated")
    proj = tissue @ plane.T
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v1 = np.cos(lo) * plane[0] + np.sin(lo) * plane[1]
    v2 = np.cos(hi) * plane[0] + np.sin(hi) * plane[1]
    cands = _unit_rows(np.stack([v1, v2]))
    if np.any(cands < -0.05):
        raise StainEstimationError(
            f"estimated vectors have negative OD components: {cands.round(3).tolist()}"
        )
    cands = np.maximum(cands, 0.0)
    angle = math.degrees(math.acos(float(np.clip(cands[0] @ cands[1], -1, 1))))
    if angle < MIN_STAIN_ANGLE_DEG:
        raise StainEstimationError(
            f"the two estimated stains are {angle:.1f} degrees apart: the region shows a single stain"
        )
    refs = ref.matrix[:2]
    cos = cands @ refs.T  # (candidate, reference)
    order = (0, 1) if cos[0, 0] + cos[1, 1] >= cos[0, 1] + cos[1, 0] else (1, 0)
    chosen = cands[list(order)]
    for name, vec, r in zip(ref.names, chosen, refs, strict=True):
        c = float(vec @ r)
        if c < MIN_REFERENCE_COSINE:
            raise StainEstimationError(
                f"the estimated {name} vector {vec.round(3).tolist()} is {math.degrees(math.acos(min(c, 1))):.0f}"
                f" degrees from the reference {r.round(3).tolist()}: not plausible, keeping the defaults"
            )
    v = tuple(_triple(row) for row in chosen)
    try:
        return StainMatrix(ref.names, v, background)
    except StainVectorError as e:
        raise StainEstimationError(str(e)) from e


def calibrate(
    rgb: np.ndarray,
    stains: StainMatrix | None = None,
    *,
    background: str = "auto",
    vectors: str = "default",
    white_from: np.ndarray | None = None,
) -> StainCalibration:
    """Calibration from an overview image.

    ``background``: "auto" (the glass of ``white_from``, the whole slide's overview, else of ``rgb``) or
    "default" (the given stains' background). Without glass the given (slide-level) white point is kept and
    said so: the brightest tissue is not glass, and taking it as white would erase faint staining.
    ``vectors``: "default" (the given stains) or "estimate" (Macenko on this image; refused regions keep the
    given vectors, noted).
    """
    if background not in ("auto", "default"):
        raise ValueError(f"background must be 'auto' or 'default', not {background!r}")
    if vectors not in ("default", "estimate"):
        raise ValueError(f"vectors must be 'default' or 'estimate', not {vectors!r}")
    base = stains or hdab_matrix()
    given = "default" if base == hdab_matrix() else "user"
    notes: list[str] = []
    bg, bg_source = base.background, given
    if background == "auto":
        est, est_source = estimate_background(rgb if white_from is None else white_from)
        if est_source == "glass":
            bg, bg_source = est, est_source
            if white_from is not None and estimate_background(rgb)[1] != "glass":
                notes.append(
                    "no glass in the area analysed: read against the slide's glass white point "
                    + " ".join(f"{b:.0f}" for b in bg)
                )
        else:
            notes.append(
                "no glass in the image: kept the slide-level white point "
                + " ".join(f"{b:.0f}" for b in bg)
                + f" ({given}); faint staining is read against it"
            )
    with_bg = StainMatrix(base.names, _vectors_of(base), bg)
    vec_source = given
    if vectors == "estimate":
        try:
            with_bg = estimate_stain_vectors(rgb, bg, with_bg)
            vec_source = "estimated"
        except StainEstimationError as e:
            notes.append(f"stain vectors not estimated ({e}); kept {vec_source} vectors")
    return StainCalibration(with_bg, bg_source, vec_source, tuple(notes))


def _vectors_of(s: StainMatrix) -> tuple[tuple[float, float, float], ...]:
    return tuple(_triple(row) for row in s.matrix[: len(s.names)])
