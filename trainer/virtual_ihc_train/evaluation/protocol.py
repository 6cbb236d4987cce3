"""How ``evaluate`` and the loop's validation run a generator: the way its paper's test script did.

The papers' ``test.py`` scripts (pix2pix/BCI, CycleGAN, ASP, TDKstain) never call ``model.eval()`` unless
``--eval`` is passed, which their instructions do not: batch norm normalises each test image by its own
statistics (batch 1) and dropout stays on. A checkpoint's header records that mode (``bn_stats``, ``dropout``;
imported ``.pth`` files and this trainer's exports get their reference script's); flags override it. The choice
is the core's (:func:`napari_virtual_ihc.inference.run_mode.resolve_run_mode`) and so is the forward: ``slide``
batch norm on one whole image is the core's pooled-statistics pass over that image, which equals the train-mode
forward; dropout masks are the core's positional ones (seeded: a dropout figure is repeatable, one sample as
``test.py`` draws one, but not the same draw as torch's RNG would give).

``slide`` applies to every BatchNorm layer of a model, also where the rest is instance norm: AMMFI's attention
module holds BatchNorm, and ASP's ``test.py`` (whose code AMMFI builds on) runs without ``--eval``, so after
batch-1 training those layers normalise each test image by its own statistics, not by running statistics.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from napari_virtual_ihc.inference.api import EngineSettings
from napari_virtual_ihc.inference.dropout import set_positions, with_positional_dropout
from napari_virtual_ihc.inference.normalization import batch_norm_names, estimate_instance_stats
from napari_virtual_ihc.inference.run_mode import RunMode, resolve_run_mode
from napari_virtual_ihc.models import ModelSpec, norm_kind, reference_test_mode


def reference_mode(spec: ModelSpec, module: nn.Module) -> ModelSpec:
    """``spec`` with the mode its reference test script runs ``module`` in, where the header has none: the
    core's rule (batch-norm or dropout arch arguments), and ``slide`` for any BatchNorm layer of an otherwise
    instance-norm model (AMMFI's attention), which the scripts leave in train mode as well."""
    spec = reference_test_mode(spec)
    if spec.bn_stats is None and batch_norm_names(module):
        spec = dataclasses.replace(spec, bn_stats="slide")
    return spec


def resolve_protocol(
    module: nn.Module, spec: ModelSpec, bn_stats: str | None = None, dropout: str | None = None, seed: int = 0
) -> RunMode:
    """The header's mode unless a flag says otherwise (``source`` records which); warnings for what cannot apply."""
    settings = EngineSettings(bn_stats=bn_stats, dropout=dropout, dropout_seed=seed)
    return resolve_run_mode(module, spec, settings, norm_kind(module))


def describe(mode: RunMode) -> str:
    """One line for reports: how the generator ran."""
    bn = (
        "batch norm layers with each image's own statistics (train mode, batch 1, as test.py without --eval)"
        if mode.slide_batch_norm
        else "eval mode (batch norm with running statistics; instance norm per image)"
    )
    if not mode.dropout.active or not mode.dropout_layers:
        drop = "dropout off"
    elif mode.dropout.kind == "sample":
        drop = f"dropout on, one sample per image (seed {mode.seed}, position-hashed masks)"
    else:
        drop = f"dropout on, mean of {mode.samples} samples (seed {mode.seed})"
    origin = ", ".join(f"{k} from {v}" for k, v in mode.source.items())
    return f"{bn}; {drop} [{origin}]"


def deviations(module: nn.Module, mode: RunMode) -> list[str]:
    """Where this run's forward differs from the reference test.py's (train mode, no ``--eval``), for reports."""
    out = []
    if mode.slide_batch_norm:
        out.append(
            "batch norm with each image's own statistics is the core's pooled-statistics pass over the whole "
            "image (equal to test.py's train-mode forward to float rounding; running statistics are not updated)"
        )
    elif batch_norm_names(module):
        out.append("batch norm uses its running statistics (eval mode); test.py uses each image's own")
    if mode.dropout.active and mode.dropout_layers:
        out.append(
            "dropout masks are position-hashed and seeded (repeatable; one sample as test.py draws, not torch's "
            "draw)"
        )
    elif mode.dropout_layers:
        out.append("dropout off; test.py leaves it on")
    if any(name.endswith("weight_u") for name, _ in module.named_buffers()):  # torch.nn.utils.spectral_norm
        out.append(
            "spectral norm uses its stored power-iteration vectors; test.py's train mode runs one more iteration "
            "per forward (a negligible change once training has converged them)"
        )
    return out


class ProtocolForward:
    """``G(x)`` for whole images (N, C, H, W) under a run mode; the module itself is never changed."""

    def __init__(self, module: nn.Module, mode: RunMode) -> None:
        self.mode = mode
        self.base, self.context = with_positional_dropout(module, mode.dropout, mode.seed)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self._one(x, s) for s in range(self.mode.samples)]
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(0)

    def _one(self, x: torch.Tensor, sample: int) -> torch.Tensor:
        if self.context is not None:
            self.context.sample = sample
            set_positions(self.base, [(0, 0)] * x.shape[0], (x.shape[-2], x.shape[-1]))
        if not self.mode.slide_batch_norm:
            was = self.base.training
            self.base.eval()
            y = self.base(x)
            self.base.train(was)
            return y
        # one image at a time: each is normalised by its own statistics, as test.py's batch of 1
        ys = []
        for i in range(x.shape[0]):
            outputs: list[Any] = []
            estimate_instance_stats(self.base, [x[i : i + 1].float()], outputs=outputs, batch_norms=True)
            ys.append(outputs[0].to(x.device))
        return torch.cat(ys)
