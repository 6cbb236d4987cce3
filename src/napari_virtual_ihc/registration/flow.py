"""Non-rigid refinement after the affine: dense optical flow between the two hematoxylin views.

Consecutive sections deform locally (cut, stretched, folded differently), by more than any affine map
follows: on the ANHIR lung pairs the best affine fitted to the landmarks themselves leaves a median rTRE of
0.0064 (CD31) and 0.0088 (Cc10). A B-spline on Mattes MI drifted on three of four pairs (docs); what held was
three dense flows on the hematoxylin optical density (OpenCV's Farneback with 15 and 21 px windows, DIS), each
image replaced by its ranks (so the pale counterstain of an IHC and the dark nuclei of an H&E compare as
orders, not as levels), each flow smoothed, and their per-pixel median kept: a smooth, invertible field that
no single flow's wrong match drags. Median rTRE as scanned, affine -> affine + flow
(benchmarks/bench_registration.py, docs/registration.md): kidney 0.0027 -> 0.0026 (p90 0.0058 -> 0.0071),
CD31 0.0062 -> 0.0036, and on the pairs not used to choose the settings, lesion 0.0050 -> 0.0043, Cc10
0.0090 -> 0.0063 (its landmarks ask for a field that is not smooth).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi

#: Farneback settings (chosen on the kidney and CD31 pairs, see the docs): pyramid halving, 4 levels,
#: 15 px averaging window, 5 iterations a level, 5 px polynomial neighbourhood, its Gaussian sigma 1.1.
PYR_SCALE = 0.5
LEVELS = 4
WINDOW_PX = 15
ITERATIONS = 5
POLY_N = 5
POLY_SIGMA = 1.1
#: Gaussian sigma (px of the view) the flow is smoothed with: a smooth field is invertible by the
#: transform's fixed-point iteration and follows no single pixel's noise.
SMOOTH_PX = 4.0
#: The second Farneback's window and DIS's patch and stride (px of the view) in the consensus of three.
WIDE_WINDOW_PX = 21
DIS_PATCH_PX = 16
DIS_STRIDE_PX = 4


def ranks(image: np.ndarray) -> np.ndarray:
    """``image`` as uint8 ranks (0 = darkest ... 255 = brightest): equal histograms whatever the stain."""
    flat = image.ravel()
    order = np.argsort(flat, kind="stable")
    r = np.empty(flat.size, dtype=np.float64)
    r[order] = np.arange(flat.size)
    return (r * (255.0 / max(flat.size - 1, 1))).reshape(image.shape).astype(np.uint8)


def _smoothed(field: np.ndarray) -> np.ndarray:
    return np.stack([ndi.gaussian_filter(field[..., k], SMOOTH_PX) for k in (0, 1)], axis=-1)


def farneback(fixed_ranks: np.ndarray, warped_ranks: np.ndarray, window: int = WINDOW_PX) -> np.ndarray:
    """OpenCV's Farneback flow between two uint8 rank planes, smoothed."""
    return _smoothed(
        cv2.calcOpticalFlowFarneback(
            fixed_ranks, warped_ranks, None, PYR_SCALE, LEVELS, window, ITERATIONS, POLY_N, POLY_SIGMA, 0
        )
    )


def dis(fixed_ranks: np.ndarray, warped_ranks: np.ndarray) -> np.ndarray:
    """OpenCV's DIS flow (medium preset, 16 px patches every 4 px) between two uint8 rank planes, smoothed."""
    d = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    d.setPatchSize(DIS_PATCH_PX)
    d.setPatchStride(DIS_STRIDE_PX)
    start = np.zeros((*fixed_ranks.shape, 2), dtype=np.float32)  # unused: no initial flow is set
    return _smoothed(np.asarray(d.calc(fixed_ranks, warped_ranks, start)))


def dense_flow(fixed: np.ndarray, warped: np.ndarray) -> np.ndarray:
    """(h, w, 2) displacement (dx, dy) in px such that ``warped`` at ``x + d(x)`` shows what ``fixed``
    shows at ``x``; both are same-shaped planes (the moving one already through the affine).

    The per-pixel median of three flows that fail differently (Farneback with 15 and 21 px windows, DIS): where
    one of them follows a wrong match (alveoli look alike) the other two outvote it. Measured against the
    single Farneback (docs/registration.md): kidney p90 rTRE 0.0079 -> 0.0071 at the same median."""
    if fixed.shape != warped.shape:
        raise ValueError(f"planes differ in shape: {fixed.shape} and {warped.shape}")
    a, b = ranks(fixed), ranks(warped)
    return np.median(np.stack([farneback(a, b), farneback(a, b, WIDE_WINDOW_PX), dis(a, b)]), axis=0)


def affine_part(field: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The 3 x 3 affine map (view px, (x, y)) closest to ``x -> x + field(x)`` over ``mask`` (least squares).

    What the flow says the affine stage missed: the linear stages optimise mutual information from a start
    that depends on how the moving image lies (rotated, mirrored), and land in slightly different optima (Cc10
    mirrored + 37 degrees: median rTRE 0.0102 against 0.0090 as scanned); the flow sees every part of the
    tissue, so the affine it implies is the same whatever the start."""
    if field.shape[:2] != mask.shape or int(mask.sum()) < 3:
        raise ValueError("the mask must match the field's shape and hold at least 3 pixels")
    ys, xs = np.nonzero(mask)
    src = np.stack([xs, ys, np.ones_like(xs)], axis=1).astype(np.float64)
    dst = src[:, :2] + field[ys, xs].astype(np.float64)
    fit, *_ = np.linalg.lstsq(src, dst, rcond=None)
    m = np.eye(3)
    m[:2, :] = fit.T
    return m
