"""Losses of the pix2pix family, each written as the paper defines it.

- ``GANLoss``: vanilla (BCE on logits, pix2pix/BCI) or least squares (LSGAN, pix2pixHD/TDKstain).
- ``gaussian_pyramid`` / ``PyramidL1``: BCI's multi-scale loss (Liu et al. 2022, eqs 1-2): each octave is four
  3x3 Gaussian blurs with sigma 1 (reflect padding, as the BCI code's ``kornia.filters.gaussian_blur2d``)
  followed by 2x subsampling (``kornia.filters.blur_pool2d(x, 1, stride=2)``, i.e. every other pixel); the
  L1 loss is taken on the first image of each octave.
- ``variance_penalty``: Rehmat et al. section 4.2, eqs 6-10: per channel and pixel variance over the batch
  (population variance, 1/N, around the batch mean), absolute difference between generated and real,
  averaged over channels and pixels.
- ``feature_matching_loss``: pix2pixHD's discriminator feature matching.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def gaussian_kernel_3x3(sigma: float = 1.0) -> torch.Tensor:
    """The normalised 3x3 Gaussian kernel (outer product of the 1-D kernel)."""
    x = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)  # float64; cast to the input dtype where used


def gaussian_blur_3x3(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """One 3x3 Gaussian blur per channel with reflect padding (kornia's default border)."""
    c = x.shape[1]
    k = gaussian_kernel_3x3(sigma).to(device=x.device, dtype=x.dtype).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, groups=c)


def next_octave(x: torch.Tensor, blurs: int = 4, sigma: float = 1.0) -> torch.Tensor:
    """The first image of the next octave: ``blurs`` Gaussian blurs, then keep every other pixel."""
    for _ in range(blurs):
        x = gaussian_blur_3x3(x, sigma)
    return x[..., ::2, ::2]


def gaussian_pyramid(x: torch.Tensor, levels: int, blurs: int = 4, sigma: float = 1.0) -> list[torch.Tensor]:
    """``[x, octave2, octave3, ...]`` with ``levels`` images in total (level 0 is the input itself)."""
    out = [x]
    for _ in range(levels - 1):
        out.append(next_octave(out[-1], blurs, sigma))
    return out


class PyramidL1(nn.Module):
    """``sum_i weights[i] * L1(F_i(fake), F_i(real))``; ``weights[0]`` is the full-resolution L1 term."""

    def __init__(self, weights: Sequence[float], blurs: int = 4, sigma: float = 1.0) -> None:
        super().__init__()
        self.weights = [float(w) for w in weights]
        self.blurs = blurs
        self.sigma = sigma

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        terms: list[torch.Tensor] = []
        f, r = fake, real
        for i, w in enumerate(self.weights):
            if i > 0:
                f, r = next_octave(f, self.blurs, self.sigma), next_octave(r, self.blurs, self.sigma)
            terms.append(F.l1_loss(f, r) * w)
        return torch.stack(terms).sum(), terms


def batch_variance(x: torch.Tensor) -> torch.Tensor:
    """Eqs 6-8: per channel and pixel variance over the batch, ``1/N sum_n (x_n - mean)^2``."""
    mean = x.mean(dim=0, keepdim=True)
    return ((x - mean) ** 2).mean(dim=0)


def variance_penalty(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Eqs 9-10: mean over channels and pixels of ``|var_batch(fake) - var_batch(real)|``."""
    return (batch_variance(fake) - batch_variance(real)).abs().mean()


class GANLoss(nn.Module):
    """Adversarial loss against a constant target, as junyanz's ``GANLoss`` (vanilla or lsgan).

    Accepts a tensor or a list of per-scale outputs (a multiscale discriminator returns, per scale, a list
    of intermediate features whose last entry is the prediction).
    """

    def __init__(self, mode: str = "vanilla") -> None:
        super().__init__()
        if mode not in ("vanilla", "lsgan"):
            raise ValueError(f"gan_mode must be 'vanilla' or 'lsgan', not {mode!r}")
        self.mode = mode

    def _one(self, pred: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(pred, target)
        return F.mse_loss(pred, target)

    def forward(self, pred: torch.Tensor | list, target_is_real: bool) -> torch.Tensor:
        if isinstance(pred, torch.Tensor):
            return self._one(pred, target_is_real)
        losses = [self._one(p[-1] if isinstance(p, list) else p, target_is_real) for p in pred]
        return torch.stack(losses).sum()  # pix2pixHD sums the scales


def feature_matching_loss(
    pred_fake: list[list[torch.Tensor]], pred_real: list[list[torch.Tensor]]
) -> torch.Tensor:
    """pix2pixHD: L1 between intermediate D features of fake and real, weighted 4/(n_layers+1) and 1/num_D."""
    num_d = len(pred_fake)
    total = pred_fake[0][0].new_zeros(())
    for feats_fake, feats_real in zip(pred_fake, pred_real, strict=True):
        feat_w = 4.0 / (
            len(feats_fake) - 1
        )  # pix2pixHD: 4 / (n_layers + 1); a scale has n_layers + 2 outputs
        for f, r in zip(feats_fake[:-1], feats_real[:-1], strict=True):
            total = total + F.l1_loss(f, r.detach()) * feat_w / num_d
    return total
