"""Landmark-free figures of how well two views agree under a transform, and the gate built on them.

An absolute correlation threshold does not carry over between stains: after a right alignment the
hematoxylin correlation was 0.60-0.83 on the kidney and proSPC pairs but 0.29-0.45 on the CD31 and Cc10
lung pairs, whose IHC counterstain is pale (measured, docs/registration.md). What does carry over is that a
right alignment is a *peak*: moving it off by a few per cent of the diagonal or a few degrees lowers the
agreement, while a wrong one (shifted, rotated, or unrelated tissue) sits on a slope or on a flat floor.
So the gate compares the agreement at the alignment with the agreement at fixed perturbations of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

#: Perturbations the peak is compared against: shifts as a share of the fixed view's diagonal, rotations
#: about the fixed tissue's centroid (degrees).
SHIFT_SHARE = 0.025
ANGLE_DEG = 5.0
#: The alignment must beat the best perturbation by more than this (correlation units): "it is a peak".
MIN_MARGIN = 0.0
#: ... and the median perturbation by at least this: "the peak stands above a flat floor". Measured
#: (docs/registration.md): right alignments 0.11-0.38, unrelated pairs 0.01-0.04, broken ones 0.00-0.09.
MIN_CONTRAST = 0.05


@dataclass(frozen=True)
class Plane:
    """One view's comparison image, tissue mask and px -> level-0 downsample."""

    image: np.ndarray
    mask: np.ndarray
    downsample: float


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 10:
        return 0.0
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def _rotation_about(centre: np.ndarray, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    m = np.eye(3)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:2, 2] = centre - m[:2, :2] @ centre
    return m


def perturbations(centre: np.ndarray, diagonal: float) -> list[np.ndarray]:
    """Fixed level-0 px -> fixed level-0 px: 8 shifts of ``SHIFT_SHARE`` x diagonal and 2 rotations."""
    out = []
    r = SHIFT_SHARE * diagonal
    for k in range(8):
        a = np.pi * k / 4
        m = np.eye(3)
        m[:2, 2] = [r * np.cos(a), r * np.sin(a)]
        out.append(m)
    out.extend(_rotation_about(centre, d) for d in (-ANGLE_DEG, ANGLE_DEG))
    return out


def agreement_figures(
    fixed: Plane,
    moving: Plane,
    fixed_to_moving: Callable[[np.ndarray], np.ndarray],
) -> dict[str, float]:
    """Correlation at the alignment (``peak_correlation``), by how much it beats the best of its perturbations
    (``peak_margin``) and their median (``peak_contrast``), and the share of fixed tissue it covers.

    ``fixed_to_moving`` maps (n, 2) fixed level-0 px to moving level-0 px. The correlation is taken over
    the fixed tissue that the warped moving view covers (so a partial section is judged where it is)."""
    h, w = fixed.mask.shape
    ds = fixed.downsample
    ys, xs = np.mgrid[0:h, 0:w]
    grid = np.stack([(xs + 0.5) * ds - 0.5, (ys + 0.5) * ds - 0.5], axis=-1).reshape(-1, 2)
    fy, fx = np.nonzero(fixed.mask)
    if fx.size == 0:
        return {"peak_correlation": 0.0, "peak_margin": 0.0, "peak_contrast": 0.0, "peak_covered": 0.0}
    centre = np.array([(fx.mean() + 0.5) * ds - 0.5, (fy.mean() + 0.5) * ds - 0.5])
    diagonal = float(np.hypot(h, w) * ds)

    def corr(pre: np.ndarray | None) -> tuple[float, float]:
        pts = grid if pre is None else grid @ pre[:2, :2].T + pre[:2, 2]
        src = fixed_to_moving(pts)
        cols = (src[:, 0] + 0.5) / moving.downsample - 0.5
        rows = (src[:, 1] + 0.5) / moving.downsample - 0.5
        warped = ndi.map_coordinates(moving.image, [rows, cols], order=1, cval=np.nan).reshape(h, w)
        wmask = (
            ndi.map_coordinates(moving.mask.astype(np.float32), [rows, cols], order=1, cval=0.0).reshape(h, w)
            > 0.5
        )
        where = fixed.mask & np.isfinite(warped)
        covered = float((where & wmask).sum() / max(int(fixed.mask.sum()), 1))
        return _pearson(fixed.image[where], warped[where]), covered

    at, covered = corr(None)
    others = [corr(p)[0] for p in perturbations(centre, diagonal)]
    return {
        "peak_correlation": at,
        "peak_margin": at - float(max(others)),
        "peak_contrast": at - float(np.median(others)),
        "peak_covered": covered,
    }


def passes(
    figures: dict[str, float], min_contrast: float = MIN_CONTRAST, min_margin: float = MIN_MARGIN
) -> bool:
    """The alignment beats every perturbation (a peak) and stands clear of their median (not a flat floor)."""
    return figures["peak_margin"] > min_margin and figures["peak_contrast"] >= min_contrast


def describe(figures: dict[str, float]) -> str:
    """The figures that decide acceptance, in one line (CLI and widget say the same)."""
    return (
        f"agreement peak {figures.get('peak_correlation', 0.0):.3f}, "
        f"{figures.get('peak_margin', 0.0):+.3f} over its best perturbation, "
        f"{figures.get('peak_contrast', 0.0):+.3f} over their median; "
        f"tissue overlap {figures.get('tissue_dice', 0.0):.3f}"
    )
