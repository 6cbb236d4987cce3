"""The frozen model as each calibration candidate runs it (direct or Winograd 3x3 convolutions)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .crop import CropContext, use_cropping
from .devices.calibration import Candidate, Runner
from .dropout import DropoutContext
from .pads import keep_pads_in_input_dtype
from .row_conv import use_row_split
from .runner import BatchRunner
from .winograd import is_eligible, use_winograd


def winograd_candidates(module: nn.Module, device: torch.device) -> int:
    """How many of ``module``'s convolutions the Winograd kernels would take on ``device`` (CPU only)."""
    return sum(1 for m in module.modules() if is_eligible(m)) if device.type == "cpu" else 0


class ModelVariants:
    """The frozen model as each candidate runs it (direct or Winograd), built once and shared by the
    calibration and the tile pass."""

    def __init__(
        self,
        frozen: nn.Module,
        device: torch.device,
        input_norm: str,
        output_norm: str,
        crop: tuple[CropContext, int] | None = None,
    ) -> None:
        self.device = device
        self.crop = crop  # (the batches' crop sides, halo): the trunk cropped to what the cores need
        self.cropped_blocks = 0
        self.input_norm, self.output_norm = input_norm, output_norm
        self._base = frozen
        self._modules: dict[bool, nn.Module] = {}
        self.winograd_convs = winograd_candidates(frozen, device)
        self.converted = 0

    def module(self, winograd: bool) -> nn.Module:
        if winograd not in self._modules:
            wmod = copy.deepcopy(self._base)
            keep_pads_in_input_dtype(wmod)  # bf16 activations padded in bf16, not upcast by autocast
            if self.device.type == "cpu":
                use_row_split(wmod)  # the RGB output layer: a row convolution, not 16-channel blocks
            if winograd:
                self.converted = use_winograd(wmod)
            if self.crop is not None:
                wmod, self.cropped_blocks = use_cropping(wmod, self.crop[1], self.crop[0])
            self._modules[winograd] = wmod
        return self._modules[winograd]

    def runner(
        self,
        c: Candidate,
        batch: int = 1,
        dropout: DropoutContext | None = None,
        samples: int = 1,
        fallback: bool = True,
    ) -> BatchRunner:
        return BatchRunner(
            self.module(c.winograd),
            self.device,
            c.precision,
            batch,
            self.input_norm,
            self.output_norm,
            dropout=dropout,
            samples=samples,
            fallback=fallback,
        )

    def prepare(self, c: Candidate) -> Runner:
        """The calibration's runner: no fp16 fallback, so an fp16 that overflows fails the quality gate."""
        return self.runner(c, 1, fallback=False)
