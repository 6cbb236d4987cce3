"""Guess a generator's architecture and arguments from the key names and shapes of its state dict.

Only structure that leaves a trace in the weights can be detected; the rest (e.g. dropout in a U-Net,
which has no parameters) keeps the reference default and can be overridden by the caller.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .errors import UnknownArchitectureError

StateDict = dict[str, torch.Tensor]
_BLOCK_RE = re.compile(r"^model\.(\d+)\.conv_block\.")
_UNET_NAMES = {7: "unet_128", 8: "unet_256"}


def detect_architecture(sd: StateDict) -> tuple[str, dict[str, Any]]:
    """``(arch, arch_kwargs)`` for a reference-layout state dict, or UnknownArchitectureError."""
    if "model.model.0.weight" in sd:
        return _detect_unet(sd)
    if any(k.endswith(".filt") for k in sd) or any(k.endswith("weight_orig") for k in sd):
        from .asp import detect_asp

        return detect_asp(sd)
    if "model.1.weight" in sd and any(_BLOCK_RE.match(k) for k in sd):
        return "resnet", detect_resnet(sd)
    sample = ", ".join(sorted(sd)[:8])
    raise UnknownArchitectureError(
        "the state dict matches no known generator layout (ResNet, U-Net, ASP ResNet); "
        f"first keys: {sample}. Pass arch=... (and its arguments) to load it explicitly."
    )


def is_conv(sd: StateDict, key: str) -> bool:
    """True when ``key`` holds a convolution kernel (4-D), not a norm's scale (1-D) or nothing."""
    t = sd.get(key)
    return t is not None and t.ndim == 4


def _norm_from_slot(sd: StateDict, norm_prefix: str, conv_prefix: str) -> str:
    if f"{norm_prefix}.weight" in sd:
        return "batch"
    if f"{conv_prefix}.bias" in sd:
        return "instance"
    return "none"


def detect_resnet(sd: StateDict) -> dict[str, Any]:
    """n_blocks, n_downsampling, ngf, norm, dropout, padding and channel counts of a pix2pix ResNet."""
    first = sd["model.1.weight"]
    if first.ndim != 4:
        raise UnknownArchitectureError(f"model.1.weight has shape {tuple(first.shape)}, expected a 4-D conv")
    blocks = sorted({int(m.group(1)) for k in sd if (m := _BLOCK_RE.match(k))})
    first_block = blocks[0]
    if (first_block - 4) % 3:
        raise UnknownArchitectureError(f"first residual block at model.{first_block}: not a ResNet layout")
    n_down = (first_block - 4) // 3
    zero_pad = is_conv(sd, f"model.{first_block}.conv_block.0.weight")
    second_conv = 3 if zero_pad else 5
    # Dropout shifts the second conv by one slot; without dropout a batch norm sits in that slot, so the
    # slot's weight tells them apart by its shape (4-D conv kernel vs 1-D norm scale), not by its presence.
    dropout = is_conv(sd, f"model.{first_block}.conv_block.{second_conv + 1}.weight")
    out_keys = [k for k in sd if re.fullmatch(r"model\.\d+\.weight", k)]
    last = sd[max(out_keys, key=lambda k: int(k.split(".")[1]))]
    return {
        "input_nc": int(first.shape[1]),
        "output_nc": int(last.shape[0]),
        "ngf": int(first.shape[0]),
        "norm": _norm_from_slot(sd, "model.2", "model.1"),
        "use_dropout": dropout,
        "n_blocks": len(blocks),
        "n_downsampling": n_down,
        "padding_type": "zero" if zero_pad else "reflect",
    }


def _detect_unet(sd: StateDict) -> tuple[str, dict[str, Any]]:
    first = sd["model.model.0.weight"]
    prefixes = ["model.model", "model.model.1.model"]
    while any(k.startswith(prefixes[-1] + ".3.model.") for k in sd):
        prefixes.append(prefixes[-1] + ".3.model")
    num_downs = len(prefixes)
    outer_up = sd.get("model.model.3.weight")
    kwargs: dict[str, Any] = {
        "input_nc": int(first.shape[1]),
        "output_nc": int(outer_up.shape[1]) if outer_up is not None else 3,
        "ngf": int(first.shape[0]),
        "norm": _norm_from_slot(sd, "model.model.1.model.2", "model.model.1.model.1"),
        "use_dropout": False,
    }
    arch = _UNET_NAMES.get(num_downs)
    if arch is None:
        kwargs["num_downs"] = num_downs
        arch = "unet"
    return arch, kwargs


def drop_untracked_instance_norm_stats(sd: StateDict) -> StateDict:
    """Drop running statistics left by old PyTorch in instance-norm slots (norm slots with no weight).

    pix2pix/CycleGAN checkpoints saved with PyTorch 0.4 carry ``running_mean``/``running_var`` for
    InstanceNorm layers that the reference code deletes on load; we do the same.
    """
    drop = set()
    for k in sd:
        for suffix in (".running_mean", ".running_var", ".num_batches_tracked"):
            if k.endswith(suffix):
                base = k[: -len(suffix)]
                if f"{base}.weight" not in sd and f"{base}.bias" not in sd:
                    drop.add(k)
    return {k: v for k, v in sd.items() if k not in drop}
