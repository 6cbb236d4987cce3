"""ASP's generator (Li et al., MICCAI 2023): CUT's ResNet with blur-pool anti-aliasing and spectral norm.

Layout of ``model`` with anti-aliasing (ASP's default; indices are key names):
``0`` reflect pad, ``1`` 7x7 conv, ``2`` norm, ``3`` ReLU; per downsampling a stride-1 conv, norm, ReLU and
a ``BlurDownsample`` whose ``filt`` buffer is saved in the state dict (``model.7.filt``); residual blocks;
per upsampling a ``BlurUpsample`` (``filt`` buffer), 3x3 conv, norm, ReLU; reflect pad, 7x7 conv, Tanh.
With spectral norm each conv stores ``weight_orig``/``weight_u``/``weight_v`` (torch's
``nn.utils.spectral_norm``, the function the reference uses, so the keys and eval-time weights match).
The MIST HER2 setting is ``resnet_6blocks``, instance norm, spectral norm, ngf 64.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .detect import is_conv
from .errors import UnknownArchitectureError
from .norms import conv_bias_for, norm_factory
from .registry import register_generator
from .resnet import ResnetBlock

_BLOCK_RE = re.compile(r"^model\.(\d+)\.conv_block\.")
_FILT_RE = re.compile(r"^model\.(\d+)\.filt$")


def binomial_filter(size: int) -> Tensor:
    """Normalised 2-D binomial kernel (rows of Pascal's triangle), the blur-pool filter."""
    row = torch.tensor([float(math.comb(size - 1, k)) for k in range(size)])
    kernel = row[:, None] * row[None, :]
    return kernel / kernel.sum()


class BlurDownsample(nn.Module):
    """Reflect-pad, depthwise blur with a 3x3 binomial filter, stride 2 (anti-aliased downsampling)."""

    filt: Tensor

    def __init__(self, channels: int, filt_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride
        lo, hi = (filt_size - 1) // 2, filt_size // 2
        self.pad = nn.ReflectionPad2d((lo, hi, lo, hi))
        self.register_buffer("filt", binomial_filter(filt_size)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(self.pad(x), self.filt, stride=self.stride, groups=x.shape[1])


class BlurUpsample(nn.Module):
    """x2 upsampling by a depthwise transposed conv with a 4x4 binomial filter (replicate-padded)."""

    filt: Tensor

    def __init__(self, channels: int, filt_size: int = 4, stride: int = 2) -> None:
        super().__init__()
        self.stride = stride
        self.odd = filt_size % 2 == 1
        self.pad_size = (filt_size - 1) // 2
        self.pad = nn.ReplicationPad2d(1)
        filt = binomial_filter(filt_size) * stride**2
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv_transpose2d(
            self.pad(x), self.filt, stride=self.stride, padding=1 + self.pad_size, groups=x.shape[1]
        )[:, :, 1:, 1:]
        return y if self.odd else y[:, :, :-1, :-1]


def _weight_norm(spectral: bool) -> Callable[[nn.Module], nn.Module]:
    if spectral:
        return nn.utils.spectral_norm
    return lambda m: m


class _SpectralResnetBlock(ResnetBlock):
    """The pix2pix residual block with spectral norm on both convs (same key positions)."""

    def __init__(self, dim: int, padding_type: str, norm: str, use_dropout: bool, spectral: bool) -> None:
        super().__init__(dim, padding_type, norm_factory(norm), use_dropout, conv_bias_for(norm))
        wn = _weight_norm(spectral)
        for i, layer in enumerate(self.conv_block):
            if isinstance(layer, nn.Conv2d):
                self.conv_block[i] = wn(layer)


class AspResnetGenerator(nn.Module):
    """CUT/ASP ResNet generator; ``antialias``/``antialias_up`` False give CUT's ``--no_antialias*`` layouts."""

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        norm: str = "instance",
        use_dropout: bool = False,
        n_blocks: int = 6,
        n_downsampling: int = 2,
        spectral_norm: bool = True,
        antialias: bool = True,
        antialias_up: bool = True,
        padding_type: str = "reflect",
    ) -> None:
        super().__init__()
        nl = norm_factory(norm)
        bias = conv_bias_for(norm)
        wn = _weight_norm(spectral_norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            wn(nn.Conv2d(input_nc, ngf, 7, padding=0, bias=bias)),
            nl(ngf),
            nn.ReLU(True),
        ]
        for i in range(n_downsampling):
            ch = ngf * 2**i
            if antialias:
                layers += [
                    wn(nn.Conv2d(ch, ch * 2, 3, stride=1, padding=1, bias=bias)),
                    nl(ch * 2),
                    nn.ReLU(True),
                    BlurDownsample(ch * 2),
                ]
            else:
                layers += [
                    wn(nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias)),
                    nl(ch * 2),
                    nn.ReLU(True),
                ]
        width = ngf * 2**n_downsampling
        for _ in range(n_blocks):
            layers.append(_SpectralResnetBlock(width, padding_type, norm, use_dropout, spectral_norm))
        for i in range(n_downsampling):
            ch = ngf * 2 ** (n_downsampling - i)
            if antialias_up:
                layers += [
                    BlurUpsample(ch),
                    wn(nn.Conv2d(ch, ch // 2, 3, stride=1, padding=1, bias=bias)),
                    nl(ch // 2),
                    nn.ReLU(True),
                ]
            else:
                layers += [
                    wn(nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=bias)),
                    nl(ch // 2),
                    nn.ReLU(True),
                ]
        layers += [nn.ReflectionPad2d(3), wn(nn.Conv2d(ngf, output_nc, 7, padding=0)), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def encode(self, x: Tensor, layers: list[int]) -> list[Tensor]:
        """Outputs of ``model[i]`` for ``i`` in ``layers`` (CUT's ``encode_only``), stopping after the last."""
        feats, last = [], max(layers)
        for i, layer in enumerate(self.model):
            x = layer(x)
            if i in layers:
                feats.append(x)
            if i == last:
                break
        return feats

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


register_generator("asp_resnet")(AspResnetGenerator)  # the constructor is the factory: one signature


def detect_asp(sd: dict[str, Tensor]) -> tuple[str, dict[str, Any]]:
    """Arguments of a CUT/ASP ResNet state dict (blur ``filt`` buffers and/or spectral-norm keys)."""
    spectral = "model.1.weight_orig" in sd
    wkey = "weight_orig" if spectral else "weight"
    first = sd.get(f"model.1.{wkey}")
    blocks = sorted({int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k))})
    if first is None or first.ndim != 4 or not blocks:
        raise UnknownArchitectureError("blur-pool/spectral-norm keys found but no CUT/ASP ResNet layout")
    filts = sorted({int(m.group(1)) for k in sd if (m := _FILT_RE.match(k))})
    antialias = any(i < blocks[0] for i in filts)
    antialias_up = any(i > blocks[-1] for i in filts)
    step = 4 if antialias else 3
    if (blocks[0] - 4) % step:
        raise UnknownArchitectureError(
            f"first residual block at model.{blocks[0]}: not a CUT/ASP ResNet layout"
        )
    b0 = blocks[0]
    zero_pad = is_conv(sd, f"model.{b0}.conv_block.0.{wkey}")
    second_conv = 3 if zero_pad else 5
    convs = [
        int(m.group(1)) for k in sd if (m := re.fullmatch(rf"model\.(\d+)\.{wkey}", k)) and sd[k].ndim == 4
    ]
    return "asp_resnet", {
        "input_nc": int(first.shape[1]),
        "output_nc": int(sd[f"model.{max(convs)}.{wkey}"].shape[0]),
        "ngf": int(first.shape[0]),
        "norm": "batch" if "model.2.weight" in sd else ("instance" if "model.1.bias" in sd else "none"),
        "use_dropout": is_conv(sd, f"model.{b0}.conv_block.{second_conv + 1}.{wkey}"),  # not a norm's scale
        "n_blocks": len(blocks),
        "n_downsampling": (b0 - 4) // step,
        "spectral_norm": spectral,
        "antialias": antialias,
        "antialias_up": antialias_up,
        "padding_type": "zero" if zero_pad else "reflect",
    }
