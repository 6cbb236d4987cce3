"""Run-directory checkpoints: every net of the method as safetensors (generators through the core's
``save_generator``, so each carries its header and loads in the plugin), and optimiser / scheduler / scaler /
pool / RNG state as a ``torch.save`` of tensors and primitives, read back with ``torch.load(weights_only=True)``
so loading never runs code.

Layout: ``RUN_DIR/checkpoints/step_00001000/{generator,discriminator,<net>}.safetensors, state.pt,
rng_rank<r>.pt`` and ``RUN_DIR/checkpoints/latest.txt`` naming the newest complete one.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from napari_virtual_ihc.models import ModelSpec, save_generator
from napari_virtual_ihc.models.checkpoint import check_state_dict


class ResumeError(RuntimeError):
    """The run directory has no usable checkpoint."""


def rng_state() -> dict[str, Any]:
    np_state: Any = np.random.get_state()  # the legacy tuple form
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "key": np_state[0],
            "state": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "python": _to_lists(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(
        (n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def net_file(name: str) -> str:
    """File of net ``name`` in a checkpoint folder (G and D keep the pix2pix family's file names)."""
    return {"G": "generator", "D": "discriminator"}.get(name, name) + ".safetensors"


def save_checkpoint(
    run_dir: Path,
    step: int,
    nets: dict[str, nn.Module],
    specs: dict[str, ModelSpec],
    state: dict[str, Any],
    rank: int,
    world_size: int,
    keep: int = 3,
    barrier: Any = None,
) -> Path:
    """Write one checkpoint (rank 0 writes every net and the state; every rank its RNG) and mark it latest.

    Nets named in ``specs`` are written as loadable generators (with their header); the others as weights.
    """
    ckpt_root = Path(run_dir) / "checkpoints"
    final = ckpt_root / f"step_{step:08d}"
    final.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        for name, net in nets.items():
            if name in specs:
                save_generator(final / net_file(name), net, specs[name])
            else:
                save_file(
                    {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                    str(final / net_file(name)),
                )
        torch.save(state, final / "state.pt.tmp")
        (final / "state.pt.tmp").replace(final / "state.pt")
    if barrier:
        barrier()
    torch.save(rng_state(), final / f"rng_rank{rank}.pt")
    if barrier:
        barrier()
    if rank == 0:
        (final / "world_size.txt").write_text(str(world_size))
        tmp = ckpt_root / "latest.txt.tmp"
        tmp.write_text(final.name)
        tmp.replace(ckpt_root / "latest.txt")
        old = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir() and p != final)
        for p in old[: max(0, len(old) - (keep - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path:
    marker = Path(run_dir) / "checkpoints" / "latest.txt"
    if not marker.is_file():
        raise ResumeError(f"no checkpoint in {run_dir} (expected {marker}); start the run with `fit` first")
    path = marker.parent / marker.read_text().strip()
    if not (path / "state.pt").is_file():
        raise ResumeError(f"checkpoint {path} is incomplete (no state.pt)")
    return path


def load_checkpoint(path: Path, nets: dict[str, nn.Module], rank: int) -> dict[str, Any]:
    """Load every net (strictly: a net or key missing, or a shape changed, is a ShapeMismatchError naming
    it) and return the state dict; restores this rank's RNG."""
    for name, net in nets.items():
        file = path / net_file(name)
        if not file.is_file():
            raise ResumeError(f"checkpoint {path} has no {file.name} (the run's method has a net {name!r})")
        sd = load_file(str(file))
        check_state_dict(net, sd, f"{file} (net {name!r} of this run's config)")
        net.load_state_dict(sd, strict=True)
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    rng_file = path / f"rng_rank{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    return state
