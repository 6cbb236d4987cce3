"""Winograd F(2x2, 3x3) in bf16 for the wide 3x3 convolutions of a generator's trunk, on CPUs with bf16 units.

Why: on a CPU with AVX512-BF16 (AMD Zen 4) the trunk's bf16 3x3 convolutions already run near the core's bf16
dot-product peak, so only fewer multiplications make them faster. F(2x2, 3x3) computes each 2x2 output block
from a 4x4 input patch with 16 instead of 36 multiplications per channel pair (2.25x fewer). Its interpolation
points are 0 and +-1 only: the input and output transforms are additions and subtractions, so bf16 loses
little in them (about 2.5x bf16 direct convolution's rounding; F(4x4, 3x3), with its 1/6 and 1/24 factors,
lost ~10x and needed fp32 transforms that cost more than its GEMMs saved).

The 16 GEMMs run through ``torch.bmm`` in bf16 into a reused buffer. The transforms are strided additions
over channels-last maps: eager PyTorch runs each as a separate pass over memory and is too slow (the
transforms then cost more than the 2.25x saves), so they are compiled with ``torch.compile`` (inductor, one
fused C++ loop each), with dynamic shapes: the cropped trunk shrinks its map at every convolution, and one
compiled kernel serves every size. The map is processed in bands of tile rows so each band's transformed
tiles stay in cache between the transforms and the GEMMs.

Measured (AMD EPYC Zen 4, one core, one thread, one residual block of 256 channels on a 534 px trunk map as a
2048 px tile gives it): 1.29x bf16 direct. Only used where the calibration times it and its output passes
the quality gate; a compile failure drops the candidate.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import DeviceError
from .workspace import scratch

# F(2x2, 3x3) with interpolation points 0, +-1, inf: G (4x3) transforms the 3x3 filter.
_G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
TILE = 2  # output pixels per tile side
BAND_ROWS = 8  # tile rows per band (measured: 8 rows of a 534 px map, ~17 MB of transformed tiles)


def filter_transform_f2(weight: Tensor) -> Tensor:
    """(K, C, 3, 3) filters -> (16, C, K) bf16 Winograd-domain filters ``G w G^T``, computed in float64."""
    k, c = weight.shape[0], weight.shape[1]
    u = torch.einsum("ai,kcij,bj->abck", _G, weight.detach().cpu().double(), _G)
    return u.reshape(16, c, k).to(torch.bfloat16).contiguous()


def _input_transform(xb: Tensor) -> Tensor:
    """(2*bt + 2, 2*tw + 2, C) band -> (16, bt*tw, C): ``B^T d B`` of every 4x4 patch (stride 2)."""
    bt, tw = (xb.shape[0] - 2) // 2, (xb.shape[1] - 2) // 2
    d = [xb[j : j + 2 * bt : 2] for j in range(4)]
    rows = [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
    out = []
    for r in rows:
        e = [r[:, j : j + 2 * tw : 2] for j in range(4)]
        out += [e[0] - e[2], e[1] + e[2], e[2] - e[1], e[1] - e[3]]
    return torch.stack(out).reshape(16, bt * tw, xb.shape[2])


def _output_transform(m: Tensor, bias: Tensor) -> Tensor:
    """(4, 4, bt, tw, K) products -> (2*bt, 2*tw, K) outputs ``A^T m A`` + bias, summed in fp32, bf16 out."""
    bt, tw, k = m.shape[2], m.shape[3], m.shape[4]
    mf = m.float()
    cols = [mf[:, 0] + mf[:, 1] + mf[:, 2], mf[:, 1] - mf[:, 2] - mf[:, 3]]  # (4, bt, tw, K) each
    y = torch.stack([torch.stack([q[0] + q[1] + q[2], q[1] - q[2] - q[3]]) for q in cols])
    return (y.permute(2, 1, 3, 0, 4).reshape(2 * bt, 2 * tw, k) + bias).to(torch.bfloat16)


_compiled: dict[str, Callable[..., Tensor]] = {}
_ran: list[bool] = []  # non-empty once a convolution ran: the transforms are compiled in this process
COMPILE_SECONDS = (
    19.3  # the first call's compile, cold inductor cache, one core (AMD Zen 4; docs/inference.md)
)


def transforms_compiled() -> bool:
    """Whether this process has compiled the transforms (a first call pays ~5 s warm, ~19 s cold cache)."""
    return bool(_ran)


def _kernels() -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    """The two transforms compiled once per process (dynamic shapes: one kernel for every map size)."""
    if not _compiled:
        _compiled["in"] = torch.compile(_input_transform, dynamic=True)
        _compiled["out"] = torch.compile(_output_transform, dynamic=True)
    return _compiled["in"], _compiled["out"]


def _padded_hwc(x: Tensor, pad: int, reflect: bool, th: int, tw: int) -> Tensor:
    """NCHW bf16 ``x`` (1 image) padded by ``pad`` (reflection or zeros), then with zeros up to whole tiles,
    as one contiguous (2*th + 2, 2*tw + 2, C) map."""
    x4 = x.contiguous(memory_format=torch.channels_last)
    if pad and reflect:
        x4 = F.pad(x4, (pad, pad, pad, pad), mode="reflect")
        pad = 0
    h, w = x4.shape[2], x4.shape[3]
    x4 = F.pad(x4, (pad, 2 * tw + 2 - w - pad, pad, 2 * th + 2 - h - pad))
    return x4[0].permute(1, 2, 0).contiguous()


def winograd_f2_conv3x3(x: Tensor, u: Tensor, bias: Tensor, pad: int = 0, reflect: bool = False) -> Tensor:
    """3x3 convolution of NCHW ``x`` (bf16) with F(2x2, 3x3) filters ``u`` (16, C, K) and fp32 ``bias``,
    after padding by ``pad`` (reflection or zeros). Returns an NCHW view of a channels-last bf16 tensor."""
    with torch.autocast("cpu", enabled=False):  # autocast would pad in fp32 and cast the GEMM's operands
        if _ran:
            return _conv(x.to(torch.bfloat16), u, bias, pad, reflect)
        try:  # the first call compiles the transforms
            return _conv(x.to(torch.bfloat16), u, bias, pad, reflect)
        except MemoryError:
            raise
        except Exception as e:  # inductor's errors: no C++ compiler, a failed build
            raise DeviceError(
                f"bf16 Winograd's transforms could not be compiled here ({type(e).__name__}: {e}); "
                "run with --no-winograd or another precision"
            ) from e


def _conv(x: Tensor, u: Tensor, bias: Tensor, pad: int, reflect: bool) -> Tensor:
    n, _, h, w = x.shape
    ho, wo = h + 2 * pad - 2, w + 2 * pad - 2
    th, tw = -(-ho // TILE), -(-wo // TILE)
    k = u.shape[2]
    transform_in, transform_out = _kernels()
    starts = list(range(0, th, BAND_ROWS))
    if len(starts) > 1 and th - starts[-1] < 2:  # no one-row last band: a size-1 dimension recompiles
        starts.pop()
    ends = [*starts[1:], th]
    images = []
    for i in range(n):
        xp = _padded_hwc(x[i : i + 1], pad, reflect, th, tw)
        bands = []
        for t0, t1 in zip(starts, ends, strict=True):
            v = transform_in(xp[2 * t0 : 2 * t1 + 2])
            m = scratch(f"f2m{t1 - t0}", (16, (t1 - t0) * tw, k), v)
            torch.bmm(v, u, out=m)
            bands.append(transform_out(m.view(4, 4, t1 - t0, tw, k), bias))
        y = torch.cat(bands) if len(bands) > 1 else bands[0]
        if y.shape[0] != ho or y.shape[1] != wo:
            y = y[:ho, :wo].contiguous()  # an odd size: the next layer gets a dense channels-last map
        images.append(y)
    out = torch.stack(images) if n > 1 else images[0][None]
    _ran[:] = [True]
    return out.permute(0, 3, 1, 2)
