"""PSNR/SSIM exactly as the BCI and ASP evaluation scripts compute them, on current scikit-image.

Convention: full-resolution RGB uint8 arrays, ``peak_signal_noise_ratio(real, fake, data_range=255)`` and
``structural_similarity(real, fake, channel_axis=2, data_range=255)`` (7x7 uniform window, the defaults the
scripts' ``multichannel=True`` call used).
"""

from __future__ import annotations

import numpy as np

CONVENTION = (
    "PSNR/SSIM on full-resolution RGB uint8 images, data_range=255: skimage peak_signal_noise_ratio and "
    "structural_similarity(channel_axis=2, data_range=255) (the BCI/ASP evaluate.py convention, 7x7 uniform "
    "window); the mean of per-image values (not PSNR of the pooled MSE); no crop, no colour-space change; "
    "generator outputs converted to uint8 as pix2pix's tensor2im (truncation)"
)


def psnr(real: np.ndarray, fake: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio  # lazy: scipy.stats costs seconds at import

    _check(real, fake)
    return float(peak_signal_noise_ratio(real, fake, data_range=255))


def ssim(real: np.ndarray, fake: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    _check(real, fake)
    return float(structural_similarity(real, fake, channel_axis=2, data_range=255))


def _check(real: np.ndarray, fake: np.ndarray) -> None:
    if real.dtype != np.uint8 or fake.dtype != np.uint8:
        raise TypeError(f"PSNR/SSIM are defined here on uint8 images, got {real.dtype} and {fake.dtype}")
    if real.shape != fake.shape or real.ndim != 3 or real.shape[2] != 3:
        raise ValueError(f"expected two RGB images of the same size, got {real.shape} and {fake.shape}")
