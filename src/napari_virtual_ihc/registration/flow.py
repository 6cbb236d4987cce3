"""Non-rigid refinement after the affine: dense optical flow between the two hematoxylin views.

Consecutive sections deform locally (cut, stretched, folded differently), by more than any affine map
follows: on the ANHIR lung pairs the best affine fitted to the landmarks themselves leaves a median rTRE of
0.0064 (CD31) and 0.0088 (Cc10). A B-spline on Mattes MI drifted on three of four pairs (docs); what held was
OpenCV's Farneback flow (polynomial expansion, coarse-to-fine) on the hematoxylin optical density, each
image replaced by its ranks (so the pale counterstain of an IHC and the dark nuclei of an H&E compare as
orders, not as levels), the flow smoothed so it stays a smooth, invertible field. Median rTRE as scanned,
affine -> affine + flow (benchmarks/bench_registration.py, docs/registration.md): kidney 0.0027 -> 0.0025,
CD31 0.0064 -> 0.0036, and on the pairs not used to choose the settings, lesion 0.0049 -> 0.0047, Cc10
0.0090 -> 0.0060.
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


def ranks(image: np.ndarray) -> np.ndarray:
    """``image`` as uint8 ranks (0 = darkest ... 255 = brightest): equal histograms whatever the stain."""
    flat = image.ravel()
    order = np.argsort(flat, kind="stable")
    r = np.empty(flat.size, dtype=np.float64)
    r[order] = np.arange(flat.size)
    return (r * (255.0 / max(flat.size - 1, 1))).reshape(image.shape).astype(np.uint8)


def dense_flow(fixed: np.ndarray, warped: np.ndarray) -> np.ndarray:
    """(h, w, 2) displacement (dx, dy) in px such that ``warped`` at ``x + d(x)`` shows what ``fixed``
    shows at ``x``; both are same-shaped planes (the moving one already through the affine)."""
    if fixed.shape != warped.shape:
        raise ValueError(f"planes differ in shape: {fixed.shape} and {warped.shape}")
    flow = cv2.calcOpticalFlowFarneback(
        ranks(fixed), ranks(warped), None, PYR_SCALE, LEVELS, WINDOW_PX, ITERATIONS, POLY_N, POLY_SIGMA, 0
    )
    return np.stack([ndi.gaussian_filter(flow[..., k], SMOOTH_PX) for k in (0, 1)], axis=-1)
