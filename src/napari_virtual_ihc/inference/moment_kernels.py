"""The statistics pass's two memory-bound steps as single passes over an activation: moments and the affine.

Why: an exact pooled pass (``slide_stats``) normalises with statistics it pools as it goes, so every
InstanceNorm's input is read to sum its moments and then rewritten by the per-channel affine; the frozen model
that the tile pass runs has both folded into the convolutions. In eager PyTorch the moments took a copy to an
fp32 scratch buffer and two reductions, and the affine two in-place passes with a bf16-rounded scale: on an
ngf-64 ResNet-9 the pass ran 1.2-1.3x the frozen model's time (AMD Zen 4, bf16, one core). Compiled with
``torch.compile`` (inductor, dynamic shapes) each step is one fused loop: the moments read the bf16 map once
and sum in fp32 per row (then float64 over rows), the affine reads and writes it once with an fp32 scale.

Compiling costs seconds once per process (~6 s with a cold inductor cache, ~1 s warm), so only a pass
large enough to repay it asks for the compiled form (``slide_stats``: at least ``COMPILED_MIN_VALUES``). CPU
only; elsewhere, or where inductor cannot build (no C++ compiler), the eager steps run: the same figures to
float rounding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import Tensor

from .workspace import scratch

log = logging.getLogger(__name__)

# pixels x first-layer channels of a batch job's pass that repays the compile (~5.6 s once per process, inductor
# cache warm): on the TCGA slide's ~10 MP of tissue the demo model's (16 channels) pass took ~17.5 s eager,
# 10.8 s compiled (AMD Zen 4, one core; eager bf16 ``add_`` of a per-channel shift runs ~10x slower than
# ``mul_`` in this torch). Interactive runs stay eager: their first view must not wait for a compile.
COMPILED_MIN_VALUES = 8e6 * 16
MOMENT_CHUNK = 4_000_000  # values per chunk: bounded scratch memory whatever the map's size
_FP32 = torch.empty(0)  # what the eager moments' scratch is made like: fp32 whatever the activations' dtype

_compiled: dict[str, Callable[..., object]] = {}
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


def _affine_relu_into(x: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    return x.copy_(torch.relu(x.float() * scale + shift))


def _affine_add_into(x: Tensor, scale: Tensor, shift: Tensor, skip: Tensor) -> Tensor:
    return x.copy_(x.float() * scale + shift + skip.float())


def _compiled_call(name: str, fn: Callable[..., object], *args: Tensor) -> object | None:
    """``fn(*args)`` compiled (dynamic shapes); None when inductor cannot build here (then never again)."""
    if _failed:
        return None
    if name not in _compiled:
        _compiled[name] = torch.compile(fn, dynamic=True)
    try:
        return _compiled[name](*args)
    except MemoryError:
        raise
    except (
        Exception
    ) as e:  # inductor's errors (no C++ compiler, a failed build): the eager steps give the same
        _failed.append(f"{type(e).__name__}: {e}")
        log.warning("statistics kernels not compiled here, running eager (%s)", _failed[0])
        return None


@torch.inference_mode()  # the scratch buffer is an inference tensor: every use inside inference mode
def channel_moments(
    part: Tensor, compiled: bool = False, chunk: int = MOMENT_CHUNK
) -> tuple[int, Tensor, Tensor]:
    """(pixel count, per-channel mean, per-channel sum of squared deviations) of a (C, h, w) view, float64.

    Compiled (CPU): one read of each chunk of rows, sums of values shifted by the first row's mean (so the
    fp32 sums of squares do not cancel) in fp32 within a row, float64 across rows and chunks. Eager: each
    chunk copied to an fp32 scratch buffer and reduced in two passes (reductions straight over a strided
    slice of a channels-last map ran ~20x slower).
    """
    c, h, w = part.shape
    rows = max(1, chunk // max(1, w * c))
    if compiled and part.device.type == "cpu":
        shift = part[:, 0, :].float().mean(1)
        total = torch.zeros(c, dtype=torch.float64)
        total_sq = torch.zeros(c, dtype=torch.float64)
        for y0 in range(0, h, rows):
            out = _compiled_call("row_sums", _row_sums, part[:, y0 : y0 + rows].permute(1, 2, 0), shift)
            if out is None:
                break
            assert isinstance(out, tuple)
            total += out[0].double().sum(0)
            total_sq += out[1].double().sum(0)
        else:
            n = h * w
            return n, shift.double() + total / n, (total_sq - total * total / n).clamp_min(0)
    n_all, mean_all, m2_all = 0, torch.zeros(0), torch.zeros(0)
    for y0 in range(0, h, rows):
        y1 = min(h, y0 + rows)
        n = (y1 - y0) * w
        flat = scratch("moments", (y1 - y0, w, c), _FP32.to(part.device))  # bf16 activations: summed in fp32
        flat.copy_(part[:, y0:y1].permute(1, 2, 0))
        flat2 = flat.view(n, c)
        mean = flat2.sum(0) / n
        flat2.sub_(mean).square_()
        mean64, m2 = mean.double().cpu(), flat2.sum(0).double().cpu()
        if n_all == 0:
            n_all, mean_all, m2_all = n, mean64, m2
        else:
            mean_all, m2_all = combine_moments(n_all, mean_all, m2_all, n, mean64, m2)
            n_all += n
    return n_all, mean_all, m2_all


def channel_affine(x: Tensor, scale: Tensor, shift: Tensor, inplace: bool, compiled: bool = False) -> Tensor:
    """``x * scale + shift`` per channel (``scale``/``shift`` of shape (C,)), in place when asked.

    Compiled (CPU): one pass in fp32. Eager: in ``x``'s dtype (under bf16 the scale is rounded to bf16, a
    relative 0.4 % at most, as the sampled pass always ran).
    """
    shape = (1, -1, 1, 1)
    if compiled and x.device.type == "cpu":
        s, b = scale.float().view(shape), shift.float().view(shape)
        out = _compiled_call(
            "affine_into" if inplace else "affine", _affine_into if inplace else _affine, x, s, b
        )
        if out is not None:
            assert isinstance(out, Tensor)
            return out
    s, b = scale.to(x).view(shape), shift.to(x).view(shape)
    return x.mul_(s).add_(b) if inplace else torch.addcmul(b, x, s)


def channel_affine_relu_(x: Tensor, scale: Tensor, shift: Tensor, compiled: bool = False) -> Tensor:
    """``x = relu(x * scale + shift)`` per channel, in place: a norm and the ReLU after it in one pass over
    the map (compiled, CPU: in fp32), where the streamed pass normalises a band."""
    shape = (1, -1, 1, 1)
    if compiled and x.device.type == "cpu":
        s, b = scale.float().view(shape), shift.float().view(shape)
        if _compiled_call("affine_relu_into", _affine_relu_into, x, s, b) is not None:
            return x
    return x.mul_(scale.to(x).view(shape)).add_(shift.to(x).view(shape)).relu_()


def channel_affine_add_(
    x: Tensor, scale: Tensor, shift: Tensor, skip: Tensor, compiled: bool = False
) -> Tensor:
    """``x = x * scale + shift + skip`` per channel, in place: a residual block's last norm and its sum in
    one pass (compiled, CPU: in fp32)."""
    shape = (1, -1, 1, 1)
    if compiled and x.device.type == "cpu":
        s, b = scale.float().view(shape), shift.float().view(shape)
        if _compiled_call("affine_add_into", _affine_add_into, x, s, b, skip) is not None:
            return x
    return x.mul_(scale.to(x).view(shape)).add_(shift.to(x).view(shape)).add_(skip)


def combine_moments(
    n_a: int, mean_a: Tensor, m2_a: Tensor, n_b: int, mean_b: Tensor, m2_b: Tensor
) -> tuple[Tensor, Tensor]:
    """Chan et al.'s parallel update of (mean, M2) for two sets of n_a and n_b values."""
    n = n_a + n_b
    delta = mean_b - mean_a
    return mean_a + delta * (n_b / n), m2_a + m2_b + delta * delta * (n_a * n_b / n)


def compile_failure() -> str | None:
    """Why the kernels run eager in this process (None: compiled, or not yet tried)."""
    return _failed[0] if _failed else None
