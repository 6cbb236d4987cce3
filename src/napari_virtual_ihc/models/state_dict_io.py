"""Reading raw state dicts from disk without ever executing code from the file."""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import zipfile
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


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_safetensors_header(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Names, shapes and dtypes of a ``.safetensors`` file's tensors as ``meta`` tensors, and its metadata.

    Reads the JSON header only: no weight is loaded, so the shapes can be checked against the architecture
    before anything is allocated.
    """
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = dict(fh.metadata() or {})
            shapes = {}
            for k in fh.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                sl = fh.get_slice(k)
                dtype = _SAFETENSORS_DTYPES.get(sl.get_dtype(), torch.complex64)  # unknown: not a float
                shapes[k] = torch.empty(sl.get_shape(), dtype=dtype, device="meta")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CorruptCheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    return shapes, meta


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
    _check_zip_sizes(path)
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
        reason = " ".join(line for line in str(exc).splitlines() if "weights_only" not in line).strip()
        raise CorruptCheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or not a checkpoint: {reason[:300]})"
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


#: A zip-format checkpoint whose members unpack to more than this many times its size is refused unread:
#: torch.save stores members uncompressed, so only a crafted file (a zip bomb) expands.
_ZIP_EXPANSION_LIMIT = 4


def _check_zip_sizes(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CorruptCheckpointError(
            f"{path}: not a readable PyTorch checkpoint (broken zip: {exc})"
        ) from exc
    size = os.path.getsize(path)
    if unpacked > _ZIP_EXPANSION_LIMIT * size + (1 << 20):
        raise CorruptCheckpointError(
            f"{path}: its zip members claim {unpacked} bytes unpacked from a {size}-byte file; refused "
            "(torch.save writes members uncompressed, so this is not a checkpoint torch wrote)"
        )


#: Globals torch's own zip pickles name (tensor rebuilding, storages, OrderedDict): not code of the file's.
_TORCH_OWN_GLOBALS = re.compile(r"^(torch\.|collections\.OrderedDict$|builtins\.(set|frozenset|slice)$)")


def _zip_pickle_globals(path: Path) -> list[str] | None:
    """Globals named by the ``data.pkl`` of a zip-format ``torch.save`` (None if it is not one)."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
            if member is None or zf.getinfo(member).file_size > (64 << 20):
                return None
            data = zf.read(member)
    except (zipfile.BadZipFile, OSError, ValueError):
        return None
    names = pickle_globals(data, limit=10_000)
    return [n for n in names or [] if not _TORCH_OWN_GLOBALS.match(n)]


def _classify_refusal(path: Path, msg: str) -> Exception:
    """Tell "this pickle wants to run code" (refused, never executed) from "this is not a checkpoint".

    Never quotes PyTorch's advice to retry with ``weights_only=False``: that would run the file's code.
    """
    m = re.search(r"Unsupported global: GLOBAL ([^ ]+)", msg) or re.search(
        r"unsupported GLOBAL ([^ ]+)", msg, flags=re.IGNORECASE
    )
    if m:
        return UnsafeCheckpointError(
            f"{path}: the file contains code (it asks to call {m.group(1)} while loading); it was not "
            "loaded and nothing in it ran. Only plain tensor state dicts can be imported."
        )
    names = _zip_pickle_globals(path)
    if names is None:
        with open(path, "rb") as fh:
            head = fh.read(64 << 20)
        # only a pickle (PROTO 2-5 first, as torch.save writes) names code: random bytes starting with the
        # STACK_GLOBAL opcode (0x93) are garbage, not a pickle asking to run something
        names = pickle_globals(head) if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5 else []
    if names:
        shown = ", ".join(sorted(set(names) - {"?"})[:6]) or "pickled callables"
        return UnsafeCheckpointError(
            f"{path}: the file is a pickle that names Python code ({shown}); it was not loaded and "
            "nothing in it ran. Only plain tensor state dicts (torch.save of a state_dict) can be imported."
        )
    lines = [line.strip() for line in msg.splitlines() if line.strip() and "weights_only" not in line]
    first = next((line for line in lines if "unsupported" in line.lower()), lines[0] if lines else "")
    detail = f" ({first})" if first else ""
    return CorruptCheckpointError(
        f"{path}: not a readable PyTorch checkpoint: it needs Python objects other than tensors to load, "
        f"which are refused{detail}"
    )


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
