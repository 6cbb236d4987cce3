"""Nuclei density: centroids blurred by a Gaussian (sigma in µm), in nuclei per mm².

Reflect boundaries keep the mass inside the image, so sum(density) x pixel area (mm²) == number of nuclei.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def density_map(
    centroids_yx: np.ndarray,
    shape: tuple[int, int],
    mpp: float,
    sigma_um: float = 25.0,
    downsample: int = 1,
) -> np.ndarray:
    """(ceil(h/ds), ceil(w/ds)) float32 nuclei/mm²; ``centroids_yx`` in full-resolution pixels."""
    ds = max(int(downsample), 1)
    oh, ow = -(-shape[0] // ds), -(-shape[1] // ds)
    pts = np.asarray(centroids_yx, dtype=np.float64).reshape(-1, 2)
    counts = np.zeros((oh, ow), np.float64)
    if len(pts):
        iy = np.clip((pts[:, 0] // ds).astype(np.int64), 0, oh - 1)
        ix = np.clip((pts[:, 1] // ds).astype(np.int64), 0, ow - 1)
        np.add.at(counts, (iy, ix), 1.0)
    sigma_px = sigma_um / (mpp * ds)
    blurred = ndi.gaussian_filter(counts, sigma_px, mode="reflect") if sigma_px > 0 else counts
    pixel_area_mm2 = (mpp * ds * 1e-3) ** 2
    return (blurred / pixel_area_mm2).astype(np.float32)


def integrate(density: np.ndarray, mpp: float, downsample: int = 1) -> float:
    """Number of nuclei a density map holds."""
    return float(density.astype(np.float64).sum() * (mpp * downsample * 1e-3) ** 2)
