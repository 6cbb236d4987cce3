"""Discriminators: the 70x70 PatchGAN (junyanz ``NLayerDiscriminator``, same state-dict keys) and the
pix2pixHD/TDKstain multiscale discriminator (3 scales, intermediate features for feature matching)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'instance' or 'none', not {norm!r}")


class NLayerDiscriminator(nn.Module):
    """PatchGAN; ``n_layers=3`` gives the 70x70 receptive field of pix2pix (conditional: input_nc = 3 + 3)."""

    def __init__(self, input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        use_bias = norm != "batch"  # junyanz: bias only when the norm is not BatchNorm
        kw, padw = 4, 1
        seq: list[nn.Module] = [nn.Conv2d(input_nc, ndf, kw, 2, padw), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [
                nn.Conv2d(ndf * prev, ndf * mult, kw, 2, padw, bias=use_bias),
                norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        seq += [
            nn.Conv2d(ndf * prev, ndf * mult, kw, 1, padw, bias=use_bias),
            norm_layer(norm, ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kw, 1, padw),
        ]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class FeaturePatchDiscriminator(nn.Module):
    """pix2pixHD's NLayerDiscriminator with ``getIntermFeat``: returns every block's output."""

    def __init__(self, input_nc: int, ndf: int, n_layers: int, norm: str) -> None:
        super().__init__()
        kw, padw = 4, math.ceil((4 - 1) / 2)
        blocks: list[list[nn.Module]] = [[nn.Conv2d(input_nc, ndf, kw, 2, padw), nn.LeakyReLU(0.2, True)]]
        nf = ndf
        for _ in range(1, n_layers):
            prev, nf = nf, min(nf * 2, 512)
            blocks.append([nn.Conv2d(prev, nf, kw, 2, padw), norm_layer(norm, nf), nn.LeakyReLU(0.2, True)])
        prev, nf = nf, min(nf * 2, 512)
        blocks.append([nn.Conv2d(prev, nf, kw, 1, padw), norm_layer(norm, nf), nn.LeakyReLU(0.2, True)])
        blocks.append([nn.Conv2d(nf, 1, kw, 1, padw)])
        self.blocks = nn.ModuleList(nn.Sequential(*b) for b in blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """``num_d`` PatchGANs on the input downsampled 1x, 2x, 4x (avg-pool 3, stride 2, as pix2pixHD)."""

    def __init__(
        self, input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "instance", num_d: int = 3
    ) -> None:
        super().__init__()
        self.scales = nn.ModuleList(
            FeaturePatchDiscriminator(input_nc, ndf, n_layers, norm) for _ in range(num_d)
        )
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = self.downsample(x)
            out.append(d(x))
        return out


def build_discriminator(
    kind: str, input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch", num_d: int = 3
) -> nn.Module:
    """``"patch"`` (70x70 PatchGAN) or ``"multiscale"`` (pix2pixHD, ``num_d`` scales)."""
    if kind == "patch":
        return NLayerDiscriminator(input_nc, ndf, n_layers, norm)
    if kind == "multiscale":
        return MultiscaleDiscriminator(input_nc, ndf, n_layers, norm, num_d)
    raise ValueError(f"discriminator must be 'patch' or 'multiscale', not {kind!r}")


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """junyanz ``init_weights(init_type='normal')``: conv/linear N(0, gain), BatchNorm weight N(1, gain)."""
    for m in net.modules():
        name = m.__class__.__name__
        weight: Any = getattr(m, "weight", None)
        bias: Any = getattr(m, "bias", None)
        if weight is not None and ("Conv" in name or "Linear" in name):
            nn.init.normal_(weight, 0.0, gain)
            if bias is not None:
                nn.init.constant_(bias, 0.0)
        elif "BatchNorm2d" in name and weight is not None:
            nn.init.normal_(weight, 1.0, gain)
            nn.init.constant_(bias, 0.0)
