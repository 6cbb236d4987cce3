"""Slide-level normalisation: freeze InstanceNorm statistics and fold per-channel affines into convolutions.

InstanceNorm normalises every tile by that tile's own statistics, so neighbouring tiles of one slide get
different colours (the seams users report). Here the statistics are estimated once per slide from sampled
tissue windows (pooled over all their pixels, layer by layer in one forward pass, so each layer sees the
inputs the frozen earlier layers produce), then every InstanceNorm becomes a fixed per-channel affine.
BatchNorm in eval mode is already such an affine. A per-channel affine right after a convolution folds into
its weights and bias, which removes the normalisation cost entirely.
Global poolings (:class:`GlobalPool2d`, the channel attention of the AMMFI generator) couple pixels to the whole
input in the same way; they are treated alike: pooled once per slide over the same windows, then frozen to a
constant per-channel descriptor (stored as the pair's first array; the second is unused zeros).

BatchNorm generators can also run in ``slide`` mode (``bn_stats="slide"``): the papers' test scripts leave the
model in train mode, so batch norm normalises with the statistics of the one image it is given (batch 1). Those
are estimated here exactly like the InstanceNorm ones (pooled over the slide, then frozen): on an image small
enough to run whole this equals the reference train-mode forward; on a slide it is seam-free and deterministic.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..models.ammfi import GlobalPool2d
from .moment_kernels import channel_affine, channel_moments, combine_moments
from .pads import keep_pads_in_input_dtype
from .winograd import WinogradConv2d, use_winograd

# torch's BatchNorm classes (their common base is private). A LazyBatchNorm*d is not one of them until its
# first forward turns it into BatchNorm*d, which a loaded checkpoint always has had.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)

NormStats = dict[str, tuple[np.ndarray, np.ndarray]]  # module name -> (mean, var), float64 per channel
Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) as fractions of a window's width/height


@dataclass(frozen=True)
class WindowInterior:
    """Where a sampled window's pixels are the slide's, layer by layer (``estimate_instance_stats``).

    A layer's values are shaped by the window's edge (padding) only within its receptive-field margin of
    that edge, so an early layer is exact over nearly the whole window while the last ones are exact only
    near the core: pooling each layer over its own exact interior gives the early layers many times the
    core's pixels at no cost. ``reach`` bounds it (a neighbouring window's share, the tissue), and a side
    where the window meets the slide's edge needs no margin (the whole-image pass pads there too).
    All in the window's input pixels.
    """

    size: tuple[int, int]  # window (w, h)
    core: tuple[int, int, int, int]  # (x0, y0, x1, y1): always pooled (exact at every layer)
    reach: tuple[int, int, int, int]  # (x0, y0, x1, y1): the most any layer may pool
    context: tuple[bool, bool, bool, bool]  # left, top, right, bottom: the slide goes on beyond that edge

    def box(self, margin: int) -> Box:
        """This window's exact interior for a layer ``margin`` input px deep, as fractions."""
        w, h = self.size
        left, top, right, bottom = (margin if c else 0 for c in self.context)
        x0 = min(self.core[0], max(self.reach[0], left))
        y0 = min(self.core[1], max(self.reach[1], top))
        x1 = max(self.core[2], min(self.reach[2], w - right))
        y1 = max(self.core[3], min(self.reach[3], h - bottom))
        return (x0 / w, y0 / h, x1 / w, y1 / h)


def interior_margins(module: nn.Module) -> dict[str, int]:
    """Input px from a window's edge within which each normalisation's (and global pooling's) input depends
    on the padding at that edge: the reach of every convolution met before it, in module order.

    Module order is forward order for the sequential generators; skip connections and concatenations only
    make this over-count (a smaller, still exact interior). One feature pixel of slack covers the rounding of
    boxes to each layer's grid.
    """
    margins: dict[str, int] = {}
    reach, jump = 0.0, 1.0
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):  # the larger axis: one margin for both
            k, d, s = max(m.kernel_size), max(m.dilation), max(m.stride)
            reach += d * (k - 1) / 2 * jump
            jump = jump / s if isinstance(m, nn.ConvTranspose2d) else jump * s
        elif isinstance(m, (nn.InstanceNorm2d, GlobalPool2d, *BATCH_NORMS)):
            margins[name] = math.ceil(reach + jump)
    return margins


class FrozenNorm(nn.Module):
    """``y = x * scale + shift`` per channel: a frozen InstanceNorm/BatchNorm."""

    scale: Tensor
    shift: Tensor

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone().float())
        self.register_buffer("shift", shift.detach().clone().float())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale.view(1, -1, 1, 1).to(x.dtype) + self.shift.view(1, -1, 1, 1).to(x.dtype)


def norm_affine(norm: nn.Module, mean: Tensor, var: Tensor) -> tuple[Tensor, Tensor]:
    """The per-channel (scale, shift), fp32, that normalises with ``mean``/``var`` (float64) as ``norm`` does
    (its eps and affine weight and bias): what every exact pass applies once a norm's moments are summed."""
    scale = (1.0 / torch.sqrt(var + float(getattr(norm, "eps", 1e-5)))).float()
    shift = (-mean).float() * scale
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    if getattr(norm, "affine", False) and isinstance(weight, Tensor) and isinstance(bias, Tensor):
        scale, shift = scale * weight.float(), shift * weight.float() + bias.float()
    return scale, shift


class _PooledStatsNorm(nn.Module):
    """Normalises with statistics pooled over the whole batch (window cores only), and accumulates them."""

    def __init__(self, norm: nn.Module, inplace: bool = False, compiled: bool = False) -> None:
        super().__init__()
        self.norm = norm
        self.inplace = inplace  # safe only when nothing else holds the input (see _fed_only_by_a_conv)
        self.compiled = compiled  # moments and affine as compiled single passes (``moment_kernels``)
        self.count = 0
        self.mean: Tensor | None = None  # running pooled mean / sum of squared deviations (float64)
        self.m2: Tensor | None = None
        self.boxes: list[Box] | None = None  # per sample, fractions of w/h

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2], x.shape[3]
        boxes = self.boxes or [(0.0, 0.0, 1.0, 1.0)] * x.shape[0]
        n_batch, mean_batch, m2_batch = 0, torch.zeros(0), torch.zeros(0)
        for b, (fx0, fy0, fx1, fy1) in enumerate(boxes):
            # Only the core of each window: its border rows are shaped by padding, not by the slide.
            x0, x1 = int(fx0 * w), max(int(fx0 * w) + 1, round(fx1 * w))
            y0, y1 = int(fy0 * h), max(int(fy0 * h) + 1, round(fy1 * h))
            n, mean64, m2 = channel_moments(x[b, :, y0:y1, x0:x1], self.compiled)
            if n_batch == 0:
                n_batch, mean_batch, m2_batch = n, mean64, m2
            else:
                mean_batch, m2_batch = combine_moments(n_batch, mean_batch, m2_batch, n, mean64, m2)
                n_batch += n
        if self.mean is None or self.m2 is None:
            self.mean, self.m2 = mean_batch, m2_batch
        else:
            self.mean, self.m2 = combine_moments(
                self.count, self.mean, self.m2, n_batch, mean_batch, m2_batch
            )
        self.count += n_batch
        scale, shift = norm_affine(self.norm, mean_batch, m2_batch / n_batch)
        return channel_affine(x, scale, shift, self.inplace, self.compiled)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.mean is not None and self.m2 is not None and self.count > 0
        return self.mean.cpu().numpy(), (self.m2 / self.count).clamp_min(0).cpu().numpy()


class FrozenGlobalPool(nn.Module):
    """A :class:`GlobalPool2d` frozen to slide-level values: the same descriptor for every tile."""

    descriptor: Tensor

    def __init__(self, descriptor: Tensor) -> None:
        super().__init__()
        self.register_buffer("descriptor", descriptor.detach().clone().float())

    def forward(self, x: Tensor) -> Tensor:
        d = self.descriptor.view(1, -1, 1, 1).to(x.dtype)
        return d.expand(x.shape[0], -1, 1, 1)


class _PooledGlobalPool(nn.Module):
    """Pools over the window cores of the whole batch (and accumulates over batches) like _PooledStatsNorm."""

    def __init__(self, pool: GlobalPool2d) -> None:
        super().__init__()
        self.mode = pool.mode
        self.count = 0
        self.value: Tensor | None = None  # running sum (avg) or maximum (max), float64
        self.boxes: list[Box] | None = None

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2], x.shape[3]
        boxes = self.boxes or [(0.0, 0.0, 1.0, 1.0)] * x.shape[0]
        n_batch, parts = 0, []
        for b, (fx0, fy0, fx1, fy1) in enumerate(boxes):
            x0, x1 = int(fx0 * w), max(int(fx0 * w) + 1, round(fx1 * w))
            y0, y1 = int(fy0 * h), max(int(fy0 * h) + 1, round(fy1 * h))
            core = x[b, :, y0:y1, x0:x1]
            n_batch += core.shape[1] * core.shape[2]
            parts.append(core.double().sum((1, 2)) if self.mode == "avg" else core.double().amax((1, 2)))
        stacked = torch.stack(parts)
        batch_value = stacked.sum(0) if self.mode == "avg" else stacked.amax(0)
        if self.value is None:
            self.value = batch_value
        else:
            self.value = (
                self.value + batch_value if self.mode == "avg" else torch.maximum(self.value, batch_value)
            )
        self.count += n_batch
        desc = batch_value / n_batch if self.mode == "avg" else batch_value
        return desc.to(x.dtype).view(1, -1, 1, 1).expand(x.shape[0], -1, 1, 1)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.value is not None and self.count > 0
        desc = self.value / self.count if self.mode == "avg" else self.value
        return desc.cpu().numpy(), np.zeros(desc.shape[0])


def global_pool_names(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, GlobalPool2d)]


def _fed_only_by_a_conv(module: nn.Module) -> set[str]:
    """Names of the norms that directly follow a convolution inside an ``nn.Sequential``.

    Such a norm's input is the convolution's fresh output, which the Sequential hands on and drops, so the
    norm may overwrite it: one pass over memory instead of allocating a new activation (the probe's largest
    cost after the convolutions).
    """
    after_conv: set[int] = set()
    for seq in module.modules():
        if isinstance(seq, nn.Sequential):
            for i in range(1, len(seq)):
                if isinstance(seq[i - 1], (nn.Conv2d, nn.ConvTranspose2d, WinogradConv2d)):
                    after_conv.add(id(seq[i]))
    names = {name for name, m in module.named_modules() if id(m) in after_conv}
    return names


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def instance_norm_names(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, nn.InstanceNorm2d)]


def batch_norm_names(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, BATCH_NORMS)]


def prepare_probe(
    module: nn.Module, device: torch.device | str | None, precision: str, winograd: bool
) -> tuple[nn.Module, torch.device, bool]:
    """An fp32 eval copy of ``module`` on ``device`` laid out and converted as the tile pass runs it, its
    device, and whether it runs under bf16 autocast: what every exact statistics pass runs."""
    probe = copy.deepcopy(module).float().eval()
    keep_pads_in_input_dtype(probe)  # under bf16 autocast, pads in bf16 (not an fp32 copy of each map)
    if device is not None:
        probe = probe.to(device)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    # channels-last, as the tile pass runs (NCHW convolutions ran 1.4-3x slower on the CPU)
    if dev.type in ("cpu", "cuda"):
        probe = probe.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    # under bf16 autocast a WinogradConv2d runs F(2x2, 3x3) in bf16, as the tile pass's bf16 Winograd does
    if winograd:
        use_winograd(probe)
    return probe, dev, precision == "bf16"


@torch.inference_mode()
def estimate_instance_stats(
    module: nn.Module,
    batches: Iterable[Tensor],
    cores: Iterable[list[Box] | list[WindowInterior]] | None = None,
    outputs: list[Tensor] | None = None,
    winograd: bool = False,
    device: torch.device | str | None = None,
    batch_norms: bool = False,
    precision: str = "fp32",
    compiled: bool = False,
) -> NormStats:
    """Per-layer (mean, var) of every InstanceNorm (and with ``batch_norms`` every BatchNorm: ``slide`` mode),
    pooled over all ``batches`` (NCHW fp32).

    ``cores`` gives, per batch, each window's core as fractions (x0, y0, x1, y1) of its width/height: only
    those pixels are pooled at every layer (the halo is there to give context, its statistics are distorted
    by padding); or each window's :class:`WindowInterior`: every layer pools its own exact interior (early
    layers nearly the whole window, the last ones about the core). Within a batch every layer normalises
    with the batch's pooled statistics, so later layers see inputs consistent with frozen earlier layers; several batches are pooled by their sums. With a single
    batch its outputs (appended to ``outputs`` if given) are exactly those of the frozen model.
    ``winograd`` runs the wide 3x3 convolutions as Winograd (CPU: F(4x4, 3x3) in fp32, F(2x2, 3x3) under bf16).
    ``device`` is where the probe runs (the run's device: on a GPU machine the statistics pass would otherwise
    run on the CPU). ``precision`` "bf16" runs the convolutions in bf16 autocast (the tile pass's measured
    choice, so the windows reused as tiles cost what tiles cost), the moments still summed in fp32/fp64;
    anything else runs fp32. ``compiled``: the moments and affines as compiled single passes (a large pass).
    """
    margins = interior_margins(module)  # before Winograd replaces the convolutions
    probe, dev, bf16 = prepare_probe(module, device, precision, winograd)
    last = dev.type in ("cpu", "cuda")
    names = instance_norm_names(probe) + (batch_norm_names(probe) if batch_norms else [])
    private = _fed_only_by_a_conv(probe)
    collectors: dict[str, _PooledStatsNorm | _PooledGlobalPool] = {}
    for name in names:
        norm = probe.get_submodule(name)
        collectors[name] = _PooledStatsNorm(norm, inplace=name in private, compiled=compiled)
        _replace(probe, name, collectors[name])
    for name in global_pool_names(probe):
        pool = probe.get_submodule(name)
        assert isinstance(pool, GlobalPool2d)
        collectors[name] = _PooledGlobalPool(pool)
        _replace(probe, name, collectors[name])
    ran = False
    core_iter = iter(cores) if cores is not None else None
    for batch in batches:
        boxes = next(core_iter) if core_iter is not None else None
        for name, c in collectors.items():
            c.boxes = _layer_boxes(boxes, margins[name])
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            x = batch.to(device).float() if device is not None else batch.float()
            out = probe(x.contiguous(memory_format=torch.channels_last) if last else x)
        if outputs is not None:
            outputs.append(out)
        ran = True
    if not ran:
        raise ValueError("no tissue windows to estimate normalisation statistics from")
    return {name: c.stats() for name, c in collectors.items()}


def _layer_boxes(windows: list[Box] | list[WindowInterior] | None, margin: int) -> list[Box] | None:
    if windows is None:
        return None
    return [w.box(margin) if isinstance(w, WindowInterior) else w for w in windows]


def freeze_normalization(module: nn.Module, stats: NormStats | None = None) -> nn.Module:
    """A copy of ``module`` in eval mode with every InstanceNorm/BatchNorm replaced by a FrozenNorm.

    InstanceNorms use ``stats`` (from :func:`estimate_instance_stats`); BatchNorms too when ``stats`` has
    them (``slide`` mode), their running statistics otherwise (eval mode); a GlobalPool2d becomes a
    FrozenGlobalPool with its slide-level descriptor from ``stats``.
    """
    frozen = copy.deepcopy(module).float().eval()
    for name, sub in list(frozen.named_modules()):
        if isinstance(sub, nn.InstanceNorm2d):
            if stats is None or name not in stats:
                if sub.track_running_stats and sub.running_mean is not None and sub.running_var is not None:
                    mean_t, var_t = sub.running_mean.double(), sub.running_var.double()
                else:
                    raise ValueError(f"no slide-level statistics for InstanceNorm {name!r}")
            else:
                mean_t = torch.as_tensor(stats[name][0], dtype=torch.float64)
                var_t = torch.as_tensor(stats[name][1], dtype=torch.float64)
            _replace(frozen, name, _frozen_from(sub, mean_t, var_t))
        elif isinstance(sub, BATCH_NORMS) and stats is not None and name in stats:
            mean_t = torch.as_tensor(stats[name][0], dtype=torch.float64)
            var_t = torch.as_tensor(stats[name][1], dtype=torch.float64)
            _replace(frozen, name, _frozen_from(sub, mean_t, var_t))
        elif isinstance(sub, BATCH_NORMS) and sub.running_mean is not None:
            assert sub.running_var is not None
            _replace(frozen, name, _frozen_from(sub, sub.running_mean.double(), sub.running_var.double()))
        elif isinstance(sub, GlobalPool2d):
            if stats is None or name not in stats:
                raise ValueError(f"no slide-level values for global pooling {name!r}")
            _replace(frozen, name, FrozenGlobalPool(torch.as_tensor(stats[name][0], dtype=torch.float64)))
    return frozen


def _frozen_from(norm: nn.Module, mean: Tensor, var: Tensor) -> FrozenNorm:
    eps = float(getattr(norm, "eps", 1e-5))
    scale = 1.0 / torch.sqrt(var + eps)
    shift = -mean * scale
    weight, bias = getattr(norm, "weight", None), getattr(norm, "bias", None)
    if getattr(norm, "affine", False) and weight is not None and bias is not None:
        scale = scale * weight.double()
        shift = shift * weight.double() + bias.double()
    return FrozenNorm(scale, shift)


def _foldable(conv: nn.Module) -> bool:
    """Plain convolutions only: a spectral-norm/weight-norm weight is recomputed from its parts each call."""
    return (
        isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))
        and not parametrize.is_parametrized(conv)
        and not hasattr(conv, "weight_orig")  # torch.nn.utils.spectral_norm (the papers' code uses it)
        and not hasattr(conv, "weight_g")  # torch.nn.utils.weight_norm
        and conv.groups == 1
    )


@torch.no_grad()
def fold_frozen_norms(module: nn.Module) -> int:
    """Fold every FrozenNorm that directly follows a plain conv in an ``nn.Sequential`` into it (in place).

    Returns how many were folded; the others stay as FrozenNorm modules (still correct, just not free).
    """
    folded = 0
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(1, len(seq)):
            conv, norm = seq[i - 1], seq[i]
            if not isinstance(norm, FrozenNorm) or not _foldable(conv):
                continue
            assert isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d))
            scale, shift = norm.scale.double(), norm.shift.double()
            w = conv.weight.double()
            if isinstance(conv, nn.ConvTranspose2d):
                w = w * scale.view(1, -1, 1, 1)
            else:
                w = w * scale.view(-1, 1, 1, 1)
            b = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
            conv.weight = nn.Parameter(w.to(conv.weight.dtype), requires_grad=False)
            conv.bias = nn.Parameter((b * scale + shift).to(conv.weight.dtype), requires_grad=False)
            seq[i] = nn.Identity()
            folded += 1
    return folded


def stats_to_arrays(stats: NormStats) -> dict[str, np.ndarray]:
    """Flatten for ``np.savez`` (keys ``<layer>|mean`` / ``<layer>|var``)."""
    out: dict[str, np.ndarray] = {}
    for name, (mean, var) in stats.items():
        out[f"{name}|mean"] = np.asarray(mean, dtype=np.float64)
        out[f"{name}|var"] = np.asarray(var, dtype=np.float64)
    return out


def stats_from_arrays(arrays: dict[str, np.ndarray]) -> NormStats:
    """Inverse of :func:`stats_to_arrays`; keys without a ``|`` (what the engine notes beside them) are skipped."""
    names = {k.rsplit("|", 1)[0] for k in arrays if "|" in k}
    return {n: (np.asarray(arrays[f"{n}|mean"]), np.asarray(arrays[f"{n}|var"])) for n in names}
