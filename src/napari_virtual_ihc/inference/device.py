"""Device and precision choice: ``auto|cpu|cuda[:i]|mps`` and ``auto|fp32|fp16|bf16``."""

from __future__ import annotations

import torch

from .errors import DeviceError

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """The torch device for ``name``; ``auto`` prefers CUDA, then Apple MPS, then the CPU."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} requested but CUDA is not available in this torch build/machine"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError("device 'mps' requested but Apple MPS is not available")
    elif dev.type != "cpu":
        raise DeviceError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32``, ``fp16`` or ``bf16`` for ``device``.

    ``auto`` gives the default, fp16 on CUDA/MPS and fp32 on the CPU; the engine then measures what is
    fastest within the quality gate (``inference.calibration``). bf16 on a CPU without bf16 instructions is
    refused with the reason (it would run emulated, many times slower).
    """
    p = (precision or "auto").strip().lower()
    if p == "auto":
        return "fp16" if device.type in ("cuda", "mps") else "fp32"
    if p not in _DTYPES:
        raise DeviceError(f"unknown precision {precision!r}; use auto, fp32, fp16 or bf16")
    if p == "fp16" and device.type == "cpu":
        raise DeviceError("fp16 is not supported on the CPU; use fp32 or bf16")
    from .calibration import check_precision_supported

    check_precision_supported(p, device)
    return p


def resolve_batch(batch: int | None, device: torch.device) -> int:
    """Tiles per forward pass; ``None`` picks 1 on the CPU and 4 on GPUs.

    On the CPU a batch only adds memory traffic: measured here, ResNet-9 ran 20 % slower per tile at batch 4
    than at batch 1. GPUs need several tiles in flight to fill their cores.
    """
    if batch is None or int(batch) <= 0:
        return 1 if device.type == "cpu" else 4
    return int(batch)


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (None for fp32: no autocast)."""
    return None if precision == "fp32" else _DTYPES[precision]


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA/MPS/CPU allocation failures, which the engine answers by halving the batch."""
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(err, oom):
        return True
    msg = str(err).lower()
    return isinstance(err, (RuntimeError, MemoryError)) and (
        "out of memory" in msg or "can't allocate memory" in msg or isinstance(err, MemoryError)
    )


def release_device_memory(device: torch.device) -> None:
    """Hand cached GPU memory back after an out-of-memory error, before retrying smaller."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
