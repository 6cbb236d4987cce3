"""Checks a checkpoint must pass before anything big is allocated or anything is written.

A checkpoint is untrusted input: its header names an architecture and its arguments, and a 200 KB file
whose header says ``n_downsampling: 20`` would otherwise make us allocate tens of GB before finding out the
tensors do not fit. So arguments are bounded first, the network is built on the ``meta`` device (no
memory), and the file's tensor names, shapes and dtypes are compared with it before any weight is read.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from .errors import CorruptCheckpointError, InvalidSpecError, NonFiniteWeightsError, UnknownArchitectureError
from .spec import MODEL_MPP_RANGE, PIXEL_NORMS, ModelSpec

# Upper bounds far beyond every published generator (pix2pix/CycleGAN: 6-9 blocks, 2-3 downsamplings,
# ngf 64; U-Net: 7-8 levels), low enough that a model within them always fits in a few GB.
INT_ARG_BOUNDS: dict[str, tuple[int, int]] = {
    "input_nc": (1, 16),
    "output_nc": (1, 16),
    "ngf": (1, 1024),
    "n_blocks": (0, 64),
    "n_downsampling": (0, 6),
    "num_downs": (5, 10),
}
MAX_WIDTH = 8192  # channels of the widest layer: ngf * 2**n_downsampling (ResNets), ngf * 8 (U-Nets)
BOOL_ARGS = ("use_dropout", "spectral_norm", "antialias", "antialias_up")
CHOICE_ARGS: dict[str, tuple[str, ...]] = {
    "norm": ("instance", "batch", "none"),
    "padding_type": ("reflect", "replicate", "zero"),
}
_LIST_LIMIT = 6
# A checkpoint's JSON header: a real one is < 10 KB and nested 4 deep; '[' * 100000 ended in a RecursionError
# traceback in json (issue 29), so size and depth are bounded before parsing.
MAX_HEADER_BYTES = 1 << 20
MAX_HEADER_DEPTH = 32


def check_arch_kwargs(arch: str, kwargs: Mapping[str, Any]) -> None:
    """Raise UnknownArchitectureError ("bad arguments") for an argument of the wrong type or out of bounds."""
    problems: list[str] = []
    for key, value in kwargs.items():
        if key in INT_ARG_BOUNDS:
            lo, hi = INT_ARG_BOUNDS[key]
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{key} must be an integer, not {value!r}")
            elif not lo <= value <= hi:
                problems.append(f"{key} = {value} is outside {lo}..{hi}")
        elif key in BOOL_ARGS and not isinstance(value, bool):
            problems.append(f"{key} must be true or false, not {value!r}")
        elif key in CHOICE_ARGS and value not in CHOICE_ARGS[key]:
            problems.append(f"{key} must be one of {', '.join(CHOICE_ARGS[key])}, not {value!r}")
    ngf = kwargs.get("ngf", 64)
    down = kwargs.get("n_downsampling", 2)
    if not problems and isinstance(ngf, int) and isinstance(down, int) and ngf * 2**down > MAX_WIDTH:
        problems.append(f"ngf * 2**n_downsampling = {ngf * 2**down} channels exceeds {MAX_WIDTH}")
    if problems:
        raise UnknownArchitectureError(f"bad arguments for architecture {arch!r}: " + "; ".join(problems))


def check_spec(spec: ModelSpec, where: str) -> None:
    """Raise InvalidSpecError if a header value is not one this project can run (on load and on write)."""
    problems: list[str] = []
    if not isinstance(spec.arch, str) or not spec.arch:
        problems.append(f"arch must be a non-empty string, not {spec.arch!r}")
    if not isinstance(spec.arch_kwargs, dict):
        problems.append(f"arch_kwargs must be an object, not {type(spec.arch_kwargs).__name__}")
    for name in ("input_norm", "output_norm"):
        value = getattr(spec, name)
        if value not in PIXEL_NORMS:
            problems.append(f"{name} must be one of {', '.join(PIXEL_NORMS)}, not {value!r}")
    mpp = spec.mpp
    lo, hi = MODEL_MPP_RANGE
    if mpp is not None:
        if isinstance(mpp, bool) or not isinstance(mpp, int | float) or not math.isfinite(mpp):
            problems.append(f"mpp must be a finite number of µm/px or null, not {mpp!r}")
        elif not lo <= mpp <= hi:
            problems.append(f"mpp = {mpp} µm/px is outside {lo}..{hi}")
    for name in ("target_stain", "name"):
        if not isinstance(getattr(spec, name), str):
            problems.append(f"{name} must be a string")
    if not isinstance(spec.provenance, dict):
        problems.append("provenance must be an object")
    if spec.class_channel is not None:
        input_nc = spec.arch_kwargs.get("input_nc", 3) if isinstance(spec.arch_kwargs, dict) else None
        if not isinstance(spec.class_channel, dict):
            problems.append("class_channel must be an object or null")
        elif input_nc != 4:
            problems.append(
                f"a tumour class channel needs weights with 4 input channels (RGB + class), these take {input_nc}"
            )
    if problems:
        raise InvalidSpecError(f"{where}: invalid checkpoint header: " + "; ".join(problems))
    try:
        check_arch_kwargs(spec.arch, spec.arch_kwargs)
    except UnknownArchitectureError as exc:
        raise UnknownArchitectureError(f"{where}: {exc}") from None


def check_dtypes(expected: Mapping[str, torch.Tensor], sd: Mapping[str, Any], where: str) -> None:
    """Refuse integer/bool/complex tensors where the model holds floating-point weights.

    Decision (issue 20, item 17): such a tensor is never a trained float weight (quantised weights need a
    scale and zero point we do not have; a corrupted or hand-made file is the likelier cause), and casting
    it silently would load a model that computes garbage. Float16/bfloat16/float64 are cast to the
    model's float32, which loses nothing that matters. Integer buffers (``num_batches_tracked``) stay.
    """
    bad = [
        f"{k} ({str(sd[k].dtype).replace('torch.', '')})"
        for k, v in expected.items()
        if k in sd and v.dtype.is_floating_point and not sd[k].dtype.is_floating_point
    ]
    if bad:
        more = f" (+{len(bad) - _LIST_LIMIT} more)" if len(bad) > _LIST_LIMIT else ""
        raise CorruptCheckpointError(
            f"{where}: non-floating-point tensors where the generator has float weights: "
            + ", ".join(bad[:_LIST_LIMIT])
            + more
            + "; refused rather than cast (an integer tensor is not a trained float weight)"
        )


def check_finite(sd: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise NonFiniteWeightsError naming the tensors holding NaN or infinity (a diverged training)."""
    bad = [
        k
        for k, v in sd.items()
        if v.device.type != "meta" and v.dtype.is_floating_point and not bool(torch.isfinite(v).all())
    ]
    if bad:
        more = f" (+{len(bad) - _LIST_LIMIT} more)" if len(bad) > _LIST_LIMIT else ""
        raise NonFiniteWeightsError(
            f"{where}: {len(bad)} weight tensor(s) hold NaN or infinity ("
            + ", ".join(bad[:_LIST_LIMIT])
            + more
            + "); the model diverged during training. Use an earlier checkpoint or retrain with a lower "
            "learning rate."
        )


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def parse_header_json(raw: str, where: str, what: str) -> Any:
    """``json.loads`` of a checkpoint's header text, refused (CorruptCheckpointError) when larger than
    ``MAX_HEADER_BYTES`` or nested deeper than ``MAX_HEADER_DEPTH``: it never reaches json's recursion."""
    size = len(raw.encode(errors="replace"))
    if size > MAX_HEADER_BYTES:
        raise CorruptCheckpointError(
            f"{where}: '{what}' header of {size} bytes (limit {MAX_HEADER_BYTES}); not a checkpoint of this project"
        )
    depth = 0
    for token in _JSON_TOKENS.finditer(raw):
        bracket = token.group()
        if bracket in "[{":
            depth += 1
            if depth > MAX_HEADER_DEPTH:
                raise CorruptCheckpointError(
                    f"{where}: '{what}' header is nested more than {MAX_HEADER_DEPTH} deep; not a checkpoint "
                    "of this project"
                )
        elif bracket in "]}":
            depth -= 1
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(f"{where}: unreadable '{what}' header ({exc})") from exc
