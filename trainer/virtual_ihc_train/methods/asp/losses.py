"""ASP's losses (Li et al., MICCAI 2023), written from its reference code (``models/patchnce.py``,
``models/asp_loss.py``, ``models/gauss_pyramid.py``, ``models/cpt_model.py``):

- :func:`patch_nce_logits`: for N patch features of one image (rows L2-normalised), the logits
  ``[q_i . k_i, q_i . k_j (j != i; j == i set to -10)] / T``; the target is index 0 (CUT's PatchNCE, negatives
  from the same image only, ``nce_includes_all_negatives_from_minibatch=False``).
- :func:`patch_nce_loss`: the per-patch cross-entropy of those logits (CUT/ASP return it unreduced).
- :func:`asp_weights` / :func:`lambda_linear_p`: ASP's ``lambda_linear`` mode: ``w = p + (1 - p) relu(q . k+)``
  (detached), renormalised to ``w N / sum(w)``; ``p = 1`` while ``t = (epoch - 1) / total < k`` with
  ``k = 1 - n_epochs_decay / total``, then ``m - m t`` with ``m = 1 / (1 - k)`` (MIST: 30 + 10 epochs: 4 - 4t).
- :class:`GaussPyramidL1`: the 5x5 binomial kernel ``[1,4,6,4,1]^T [1,4,6,4,1] / 256``, reflect padding, 5
  filtered levels (each next level keeps every other pixel of the filtered one) plus the last subsampled
  image: 6 L1 terms, weighted, averaged (``torch.mean`` of the 6 weighted terms, as ``cpt_model.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NEG_DIAGONAL = -10.0  # CUT: exp(-10) ~ 0, the same patch is no negative of itself
MIST_GP_WEIGHTS = (0.015625, 0.03125, 0.0625, 0.125, 0.25, 1.0)


def patch_nce_logits(feat_q: Tensor, feat_k: Tensor, batch_size: int, temperature: float) -> Tensor:
    """``(B * N, 1 + N)`` logits: the positive first, then the N in-image negatives (diagonal -10), / T.

    ``feat_q``/``feat_k`` are ``(B * N, D)`` with the N patches of sample b in rows ``b*N .. b*N + N - 1``;
    keys are detached (no gradient flows into the key branch, as CUT).
    """
    feat_k = feat_k.detach()
    dim = feat_q.shape[1]
    l_pos = (feat_q * feat_k).sum(1, keepdim=True)
    q = feat_q.view(batch_size, -1, dim)
    k = feat_k.view(batch_size, -1, dim)
    n = q.shape[1]
    l_neg = torch.bmm(q, k.transpose(2, 1))
    eye = torch.eye(n, device=feat_q.device, dtype=torch.bool)[None]
    l_neg = l_neg.masked_fill(eye, NEG_DIAGONAL).view(-1, n)
    return torch.cat((l_pos, l_neg), 1) / temperature


def patch_nce_loss(feat_q: Tensor, feat_k: Tensor, batch_size: int, temperature: float = 0.07) -> Tensor:
    """Per-patch cross-entropy towards the positive (index 0), shape ``(B * N,)``."""
    logits = patch_nce_logits(feat_q, feat_k, batch_size, temperature)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target, reduction="none")


def lambda_linear_p(epoch: int, n_epochs: int, n_epochs_decay: int) -> float:
    """ASP's ``lambda`` schedule for the 1-based epoch: 1 until ``k`` of training, then linear to ~0."""
    total = n_epochs + n_epochs_decay
    t = (epoch - 1) / total
    k = 1 - n_epochs_decay / total
    if n_epochs_decay <= 0 or t < k:
        return 1.0
    m = 1 / (1 - k)
    return m - m * t


def asp_weights(feat_q: Tensor, feat_k: Tensor, p: float) -> Tensor:
    """``w = p + (1 - p) relu(q . k+)``, detached, renormalised so the weights average 1 (``w N / sum w``).

    The reference normalises over all rows of the call (all patches of the batch at one layer).
    """
    sim = (feat_q.detach() * feat_k.detach()).sum(1)
    w = p * 1.0 + (1 - p) * torch.relu(sim)
    return w / w.sum() * w.numel()


def asp_loss(feat_q: Tensor, feat_k: Tensor, batch_size: int, p: float, temperature: float = 0.07) -> Tensor:
    """Adaptive supervised PatchNCE: the PatchNCE cross-entropy of each patch times its ASP weight."""
    return patch_nce_loss(feat_q, feat_k, batch_size, temperature) * asp_weights(feat_q, feat_k, p)


def gauss_kernel_5x5() -> Tensor:
    row = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
    return torch.outer(row, row) / 256.0


def gauss_pyramid(x: Tensor, num_high: int = 5) -> list[Tensor]:
    """``num_high`` filtered levels (reflect pad 2, depthwise 5x5), each subsampled 2x for the next, + the last."""
    c = x.shape[1]
    kernel = gauss_kernel_5x5().to(device=x.device, dtype=x.dtype).expand(c, 1, 5, 5)
    levels, current = [], x
    for _ in range(num_high):
        filtered = F.conv2d(F.pad(current, (2, 2, 2, 2), mode="reflect"), kernel, groups=c)
        levels.append(filtered)
        current = filtered[:, :, ::2, ::2]
    levels.append(current)
    return levels


class GaussPyramidL1(nn.Module):
    """``mean_i(w_i * L1(P_i(fake), P_i(real)))`` over the 6 levels of :func:`gauss_pyramid`."""

    def __init__(self, weights: Sequence[float] = MIST_GP_WEIGHTS) -> None:
        super().__init__()
        self.weights = [float(w) for w in weights]

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        pf = gauss_pyramid(fake, len(self.weights) - 1)
        pr = gauss_pyramid(real, len(self.weights) - 1)
        terms = [F.l1_loss(a, b) * w for a, b, w in zip(pf, pr, self.weights, strict=True)]
        return torch.stack(terms).mean()
