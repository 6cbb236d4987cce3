"""Facts about a generator the tile engine needs: normalisation, receptive field, input size multiple.

The receptive field is the convolutional one (what a halo must cover so border pixels see the same
neighbourhood as in a whole-image pass); instance norm additionally couples every pixel to the tile's
statistics, which the engine handles separately (frozen slide-level statistics).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from .asp import BlurDownsample, BlurUpsample
from .norms import norm_kind


def _trace(module: nn.Module, rf: float, jump: float, max_jump: float) -> tuple[float, float, float]:
    """Propagate (receptive field, input px per feature px) through ``module`` in forward order."""
    if isinstance(module, nn.ConvTranspose2d):
        jump /= module.stride[0]
        rf += (module.kernel_size[0] - 1) * module.dilation[0] * jump
    elif isinstance(module, nn.Conv2d):
        rf += (module.kernel_size[0] - 1) * module.dilation[0] * jump
        jump *= module.stride[0]
    elif isinstance(module, BlurDownsample):
        rf += (module.filt.shape[-1] - 1) * jump
        jump *= module.stride
    elif isinstance(module, BlurUpsample):
        jump /= module.stride
        rf += (module.filt.shape[-1] - 1) * jump
    else:
        for child in module.children():  # Sequential order is forward order for the built-in generators
            rf, jump, max_jump = _trace(child, rf, jump, max_jump)
    return rf, jump, max(max_jump, jump)


def receptive_field(module: nn.Module) -> int:
    """Side, in input pixels, of the square of input that can influence one output pixel via convolutions."""
    rf, _, _ = _trace(module, 1.0, 1.0, 1.0)
    return math.ceil(rf)


def size_multiple(module: nn.Module) -> int:
    """Input height/width must be a multiple of this (total downsampling) for output size == input size."""
    _, _, max_jump = _trace(module, 1.0, 1.0, 1.0)
    return max(1, round(max_jump))


def _pad_need(module: nn.Module, jump: float, need: float) -> tuple[float, float]:
    """Walk ``module`` in forward order: (input px per feature px, smallest input side its pads accept)."""
    if isinstance(module, nn.ReflectionPad2d | nn.ReplicationPad2d):
        # Reflection needs a feature map larger than the pad on every side (torch refuses otherwise).
        need = max(need, (max(module.padding) + 1) * jump)
    elif isinstance(module, nn.InstanceNorm2d):  # statistics of a single pixel are refused by torch
        need = max(need, 2 * jump)
    elif isinstance(module, nn.ConvTranspose2d):
        jump /= module.stride[0]
    elif isinstance(module, nn.Conv2d):
        jump *= module.stride[0]
    elif isinstance(module, BlurDownsample):
        jump, need = _pad_need(module.pad, jump, need)[0] * module.stride, max(need, 2 * jump)
    elif isinstance(module, BlurUpsample):
        need = max(need, 2 * jump)
        jump /= module.stride
    else:
        for child in module.children():
            jump, need = _pad_need(child, jump, need)
    return jump, need


def min_input_side(module: nn.Module) -> int:
    """Smallest input height/width the generator runs on (a multiple of its ``size_multiple``).

    A 9-block ResNet with two downsamplings reflect-pads 4x-downsampled features by 1 px, so it needs 8 px;
    a U-Net has no padding layers and runs on one ``size_multiple``.
    """
    align = size_multiple(module)
    _, need = _pad_need(module, 1.0, 1.0)
    return max(align, math.ceil(math.ceil(need) / align) * align)


def describe(module: nn.Module) -> dict[str, Any]:
    """``norm``, ``receptive_field``, ``size_multiple`` and ``parameters`` of a generator."""
    return {
        "norm": norm_kind(module),
        "receptive_field": receptive_field(module),
        "size_multiple": size_multiple(module),
        "parameters": sum(int(p.numel()) for p in module.parameters()),
    }
