"""The exact statistics pass for jobs too large for one whole-image forward: layer by layer, each in row bands.

Why: the pooled pass (``slide_stats``) runs the job as one whole-image forward that pools every norm's
statistics on the way: exact, and its output is the tiles, but it keeps a whole forward's activations alive
(13.7 bytes per pixel and first-layer channel in fp32). A 4096 x 4096 job of an ngf-64 ResNet-9 needs ~15 GB
that way, more than a batch job's share of memory, and fell back to sampled statistics (30-41 dB from the
whole-image reference, never the <= 1 grey level the exact passes give).

Here the model runs as a *layer program*: one layer at a time over the whole image, each layer in bands of
rows read with the rows of context its kernel needs (at the image's edges the layer's own padding, as the
whole forward pads). A layer's output is stored whole and its norm's moments are summed band by band as it is
written, so each norm normalises with the whole image's statistics, exactly as the whole forward does (to
float rounding). Only the maps still needed are alive, and an *expanding* layer (more values out than in:
the first 7x7 convolution, the last upsampling of a ResNet) is not stored but recomputed from its input's
band whenever it is read (twice: its norm's moments, then the next layer): ~5 % of an ngf-64 ResNet-9's
work, and the largest stored map is at a quarter of the resolution. Peak memory is ~3.7 bytes per pixel and
first-layer channel in fp32, 1.9 in bf16 (``program_peak_bytes``; 3.8 measured on a 4096 px job), about a
quarter of the whole forward's. Pointwise work (a norm's affine with its ReLU, a block's last norm with its
residual sum) runs in place, one fused pass each: out of place it cost more than the convolutions. The pass
runs ~1.06x the frozen model's whole forward (docs/inference.md).

Supported: chains of pads, convolutions (transposed too), InstanceNorm/BatchNorm, pointwise activations,
positional dropout and residual blocks: the ResNet generators. ``layer_program`` returns None for anything
else (U-Net skips, global pooling, class planes) and the job keeps the other paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from ..models.resnet import ResnetBlock, ResnetGenerator
from .dropout import PositionalDropout, set_positions
from .moment_kernels import (
    channel_affine,
    channel_affine_add_,
    channel_affine_relu_,
    channel_moments,
    combine_moments,
)
from .normalization import BATCH_NORMS, NormStats, norm_affine, prepare_probe
from .runner import to_uint8
from .winograd import WinogradConv2d

BAND_VALUES = 1 << 25  # values of one band's output (128 MB in fp32): bands large enough that halos cost ~3 %
WORKSPACE_BANDS = 6  # band-sized buffers alive at once (input band, its pads, output, kernel scratch)
POINTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Dropout, PositionalDropout)
PADS = (nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ZeroPad2d)


class PassCancelled(Exception):
    """The run was cancelled during the streamed pass (checked between bands: a pass can take minutes)."""


@dataclass(frozen=True)
class Axis:
    """One axis of a spatial layer: kernel, stride, dilation, padding before/after (its pad module's and the
    convolution's own), and a transposed convolution's padding and output padding."""

    kernel: int
    stride: int
    dilation: int
    pad_lo: int
    pad_hi: int
    transposed: bool = False
    output_padding: int = 0

    def out_size(self, n: int) -> int:
        k, s, d = self.kernel, self.stride, self.dilation
        if self.transposed:
            return (n - 1) * s - self.pad_lo - self.pad_hi + d * (k - 1) + self.output_padding + 1
        return (n + self.pad_lo + self.pad_hi - d * (k - 1) - 1) // s + 1

    def in_rows(self, o0: int, o1: int, n: int) -> tuple[int, int, int]:
        """Input rows [i0, i1) that make output rows [o0, o1) exact, and the output row of the layer run on
        them whose global index is ``o0`` (the rows before it are shaped by the band's edge: cut)."""
        k, s, d, p = self.kernel, self.stride, self.dilation, self.pad_lo
        if self.transposed:  # output row g = i * s - p + j * d, j < k
            i0 = max(0, min(o0 // s, (o0 + p - d * (k - 1)) // s))
            i1 = min(n, (o1 - 1 + p) // s + 2)
            return i0, i1, o0 - i0 * s
        i0 = max(0, (o0 * s - p) // s * s)  # a multiple of the stride: band row r is global row r + i0 / s
        i1 = min(n, (o1 - 1) * s - p + d * (k - 1) + 1)
        return i0, i1, o0 - i0 // s


@dataclass
class Spatial:
    """A convolution (with the pad module before it): output rows from a band of input rows."""

    modules: list[nn.Module]
    rows: Axis
    cols: Axis
    out_channels: int


@dataclass
class Norm:
    name: str
    module: nn.Module


@dataclass
class Pointwise:
    module: nn.Module


@dataclass
class Residual:
    """``x + ops(x)`` (a ResNet block)."""

    ops: list[Op]


Op = Spatial | Norm | Pointwise | Residual


def _axes(pad: nn.Module | None, conv: nn.Module) -> tuple[Axis, Axis]:
    left = right = top = bottom = 0
    if pad is not None:
        left, right, top, bottom = (int(v) for v in pad.padding)  # type: ignore[union-attr]
    if isinstance(conv, WinogradConv2d):
        wp = conv.padding
        return Axis(3, 1, 1, top + wp, bottom + wp), Axis(3, 1, 1, left + wp, right + wp)
    assert isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))
    k, s, d = conv.kernel_size, conv.stride, conv.dilation
    p = cast(tuple[int, int], conv.padding)  # numeric (``_plain_conv``)
    if isinstance(conv, nn.ConvTranspose2d):
        op = conv.output_padding
        return (
            Axis(k[0], s[0], d[0], p[0], p[0], True, op[0]),
            Axis(k[1], s[1], d[1], p[1], p[1], True, op[1]),
        )
    return (
        Axis(k[0], s[0], d[0], top + int(p[0]), bottom + int(p[0])),
        Axis(k[1], s[1], d[1], left + int(p[1]), right + int(p[1])),
    )


def _plain_conv(m: nn.Module) -> bool:
    if isinstance(m, WinogradConv2d):
        return True
    if isinstance(m, nn.ConvTranspose2d):
        return m.padding_mode == "zeros" and isinstance(m.padding, tuple)
    return isinstance(m, nn.Conv2d) and m.padding_mode == "zeros" and isinstance(m.padding, tuple)


def layer_program(
    module: nn.Module, batch_norms: bool = False, names: dict[int, str] | None = None
) -> list[Op] | None:
    """``module`` as a list of layers the streamed pass runs, or None when it has a layer it cannot band.

    InstanceNorms (and with ``batch_norms`` BatchNorms: ``slide`` mode) become :class:`Norm` layers whose
    statistics the pass sums; a BatchNorm in eval mode is pointwise (its running statistics)."""
    names = names if names is not None else {id(m): n for n, m in module.named_modules()}
    if isinstance(module, ResnetGenerator):
        return None if module.class_bias is not None else layer_program(module.model, batch_norms, names)
    if isinstance(module, ResnetBlock):
        inner = layer_program(module.conv_block, batch_norms, names)
        return None if inner is None else [Residual(inner)]
    if not isinstance(module, nn.Sequential):
        return None
    ops: list[Op] = []
    pad: nn.Module | None = None
    for m in module:
        if pad is not None and not _plain_conv(m):
            return None  # a pad not followed by a convolution
        if isinstance(m, PADS):
            if isinstance(m, nn.ZeroPad2d) or len(m.padding) != 4:
                return None
            pad = m
        elif _plain_conv(m):
            rows, cols = _axes(pad, m)
            out_channels = int(m.out_channels)  # type: ignore[arg-type]
            ops.append(Spatial([*([pad] if pad is not None else []), m], rows, cols, out_channels))
            pad = None
        elif isinstance(m, nn.InstanceNorm2d) or (batch_norms and isinstance(m, BATCH_NORMS)):
            ops.append(Norm(names[id(m)], m))
        elif isinstance(m, (*POINTWISE, *BATCH_NORMS)):
            ops.append(Pointwise(m))
        elif isinstance(m, (nn.Sequential, ResnetBlock)):
            inner = layer_program(m, batch_norms, names)
            if inner is None:
                return None
            ops.extend(inner)
        else:
            return None
    return None if pad is not None else ops


@dataclass(frozen=True)
class Affine:
    """A norm's per-channel ``x * scale + shift`` (fp32, (C,)), applied to a map's rows as they are read."""

    scale: Tensor
    shift: Tensor


@dataclass(frozen=True)
class Activation:
    """A pointwise module applied to rows ``r0``.. of a map: ``fn(band, r0)`` on a tensor it may overwrite."""

    fn: Callable[[Tensor, int], Tensor]
    relu: bool = False  # fused with the affine before it (one pass over the band instead of two)


@dataclass(eq=False)
class Value:
    """A map of the program, (channels, height, width): stored whole (``data``) or recomputed through ``op``
    from ``source`` on every read; then ``pointwise`` (pending norm affines and activations) applied."""

    shape: tuple[int, int, int]
    data: Tensor | None = None
    op: Spatial | None = None
    source: Value | None = None
    pointwise: list[Affine | Activation] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        return self.op is None

    def root(self) -> Value:
        return self if self.source is None else self.source.root()


class _Run:
    """One execution of a layer program (or its dry run: shapes and memory only)."""

    def __init__(
        self,
        dtype_bytes: int,
        dry: bool,
        compiled: bool,
        input_hw: tuple[int, int],
        origin: tuple[int, int],
        stop: Callable[[], bool] | None = None,
    ) -> None:
        self.stop = stop
        self.dtype_bytes = dtype_bytes
        self.dry = dry
        self.compiled = compiled
        self.input_hw = input_hw
        self.origin = origin
        self.live: dict[int, int] = {}  # id(stored value) -> bytes
        self.held: dict[int, int] = {}  # id(stored value) -> residual blocks still needing it
        self.peak = 0
        self.band_peak = 0
        self.stats: NormStats = {}

    # --- memory ----------------------------------------------------------------------------------------
    def alloc(self, v: Value) -> None:
        c, h, w = v.shape
        self.live[id(v)] = c * h * w * self.dtype_bytes
        self.peak = max(self.peak, sum(self.live.values()))

    def _release(self, v: Value) -> None:
        r = v.root()
        if self.held.get(id(r), 0) == 0 and id(r) in self.live:
            del self.live[id(r)]
            r.data = None

    def check(self) -> None:
        if self.stop is not None and self.stop():
            raise PassCancelled("cancelled during the streamed statistics pass")

    def band_rows(self, v: Value) -> int:
        """Output rows per band: about ``BAND_VALUES`` values in the widest map a band passes through (a
        recomputed map's input and output, and its own input's when that is recomputed too)."""
        per_row = _row_values(v)
        rows = max(8, BAND_VALUES // max(1, per_row))
        self.band_peak = max(self.band_peak, rows * per_row * self.dtype_bytes)
        return rows

    # --- reading bands ---------------------------------------------------------------------------------
    def rows(self, v: Value, r0: int, r1: int) -> Tensor:
        """Rows [r0, r1) of ``v`` with its pointwise ops applied (a stored map's: a view, not to be written)."""
        if v.stored:
            self.flush(v)
            assert v.data is not None
            return v.data[:, :, r0:r1]
        return self.apply(v.pointwise, self.compute(v, r0, r1), r0)

    def apply(self, ops: list[Affine | Activation], band: Tensor, r0: int) -> Tensor:
        """``ops`` on ``band`` (rows ``r0``.. of its map) in place: a norm's affine and the ReLU after it as
        one pass. In place, because a new band costs its allocation and a write, ~2x the in-place pass."""
        k = 0
        while k < len(ops):
            op = ops[k]
            if isinstance(op, Affine):
                then = ops[k + 1] if k + 1 < len(ops) else None
                relu = isinstance(then, Activation) and then.relu
                scale, shift = op.scale.to(band.device), op.shift.to(band.device)
                if relu:
                    channel_affine_relu_(band, scale, shift, self.compiled)
                else:
                    channel_affine(band, scale, shift, True, self.compiled)
                k += 2 if relu else 1
            else:
                out = op.fn(band, r0)
                if out is not band:
                    band.copy_(out)
                k += 1
        return band

    def flush(self, v: Value) -> None:
        """Apply a stored map's pending pointwise ops to it in place, band by band (its values before them
        are needed by nothing: a norm's input only by the norm)."""
        if not v.pointwise or self.dry:
            v.pointwise = []
            return
        assert v.data is not None
        rows = self.band_rows(v)
        for r0 in range(0, v.shape[1], rows):
            self.apply(v.pointwise, v.data[:, :, r0 : r0 + rows], r0)
        v.pointwise = []

    def compute(self, v: Value, o0: int, o1: int) -> Tensor:
        """Rows [o0, o1) of ``v.op`` applied to ``v.source`` (before ``v.pointwise``)."""
        assert v.op is not None and v.source is not None
        i0, i1, cut = v.op.rows.in_rows(o0, o1, v.source.shape[1])
        x = self.rows(v.source, i0, i1)
        for m in v.op.modules:
            x = m(x)
        return x[:, :, cut : cut + (o1 - o0)]

    # --- layers ----------------------------------------------------------------------------------------
    def spatial(
        self, op: Spatial, v: Value, moments: bool, then: Spatial | None
    ) -> tuple[Value, tuple[int, Tensor, Tensor] | None]:
        """``op`` on ``v``: stored, or recomputed on every read when it expands the map (the first 7x7, the
        last upsampling), its input is stored and the next layer (``then``) does not expand it again (of two
        upsamplings in a row the larger map is the one recomputed)."""
        c, h, w = v.shape
        shape = _out_shape(op, v.shape)
        virtual = Value(shape, op=op, source=v)
        expands = _values(shape) > c * h * w
        if expands and v.stored and (then is None or _values(_out_shape(then, shape)) <= _values(shape)):
            acc = self._moments(virtual) if moments else None
            return virtual, acc
        out = Value(shape)
        self.alloc(out)
        rows = self.band_rows(virtual)
        acc = None
        if not self.dry:
            out.data = _empty(shape, self._dtype(v), self._device(v))
            for o0 in range(0, shape[1], rows):
                self.check()
                band = self.compute(virtual, o0, min(shape[1], o0 + rows))
                out.data[:, :, o0 : o0 + band.shape[2]] = band
                if moments:
                    acc = _combine(acc, channel_moments(band[0], self.compiled))
        self._release(v)
        return out, acc

    def _moments(self, v: Value) -> tuple[int, Tensor, Tensor] | None:
        rows = self.band_rows(v)
        acc = None
        if not self.dry:
            for o0 in range(0, v.shape[1], rows):
                self.check()
                acc = _combine(
                    acc, channel_moments(self.compute(v, o0, min(v.shape[1], o0 + rows))[0], self.compiled)
                )
        return acc

    def _dtype(self, v: Value) -> torch.dtype:
        root = v.root()
        assert root.data is not None
        return torch.bfloat16 if torch.is_autocast_enabled(root.data.device.type) else root.data.dtype

    def _device(self, v: Value) -> torch.device:
        root = v.root()
        assert root.data is not None
        return root.data.device

    def norm(self, op: Norm, v: Value, acc: tuple[int, Tensor, Tensor] | None) -> None:
        if acc is None and not self.dry:  # not straight after a layer that summed them: a pass of its own
            rows = self.band_rows(v)
            for r0 in range(0, v.shape[1], rows):
                band = self.rows(v, r0, min(v.shape[1], r0 + rows))
                acc = _combine(acc, channel_moments(band[0], self.compiled))
        if self.dry:
            return
        assert acc is not None
        n, mean, m2 = acc
        var = m2 / n
        self.stats[op.name] = (mean.cpu().numpy(), var.clamp_min(0).cpu().numpy())
        v.pointwise.append(Affine(*norm_affine(op.module, mean, var)))

    def pointwise(self, op: Pointwise, v: Value) -> None:
        m = op.module
        if isinstance(m, (nn.Identity, nn.Dropout)):  # eval mode: identity
            return
        _, h, w = v.shape
        in_h, in_w = self.input_hw
        sy, sx = max(1, round(in_h / h)), max(1, round(in_w / w))
        ox, oy = self.origin

        def apply(band: Tensor, r0: int) -> Tensor:
            if isinstance(m, PositionalDropout):  # the mask of these rows: they start r0 rows down this map
                set_positions(m, [(ox, oy + r0 * sy)], (band.shape[2] * sy, band.shape[3] * sx))
            return m(band)

        v.pointwise.append(Activation(apply, relu=type(m) is nn.ReLU))

    def residual(self, op: Residual, x: Value) -> Value:
        """``x + ops(x)``: the sum written over the block's stored output, band by band, with the block's last
        norm in the same pass."""
        if x.stored:
            self.flush(x)  # the block and the sum read the same values
        root = x.root()
        self.held[id(root)] = self.held.get(id(root), 0) + 1
        u = self.program(op.ops, Value(x.shape, x.data, x.op, x.source, list(x.pointwise)))
        self.held[id(root)] -= 1
        y = u if u.stored else Value(u.shape)
        if not u.stored:
            self.alloc(y)
        if not self.dry:
            if y.data is None:
                y.data = _empty(u.shape, self._dtype(x), self._device(x))
            last = u.pointwise[0] if len(u.pointwise) == 1 and u.stored else None
            if not isinstance(last, Affine):
                self.flush(u)
            rows = self.band_rows(y)
            for r0 in range(0, u.shape[1], rows):
                self.check()
                r1 = min(u.shape[1], r0 + rows)
                xb = self.rows(x, r0, r1)
                if isinstance(last, Affine):  # a block's last norm: norm and sum in one pass
                    assert u.data is not None
                    scale, shift = last.scale.to(xb.device), last.shift.to(xb.device)
                    channel_affine_add_(u.data[:, :, r0:r1], scale, shift, xb, self.compiled)
                elif u.stored:
                    assert u.data is not None
                    u.data[:, :, r0:r1].add_(xb)
                else:
                    y.data[:, :, r0:r1] = self.rows(u, r0, r1).add_(xb)
        y.pointwise = []
        self._release(x)
        return y

    def program(self, ops: list[Op], v: Value) -> Value:
        acc: tuple[int, Tensor, Tensor] | None = None
        for k, op in enumerate(ops):
            nxt = ops[k + 1] if k + 1 < len(ops) else None
            if isinstance(op, Spatial):
                then = next((o for o in ops[k + 1 :] if not isinstance(o, (Norm, Pointwise))), None)
                v, acc = self.spatial(
                    op, v, moments=isinstance(nxt, Norm), then=then if isinstance(then, Spatial) else None
                )
                continue
            if isinstance(op, Norm):
                self.norm(op, v, acc)
            elif isinstance(op, Pointwise):
                self.pointwise(op, v)
            else:
                v = self.residual(op, v)
            acc = None
        return v


def _empty(shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device) -> Tensor:
    return torch.empty((1, *shape), dtype=dtype, device=device, memory_format=torch.channels_last)


def _row_values(v: Value) -> int:
    """Values per output row of ``v`` in the widest map computing it passes through."""
    c, h, w = v.shape
    if v.source is None:
        return c * w
    sh = v.source.shape[1]
    return max(c * w, math.ceil(_row_values(v.source) * sh / max(1, h)))


def _out_shape(op: Spatial, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    return (op.out_channels, op.rows.out_size(shape[1]), op.cols.out_size(shape[2]))


def _values(shape: tuple[int, int, int]) -> int:
    return shape[0] * shape[1] * shape[2]


def _combine(
    acc: tuple[int, Tensor, Tensor] | None, part: tuple[int, Tensor, Tensor]
) -> tuple[int, Tensor, Tensor]:
    if acc is None:
        return part
    mean, m2 = combine_moments(acc[0], acc[1], acc[2], part[0], part[1], part[2])
    return acc[0] + part[0], mean, m2


def program_peak_bytes(program: list[Op], in_channels: int, size: tuple[int, int], precision: str) -> int:
    """Bytes the streamed pass keeps alive on a (w, h) image: the stored maps' peak and its band buffers,
    from a dry run of the same code (no tensor made)."""
    w, h = size
    dtype_bytes = 2 if precision == "bf16" else 4
    run = _Run(dtype_bytes, dry=True, compiled=False, input_hw=(h, w), origin=(0, 0))
    x = Value((in_channels, h, w))
    run.alloc(x)
    out = run.program(program, x)
    c, oh, ow = out.shape
    output = oh * ow * c  # the uint8 output
    return run.peak + WORKSPACE_BANDS * run.band_peak + output


@torch.inference_mode()
def streamed_pass(
    module: nn.Module,
    image: Tensor,
    output_norm: str,
    *,
    origin: tuple[int, int] = (0, 0),
    winograd: bool = False,
    device: torch.device | str | None = None,
    batch_norms: bool = False,
    precision: str = "fp32",
    compiled: bool = False,
    stop: Callable[[], bool] | None = None,
) -> tuple[NormStats, np.ndarray]:
    """Whole-image statistics of ``module``'s norms on ``image`` (1, C, H, W) and its uint8 output (H, W, 3).

    The same figures as ``estimate_instance_stats`` run on the whole image with one window (to float
    rounding), with a fraction of its memory. ``origin``: the image's top-left on the plane (positional
    dropout). ``stop`` is asked between bands: True raises :class:`PassCancelled`. Raises ValueError when the
    model is not a layer program (``layer_program``).
    """
    probe, dev, bf16 = prepare_probe(module, device, precision, winograd)
    program = layer_program(probe, batch_norms)
    if program is None:
        raise ValueError("this model is not a chain of layers the streamed pass can run in bands")
    _, _, h, w = image.shape
    run = _Run(2 if bf16 else 4, dry=False, compiled=compiled, input_hw=(h, w), origin=origin, stop=stop)
    x = Value((image.shape[1], h, w), image.to(dev).float().contiguous(memory_format=torch.channels_last))
    run.alloc(x)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
        out = run.program(program, x)
        result = np.empty((out.shape[1], out.shape[2], 3), dtype=np.uint8)
        rows = run.band_rows(out)
        for r0 in range(0, out.shape[1], rows):
            band = run.rows(out, r0, min(out.shape[1], r0 + rows))
            result[r0 : r0 + band.shape[2]] = to_uint8(band.float(), output_norm)[0]
    return run.stats, result


def streamed_peak_bytes(
    module: nn.Module, size: tuple[int, int], precision: str, batch_norms: bool = False
) -> int | None:
    """What :func:`streamed_pass` keeps alive on a (w, h) image, or None when the model is not a layer program."""
    program = layer_program(module, batch_norms)
    if program is None:
        return None
    first = next((m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))), None)
    in_channels = int(first.in_channels) if first is not None else 3
    return program_peak_bytes(program, in_channels, size, precision)
