"""Agreement and seam measures for tiled output (used by the tests and the benchmark)."""

from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def seam_score(img: np.ndarray, tile: int, origin: tuple[int, int] = (0, 0)) -> float:
    """Mean absolute gradient across tile borders divided by the mean absolute gradient elsewhere.

    ~1.0: borders look like any other place; > 1: visible seams. Borders are the columns/rows at
    ``origin + k * tile``; the gradient is the difference to the previous column/row, averaged over channels.
    """
    f = img.astype(np.float64)
    gx = np.abs(np.diff(f, axis=1)).mean(axis=-1) if f.ndim == 3 else np.abs(np.diff(f, axis=1))
    gy = np.abs(np.diff(f, axis=0)).mean(axis=-1) if f.ndim == 3 else np.abs(np.diff(f, axis=0))
    h, w = f.shape[:2]
    ox, oy = origin
    # diff index j compares column j+1 with j: a border at column x is diff index x - 1.
    bx = np.zeros(w - 1, bool)
    bx[[x - 1 for x in range(ox + tile, w, tile) if 0 < x < w]] = True
    by = np.zeros(h - 1, bool)
    by[[y - 1 for y in range(oy + tile, h, tile) if 0 < y < h]] = True
    border = np.concatenate([gx[:, bx].ravel(), gy[by, :].ravel()])
    interior = np.concatenate([gx[:, ~bx].ravel(), gy[~by, :].ravel()])
    if border.size == 0 or interior.size == 0:
        return 1.0
    inner = float(interior.mean())
    return float(border.mean()) / inner if inner > 0 else (1.0 if float(border.mean()) == 0 else float("inf"))
