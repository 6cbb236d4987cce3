"""Coarse search: every rotation (and the mirror image) of the moving section, each with its best shift.

Consecutive sections land on glass at any angle and sometimes upside down, where a gradient optimiser
started at the identity never finds them. Here both density images are sampled on one isotropic physical
grid (~``side`` px); for each flip and each angle step the rotated moving image is cross-correlated with
the fixed one by FFT (``scipy.signal.fftconvolve``), which also finds the shift when one section is torn or
partial (no centroid matching). Candidates come back best first as fixed -> moving physical affine maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.signal import fftconvolve


@dataclass(frozen=True)
class Candidate:
    angle_deg: float
    flipped: bool
    score: float  # normalised cross-correlation peak, 0..1
    matrix: np.ndarray  # (3, 3) homogeneous fixed physical (x, y) -> moving physical (x, y)


def isotropic(image: sitk.Image, pixel: float) -> np.ndarray:
    """``image`` resampled on a grid of ``pixel`` physical units whose index (0, 0) is physical (0, 0)."""
    extent = [s * n for s, n in zip(image.GetSpacing(), image.GetSize(), strict=True)]
    size = [max(8, int(np.ceil(e / pixel)) + 1) for e in extent]
    sigma = [max(pixel / 2.0 - s / 2.0, 0.0) for s in image.GetSpacing()]
    smooth = sitk.SmoothingRecursiveGaussian(image, sigma) if max(sigma) > 0 else image
    out = sitk.Resample(
        smooth, size, sitk.Transform(), sitk.sitkLinear, (0.0, 0.0), (pixel, pixel), (1, 0, 0, 1)
    )
    return sitk.GetArrayFromImage(out).astype(np.float32)


def _xy_to_rc(m: np.ndarray) -> np.ndarray:
    """A (3, 3) (x, y) homogeneous map as the (row, col) matrix scipy's ``affine_transform`` wants."""
    p = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)
    return p @ m @ p


def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]], float)


def _rotate(deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], float)


def search(
    fixed: sitk.Image,
    moving: sitk.Image,
    side: int = 192,
    angle_step: float = 4.0,
    flips: tuple[bool, ...] = (False, True),
    keep: int = 4,
) -> list[Candidate]:
    """The ``keep`` best (angle, flip, shift) starts, as distinct in angle as possible."""
    extent = max(
        max(s * n for s, n in zip(im.GetSpacing(), im.GetSize(), strict=True)) for im in (fixed, moving)
    )
    pixel = extent / side
    f = isotropic(fixed, pixel)
    m = isotropic(moving, pixel)
    f_norm = float(np.linalg.norm(f)) or 1.0
    hm, wm = m.shape
    canvas = int(np.ceil(np.hypot(hm, wm))) + 2
    cr = (canvas - 1) / 2.0
    cm_x, cm_y = (wm - 1) / 2.0, (hm - 1) / 2.0
    found: list[Candidate] = []
    for flipped in flips:
        flip = np.diag([-1.0, 1.0, 1.0]) if flipped else np.eye(3)
        for angle in np.arange(0.0, 360.0, angle_step):
            # canvas px -> moving px: centre, rotate, mirror, back to the moving image's centre
            g = _translate(cm_x, cm_y) @ flip @ _rotate(float(angle)) @ _translate(-cr, -cr)
            r = ndi.affine_transform(m, _xy_to_rc(g), output_shape=(canvas, canvas), order=1, cval=0.0)
            r_norm = float(np.linalg.norm(r)) or 1.0
            corr = fftconvolve(f, r[::-1, ::-1], mode="full")
            i, j = np.unravel_index(int(np.argmax(corr)), corr.shape)
            dy, dx = float(i - (canvas - 1)), float(j - (canvas - 1))
            score = float(corr[i, j]) / (f_norm * r_norm)
            # fixed grid px -> canvas px (minus the shift) -> moving grid px; physical = grid px x pixel
            grid = g @ _translate(-dx, -dy)
            phys = np.diag([pixel, pixel, 1.0]) @ grid @ np.diag([1 / pixel, 1 / pixel, 1.0])
            found.append(Candidate(float(angle), flipped, score, phys))
    found.sort(key=lambda c: -c.score)
    return _distinct(found, keep, min_gap=3 * angle_step)


def _distinct(cands: list[Candidate], keep: int, min_gap: float) -> list[Candidate]:
    out: list[Candidate] = []
    for c in cands:
        if all(
            c.flipped != o.flipped or abs((c.angle_deg - o.angle_deg + 180) % 360 - 180) >= min_gap
            for o in out
        ):
            out.append(c)
        if len(out) == keep:
            break
    return out
