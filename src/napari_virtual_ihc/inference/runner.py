"""Running a generator on batches of uint8 windows: frozen norms, channels-last, autocast, OOM back-off,
and a batch that overflowed in fp16 run again at a wider precision."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .devices.probes import device_has_bf16
from .devices.rules import autocast_dtype, is_out_of_memory, release_device_memory
from .dropout import DropoutContext, set_positions
from .errors import NonFiniteOutputError


def to_input(windows: np.ndarray, input_norm: str, device: torch.device | None = None) -> torch.Tensor:
    """(B, h, w, 3) uint8 -> (B, 3, h, w) float32, scaled as the model expects, on ``device``.

    On a GPU the uint8 windows travel (4x fewer bytes than float32) from pinned host memory with
    ``non_blocking=True`` and are converted there, so the copy overlaps the GPU's work and the CPU does no
    float arithmetic; on the CPU they are converted in place as before.
    """
    t = torch.from_numpy(np.ascontiguousarray(windows))
    if device is not None and device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    elif device is not None and device.type != "cpu":
        t = t.to(device)
    t = t.permute(0, 3, 1, 2).float()
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
            "broken (a diverged training?) or the precision overflowed (fp16 batches are re-run in fp32 or "
            "bf16 already; try --precision fp32). Nothing of this window was written."
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
        dropout: DropoutContext | None = None,
        samples: int = 1,
        fallback: bool = True,
    ) -> None:
        self.device = device
        self.precision = precision
        # fp16 overflow: the batch again in bf16 where the device has it (same range as fp32), else fp32.
        self.fallback_precision = (
            ("bf16" if device_has_bf16(device) else "fp32") if fallback and precision == "fp16" else None
        )
        self.batches = 0  # forward batches run
        self.fallbacks = 0  # of which re-run at ``fallback_precision`` after non-finite fp16 output
        self.batch = max(1, int(batch))
        self.input_norm = input_norm
        self.output_norm = output_norm
        self.on_batch_change = on_batch_change
        self.module = module.to(device).eval()
        if device.type in ("cpu", "cuda"):
            self.module = self.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.channels_last = device.type in ("cpu", "cuda")
        if (
            device.type == "cuda"
        ):  # every batch has the same shape (padded): let cuDNN pick its fastest kernels
            torch.backends.cudnn.benchmark = True
        # Positional dropout (inference.dropout): ``samples`` forward passes per batch, one per dropout sample.
        # Without dropout layers every sample is the same: one pass, and a zero spread when one is asked for.
        self.dropout = dropout
        self.samples = max(1, int(samples))

    def _forward_at(self, x: torch.Tensor, precision: str) -> torch.Tensor:
        dtype = autocast_dtype(precision)
        ctx = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return self.module(x)

    def _forward_once(self, x: torch.Tensor) -> torch.Tensor:
        """One pass; fp16 output with NaN/inf (an activation beyond fp16's 65504) is computed again at the
        fallback precision and counted, so the run goes on instead of stopping on one bright window."""
        self.batches += 1
        out = self._forward_at(x, self.precision)
        if self.fallback_precision is not None and not bool(torch.isfinite(out).all()):
            self.fallbacks += 1
            out = self._forward_at(x, self.fallback_precision)
        return out

    def _forward(
        self, windows: np.ndarray, origins: list[tuple[int, int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        x = to_input(windows, self.input_norm, self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dropout is None:
            out = to_uint8(self._forward_once(x), self.output_norm)
            return out, (np.zeros(out.shape[:3], np.uint8) if self.samples > 1 else None)
        set_positions(self.module, origins or [(0, 0)] * len(windows), (x.shape[2], x.shape[3]))
        if self.samples == 1:
            self.dropout.sample = 0
            return to_uint8(self._forward_once(x), self.output_norm), None
        total = sq = None
        for k in range(self.samples):  # mean and spread of the samples, in grey levels
            self.dropout.sample = k
            y = self._forward_once(x).float()
            g = y * 255.0 if self.output_norm == "zero_one" else (y + 1.0) * 127.5
            total = g.clone() if total is None else total.add_(g)
            sq = g * g if sq is None else sq.addcmul_(g, g)
        assert total is not None and sq is not None
        mean = total / self.samples
        var = (sq / self.samples - mean * mean).clamp_min_(0).mean(dim=1)  # averaged over the channels
        spread = var.sqrt_().round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        mean_out = mean.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return mean_out, spread

    def __call__(self, windows: np.ndarray, origins: list[tuple[int, int]] | None = None) -> np.ndarray:
        """(N, h, w, 3) uint8 windows -> (N, h, w, 3) uint8 outputs, in chunks of ``self.batch``."""
        return self.run(windows, origins)[0]

    def run(
        self, windows: np.ndarray, origins: list[tuple[int, int]] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Outputs and, with ``mean:N`` dropout, the per-pixel spread of the samples (N, h, w) uint8.

        ``origins`` are the windows' top-left corners on the plane (x, y): the dropout masks depend on them.
        """
        outs: list[np.ndarray] = []
        spreads: list[np.ndarray] = []
        start = 0
        while start < len(windows):
            chunk = windows[start : start + self.batch]
            n = len(chunk)
            where = list(origins[start : start + n]) if origins is not None else None
            if n < self.batch:  # pad with copies of the last window: same shapes, same arithmetic
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - n, axis=0)])
                if where is not None:
                    where += [where[-1]] * (self.batch - n)
            try:
                out, spread = self._forward(chunk, where)
                outs.append(out[:n])
                if spread is not None:
                    spreads.append(spread[:n])
            except (RuntimeError, MemoryError) as e:
                if not is_out_of_memory(e) or self.batch == 1:
                    raise
                self.batch = max(1, self.batch // 2)
                release_device_memory(self.device)
                if self.on_batch_change is not None:
                    self.on_batch_change(self.batch)
                continue
            start += n
        out_all = np.concatenate(outs) if outs else np.empty((0, *windows.shape[1:]), np.uint8)
        return out_all, (np.concatenate(spreads) if spreads else None)
