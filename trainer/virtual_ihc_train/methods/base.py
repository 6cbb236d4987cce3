"""What a training method is to the loop: networks, their optimisers and losses, and the order of updates.

The loop (``loop.py``) owns everything shared by every method: data sharding, the step/epoch schedule,
checkpoints, exact resume, DDP, AMP, logging, validation and grids. A method owns what differs: which
networks exist, how one micro-batch updates them, and what of its state a bit-exact resume needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from napari_virtual_ihc.models import ModelSpec

from ..config import Config
from ..data import Augment, DatasetError, ImagePairDataset, Pair, find_pairs, image_size
from ..evaluation.protocol import reference_mode


@dataclass
class Step:
    """The micro-batch a ``train_step`` works on: where it sits in the optimizer step, and the AMP/DDP helpers.

    One optimizer step is ``n_micro`` micro-batches; zero gradients at ``micro == 0``, divide losses by
    ``n_micro``, and step the optimisers on ``last_micro`` (DDP averages gradients only there).
    """

    micro: int
    n_micro: int
    last_micro: bool
    scaler: torch.amp.GradScaler
    device: torch.device
    precision: str = "fp32"
    world: int = 1

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """fp16/bf16 autocast on CUDA; a no-op on CPU and in fp32."""
        if self.device.type != "cuda" or self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast("cuda", dtype=dtype)

    def no_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[Any]:
        """Skip DDP's gradient all-reduce on every micro-batch but the step's last."""
        if self.last_micro or self.world == 1 or not hasattr(module, "no_sync"):
            return contextlib.nullcontext()
        ddp: Any = module
        return ddp.no_sync()

    def backward(self, loss: torch.Tensor, module: nn.Module) -> None:
        """``scaler.scale(loss / n_micro).backward()`` inside ``module``'s no_sync."""
        with self.no_sync(module):
            self.scaler.scale(loss / self.n_micro).backward()


def set_requires_grad(nets: nn.Module | list[nn.Module], flag: bool) -> None:
    """junyanz ``set_requires_grad``: freeze a discriminator while its generator learns."""
    for net in nets if isinstance(nets, list) else [nets]:
        for p in net.parameters():
            p.requires_grad_(flag)


def lr_factor(epoch: int, n_epochs: int, n_epochs_decay: int) -> float:
    """junyanz ``lambda_rule``: 1 for ``n_epochs`` epochs, then linear to 0 over ``n_epochs_decay``."""
    return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)


def make_adam(params: nn.Module | list[nn.Module], lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam over one or several modules, fused (one kernel for all parameters) when this torch has it."""
    modules = params if isinstance(params, list) else [params]
    plist = [p for m in modules for p in m.parameters()]
    try:
        return torch.optim.Adam(plist, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(plist, lr=lr, betas=betas)


def linear_decay_scheduler(
    opt: torch.optim.Optimizer, cfg: Config, step_at_epoch_start: bool = False
) -> torch.optim.lr_scheduler.LambdaLR:
    """junyanz's linear decay, stepped by the loop at the end of each epoch. ``step_at_epoch_start``: the
    reference steps it at the start of each epoch instead (TDKstain's ``train.py``), so 0-based epoch e runs
    at ``lambda_rule(e + 1)``: the decay starts one epoch earlier and the last epoch runs at 0."""
    oc = cfg.optim
    shift = 1 if step_at_epoch_start else 0
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda e: lr_factor(e + shift, oc.n_epochs, oc.n_epochs_decay)
    )


def paired_datasets(cfg: Config) -> tuple[ImagePairDataset, list[Pair]]:
    """Registered pairs (BCI, MIST, paired folders) with the pix2pix augmentations; held-out pairs if any."""
    dc = cfg.data
    augment = Augment(dc.preprocess, dc.load_size, dc.crop_size, dc.flip, dc.rot90, dc.color_jitter)
    pairs = find_pairs(dc.kind, dc.root, dc.split, dc.source, dc.target)
    if dc.preprocess == "none" and cfg.train.batch_size > 1:
        sizes = sorted({image_size(p.source) for p in pairs})
        if len(sizes) > 1:
            raise DatasetError(
                f"data.preprocess=none batches whole images, but they come in {len(sizes)} sizes "
                f"({', '.join(f'{w}x{h}' for w, h in sizes[:4])}{'...' if len(sizes) > 4 else ''}); "
                "use data.preprocess=crop or train.batch_size=1"
            )
    train = ImagePairDataset(pairs, augment, cfg.train.seed)
    return train, validation_pairs(cfg)


def validation_pairs(cfg: Config) -> list[Pair]:
    dc = cfg.data
    val: list[Pair] = []
    if dc.val_source and dc.val_target:
        val = find_pairs("paired", None, "", dc.val_source, dc.val_target)
    elif dc.val_split and dc.kind in ("bci", "mist"):
        val = find_pairs(dc.kind, dc.root, dc.val_split)
    return val[: cfg.train.val_samples]


class Method:
    """One training method. Subclasses set ``name`` and fill ``self.nets`` (``nets["G"]``: H&E -> IHC)."""

    name: ClassVar[str] = ""

    # ---- before anything is built
    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Refuse, with a message naming the key, what this method cannot train."""

    @classmethod
    def configure_run(cls, cfg: Config, run_dir: Path) -> None:
        """Fill config values that depend on the run folder (before the data is built; default: none)."""

    @classmethod
    def build_datasets(cls, cfg: Config) -> tuple[Dataset, list[Pair]]:
        """``(train dataset, held-out pairs)``; a sample is a dict of tensors with at least ``"A"`` (H&E)."""
        return paired_datasets(cfg)

    # ---- the networks
    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device
        self.nets: dict[str, nn.Module] = {}

    def wrap_ddp(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Called once when world > 1: keep ``wrap(net)`` for the forward passes of trained nets."""

    def train_step(self, batch: dict[str, Any], step: Step) -> dict[str, torch.Tensor]:
        """Forward and all updates of one micro-batch; returns named scalar losses (tensors)."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser that exists now, by its checkpoint key, the generator's first; the loop saves and
        restores them (a method whose optimiser is made late makes it in ``load_state_dict``)."""
        return {}

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LambdaLR]:
        """Every LR scheduler that exists now, by its checkpoint key; the loop steps them at the end of each
        epoch, saves and restores them, and re-bases them on a resume's ``optim.lr``."""
        return {}

    def end_epoch(self, epoch: int) -> None:
        """Any epoch-based schedule besides the LR schedulers; ``epoch`` is the number just finished."""

    def lr(self) -> float:
        """The generator's current learning rate, for the log."""
        for opt in self.optimizers().values():
            return float(opt.param_groups[0]["lr"])
        return 0.0

    # ---- what a checkpoint holds besides ``nets``, the optimisers and the schedulers
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """``state`` is the whole checkpoint state (the loop's keys too); take your own keys from it. Runs
        before the loop restores ``optimizers()`` and ``schedulers()``."""

    # ---- the generator people use
    def generator_spec(self) -> ModelSpec:
        """The header of ``nets["G"]``'s checkpoint and export, with the mode its reference test script runs it
        in (none calls ``model.eval()`` without ``--eval``: every batch norm layer per image, dropout on when
        present)."""
        cfg = self.cfg
        spec = ModelSpec(
            arch=cfg.model.arch,
            arch_kwargs=dict(cfg.model.arch_kwargs),
            mpp=cfg.data.mpp,
            name=f"{cfg.preset} ({cfg.data.kind})",
            provenance={"preset": cfg.preset, "method": self.name},
        )
        return reference_mode(spec, self.nets["G"])

    def generator_specs(self) -> dict[str, ModelSpec]:
        """Every net saved as a loadable generator (with a header); the rest are saved as plain weights."""
        return {"G": self.generator_spec()}

    @torch.no_grad()
    def translate(self, a: torch.Tensor, labels: list[str] | None = None) -> torch.Tensor:
        """G(A) for grids, in the nets' current mode."""
        return self.nets["G"](self.generator_input(a, labels))

    def generator_input(self, a: torch.Tensor, labels: list[str] | None = None) -> torch.Tensor:
        """What G takes for H&E ``a`` (a method whose G takes more than H&E builds that input here)."""
        return a
