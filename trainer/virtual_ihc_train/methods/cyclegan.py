"""CycleGAN (Zhu et al. 2017) as junyanz's ``cycle_gan_model.py``, optionally with the tumour-class channel
of the MIL-conditional paper (Ki-67; ``../shared/papers/cyclegan-ki67-mil-conditional.txt``).

Nets: ``G`` (= junyanz G_A, H&E -> IHC), ``G_B`` (IHC -> H&E), ``D_A`` (judges IHC: real B vs G(A)),
``D_B`` (judges H&E). Per micro-batch, in junyanz's order: forward (fake_B, rec_A, fake_A, rec_B); G and
G_B learn with D_A and D_B frozen (LSGAN + cycle L1 x lambda_A / lambda_B + identity L1 x lambda_identity
x lambda); then D_A on real B vs a fake drawn from its 50-image pool, D_B likewise, each loss halved.

With ``cyclegan.class_channel`` each generator gets a fourth input plane: +1 where the patch is tumour,
-1 where not, from the image's weak label (``labels_A`` / ``labels_B`` CSVs) or from the domain's MIL
classifier run on the crop. The cycle keeps the source's class (rec_A = G_B(fake_B, class of A)).
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from napari_virtual_ihc.models import ModelSpec, build_generator

from ..config import Config, ConfigError
from ..data import Augment, DatasetError, Pair, image_size, list_images, read_rgb, to_tensor
from ..discriminators import build_discriminator, init_weights
from ..losses import GANLoss
from .base import Method, Step, linear_decay_scheduler, make_adam, set_requires_grad, validation_pairs
from .pix2pix import check_gan_config

TUMOUR, NON_TUMOUR = "tumour", "non-tumour"
CLASS_VALUES = {NON_TUMOUR: -1.0, TUMOUR: 1.0}  # the plane's value, in the [-1, 1] range of the image
_CLASS_ALIASES = {
    "tumour": TUMOUR, "tumor": TUMOUR, "1": TUMOUR, "positive": TUMOUR, "pos": TUMOUR,
    "non-tumour": NON_TUMOUR, "non-tumor": NON_TUMOUR, "normal": NON_TUMOUR, "0": NON_TUMOUR,
    "negative": NON_TUMOUR, "neg": NON_TUMOUR,
}  # fmt: skip


class ImagePool:
    """junyanz ``ImagePool``: until full, return each fake and keep it; then, with probability 1/2, return a
    stored fake and store the new one in its place, else return the new one.

    Difference from junyanz: its own ``random.Random`` (seeded, saved in checkpoints) instead of the global
    one, so a resumed run draws exactly what the uninterrupted run would have.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.uniform(0, 1) > 0.5:
                i = self.rng.randint(0, self.size - 1)
                out.append(self.images[i].clone())
                self.images[i] = image
            else:
                out.append(image)
        return torch.cat(out, 0)

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {
            "images": torch.cat(self.images).cpu() if self.images else torch.empty(0),
            "rng": [version, list(internal), gauss],
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        imgs = state["images"]
        self.images = [im[None].to(device) for im in imgs] if imgs.numel() else []
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


# ---------------------------------------------------------------- data
def read_class_labels(csv_path: str | Path, files: list[Path]) -> dict[str, str]:
    """``file,class`` rows -> {stem: tumour | non-tumour}; names missing from ``files`` or unknown classes
    are errors naming the row."""
    path = Path(csv_path)
    if not path.is_file():
        raise DatasetError(f"class-label CSV not found: {path}")
    stems = {f.stem for f in files} | {f.name for f in files}
    out: dict[str, str] = {}
    with path.open(newline="") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            if not row or row[0].strip().lower() in ("file", "image", "name"):
                continue
            if len(row) < 2:
                raise DatasetError(f"{path} line {n}: expected file,class, got {row!r}")
            name, cls = row[0].strip(), row[1].strip().lower()
            if name not in stems:
                raise DatasetError(f"{path} line {n}: {name!r} is not an image of the training folder")
            if cls not in _CLASS_ALIASES:
                raise DatasetError(
                    f"{path} line {n}: unknown class {row[1]!r} (use {TUMOUR} or {NON_TUMOUR}, or 1 / 0)"
                )
            out[Path(name).stem] = _CLASS_ALIASES[cls]
    return out


def checked_images(folder: str, crop: int, side: str) -> list[Path]:
    """Every image in ``folder`` readable and at least ``crop`` px each way (the message names the file)."""
    files = list_images(Path(folder))
    for f in files:
        w, h = image_size(f)
        if crop and (w < crop or h < crop):
            raise DatasetError(f"{side} image {f} is {w}x{h} px, smaller than data.crop_size {crop}")
    return files


class UnpairedDataset(Dataset):
    """junyanz ``UnalignedDataset``: sample ``index`` is H&E image ``index``, with an IHC image drawn at
    random, each randomly cropped and flipped on its own. Draws come from ``(seed, epoch, index)``."""

    def __init__(
        self,
        a_files: list[Path],
        b_files: list[Path],
        augment: Augment,
        seed: int = 0,
        labels_a: dict[str, str] | None = None,
        labels_b: dict[str, str] | None = None,
    ) -> None:
        self.a_files, self.b_files, self.augment, self.seed = a_files, b_files, augment, seed
        self.labels_a, self.labels_b = labels_a or {}, labels_b or {}
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.a_files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        fa = self.a_files[index]
        fb = self.b_files[int(rng.integers(0, len(self.b_files)))]
        try:
            a, _ = self.augment(read_rgb(fa), None, rng)
            b, _ = self.augment(read_rgb(fb), None, rng)
        except DatasetError as exc:
            raise DatasetError(f"{fa} / {fb}: {exc}") from exc
        return {
            "A": to_tensor(a),
            "B": to_tensor(b),
            "index": index,
            "label": self.labels_a.get(fa.stem, ""),
            "label_B": self.labels_b.get(fb.stem, ""),
        }


# ---------------------------------------------------------------- the class plane
def class_plane(labels: list[str], shape: torch.Size, device: torch.device) -> torch.Tensor:
    """(B, 1, H, W) of +1 (tumour) / -1 (non-tumour); an unlabelled image is an error, never a zero."""
    missing = [i for i, lab in enumerate(labels) if lab not in CLASS_VALUES]
    if missing:
        raise DatasetError(
            f"the class channel needs a class for every image; sample {missing[0]} has {labels[missing[0]]!r} "
            "(give cyclegan.labels_A/labels_B or cyclegan.classifier_A/classifier_B)"
        )
    values = torch.tensor([CLASS_VALUES[lab] for lab in labels], device=device)
    return values.view(-1, 1, 1, 1).expand(shape[0], 1, shape[2], shape[3])


def with_class(x: torch.Tensor, plane: torch.Tensor | None) -> torch.Tensor:
    """The generator input: RGB, plus the class plane as channel 4 when the model has one."""
    return x if plane is None else torch.cat((x, plane.to(x.dtype)), 1)


class CycleGAN(Method):
    name = "cyclegan"

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        check_gan_config(cfg)
        if cfg.data.kind != "unpaired":
            raise ConfigError(
                "cyclegan trains on unpaired folders: give --unpaired HE_DIR IHC_DIR (data.kind=unpaired)"
            )
        if cfg.cyclegan.pool_size < 0:
            raise ConfigError("cyclegan.pool_size must be >= 0")
        if cfg.data.preprocess == "none" and cfg.train.batch_size > 1:
            raise ConfigError("data.preprocess=none with batch_size > 1 needs equal image sizes; use crop")
        cc = cfg.cyclegan
        if cc.class_channel:
            for side in ("A", "B"):
                if not (getattr(cc, f"labels_{side}") or getattr(cc, f"classifier_{side}")):
                    raise ConfigError(
                        f"cyclegan.class_channel needs cyclegan.labels_{side} (a file,class CSV) or "
                        f"cyclegan.classifier_{side} (a MIL classifier) for domain {side}"
                    )

    @classmethod
    def build_datasets(cls, cfg: Config) -> tuple[Dataset, list[Pair]]:
        dc, cc = cfg.data, cfg.cyclegan
        crop = dc.crop_size if dc.preprocess == "crop" else 0
        a_files = checked_images(dc.source, crop, "H&E")
        b_files = checked_images(dc.target, crop, "IHC")
        labels_a = read_class_labels(cc.labels_A, a_files) if cc.labels_A else None
        labels_b = read_class_labels(cc.labels_B, b_files) if cc.labels_B else None
        augment = Augment(dc.preprocess, dc.load_size, dc.crop_size, dc.flip, dc.rot90, dc.color_jitter)
        train = UnpairedDataset(a_files, b_files, augment, cfg.train.seed, labels_a, labels_b)
        return train, validation_pairs(cfg)

    def __init__(self, cfg: Config, device: torch.device) -> None:
        super().__init__(cfg, device)
        mc, oc, cc = cfg.model, cfg.optim, cfg.cyclegan
        kwargs = self.generator_kwargs()
        nets: dict[str, nn.Module] = {
            "G": build_generator(mc.arch, **kwargs),
            "G_B": build_generator(mc.arch, **kwargs),
            "D_A": build_discriminator(mc.discriminator, 3, mc.ndf, mc.n_layers_d, mc.norm_d, mc.num_d),
            "D_B": build_discriminator(mc.discriminator, 3, mc.ndf, mc.n_layers_d, mc.norm_d, mc.num_d),
        }
        for net in nets.values():
            init_weights(net, mc.init_gain)
            net.to(device).train()
        self.nets = nets
        self.fwd: dict[str, nn.Module] = dict(nets)  # DDP-wrapped when world > 1
        self.opt_G = make_adam([nets["G"], nets["G_B"]], oc.lr, (oc.beta1, oc.beta2))
        self.opt_D = make_adam([nets["D_A"], nets["D_B"]], oc.lr, (oc.beta1, oc.beta2))
        self.sched_G = linear_decay_scheduler(self.opt_G, cfg)
        self.sched_D = linear_decay_scheduler(self.opt_D, cfg)
        self.gan_loss = GANLoss(cfg.loss.gan_mode)
        self.l1 = nn.L1Loss()
        self.pool_A = ImagePool(cc.pool_size, cfg.train.seed * 2 + 1)  # fakes of A (H&E), for D_B
        self.pool_B = ImagePool(cc.pool_size, cfg.train.seed * 2 + 2)  # fakes of B (IHC), for D_A
        self.classifiers: dict[str, nn.Module] = {}
        if cc.class_channel:
            from napari_virtual_ihc.models.classifier import load_classifier

            for side in ("A", "B"):
                path = getattr(cc, f"classifier_{side}")
                if path:
                    self.classifiers[side] = load_classifier(path, device)

    def generator_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.cfg.model.arch_kwargs)
        if self.cfg.cyclegan.class_channel:
            kwargs["input_nc"] = 4
            if self.cfg.model.arch == "resnet":  # after the first InstanceNorm, which would remove it
                kwargs["conditioning_planes"] = 1  # (models.resnet); the U-Net's first conv has no norm
        return kwargs

    def wrap_ddp(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        self.fwd = {name: wrap(net) for name, net in self.nets.items()}

    def planes(self, batch: dict[str, Any], real_A: torch.Tensor, real_B: torch.Tensor):
        if not self.cfg.cyclegan.class_channel:
            return None, None
        return (
            self.domain_plane("A", list(batch["label"]), real_A),
            self.domain_plane("B", list(batch["label_B"]), real_B),
        )

    @torch.no_grad()
    def domain_plane(self, side: str, labels: list[str], images: torch.Tensor) -> torch.Tensor:
        if side in self.classifiers and not all(lab in CLASS_VALUES for lab in labels):
            from napari_virtual_ihc.models.classifier import classify

            predicted = classify(self.classifiers[side], images)
            labels = [lab if lab in CLASS_VALUES else p for lab, p in zip(labels, predicted, strict=True)]
        return class_plane(labels, images.shape, images.device)

    def train_step(self, batch: dict[str, Any], step: Step) -> dict[str, torch.Tensor]:
        f = self.fwd
        real_A = batch["A"].to(self.device, non_blocking=True)
        real_B = batch["B"].to(self.device, non_blocking=True)
        cls_A, cls_B = self.planes(batch, real_A, real_B)

        # ---- forward: both translations and both cycles
        with step.no_sync(f["G"]), step.no_sync(f["G_B"]), step.autocast():
            fake_B = f["G"](with_class(real_A, cls_A))
            rec_A = f["G_B"](with_class(fake_B, cls_A))
            fake_A = f["G_B"](with_class(real_B, cls_B))
            rec_B = f["G"](with_class(fake_A, cls_B))

        # ---- update G and G_B with both discriminators frozen
        set_requires_grad([self.nets["D_A"], self.nets["D_B"]], False)
        if step.micro == 0:
            self.opt_G.zero_grad(set_to_none=True)
        with step.no_sync(f["G"]), step.no_sync(f["G_B"]), step.autocast():
            losses = self.generator_losses(real_A, real_B, fake_A, fake_B, rec_A, rec_B, cls_A, cls_B)
            loss_G = sum(losses.values(), torch.zeros((), device=self.device))
        with step.no_sync(f["G"]), step.no_sync(f["G_B"]):
            step.scaler.scale(loss_G / step.n_micro).backward()
        if step.last_micro:
            step.scaler.step(self.opt_G)

        # ---- update D_A (IHC) and D_B (H&E) on real vs pooled fakes
        set_requires_grad([self.nets["D_A"], self.nets["D_B"]], True)
        if step.micro == 0:
            self.opt_D.zero_grad(set_to_none=True)
        with step.no_sync(f["D_A"]), step.no_sync(f["D_B"]), step.autocast():
            loss_D_A = self.discriminator_loss(f["D_A"], real_B, self.pool_B.query(fake_B))
            loss_D_B = self.discriminator_loss(f["D_B"], real_A, self.pool_A.query(fake_A))
        with step.no_sync(f["D_A"]), step.no_sync(f["D_B"]):
            step.scaler.scale((loss_D_A + loss_D_B) / step.n_micro).backward()
        if step.last_micro:
            step.scaler.step(self.opt_D)
        return {"loss_G": loss_G, "loss_D_A": loss_D_A, "loss_D_B": loss_D_B, **losses}

    def generator_losses(
        self,
        real_A: torch.Tensor,
        real_B: torch.Tensor,
        fake_A: torch.Tensor,
        fake_B: torch.Tensor,
        rec_A: torch.Tensor,
        rec_B: torch.Tensor,
        cls_A: torch.Tensor | None,
        cls_B: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        """junyanz ``backward_G``: identity, GAN (G vs D_A, G_B vs D_B) and cycle terms, already weighted."""
        cc, f = self.cfg.cyclegan, self.fwd
        out: dict[str, torch.Tensor] = {}
        if cc.lambda_identity > 0:
            idt_A = f["G"](with_class(real_B, cls_B))  # G fed an IHC image should return it
            idt_B = f["G_B"](with_class(real_A, cls_A))
            out["loss_idt_A"] = self.l1(idt_A.float(), real_B) * cc.lambda_B * cc.lambda_identity
            out["loss_idt_B"] = self.l1(idt_B.float(), real_A) * cc.lambda_A * cc.lambda_identity
        out["loss_G_A"] = self.gan_loss(self.nets["D_A"](fake_B), True) * self.cfg.loss.lambda_gan
        out["loss_G_B"] = self.gan_loss(self.nets["D_B"](fake_A), True) * self.cfg.loss.lambda_gan
        out["loss_cycle_A"] = self.l1(rec_A.float(), real_A) * cc.lambda_A
        out["loss_cycle_B"] = self.l1(rec_B.float(), real_B) * cc.lambda_B
        return out

    def discriminator_loss(self, net: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """junyanz ``backward_D_basic``: (GAN(D(real), 1) + GAN(D(fake.detach()), 0)) / 2."""
        return (self.gan_loss(net(real), True) + self.gan_loss(net(fake.detach()), False)) * 0.5

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_G": self.opt_G, "opt_D": self.opt_D}

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LambdaLR]:
        return {"sched_G": self.sched_G, "sched_D": self.sched_D}

    def state_dict(self) -> dict[str, Any]:
        return {"pool_A": self.pool_A.state_dict(), "pool_B": self.pool_B.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool_A.load_state_dict(state["pool_A"], self.device)
        self.pool_B.load_state_dict(state["pool_B"], self.device)

    # ---- the generators people use
    def generator_spec(self) -> ModelSpec:
        spec = super().generator_spec()
        spec = replace(spec, arch_kwargs=self.generator_kwargs(), target_stain="IHC")
        if self.cfg.cyclegan.class_channel:
            spec = replace(spec, class_channel=class_channel_header(self.cfg.cyclegan.classifier_A))
        return spec

    def generator_specs(self) -> dict[str, ModelSpec]:
        g = self.generator_spec()
        reverse = replace(g, name=f"{g.name} reverse (IHC -> H&E)", target_stain="H&E")
        if self.cfg.cyclegan.class_channel:
            reverse = replace(reverse, class_channel=class_channel_header(self.cfg.cyclegan.classifier_B))
        return {"G": g, "G_B": reverse}

    def generator_input(self, a: torch.Tensor, labels: list[str] | None = None) -> torch.Tensor:
        plane = None
        if self.cfg.cyclegan.class_channel:
            plane = self.domain_plane("A", list(labels or [""] * a.shape[0]), a)
        return with_class(a, plane)


def class_channel_header(classifier: str) -> dict[str, Any]:
    """What the checkpoint header says about its 4th input channel (read by the engine, CLI and widget)."""
    return {
        "channel": 3,
        "classes": dict(CLASS_VALUES),
        "classifier": Path(classifier).name if classifier else None,
        "source": "MIL tumour classifier (cyclegan-ki67-mil-conditional)",
    }
