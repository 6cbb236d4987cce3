"""Reading raw state dicts from disk without ever executing code from the file."""

from __future__ import annotations

import pickle
import pickletools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .errors import CorruptCheckpointError, UnsafeCheckpointError, WrongDirectionError

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


def sniff_format(path: Path) -> str:
    """``"safetensors"``, ``"truncated_safetensors"`` or ``"pickle"`` (anything else: torch.load decides).

    A safetensors file starts with an 8-byte little-endian header length followed by a JSON object.
    """
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return "pickle"
    n = int.from_bytes(head[:8], "little")
    if n < 2 or n > 100_000_000:
        return "pickle"
    return "safetensors" if n <= path.stat().st_size - 8 else "truncated_safetensors"


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
        raise _classify_refusal(path, str(exc)) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        AttributeError,
        SafetensorError,
    ) as exc:  # torch.load may hand a non-pickle file to its safetensors reader
        raise CorruptCheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or not a checkpoint: {exc})"
        ) from exc
    return extract_state_dict(obj, str(path))


_STRING_OPS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "UNICODE",
    "BINUNICODE8",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
}


def pickle_globals(data: bytes, limit: int = 20) -> list[str] | None:
    """Callables/classes a pickle stream names, found by reading its opcodes (nothing is executed).

    ``None`` if the bytes are not a pickle at all.  Concatenated pickles (the legacy torch format) are
    scanned one after another.
    """
    names: list[str] = []
    pos = 0
    try:
        while pos < len(data) and len(names) < limit:
            recent: list[str | None] = []  # last pushes, None for non-string ops (memo ops skipped)
            end = pos
            for op, arg, offset in pickletools.genops(data[pos:]):
                end = pos + (offset or 0) + 1
                if op.name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
                    continue
                if op.name in _STRING_OPS and isinstance(arg, str | bytes):
                    recent.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
                elif op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    names.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    pair = recent[-2:]
                    names.append(
                        ".".join(str(p) for p in pair) if None not in pair and len(pair) == 2 else "?"
                    )
                else:
                    recent.append(None)
                recent = recent[-2:]
                if op.name == "STOP":
                    break
            if end <= pos:
                break
            pos = end
    except (ValueError, IndexError, KeyError, UnicodeDecodeError):
        if not names and pos == 0:
            return None
    return names


def _classify_refusal(path: Path, msg: str) -> Exception:
    """Tell "this pickle wants to run code" (refused, never executed) from "this is not a checkpoint"."""
    m = re.search(r"Unsupported global: GLOBAL ([^ ]+)", msg)
    if m:
        return UnsafeCheckpointError(
            f"{path}: the file contains code (it asks to call {m.group(1)} while loading); it was not "
            "loaded and nothing in it ran. Only plain tensor state dicts can be imported."
        )
    with open(path, "rb") as fh:
        head = fh.read(64 << 20)
    names = pickle_globals(head)
    if names:
        shown = ", ".join(sorted(set(names) - {"?"})[:6]) or "pickled callables"
        return UnsafeCheckpointError(
            f"{path}: the file is a pickle that names Python code ({shown}); it was not loaded and "
            "nothing in it ran. Only plain tensor state dicts (torch.save of a state_dict) can be imported."
        )
    first = next((line.strip() for line in msg.splitlines() if "Unsupported" in line), msg.splitlines()[0])
    return CorruptCheckpointError(f"{path}: not a readable PyTorch checkpoint ({first})")


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
    if found is None and isinstance(obj, Mapping) and any(k in obj for k in ("netG_B", "G_B", "net_G_B")):
        raise WrongDirectionError(
            f"{where}: holds only the IHC -> H&E generator (netG_B / G_B); to stain H&E into IHC use the "
            "checkpoint with netG_A (CycleGAN's *_net_G_A.pth)"
        )
    if found is None:
        raise CorruptCheckpointError(
            f"{where}: no state dict of tensors found (top-level keys: "
            f"{sorted(map(str, obj))[:10] if isinstance(obj, Mapping) else type(obj).__name__})"
        )
    sd = {str(k): v for k, v in found.items()}
    while sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd
