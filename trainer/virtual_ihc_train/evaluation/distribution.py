"""FID and KID from two feature sets, each computed in one place: ``evaluate``'s FID/KID (torch-fidelity's
KID: subsets of 1000) and ASP's KID convention (``mist_metrics.kid_asp_from_features``: subsets of 100, x 1000)
both call :func:`kid_from_features`."""

from __future__ import annotations

import numpy as np


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the two feature sets (pytorch-fid's formula).

    With fewer images than feature dimensions both covariances are singular, and scipy's ``sqrtm`` of their
    2048 x 2048 product takes minutes and is inexact. Then tr sqrt(S1 S2) is the sum of the singular values of
    Xc Ycᵀ / sqrt((n-1)(m-1)) (Xc, Yc the centred features: S1 S2's non-zero eigenvalues are those of
    (Xc Ycᵀ)(Xc Ycᵀ)ᵀ), exact and instant."""
    from scipy import linalg

    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    mu1, mu2 = real.mean(0), fake.mean(0)
    diff = mu1 - mu2
    n, m, d = len(real), len(fake), real.shape[1]
    if min(n, m) <= d:
        xc, yc = real - mu1, fake - mu2
        tr1, tr2 = (xc * xc).sum() / (n - 1), (yc * yc).sum() / (m - 1)
        tr_covmean = linalg.svdvals(xc @ yc.T).sum() / np.sqrt((n - 1) * (m - 1))
        return float(diff.dot(diff) + tr1 + tr2 - 2 * tr_covmean)
    s1, s2 = np.atleast_2d(np.cov(real, rowvar=False)), np.atleast_2d(np.cov(fake, rowvar=False))
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = np.real(covmean)
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def kid_from_features(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel, mean and std over subsets
    (torch-fidelity's defaults)."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        return float("nan"), float("nan")
    d = real.shape[1]
    vals = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))
