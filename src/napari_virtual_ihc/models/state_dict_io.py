"""Reading raw state dicts from disk without ever executing code from the file."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .errors import CorruptCheckpointError, UnsafeCheckpointError

# Keys under which training scripts nest the generator's weights inside a larger checkpoint dict.
_NESTING_KEYS = (
    "state_dict",
    "model_state_dict",
    "netG",
    "net_G",
    "netG_A",
    "G",
    "G_A",
    "generator",
    "model",
)


def is_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length followed by a JSON object."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= path.stat().st_size - 8


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of a ``.safetensors`` file (CorruptCheckpointError if unreadable)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a Mapping)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CorruptCheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    return tensors, meta


def read_pth(path: Path) -> dict[str, torch.Tensor]:
    """The generator state dict inside a PyTorch ``.pth``, loaded with ``weights_only=True``.

    Handles nesting (``{"state_dict": ...}``) and the ``module.`` prefix DataParallel adds.  A pickle
    asking for arbitrary code is refused by torch before anything runs; we translate that refusal.
    """
    try:
        obj: Any = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" in msg or "Unsupported global" in msg or "Unsupported operand" in msg:
            raise UnsafeCheckpointError(
                f"{path}: the file contains code (a pickled object that would run Python on loading); "
                "it was not loaded. Only plain tensor state dicts can be imported. "
                f"Details: {msg.splitlines()[0]}"
            ) from None
        raise CorruptCheckpointError(f"{path}: not a readable PyTorch checkpoint ({msg})") from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise CorruptCheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or not a checkpoint: {exc})"
        ) from exc
    return extract_state_dict(obj, str(path))


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_state_dict(obj: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the tensor dict in ``obj`` (possibly nested one or two levels) and strip ``module.``."""
    found: Mapping[str, Any] | None = None
    if _is_tensor_dict(obj):
        found = obj
    elif isinstance(obj, Mapping):
        for key in _NESTING_KEYS:
            inner = obj.get(key)
            if _is_tensor_dict(inner):
                found = inner
                break
            if isinstance(inner, Mapping):
                for key2 in _NESTING_KEYS:
                    if _is_tensor_dict(inner.get(key2)):
                        found = inner[key2]
                        break
            if found is not None:
                break
    if found is None:
        raise CorruptCheckpointError(
            f"{where}: no state dict of tensors found (top-level keys: "
            f"{sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__})"
        )
    sd = {str(k): v for k, v in found.items()}
    while sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd
