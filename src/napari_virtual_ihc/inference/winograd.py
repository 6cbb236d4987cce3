"""Winograd F(4x4, 3x3) convolution for the wide 3x3 convolutions that dominate a ResNet generator on the CPU.

Why: on a CPU without bf16/AMX units (AVX2 laptops and most servers) oneDNN's direct 3x3 convolution already
runs near the FMA peak, so the only way to stain faster in fp32 is to do fewer multiplications. Winograd's
minimal filtering (Lavin & Gray, CVPR 2016) computes each 4x4 output block from a 6x6 input patch with 36
instead of 144 multiplications per channel pair, turning the convolution into 36 GEMMs plus cheap linear
transforms. On a 256-channel ResNet block this is ~2x faster here; the result differs from direct convolution
only by fp32 rounding (~1e-5 relative), far below one grey level of the output.

The transforms are written as a handful of strided add/scale operations that write into per-thread scratch
buffers (``workspace``), because allocating fresh tens-of-megabyte buffers per call costs more in page faults
than the arithmetic itself. GPUs keep cuDNN (which has its own Winograd kernels); only CPU inference is converted. Under bf16 autocast the
same layer runs F(2x2, 3x3) in bf16 instead (``winograd_f2``): F(4x4)'s transforms amplify bf16's rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .winograd_f2 import filter_transform_f2, winograd_f2_conv3x3
from .workspace import scratch

# F(4x4, 3x3) with interpolation points 0, +-1, +-2, inf: G (6x3) transforms the 3x3 filter.
_G = torch.tensor(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    dtype=torch.float64,
)
_GG = torch.kron(_G, _G).T.contiguous()  # vec(G w G^T) = vec(w) @ (G kron G)^T
TILE = 4  # output pixels per Winograd tile side
PATCH = TILE + 2  # input pixels per tile side (3x3 filter)
BAND_FLOATS = 8_000_000  # transformed-tile floats per band (~32 MB, measured best at 10-20 tile rows)
MIN_CHANNELS = 128  # narrower convolutions are memory-bound: the transforms cost more than they save


def filter_transform(weight: Tensor) -> Tensor:
    """(K, C, 3, 3) filters -> (36, C, K) Winograd-domain filters ``G w G^T``, computed in float64."""
    k, c = weight.shape[0], weight.shape[1]
    u = weight.detach().cpu().reshape(k * c, 9).double() @ _GG  # (K*C, 36): G w G^T, one float64 GEMM
    return u.float().reshape(k, c, PATCH * PATCH).permute(2, 1, 0).contiguous()


def _input_1d(d: list[Tensor], out: Tensor) -> None:
    """``out[i] = sum_j B^T[i, j] d[j]`` for B^T of F(4, 3), sharing the partial sums."""
    d0, d1, d2, d3, d4, d5 = d
    torch.add(d4, d0, alpha=4, out=out[0])
    out[0].add_(d2, alpha=-5)
    torch.add(d3 + d4, d1 + d2, alpha=-4, out=out[1])
    torch.add(d4 - d3, d1 - d2, alpha=4, out=out[2])
    f, g = d4 - d2, d3 - d1
    torch.add(f, g, alpha=2, out=out[3])
    torch.add(f, g, alpha=-2, out=out[4])
    torch.add(d5, d1, alpha=4, out=out[5])
    out[5].add_(d3, alpha=-5)


def _output_1d(m: list[Tensor], out: list[Tensor]) -> None:
    """``out[i] = sum_j A^T[i, j] m[j]`` for A^T of F(4, 3)."""
    m0, m1, m2, m3, m4, m5 = m
    a, b, c, e = m1 + m2, m1 - m2, m3 + m4, m3 - m4
    torch.add(m0, a, out=out[0])
    out[0].add_(c)
    torch.add(b, e, alpha=2, out=out[1])
    torch.add(a, c, alpha=4, out=out[2])
    torch.add(b, e, alpha=8, out=out[3])
    out[3].add_(m5)


def _padded_nhwc(x: Tensor, pad: int, reflect: bool) -> Tensor:
    """NCHW ``x`` padded by ``pad`` (zeros or reflection) and then with zeros up to whole Winograd tiles, as one
    NHWC scratch tensor: a single copy instead of a padding module's copy plus an alignment copy."""
    n, c, h, w = x.shape
    hp, wp = h + 2 * pad, w + 2 * pad
    th, tw = -(-(hp - 2) // TILE), -(-(wp - 2) // TILE)
    big_h, big_w = TILE * th + 2, TILE * tw + 2
    buf = scratch("input", (n, big_h, big_w, c), x)
    buf[:, pad : pad + h, pad : pad + w] = x.permute(0, 2, 3, 1)
    if pad:  # pad == 1
        if reflect:
            buf[:, 1 : h + 1, 0] = buf[:, 1 : h + 1, 2]
            buf[:, 1 : h + 1, w + 1] = buf[:, 1 : h + 1, w - 1]
            buf[:, 0, :wp] = buf[:, 2, :wp]
            buf[:, h + 1, :wp] = buf[:, h - 1, :wp]
        else:
            buf[:, :, 0] = 0
            buf[:, :, w + 1] = 0
            buf[:, 0] = 0
            buf[:, h + 1] = 0
    # Alignment tail: only feeds outputs that are cropped away, but must be finite (NaN would spread in a tile).
    buf[:, hp:] = 0
    buf[:, :, wp:] = 0
    return buf


def winograd_conv3x3(x: Tensor, u: Tensor, bias: Tensor | None, band: int | None = None) -> Tensor:
    """Valid (unpadded) 3x3 convolution of NCHW ``x`` with Winograd filters ``u`` (36, C, K).

    Returns an NCHW view of a channels-last tensor of size (N, K, H - 2, W - 2).
    """
    h, w = x.shape[2], x.shape[3]
    xl = x.permute(0, 2, 3, 1)  # NHWC view (a copy only if x is not channels-last)
    if (h - 2) % TILE or (w - 2) % TILE:
        xl = _padded_nhwc(x, 0, reflect=False)
    return _winograd_nhwc(xl, h - 2, w - 2, u, bias, band)


def _winograd_nhwc(
    xl: Tensor,
    ho: int,
    wo: int,
    u: Tensor,
    bias: Tensor | None,
    band: int | None = None,
) -> Tensor:
    """The convolution on NHWC ``xl`` of size (N, 4*th + 2, 4*tw + 2, C); output cropped to ``ho`` x ``wo``.

    Works in horizontal bands of ``band`` tile rows so the transformed tiles stay in cache between the
    transforms and the GEMMs.
    """
    n, h, w, c = xl.shape
    k = u.shape[2]
    th, tw = (h - 2) // TILE, (w - 2) // TILE
    y = torch.empty((n, th, TILE, tw, TILE, k), dtype=xl.dtype, device=xl.device)
    if band is None:
        band = max(1, BAND_FLOATS // max(1, n * tw * max(c, k) * PATCH * PATCH))
    for t0 in range(0, th, band):
        bt = min(band, th - t0)
        xb = xl[:, TILE * t0 : TILE * (t0 + bt) + 2]
        # Input transform B^T d B, first along rows (stride-4 views), then along columns.
        rows = scratch("rows", (PATCH, n, bt, w, c), xl)
        _input_1d([xb[:, r : r + TILE * bt - 3 : TILE] for r in range(PATCH)], rows)
        v = scratch("v", (PATCH, PATCH, n, bt, tw, c), xl)
        for i in range(PATCH):
            _input_1d([rows[i][:, :, s : s + TILE * tw - 3 : TILE] for s in range(PATCH)], v[i])
        # 36 independent GEMMs: (tiles x C) @ (C x K).
        m = scratch("m", (PATCH * PATCH, n * bt * tw, k), xl)
        torch.bmm(v.view(PATCH * PATCH, n * bt * tw, c), u, out=m)
        if bias is not None:
            m[PATCH + 1].add_(bias)  # A^T e_1 = (1, 1, 1, 1): a constant in slot (1, 1) reaches every output
        # Output transform A^T m A, scattered straight into the (N, th, 4, tw, 4, K) output.
        m6 = m.view(PATCH, PATCH, n, bt, tw, k)
        half = scratch("half", (TILE, PATCH, n, bt, tw, k), xl)
        _output_1d([m6[i] for i in range(PATCH)], [half[a] for a in range(TILE)])
        yb = y[:, t0 : t0 + bt]
        for a in range(TILE):
            _output_1d([half[a, j] for j in range(PATCH)], [yb[:, :, a, :, b] for b in range(TILE)])
    out = y.view(n, TILE * th, TILE * tw, k)
    if TILE * th != ho or TILE * tw != wo:
        out = out[:, :ho, :wo]
    return out.permute(0, 3, 1, 2)


class WinogradConv2d(nn.Module):
    """Drop-in for a 3x3, stride-1, ungrouped ``nn.Conv2d`` at inference: F(4x4, 3x3) on CPU fp32, F(2x2, 3x3)
    in bf16 under CPU bf16 autocast, the original convolution anywhere else (GPU, fp16, gradients, tiny inputs).

    ``reflect=True`` absorbs a ``ReflectionPad2d(1)`` that preceded the convolution (ResNet blocks), so the
    padding and the tile alignment cost one copy.
    """

    weight: Tensor
    bias: Tensor | None
    u: Tensor

    def __init__(self, conv: nn.Conv2d, reflect: bool = False) -> None:
        super().__init__()
        if not is_eligible(conv, min_channels=0):
            raise ValueError(f"not a 3x3 stride-1 dense convolution: {conv}")
        if reflect and conv.padding != (0, 0):
            raise ValueError("a reflection pad can only be absorbed by an unpadded convolution")
        weight = conv.weight.detach().clone()
        bias = conv.bias.detach().clone() if conv.bias is not None else None
        self.reflect = reflect
        self.padding = 1 if reflect else int(conv.padding[0])
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("u", filter_transform(weight))
        self.f2: tuple[Tensor, Tensor] | None = (
            None  # F(2x2, 3x3) bf16 filters and fp32 bias, on first bf16 use
        )

    def forward(self, x: Tensor) -> Tensor:
        p = self.padding
        autocast = torch.is_autocast_enabled("cpu")
        bf16 = autocast and torch.get_autocast_dtype("cpu") == torch.bfloat16
        fast = (
            x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.bfloat16)
            and (x.dtype == torch.float32 or bf16)
            and not (torch.is_grad_enabled() and x.requires_grad)
            and (not autocast or bf16)  # under bf16 autocast: F(2x2, 3x3) in bf16
            and min(x.shape[2], x.shape[3]) >= 2 * p + 1  # also what reflection padding needs
        )
        if not fast:
            if self.reflect:
                x = F.pad(x, (p, p, p, p), mode="reflect")
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.conv2d(x, self.weight.to(x.dtype), bias, padding=0 if self.reflect else p)
        h, w = x.shape[2] + 2 * p - 2, x.shape[3] + 2 * p - 2
        if bf16:
            if self.f2 is None:
                b = self.bias.float() if self.bias is not None else torch.zeros(self.out_channels)
                self.f2 = (filter_transform_f2(self.weight), b)
            return winograd_f2_conv3x3(x, *self.f2, p, self.reflect)
        if p == 0 and h % TILE == 0 and w % TILE == 0:
            return _winograd_nhwc(x.permute(0, 2, 3, 1), h, w, self.u, self.bias)
        return _winograd_nhwc(_padded_nhwc(x, p, self.reflect), h, w, self.u, self.bias)

    def extra_repr(self) -> str:
        pad = "reflect 1" if self.reflect else str(self.padding)
        return f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 3), padding={pad}, F(4x4,3x3) / bf16 F(2x2,3x3)"


def is_eligible(conv: nn.Module, min_channels: int = MIN_CHANNELS) -> bool:
    """A plain dense 3x3 stride-1 convolution (zero or no padding) wide enough to profit from Winograd."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding in ((0, 0), (1, 1))
        and conv.padding_mode == "zeros"
        and min(conv.in_channels, conv.out_channels) >= min_channels
    )


def _absorbs_reflection(pad: nn.Module | None, conv: nn.Module) -> bool:
    return (
        isinstance(pad, nn.ReflectionPad2d)
        and tuple(pad.padding) == (1, 1, 1, 1)
        and isinstance(conv, nn.Conv2d)
        and conv.padding == (0, 0)
    )


@torch.no_grad()
def use_winograd(module: nn.Module, min_channels: int = MIN_CHANNELS) -> int:
    """Replace every eligible 3x3 convolution in ``module`` (in place) by a WinogradConv2d; returns the count.

    A ``ReflectionPad2d(1)`` right before such a convolution in an ``nn.Sequential`` is absorbed into it.
    Call on an inference copy (after freezing and folding the norms, so the folded weights are transformed).
    Spectral-norm parametrised convolutions keep their own forward and are left alone.
    """
    count = 0
    for name, sub in list(module.named_modules()):
        if not name or hasattr(sub, "parametrizations") or not is_eligible(sub, min_channels):
            continue
        assert isinstance(sub, nn.Conv2d)
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        reflect = False
        if isinstance(parent, nn.Sequential):
            at = next(i for i, m in enumerate(parent) if m is sub)
            before = parent[at - 1] if at > 0 else None
            if _absorbs_reflection(before, sub):
                parent[at - 1] = nn.Identity()
                reflect = True
        setattr(parent, child, WinogradConv2d(sub, reflect=reflect).to(sub.weight.device))
        count += 1
    return count
