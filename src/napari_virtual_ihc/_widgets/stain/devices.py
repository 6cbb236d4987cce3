"""The stain widget's device menu and label, from the engine's one device rule (``inference.devices``)."""

from __future__ import annotations

from ...inference.devices import DeviceError, available_devices, describe_device
from ...inference.devices import resolve_device as _resolve_device

__all__ = ["DeviceError", "available_devices", "describe_device", "resolve_device"]


def resolve_device(value: str) -> str:
    """The concrete device ``value`` means here, with its index (``cuda:0``); raises DeviceError when absent."""
    return str(_resolve_device(value))
