"""The pix2pix U-Net generator (``unet_256``: 8 downsamplings), keys nested as the reference's.

Each level is a ``UnetSkipConnectionBlock`` whose ``model`` Sequential holds its own down layers, the
next level, and its up layers, giving keys like ``model.model.1.model.3.model.1.weight``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .norms import NormFactory, conv_bias_for, norm_factory
from .registry import register_generator


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: ``cat([x, up(sub(down(x)))])`` (the outermost level returns without the skip)."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        norm_layer: NormFactory,
        use_bias: bool,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        in_ch = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(in_ch, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        layers: list[nn.Module]
        if outermost:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True), upconv, norm_layer(outer_nc)]
        else:
            assert submodule is not None
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [
                nn.LeakyReLU(0.2, True),
                downconv,
                norm_layer(inner_nc),
                submodule,
                nn.ReLU(True),
                upconv,
                norm_layer(outer_nc),
            ]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net with ``num_downs`` halvings: inputs must be multiples of ``2**num_downs`` (256 for unet_256)."""

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError("num_downs must be >= 5")
        nl = norm_factory(norm)
        bias = conv_bias_for(norm)
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, nl, bias, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(
                ngf * 8, ngf * 8, nl, bias, submodule=block, use_dropout=use_dropout
            )
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, nl, bias, submodule=block)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, nl, bias, submodule=block)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, nl, bias, submodule=block)
        self.model = UnetSkipConnectionBlock(
            output_nc, ngf, nl, bias, input_nc=input_nc, submodule=block, outermost=True
        )
        self.num_downs = num_downs

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


@register_generator("unet_256")
def build_unet_256(
    input_nc: int = 3, output_nc: int = 3, ngf: int = 64, norm: str = "batch", use_dropout: bool = False
) -> UnetGenerator:
    return UnetGenerator(input_nc, output_nc, 8, ngf, norm, use_dropout)


@register_generator("unet_128")
def build_unet_128(
    input_nc: int = 3, output_nc: int = 3, ngf: int = 64, norm: str = "batch", use_dropout: bool = False
) -> UnetGenerator:
    return UnetGenerator(input_nc, output_nc, 7, ngf, norm, use_dropout)


@register_generator("unet")
def build_unet(
    input_nc: int = 3,
    output_nc: int = 3,
    num_downs: int = 8,
    ngf: int = 64,
    norm: str = "batch",
    use_dropout: bool = False,
) -> UnetGenerator:
    return UnetGenerator(input_nc, output_nc, num_downs, ngf, norm, use_dropout)
