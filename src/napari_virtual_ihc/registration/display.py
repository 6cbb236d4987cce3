"""How a registration result is shown and checked on screen, as plain numbers (no napari, no Qt).

The registration widget asks these: the (row, col) affine that puts the moving slide over the fixed one,
how far "side by side" shifts it, the comparison's tiling for a slide's size, and the landmark residuals
as a reader sees them (rTRE: distance over the fixed slide's diagonal).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .compare import ComparisonSettings
from .transform import SlideTransform

SIDE_GAP = 1.05  # side-by-side offset, in fixed-slide widths
COMPARE_TILE_PX = 256
COMPARE_MAX_SIDE = 4096  # the comparison works on at most this many output px per side


def _rc(m_xy: np.ndarray) -> np.ndarray:
    p = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)
    return p @ m_xy @ p


def affine_rc(
    transform: SlideTransform,
    fixed_scale: Sequence[float],
    fixed_translate: Sequence[float],
    shift_x: float = 0.0,
) -> np.ndarray:
    """(3, 3) (row, col) affine taking the moving slide's level-0 pixels to the fixed layer's world
    (``fixed_scale``/``fixed_translate``: the fixed layer's (y, x) placement), shifted ``shift_x`` to the right."""
    sy, sx = (float(v) for v in fixed_scale[-2:])
    ty, tx = (float(v) for v in fixed_translate[-2:])
    world = np.array([[sy, 0, ty], [0, sx, tx + shift_x], [0, 0, 1]], float)
    return world @ _rc(np.linalg.inv(transform.linear_px()))


def side_shift(transform: SlideTransform, fixed_scale_x: float) -> float:
    """World units "side by side" moves the registered IHC right: one fixed-slide width and a gap."""
    return SIDE_GAP * transform.fixed.dimensions[0] * float(fixed_scale_x)


def comparison_plan(dimensions: tuple[int, int]) -> tuple[ComparisonSettings, int]:
    """The comparison's settings for a virtual IHC of ``dimensions`` (w, h) level-0 px (downsampled so the
    work stays bounded) and how many tiles it will report."""
    w, h = dimensions
    ds = float(max(1, math.ceil(max(w, h) / COMPARE_MAX_SIDE)))
    step = COMPARE_TILE_PX * ds
    total = math.ceil(w / step) * math.ceil(h / step)
    return ComparisonSettings(tile_px=COMPARE_TILE_PX, downsample=ds), int(total)


def screen_residuals(
    fixed_world: np.ndarray, moving_world: np.ndarray, fixed_scale: Sequence[float], diagonal_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per matched (y, x) world point pair: the distance in fixed level-0 px, and over ``diagonal_px``."""
    scale = np.asarray(fixed_scale[-2:], float)
    n = min(len(fixed_world), len(moving_world))
    if not n:
        return np.zeros(0), np.zeros(0)
    dist_px = np.linalg.norm((fixed_world[:n] - moving_world[:n]) / scale, axis=1)
    return dist_px, dist_px / float(diagonal_px)
