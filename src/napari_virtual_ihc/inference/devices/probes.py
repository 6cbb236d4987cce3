"""What this machine offers: CPU instructions, GPUs by name, Apple MPS; nothing here decides anything."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path

import torch


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_bf16() -> bool:
    """True when the CPU has bf16 arithmetic instructions (x86 AVX512-BF16 / AMX-BF16, Arm BF16)."""
    flags = _cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        return True
    if sys.platform == "darwin" and platform.machine() == "arm64":
        with contextlib.suppress(OSError, ValueError):
            import subprocess

            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=2
            )
            return out.stdout.strip() == "1"
    return False


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def mps_available() -> bool:
    """Apple's GPU backend (absent from torch builds for other platforms)."""
    return bool(torch.backends.mps.is_available())


def cuda_count() -> int:
    """CUDA devices this process sees (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_has_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 in hardware (CUDA compute capability >= 8, or the CPU's instructions)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def device_name(device: torch.device) -> str:
    """What the calibration cache is keyed by: the CPU model and torch's CPU capability, or the GPU's name."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device.index or 0)}"
    if device.type == "mps":
        return f"mps {platform.machine()} {platform.mac_ver()[0]}"
    return f"cpu {cpu_model_name()} ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"


def available_devices() -> list[tuple[str, str]]:
    """``(value, label)`` pairs for a device menu: auto, every CUDA device by name, mps, cpu."""
    devices = [("auto", "auto")]
    for i in range(cuda_count()):
        devices.append((f"cuda:{i}", f"cuda:{i} - {torch.cuda.get_device_name(i)}"))
    if mps_available():
        devices.append(("mps", "mps - Apple GPU"))
    devices.append(("cpu", "cpu"))
    return devices


def describe_device(device: str) -> str:
    """A human line for "running on ...": the GPU's name, or the CPU thread count."""
    if device.startswith("cuda"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index < cuda_count():
            return f"{device} ({torch.cuda.get_device_name(index)})"
    if device == "mps":
        return "mps (Apple GPU)"
    if device.startswith("cpu"):
        return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"
    return device
