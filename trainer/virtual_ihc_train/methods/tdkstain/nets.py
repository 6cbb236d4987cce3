"""TDKstain's networks besides the generator (balball/TDKstain ``models/networks.py``, ``tdk_model.py``).

- :func:`encoder_features`: the generator's encoder outputs after each downsampling (the ReLU that closes
  it: layers 6, 9, 12 of the core's ResNet with 3 downsamplings; 128, 256, 512 channels at H/2, H/4, H/8);
- :class:`NucleiDensityEstimator` (E): those features resized to the first one's size (bilinear,
  ``align_corners=True``), concatenated, a 7x7 'same' conv to ``nef`` + norm + ReLU, ``n_blocks`` residual
  blocks, a 7x7 'same' conv to 1, sigmoid; the density is then resized to the target's size (bilinear,
  ``align_corners=True``), as ``backward_E`` does;
- :class:`MultiscalePatchDiscriminator`: ``num_d`` PatchGANs (the reference's ``NLayerDiscriminator``:
  4x4 kernels, padding 1, n_layers 3) on the input and on it downsampled by ``AvgPool2d(3, 2, 1,
  count_include_pad=False)`` once and twice; each returns only its prediction (no feature matching).
  The reference names the full-resolution PatchGAN ``layer2``; here it is ``scales.0``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from napari_virtual_ihc.models.norms import conv_bias_for, norm_factory
from napari_virtual_ihc.models.resnet import ResnetBlock, ResnetGenerator

from ...discriminators import NLayerDiscriminator


def encoder_layers(n_downsampling: int) -> list[int]:
    """Indices in ``ResnetGenerator.model`` of the ReLU closing each downsampling (the reference's
    ``feat_layers``: 4 stem layers, 3 per downsampling)."""
    return [4 + 3 * i - 1 for i in range(1, n_downsampling + 1)]


def encoder_channels(ngf: int, n_downsampling: int) -> list[int]:
    return [ngf * 2**i for i in range(1, n_downsampling + 1)]


def encoder_features(generator: ResnetGenerator, x: Tensor, layers: Sequence[int]) -> list[Tensor]:
    """Outputs of ``generator.model[i]`` for ``i`` in ``layers``, stopping after the last one."""
    feats: list[Tensor] = []
    wanted = set(layers)
    last = max(layers)
    for i, layer in enumerate(generator.model):
        x = layer(x)
        if i in wanted:
            feats.append(x)
        if i == last:
            break
    return feats


class NucleiDensityEstimator(nn.Module):
    """E: the generator's encoder features -> a nuclei density map in [0, 1]."""

    def __init__(
        self, input_nc: int, output_nc: int = 1, nef: int = 128, n_blocks: int = 4, norm: str = "instance"
    ) -> None:
        super().__init__()
        norm_layer = norm_factory(norm)
        bias = conv_bias_for(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, nef, 7, padding="same", bias=bias),
            norm_layer(nef),
            nn.ReLU(True),
        ]
        layers += [ResnetBlock(nef, "reflect", norm_layer, False, bias) for _ in range(n_blocks)]
        layers += [nn.Conv2d(nef, output_nc, 7, padding="same"), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)

    def forward(self, feats: Sequence[Tensor], out_size: tuple[int, int] | None = None) -> Tensor:
        size = feats[0].shape[-2:]
        fused = torch.cat(
            [F.interpolate(f, size=size, mode="bilinear", align_corners=True) for f in feats], dim=1
        )
        density = self.model(fused)
        if out_size is not None:
            density = F.interpolate(density, size=out_size, mode="bilinear", align_corners=True)
        return density


class MultiscalePatchDiscriminator(nn.Module):
    """``num_d`` PatchGANs at 1x, 1/2, 1/4 of the input; ``forward`` returns their predictions."""

    def __init__(
        self, input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "instance", num_d: int = 3
    ) -> None:
        super().__init__()
        self.scales = nn.ModuleList(NLayerDiscriminator(input_nc, ndf, n_layers, norm) for _ in range(num_d))
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def scale_inputs(self, x: Tensor) -> list[Tensor]:
        out = [x]
        for _ in range(len(self.scales) - 1):
            out.append(self.downsample(out[-1]))
        return out

    def forward(self, x: Tensor) -> list[Tensor]:
        return [d(xi) for d, xi in zip(self.scales, self.scale_inputs(x), strict=True)]
