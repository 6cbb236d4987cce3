"""Reflection and replication padding that stays in the activation's dtype under autocast.

Why: PyTorch's CPU autocast lists ``reflection_pad2d`` and ``replication_pad2d`` among the ops it runs in
fp32. Under bf16 autocast every padding of a generator therefore upcasts a bf16 activation to fp32 (a copy at
twice the bytes) and the next convolution casts it back (a second copy). On a ResNet-9 (ngf 64) at 2048 px
windows on an AMD EPYC Zen 4 core those copies took a third of the tile pass (profile in docs/inference.md).
Padding only moves values, so padding the bf16 activation gives exactly the values the fp32 detour gave,
without the copies. The modules below are subclasses of the ones they replace, so code that recognises a
``ReflectionPad2d`` (Winograd's absorbed pad, the cropped trunk) still does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def pad_keeping_dtype(x: Tensor, amounts: tuple[int, ...], mode: str) -> Tensor:
    """``F.pad(x, amounts, mode)`` with autocast off: the result has ``x``'s dtype (bf16 stays bf16)."""
    with torch.autocast(x.device.type, enabled=False):
        return F.pad(x, amounts, mode=mode)


class DtypeKeepingReflectionPad2d(nn.ReflectionPad2d):
    """``nn.ReflectionPad2d`` that pads in its input's dtype under autocast."""

    def forward(self, x: Tensor) -> Tensor:
        return pad_keeping_dtype(x, tuple(self.padding), "reflect")


class DtypeKeepingReplicationPad2d(nn.ReplicationPad2d):
    """``nn.ReplicationPad2d`` that pads in its input's dtype under autocast."""

    def forward(self, x: Tensor) -> Tensor:
        return pad_keeping_dtype(x, tuple(self.padding), "replicate")


def keep_pads_in_input_dtype(module: nn.Module) -> int:
    """Replace (in place) every reflection and replication pad of ``module`` by its dtype-keeping subclass;
    returns how many. Call on an inference copy."""
    count = 0
    for name, sub in list(module.named_modules()):
        if not name or type(sub) not in (nn.ReflectionPad2d, nn.ReplicationPad2d):
            continue
        cls = DtypeKeepingReflectionPad2d if type(sub) is nn.ReflectionPad2d else DtypeKeepingReplicationPad2d
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, cls(tuple(sub.padding)))
        count += 1
    return count
