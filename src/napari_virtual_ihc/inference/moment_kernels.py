"""The statistics pass's two memory-bound steps as single passes over an activation: moments and the affine.

Why: an exact pooled pass (``slide_stats``) normalises with statistics it pools as it goes, so every
InstanceNorm's input is read to sum its moments and then rewritten by the per-channel affine; the frozen model
that the tile pass runs has both folded into the convolutions. In eager PyTorch the moments took a copy to an
fp32 scratch buffer and two reductions, and the affine two in-place passes with a bf16-rounded scale: on an
ngf-64 ResNet-9 the pass ran 1.2-1.3x the frozen model's time (AMD Zen 4, bf16, one core). Compiled with
``torch.compile`` (inductor, dynamic shapes) each step is one fused loop: the moments read the bf16 map once
and sum in fp32 per row (then float64 over rows), the affine reads and writes it once with an fp32 scale.

CPU only (elsewhere, or where inductor cannot build: no C++ compiler, the eager steps run, the same figures
to float rounding).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

log = logging.getLogger(__name__)

_compiled: dict[str, Callable[..., Tensor | tuple[Tensor, Tensor]]] = {}
_failed: list[str] = []  # the reason inductor could not build here (then eager from then on)


def _row_sums(rows: Tensor, shift: Tensor) -> tuple[Tensor, Tensor]:
    """(rows, w, C) map, (C,) shift -> per row and channel, sum of (x - shift) and of its square, fp32."""
    d = rows.float() - shift
    return d.sum(1), (d * d).sum(1)


def _affine_into(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """``x = x * scale + shift`` in place, computed in fp32 (``scale``/``shift`` fp32, (1, C, 1, 1))."""
    return x.copy_(x.float() * scale + shift)


def _affine(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    return (x.float() * scale + shift).to(x.dtype)


def _kernel(name: str, fn: Callable[..., Tensor | tuple[Tensor, Tensor]]) -> Callable[..., object] | None:
    if _failed:
        return None
    if name not in _compiled:
        _compiled[name] = torch.compile(fn, dynamic=True)
    return _compiled[name]


def _run(name: str, fn: Callable[..., Tensor | tuple[Tensor, Tensor]], *args: Tensor) -> object:
    """``fn(*args)`` compiled on the CPU, eager elsewhere or once compiling has failed in this process."""
    kernel = _kernel(name, fn) if args[0].device.type == "cpu" else None
    if kernel is None:
        return fn(*args)
    try:
        return kernel(*args)
    except MemoryError:
        raise
    except Exception as e:  # inductor's errors (no C++ compiler, a failed build): eager gives the same sums
        _failed.append(f"{type(e).__name__}: {e}")
        log.warning("statistics kernels not compiled here, running eager (%s)", _failed[0])
        return fn(*args)


def channel_moments(part: Tensor, chunk: int = 4_000_000) -> tuple[int, Tensor, Tensor]:
    """(pixel count, per-channel mean, per-channel sum of squared deviations) of a (C, h, w) view, float64.

    Shifted by the first row's mean so the fp32 sums of squares do not cancel; fp32 within a row (at most a
    few thousand pixels), float64 across rows and chunks of about ``chunk`` values.
    """
    c, h, w = part.shape
    shift = part[:, 0, :].float().mean(1)
    total = torch.zeros(c, dtype=torch.float64, device=part.device)
    total_sq = torch.zeros(c, dtype=torch.float64, device=part.device)
    rows = max(1, chunk // max(1, w * c))
    for y0 in range(0, h, rows):
        out = _run("row_sums", _row_sums, part[:, y0 : y0 + rows].permute(1, 2, 0), shift)
        assert isinstance(out, tuple)
        total += out[0].double().sum(0)
        total_sq += out[1].double().sum(0)
    n = h * w
    mean = shift.double() + total / n
    return n, mean.cpu(), (total_sq - total * total / n).clamp_min(0).cpu()


def channel_affine(x: Tensor, scale: Tensor, shift: Tensor, inplace: bool) -> Tensor:
    """``x * scale + shift`` per channel (fp32 ``scale``/``shift`` of shape (C,)), in place when asked."""
    shape = (1, -1, 1, 1)
    s, b = scale.float().view(shape).to(x.device), shift.float().view(shape).to(x.device)
    out = _run("affine_into" if inplace else "affine", _affine_into if inplace else _affine, x, s, b)
    assert isinstance(out, Tensor)
    return out


def compile_failure() -> str | None:
    """Why the kernels run eager in this process (None: compiled, or not yet tried)."""
    return _failed[0] if _failed else None
