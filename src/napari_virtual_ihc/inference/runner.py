"""Running a generator on batches of uint8 windows: frozen norms, channels-last, autocast, OOM back-off."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .device import autocast_dtype, is_out_of_memory, release_device_memory
from .errors import NonFiniteOutputError


def to_input(windows: np.ndarray, input_norm: str) -> torch.Tensor:
    """(B, h, w, 3) uint8 -> (B, 3, h, w) float32 channels-last, scaled as the model expects."""
    t = torch.from_numpy(np.ascontiguousarray(windows)).permute(0, 3, 1, 2).float()
    if input_norm == "zero_one":
        return t.div_(255.0)
    return t.div_(127.5).sub_(1.0)  # minus_one_one (pix2pix/CycleGAN)


def to_uint8(out: torch.Tensor, output_norm: str) -> np.ndarray:
    """(B, 3, h, w) model output -> (B, h, w, 3) uint8; NonFiniteOutputError if any value is NaN/inf.

    Clamping would turn NaN into black and write it as if it were a stain, so a non-finite window stops
    the run before anything of it reaches the store.
    """
    out = out.float()
    if not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).sum())
        raise NonFiniteOutputError(
            f"the model produced NaN or infinity for {bad} of {out.numel()} output values; its weights are "
            "broken (a diverged training?) or the precision overflowed (try --precision fp32). Nothing of "
            "this window was written."
        )
    scaled = out * 255.0 if output_norm == "zero_one" else (out + 1.0) * 127.5
    return scaled.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class BatchRunner:
    """Calls ``module`` on fixed-size batches so every tile sees identical arithmetic (deterministic output
    whatever the batch it lands in), halving the batch size when the device runs out of memory."""

    def __init__(
        self,
        module: nn.Module,
        device: torch.device,
        precision: str,
        batch: int,
        input_norm: str = "minus_one_one",
        output_norm: str = "minus_one_one",
        on_batch_change: Callable[[int], None] | None = None,
    ) -> None:
        self.device = device
        self.precision = precision
        self.batch = max(1, int(batch))
        self.input_norm = input_norm
        self.output_norm = output_norm
        self.on_batch_change = on_batch_change
        self.module = module.to(device).eval()
        if device.type in ("cpu", "cuda"):
            self.module = self.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.channels_last = device.type in ("cpu", "cuda")

    def _forward(self, windows: np.ndarray) -> np.ndarray:
        x = to_input(windows, self.input_norm).to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = autocast_dtype(self.precision)
        ctx = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            y = self.module(x)
        return to_uint8(y, self.output_norm)

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """(N, h, w, 3) uint8 windows -> (N, h, w, 3) uint8 outputs, in chunks of ``self.batch``."""
        outs: list[np.ndarray] = []
        start = 0
        while start < len(windows):
            chunk = windows[start : start + self.batch]
            n = len(chunk)
            if n < self.batch:  # pad with copies of the last window: same shapes, same arithmetic
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - n, axis=0)])
            try:
                outs.append(self._forward(chunk)[:n])
            except (RuntimeError, MemoryError) as e:
                if not is_out_of_memory(e) or self.batch == 1:
                    raise
                self.batch = max(1, self.batch // 2)
                release_device_memory(self.device)
                if self.on_batch_change is not None:
                    self.on_batch_change(self.batch)
                continue
            start += n
        return np.concatenate(outs) if outs else np.empty((0, *windows.shape[1:]), np.uint8)
