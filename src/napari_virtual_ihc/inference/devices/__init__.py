"""Device code in one place: what the machine offers (``probes``), which device, precision and batch a run
uses (``rules``), and the measured choice of precision and kernels (``calibration``)."""

from ..errors import DeviceError
from .probes import available_devices, cpu_has_bf16, describe_device, device_has_bf16, device_name
from .rules import (
    autocast_dtype,
    check_precision_supported,
    device_choice,
    is_out_of_memory,
    local_rank,
    release_device_memory,
    resolve_batch,
    resolve_device,
    resolve_precision,
)

__all__ = [
    "DeviceError",
    "autocast_dtype",
    "available_devices",
    "check_precision_supported",
    "cpu_has_bf16",
    "describe_device",
    "device_choice",
    "device_has_bf16",
    "device_name",
    "is_out_of_memory",
    "local_rank",
    "release_device_memory",
    "resolve_batch",
    "resolve_device",
    "resolve_precision",
]
