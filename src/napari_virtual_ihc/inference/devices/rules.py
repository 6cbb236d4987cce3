"""Which device and precision a run uses: ``auto|cpu|cuda[:i]|mps`` and ``auto|fp32|fp16|bf16``.

One rule for the engine, the CLI, the widget and the trainer. Under a launcher that starts one process per
GPU (``torchrun`` sets ``LOCAL_RANK``, Slurm sets ``SLURM_LOCALID``) ``auto`` and a bare ``cuda`` mean this
process's own GPU, ``cuda:LOCAL_RANK``, so the ranks of a node do not all pile onto GPU 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..errors import DeviceError
from .probes import cpu_has_bf16, cpu_model_name, cuda_count, mps_available

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "SLURM_LOCALID")  # torchrun's first: it wins inside an srun allocation
_USAGE = "use auto, cpu, cuda, cuda:N or mps"


def local_rank(environ: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """(variable, value) of this process's rank on its node, None when no launcher set one."""
    env = os.environ if environ is None else environ
    for key in LOCAL_RANK_VARIABLES:
        text = env.get(key, "").strip()
        if not text:
            continue
        try:
            value = int(text)
        except ValueError as e:
            raise DeviceError(f"{key}={text!r} is not a process index (the launcher sets 0, 1, ...)") from e
        if value < 0:
            raise DeviceError(f"{key}={value} is negative")
        return key, value
    return None


def _rank_gpu(count: int, environ: Mapping[str, str] | None) -> int:
    """The GPU index of this process: its local rank, 0 without a launcher."""
    rank = local_rank(environ)
    if rank is None:
        return 0
    key, value = rank
    if value < count:
        return value
    if key == "SLURM_LOCALID" and count == 1:  # Slurm bound one GPU to this task (--gpus-per-task=1)
        return 0
    visible = (environ if environ is not None else os.environ).get("CUDA_VISIBLE_DEVICES")
    seen = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    raise DeviceError(
        f"{key}={value} asks for GPU {value} but this process sees {count} CUDA device(s){seen}: start at most "
        f"{count} process(es) per node (torchrun --nproc_per_node {count}), or give --device cpu or cuda:N"
    )


def resolve_device(
    name: str = "auto",
    environ: Mapping[str, str] | None = None,
    cuda_devices: int | None = None,
    use_mps: bool = True,
) -> torch.device:
    """The torch device ``name`` means for this process, always with its index for CUDA.

    ``auto`` prefers CUDA (this rank's GPU), then Apple MPS (unless ``use_mps`` is False: the trainer keeps
    it out), then the CPU. ``environ`` and ``cuda_devices`` default to this process's environment and the
    GPUs it sees; tests pass their own. Raises DeviceError, with what to do, for a device not present.
    """
    name = (name or "auto").strip().lower()
    count = cuda_count() if cuda_devices is None else cuda_devices
    if name == "auto":
        if count > 0:
            return torch.device("cuda", _rank_gpu(count, environ))
        if use_mps and mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DeviceError(f"unknown device {name!r}; {_USAGE}") from e
    if dev.type == "cuda":
        if count == 0:
            raise DeviceError(
                f"device {name!r} requested but CUDA is not available in this torch build/machine"
            )
        if dev.index is None:
            return torch.device("cuda", _rank_gpu(count, environ))
        if dev.index >= count:
            raise DeviceError(f"device {name!r}: only {count} CUDA device(s) present")
    elif dev.type == "mps":
        if not mps_available():
            raise DeviceError("device 'mps' requested but Apple MPS is not available")
    elif dev.type != "cpu":
        raise DeviceError(f"unsupported device {name!r}; {_USAGE}")
    return dev


def device_choice(value: str) -> str:
    """A device menu's ``value`` (``auto``, ``cuda``, ``cuda:1``, ``mps``, ``cpu``) as the concrete device this
    process would run on, with its index (``cuda:0``): what the stain widget shows and passes to the engine.
    Raises DeviceError, with what to do, for a device that is not present."""
    return str(resolve_device(value))


def check_precision_supported(precision: str, device: torch.device) -> None:
    """Refuse, with the reason, a precision this device has no instructions for."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise DeviceError(
            f"bf16 was requested but this CPU ({cpu_model_name()}) has no bf16 instructions (AVX512-BF16 or "
            "AMX): it would run emulated, many times slower than fp32. Use --precision auto or fp32."
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"bf16 is not supported on {torch.cuda.get_device_name(device.index or 0)}")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32``, ``fp16`` or ``bf16`` for ``device``.

    ``auto`` gives the default, fp16 on CUDA/MPS and fp32 on the CPU; the engine then measures what is
    fastest within the quality gate (``devices.calibration``). bf16 on a CPU without bf16 instructions is
    refused with the reason (it would run emulated, many times slower).
    """
    p = (precision or "auto").strip().lower()
    if p == "auto":
        return "fp16" if device.type in ("cuda", "mps") else "fp32"
    if p not in _DTYPES:
        raise DeviceError(f"unknown precision {precision!r}; use auto, fp32, fp16 or bf16")
    if p == "fp16" and device.type == "cpu":
        raise DeviceError("fp16 is not supported on the CPU; use fp32 or bf16")
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
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    msg = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def release_device_memory(device: torch.device) -> None:
    """Hand cached GPU memory back after an out-of-memory error, before retrying smaller."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
