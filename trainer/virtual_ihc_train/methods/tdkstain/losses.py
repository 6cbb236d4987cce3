"""TDKstain's objectives (balball/TDKstain ``tdk_model.py``), each a plain function of tensors.

- estimator: ``L_E = lambda_E * MSE(E(G_enc(B)), K_N)``;
- discriminator: ``L_D = 1/2 (sum_s LSGAN(D_s(A, G(A)), 0) + sum_s LSGAN(D_s(A, B), 1))``;
- generator: ``L_G = sum_s LSGAN(D_s(A, G(A)), 1) + lambda_L1 L1(G(A), B) + lambda_M L1(G(A * M), K_M)
  + lambda_N MSE(E(G_enc(G(A))), K_N)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...losses import GANLoss

LSGAN = GANLoss("lsgan")  # sums its per-scale MSEs, as the reference's GANLoss over a list


def estimator_loss(pred_density: Tensor, density: Tensor, weight: float) -> Tensor:
    return F.mse_loss(pred_density, density) * weight


def discriminator_loss(pred_fake: list[Tensor], pred_real: list[Tensor]) -> dict[str, Tensor]:
    fake, real = LSGAN(pred_fake, False), LSGAN(pred_real, True)
    return {"D": (fake + real) * 0.5, "D_fake": fake, "D_real": real}


def generator_loss(
    pred_fake: list[Tensor],
    fake_b: Tensor,
    real_b: Tensor,
    fake_b_masked: Tensor,
    dab: Tensor,
    pred_density: Tensor,
    density: Tensor,
    lambda_l1: float,
    lambda_mask: float,
    lambda_nuclei: float,
) -> dict[str, Tensor]:
    terms = {
        "G_GAN": LSGAN(pred_fake, True),
        "G_L1": F.l1_loss(fake_b, real_b) * lambda_l1,
        "G_mask": F.l1_loss(fake_b_masked, dab) * lambda_mask,
        "G_nuclei": F.mse_loss(pred_density, density) * lambda_nuclei,
    }
    terms["G"] = torch.stack(list(terms.values())).sum()
    return terms
