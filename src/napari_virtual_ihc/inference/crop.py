"""Cropping a ResNet generator's trunk, block by block, to what the tile's core still needs.

A tile's window carries a halo of half the receptive field so the core is exact; but every 3x3 convolution
of the residual trunk consumes one pixel of that context, so by the last block most of the halo no longer
influences the core. Computing it anyway is waste: at 512 px tiles the trunk (quarter resolution, 172 px of
which the core needs 128 + the decoder's margin) spends ~24 % of its time on it. Here each residual block
drops one trunk pixel per convolution on every side where the window has context to spare (not on a side
where the window meets the slide's edge: there the whole-image pass pads, and so must we), the skip
connection cropped alike. The decoder then runs on the smaller map; the output is padded back to the
window's size with zeros outside the region the core lies in, which the engine never writes. The core's pixels
are what they were: same arithmetic on the same inputs (test: identical output cores).

Only the plain ``ResnetGenerator`` layout (blocks in one ``nn.Sequential``, no class plane, no positional
dropout) is cropped; the sides are set per batch through a shared :class:`CropContext` (none by default, so
calibration windows and blank glass run uncropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from ..models.describe import receptive_field
from ..models.resnet import ResnetBlock, ResnetGenerator
from .normalization import BATCH_NORMS, FrozenNorm
from .pads import pad_keeping_dtype
from .winograd import WinogradConv2d

Sides = tuple[bool, bool, bool, bool]  # left, top, right, bottom
NO_SIDES: Sides = (False, False, False, False)


@dataclass
class CropContext:
    """Which sides of the next batch's windows have context to spare (set by the engine before each batch)."""

    sides: Sides = NO_SIDES


def _crop(x: Tensor, px: int, sides: Sides) -> Tensor:
    left, top, right, bottom = (px if s else 0 for s in sides)
    return x[:, :, top : x.shape[2] - bottom, left : x.shape[3] - right]


class CroppedResnetBlock(nn.Module):
    """A ``ResnetBlock`` whose convolutions each drop one pixel on the context's sides (exact inside)."""

    def __init__(self, block: ResnetBlock, ctx: CropContext) -> None:
        super().__init__()
        self.conv_block = block.conv_block
        self.ctx = ctx
        self.convs = sum(1 for m in self.conv_block if _is_conv(m))

    def forward(self, x: Tensor) -> Tensor:
        sides = self.ctx.sides
        if not any(sides):
            out = self.conv_block(x)
            return out.add_(x)
        out = x
        padded_by_side = False
        for m in self.conv_block:
            if isinstance(m, nn.ReflectionPad2d):
                # pad only the sides that keep their border; on a shedding side the convolution's valid output
                # is exactly what padding and then cropping one pixel gave, without the copy or the crop
                out = _pad_kept_sides(out, m, sides)
                padded_by_side = True
                continue
            out = m(out)
            if _is_conv(m):
                if not padded_by_side:  # the convolution's own zero padding: crop what it added
                    out = _crop(out, 1, sides)
                padded_by_side = False
        return out.add_(_crop(x, self.convs, sides))


def _pad_kept_sides(x: Tensor, pad: nn.ReflectionPad2d, sides: Sides) -> Tensor:
    """``pad`` applied only where ``sides`` says the window has no context to spare."""
    left, right, top, bottom = pad.padding
    amounts = (
        0 if sides[0] else left,
        0 if sides[2] else right,
        0 if sides[1] else top,
        0 if sides[3] else bottom,
    )
    return pad_keeping_dtype(x, amounts, "reflect") if any(amounts) else x


class SidePad(nn.Module):
    """The decoder's last reflection pad, skipped on the sides with context to spare: at full resolution
    and ``ngf`` channels it is the largest copy of a tile's pass, and the pixels it makes there lie in the
    halo, which the engine never writes (an interior tile, context on all four sides, copies nothing)."""

    def __init__(self, pad: nn.ReflectionPad2d, ctx: CropContext) -> None:
        super().__init__()
        self.pad = pad
        self.ctx = ctx

    def forward(self, x: Tensor) -> Tensor:
        return _pad_kept_sides(x, self.pad, self.ctx.sides)


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, WinogradConv2d))


class CroppedGenerator(nn.Module):
    """The generator with a cropped trunk; its output padded back to the input's size (zeros outside)."""

    def __init__(self, inner: nn.Module, ctx: CropContext, shed: int) -> None:
        super().__init__()
        self.inner = inner
        self.ctx = ctx
        self.shed = shed  # output pixels missing per side where the context allows (trunk and last pad)

    def forward(self, x: Tensor) -> Tensor:
        y = self.inner(x)
        if not any(self.ctx.sides):
            return y
        left, top, right, bottom = (self.shed if s else 0 for s in self.ctx.sides)
        return F.pad(y, (left, right, top, bottom))


def _is_blocked(m: nn.Module) -> bool:
    """The plain layout this module crops: blocks of pads, convolutions, norms and activations only
    (positional dropout's masks follow feature-map positions, which cropping would move)."""
    plain = (
        nn.ReflectionPad2d,
        nn.Conv2d,
        WinogradConv2d,
        nn.Identity,
        nn.ReLU,
        nn.InstanceNorm2d,
        FrozenNorm,
        *BATCH_NORMS,
    )
    return isinstance(m, ResnetBlock) and all(isinstance(s, plain) for s in m.conv_block)


def trunk_plan(module: nn.Module, halo: int) -> tuple[int, int] | None:
    """(blocks to crop, input px shed per side) for ``module`` with ``halo`` px of context, None if it does
    not apply. Blocks are cropped while the trunk keeps the decoder's margin of context past the core."""
    if not isinstance(module, ResnetGenerator) or module.class_bias is not None:
        return None
    seq = module.model
    at = [i for i, m in enumerate(seq) if isinstance(m, ResnetBlock)]
    if not at or not all(_is_blocked(seq[i]) for i in at) or at != list(range(at[0], at[-1] + 1)):
        return None
    before = nn.Sequential(*list(seq)[: at[0]])
    stride = 1
    for m in before.modules():
        if isinstance(m, nn.Conv2d):
            stride *= m.stride[0]
    decoder_margin = math.ceil(receptive_field(nn.Sequential(*list(seq)[at[-1] + 1 :])) / 2) + 1
    spare = halo // stride - decoder_margin  # trunk px of context the core does not need
    first = seq[at[0]]
    assert isinstance(first, ResnetBlock)
    convs = CroppedResnetBlock(first, CropContext()).convs
    blocks = min(len(at), max(0, spare // max(1, convs)))
    if blocks == 0:
        return None
    return blocks, blocks * convs * stride


def use_cropping(module: nn.Module, halo: int, ctx: CropContext) -> tuple[nn.Module, int]:
    """``module`` with its first residual blocks cropped (in place) and wrapped to restore the
    output size; (module unchanged, 0) when the layout does not apply."""
    plan = trunk_plan(module, halo)
    if plan is None:
        return module, 0
    assert isinstance(module, ResnetGenerator)
    blocks, shed = plan
    seq = module.model
    at = [i for i, m in enumerate(seq) if isinstance(m, ResnetBlock)]
    for i in at[:blocks]:  # the first ones: every block after them runs on the smaller map
        block = seq[i]
        assert isinstance(block, ResnetBlock)
        seq[i] = CroppedResnetBlock(block, ctx)
    pads = [k for k, m in enumerate(seq) if isinstance(m, nn.ReflectionPad2d)]
    last = pads[-1] if pads else -1
    # the output layer's pad (its margin is in the decoder's): skipped on the sides with context to spare
    if at[-1] < last < len(seq) - 1 and _is_conv(seq[last + 1]):
        pad = seq[last]
        assert isinstance(pad, nn.ReflectionPad2d)
        seq[last] = SidePad(pad, ctx)
        shed += pad.padding[0]
    return CroppedGenerator(module, ctx, shed), blocks


def spare_sides(core_in_window: tuple[int, int, int, int], window: tuple[int, int], halo: int) -> Sides:
    """The sides of a window with at least ``halo`` px of context beyond its core (those may be cropped)."""
    cx, cy, cw, ch = core_in_window
    ww, wh = window
    return (cx >= halo, cy >= halo, ww - cx - cw >= halo, wh - cy - ch >= halo)
