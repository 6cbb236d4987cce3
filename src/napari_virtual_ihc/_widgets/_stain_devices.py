"""Which compute devices this machine offers, named so a user can tell a GPU is really used."""

from __future__ import annotations

import os

from ..inference.device import resolve_device as _engine_resolve_device
from ..inference.errors import DeviceError

__all__ = ["DeviceError", "available_devices", "describe_device", "resolve_device"]


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[tuple[str, str]]:
    """``(value, label)`` pairs for the device menu: auto, every CUDA device by name, mps, cpu."""
    import torch

    devices = [("auto", "auto")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            devices.append((f"cuda:{i}", f"cuda:{i} - {torch.cuda.get_device_name(i)}"))
    if _mps_available():
        devices.append(("mps", "mps - Apple GPU"))
    devices.append(("cpu", "cpu"))
    return devices


def resolve_device(value: str) -> str:
    """The concrete device ``value`` means here (the engine's rule); raises DeviceError when absent."""
    dev = _engine_resolve_device(value)
    if dev.type == "cuda" and dev.index is None:
        return "cuda:0"
    return str(dev)


def describe_device(device: str) -> str:
    """A human line for the "running on ..." label: the GPU's name, or the CPU thread count."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index < torch.cuda.device_count():
            return f"{device} ({torch.cuda.get_device_name(index)})"
    if device == "mps":
        return "mps (Apple GPU)"
    if device.startswith("cpu"):
        return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
    return device
