"""Tile-by-tile nuclei labels with overlap, de-duplicated across borders.

Each tile segments its halo'd window (``inference.grid`` geometry) and keeps only the nuclei whose centroid
lies in its core, so a nucleus cut by a border is found whole by the tile that owns its centre and counted
once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from ..inference.grid import GridTile


def keep_core_objects(labels: np.ndarray, tile: GridTile) -> tuple[np.ndarray, np.ndarray]:
    """(labels restricted to objects centred in the core, their centroids (n, 2) in window pixels)."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if ids.size == 0:
        return np.zeros_like(labels), np.zeros((0, 2))
    cents = np.asarray(ndi.center_of_mass(np.ones_like(labels), labels, ids), dtype=np.float64).reshape(-1, 2)
    cx, cy, cw, ch = tile.core_in_window
    inside = (cents[:, 0] >= cy) & (cents[:, 0] < cy + ch) & (cents[:, 1] >= cx) & (cents[:, 1] < cx + cw)
    keep_ids = ids[inside]
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    lut[keep_ids] = np.arange(1, keep_ids.size + 1, dtype=np.int32)
    return lut[labels], cents[inside]


def paste_labels(canvas: np.ndarray, tile_labels: np.ndarray, origin_yx: tuple[int, int], offset: int) -> int:
    """Write non-zero ``tile_labels`` + ``offset`` into empty canvas pixels; returns the new max id."""
    y, x = origin_yx
    h, w = tile_labels.shape
    view = canvas[y : y + h, x : x + w]
    src = tile_labels[: view.shape[0], : view.shape[1]]
    put = (src > 0) & (view == 0)
    view[put] = src[put] + offset
    return offset + int(tile_labels.max())


SegmentFn = Callable[[np.ndarray], np.ndarray]
