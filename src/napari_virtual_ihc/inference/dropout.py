"""Dropout at inference, as the papers' test scripts run it, without seams: masks are a function of slide position.

pix2pix and BCI's ``test.py`` never call ``model.eval()`` unless ``--eval`` is passed, so dropout stays on: each
output is one sample of the generator. Drawn from torch's RNG, every window would get a different mask for the
same slide pixels and overlapping windows would disagree (seams). Here each kept/dropped decision is a hash of
(seed, sample, dropout layer, channel, feature-map row, feature-map column), the coordinates counted from the
slide plane's origin, so a pixel's mask is the same in every window that contains it.

Modes: ``off`` (eval-mode identity, the default), ``sample`` (one sample, as test.py) and ``mean:N`` (the mean of
N samples; their per-pixel spread is the confidence map).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

_MASK62 = (1 << 62) - 1
_MIX = (0x3C6EF372FE94F82A, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179, 0x27BB2EE687B0B0FD, 0x6A09E667F3BCC909)
_FINAL = (0xBF58476D1CE4E5B9 & _MASK62, 0x94D049BB133111EB & _MASK62)


# mean:N runs the model N times per tile: more than this is days of work for a spread that no longer changes
MAX_SAMPLES = 64


class DropoutModeError(ValueError):
    """A dropout mode that is not ``off``, ``sample`` or ``mean:N`` (N >= 2)."""


@dataclass(frozen=True)
class DropoutMode:
    """``off``, ``sample`` or ``mean`` with ``samples`` >= 2."""

    kind: str = "off"
    samples: int = 1

    @classmethod
    def parse(cls, text: str | None) -> DropoutMode:
        t = (text or "off").strip().lower()
        if t in ("off", "none", "eval"):
            return cls("off", 1)
        if t == "sample":
            return cls("sample", 1)
        m = re.fullmatch(r"mean:(\d{1,9})", t)
        if m and 2 <= int(m.group(1)) <= MAX_SAMPLES:
            return cls("mean", int(m.group(1)))
        raise DropoutModeError(
            f"dropout mode {text!r}: use off, sample or mean:N with N from 2 to at most {MAX_SAMPLES} "
            "(e.g. mean:8; each sample is one more pass over the slide)"
        )

    @property
    def active(self) -> bool:
        return self.kind != "off"

    def __str__(self) -> str:
        return f"mean:{self.samples}" if self.kind == "mean" else self.kind


class DropoutContext:
    """What every PositionalDropout of one model reads: the seed, the sample index and, per batch element, the
    window's top-left corner in plane pixels (x, y). Shared, not copied, by the model copies the engine makes."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.sample = 0
        self.origins: list[tuple[int, int]] | None = None
        self.input_hw: tuple[int, int] | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> DropoutContext:
        return self


def _mix(v: Tensor) -> Tensor:
    """splitmix64's finaliser on 62-bit non-negative int64 (so shifts are logical): a well-spread hash."""
    v = v ^ (v >> 30)
    v = (v * _FINAL[0]) & _MASK62
    v = v ^ (v >> 27)
    v = (v * _FINAL[1]) & _MASK62
    return v ^ (v >> 31)


# values hashed at once: the temporaries of the hash's ~15 int64 steps stay in cache (hashing a whole
# 256-channel trunk map at once cost ~60 ns per value, most of a dropout sample's tile time)
MASK_CHUNK = 1 << 20


def keep_mask(
    seed: int,
    sample: int,
    layer: int,
    channels: int,
    y0: int,
    x0: int,
    h: int,
    w: int,
    p: float,
    device: Any,
    channels_last: bool = False,
) -> Tensor:
    """(channels, h, w) bool: which units survive, for feature-map rows y0.. and columns x0.. (global).

    ``channels_last``: laid out (h, w, channels) underneath (a permuted view), as the activations it masks.
    The same values either way, hashed in chunks of rows."""
    ar = torch.arange
    base = _mix(torch.tensor((seed * _MIX[0] + sample * _MIX[1] + layer * _MIX[2]) & _MASK62))
    hc = _mix((ar(channels, device=device) * _MIX[3] + int(base)) & _MASK62)
    hy = _mix((ar(y0, y0 + h, device=device) * _MIX[4]) & _MASK62)
    hx = _mix(ar(x0, x0 + w, device=device) & _MASK62)
    yx = (hy * 3 & _MASK62).view(-1, 1) ^ hx.view(1, -1)  # (h, w): the position's part of every unit's hash
    threshold = int(p * (1 << 24))
    low24 = (1 << 24) - 1
    if channels_last:
        out = torch.empty((h, w, channels), dtype=torch.bool, device=device)
        rows = max(1, MASK_CHUNK // max(1, w * channels))
        for r0 in range(0, h, rows):
            out[r0 : r0 + rows] = (_mix(yx[r0 : r0 + rows, :, None] ^ hc.view(1, 1, -1)) & low24) >= threshold
        return out.permute(2, 0, 1)
    out = torch.empty((channels, h, w), dtype=torch.bool, device=device)
    rows = max(1, MASK_CHUNK // max(1, w))
    for c in range(channels):
        for r0 in range(0, h, rows):
            out[c, r0 : r0 + rows] = (_mix(hc[c] ^ yx[r0 : r0 + rows]) & low24) >= threshold
    return out


class PositionalDropout(nn.Module):
    """``nn.Dropout(p)`` whose mask is a function of the slide position (see the module docstring)."""

    def __init__(self, p: float, layer: int, context: DropoutContext) -> None:
        super().__init__()
        self.p = float(p)
        self.layer = layer
        self.context = context

    def forward(self, x: Tensor) -> Tensor:
        ctx = self.context
        n, c, h, w = x.shape
        in_h, in_w = ctx.input_hw or (h, w)
        sy, sx = max(1, round(in_h / h)), max(1, round(in_w / w))  # this layer's stride from the input
        origins = ctx.origins or [(0, 0)] * n
        scale = 1.0 / (1.0 - self.p)
        out = torch.empty_like(x)
        last = x.is_contiguous(memory_format=torch.channels_last)  # the mask laid out as x: one pass
        for b in range(n):
            ox, oy = origins[b] if b < len(origins) else origins[-1]
            keep = keep_mask(
                ctx.seed,
                ctx.sample,
                self.layer,
                c,
                oy // sy,
                ox // sx,
                h,
                w,
                self.p,
                x.device,
                channels_last=last,
            )
            torch.mul(x[b], keep.to(x.dtype), out=out[b])
        return out.mul_(scale)  # after the mask (the scale rounded once, in the op's math, as it always was)


def dropout_layers(module: nn.Module) -> list[str]:
    """Names of the active ``nn.Dropout`` layers (p > 0)."""
    return [n for n, m in module.named_modules() if isinstance(m, nn.Dropout) and m.p > 0]


def install_positional_dropout(module: nn.Module, context: DropoutContext) -> int:
    """Replace (in place) every ``nn.Dropout`` of ``module`` by a PositionalDropout reading ``context``."""
    names = dropout_layers(module)
    for layer, name in enumerate(names):
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        old = getattr(parent, child)
        setattr(parent, child, PositionalDropout(old.p, layer, context))
    return len(names)


def set_positions(module: nn.Module, origins: list[tuple[int, int]], input_hw: tuple[int, int]) -> None:
    """Tell ``module``'s positional dropouts where the next batch's windows lie on the plane."""
    for m in module.modules():
        if isinstance(m, PositionalDropout):
            m.context.origins = list(origins)
            m.context.input_hw = input_hw
            return


def with_positional_dropout(
    module: nn.Module, mode: DropoutMode, seed: int
) -> tuple[nn.Module, DropoutContext | None]:
    """A copy of ``module`` whose dropouts are positional (and a context to steer them), or ``module`` itself
    when dropout is off or the model has none."""
    if not mode.active or not dropout_layers(module):
        return module, None
    context = DropoutContext(seed)
    copied = copy.deepcopy(module)
    install_positional_dropout(copied, context)
    return copied, context
