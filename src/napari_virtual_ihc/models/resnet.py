"""The pix2pix/CycleGAN ResNet generator, laid out so the reference state-dict keys load unchanged.

Layout of ``model`` (a flat ``nn.Sequential``; indices are part of the key names):
``0`` reflect pad, ``1`` 7x7 conv, ``2`` norm, ``3`` ReLU; per downsampling a stride-2 conv, norm, ReLU;
``n_blocks`` residual blocks; per upsampling a transposed conv, norm, ReLU; reflect pad, 7x7 conv, Tanh.
With 2 downsamplings and 9 blocks the first block is ``model.10`` (``model.10.conv_block.1.weight``).

``conditioning_planes`` (the CycleGAN tumour-class plane): the last input planes are not convolved with the
image but added, through a learned 1x1 map (``class_bias``), right after the first normalisation. A plane fed
as a plain input channel reaches the network as ``conv(plane)``: for a plane that is constant over the patch
(one class per patch) that is a constant per channel, which the InstanceNorm right after removes exactly, so
the generator could never see the class (zero gradient to its weights). After the norm it is a class-dependent
shift before the ReLU. Pointwise, so tiling stays exact.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .norms import NormFactory, conv_bias_for, norm_factory
from .registry import register_generator


def _pad(padding_type: str) -> tuple[list[nn.Module], int]:
    """Explicit padding layer (reflect/replicate) or the conv's own zero padding."""
    if padding_type == "reflect":
        return [nn.ReflectionPad2d(1)], 0
    if padding_type == "replicate":
        return [nn.ReplicationPad2d(1)], 0
    if padding_type == "zero":
        return [], 1
    raise ValueError(f"unknown padding_type {padding_type!r}")


class ResnetBlock(nn.Module):
    """``x + conv_block(x)``; ``conv_block`` = pad, conv, norm, ReLU, [dropout], pad, conv, norm.

    Dropout shifts the second conv from ``conv_block.5`` to ``conv_block.6``.
    """

    def __init__(
        self, dim: int, padding_type: str, norm_layer: NormFactory, use_dropout: bool, use_bias: bool
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        pad, p = _pad(padding_type)
        layers += [*pad, nn.Conv2d(dim, dim, 3, padding=p, bias=use_bias), norm_layer(dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        pad, p = _pad(padding_type)
        layers += [*pad, nn.Conv2d(dim, dim, 3, padding=p, bias=use_bias), norm_layer(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_block(x)
        if torch.is_grad_enabled() or out.requires_grad:
            return x + out
        return out.add_(x)  # inference: the block's fresh output takes the sum, no new activation


class ResnetGenerator(nn.Module):
    """Encoder (``n_downsampling`` stride-2 convs), ``n_blocks`` residual blocks, decoder, Tanh output."""

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        norm: str = "instance",
        use_dropout: bool = False,
        n_blocks: int = 9,
        n_downsampling: int = 2,
        padding_type: str = "reflect",
        conditioning_planes: int = 0,
    ) -> None:
        super().__init__()
        if n_blocks < 0 or n_downsampling < 0:
            raise ValueError("n_blocks and n_downsampling must be >= 0")
        if not 0 <= conditioning_planes < input_nc:
            raise ValueError(f"conditioning_planes must be in [0, input_nc), got {conditioning_planes}")
        norm_layer = norm_factory(norm)
        bias = conv_bias_for(norm)
        self.conditioning_planes = conditioning_planes
        self.class_bias = nn.Conv2d(conditioning_planes, ngf, 1, bias=False) if conditioning_planes else None
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc - conditioning_planes, ngf, 7, padding=0, bias=bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        for i in range(n_downsampling):
            ch = ngf * 2**i
            layers += [
                nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias),
                norm_layer(ch * 2),
                nn.ReLU(True),
            ]
        width = ngf * 2**n_downsampling
        for _ in range(n_blocks):
            layers.append(ResnetBlock(width, padding_type, norm_layer, use_dropout, bias))
        for i in range(n_downsampling):
            ch = ngf * 2 ** (n_downsampling - i)
            layers += [
                nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=bias),
                norm_layer(ch // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.class_bias is None:
            return self.model(x)
        k = self.conditioning_planes
        h = self.model[:3](x[:, :-k])  # pad, conv, norm of the image
        return self.model[3:](h + self.class_bias(x[:, -k:]))


register_generator("resnet")(ResnetGenerator)  # the constructor is the factory: one signature
