"""Normalisation layers as the pix2pix/CycleGAN code builds them, and a probe telling which one a model uses."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

NORM_KINDS = ("instance", "batch", "none")
NormFactory = Callable[[int], nn.Module]


def norm_factory(norm: str) -> NormFactory:
    """Layer factory for ``norm``; instance norm has no affine and no running statistics, as the reference."""
    if norm == "batch":
        return lambda ch: nn.BatchNorm2d(ch, affine=True, track_running_stats=True)
    if norm == "instance":
        return lambda ch: nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)
    if norm == "none":
        return lambda ch: nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORM_KINDS)}")


def conv_bias_for(norm: str) -> bool:
    """The reference gives convolutions a bias only with instance norm (batch norm has its own shift).

    With ``norm="none"`` the reference also builds bias-free convolutions, so checkpoints match it.
    """
    return norm == "instance"


def norm_kind(module: nn.Module) -> str:
    """``"instance"``, ``"batch"`` or ``"none"``: which normalisation a generator's layers use.

    The engine needs it to decide between slide-level frozen statistics (instance) and running
    statistics (batch).  A model mixing both reports the first one found.
    """
    for sub in module.modules():
        if isinstance(sub, nn.InstanceNorm2d):
            return "instance"
        if isinstance(sub, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d | nn.SyncBatchNorm):
            return "batch"
    return "none"
