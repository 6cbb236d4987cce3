"""ASP (Li et al., MICCAI 2023; ``lifangda01/AdaptiveSupervisedPatchNCE``, model ``cpt``, MIST launcher) and
AMMFI (Qu et al.: the same objective with the attention-gated generator and multi-magnification views).

Per micro-batch, as ``CPTModel.optimize_parameters``: fake = G(A); D learns real IHC -> 1, fake -> 0 (LSGAN,
unconditional) and steps; then G and F learn from
``lambda_GAN GAN + lambda_NCE PatchNCE(G_enc(G(A)) | G_enc(A)) + lambda_ASP ASP(G_enc(G(A)) | G_enc(B))
+ lambda_GP GaussPyramidL1(G(A), B)``, each contrastive term averaged over patches, then over the NCE layers.
F's MLPs are built with G (CUT builds them at the first forward); F's optimiser is made after F's first forward,
as CUT's ``data_dependent_initialize``. The ASP schedule's epoch (1-based, as ``train.py``'s ``epoch``) is
method state, restored on resume.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import Dataset

from napari_virtual_ihc.models import build_generator
from napari_virtual_ihc.models.ammfi import AmmfiGenerator
from napari_virtual_ihc.models.asp import AspResnetGenerator

from ...config import Config, ConfigError
from ...data import Augment, Pair, find_pairs
from ...losses import GANLoss
from ..base import (
    Method,
    Step,
    linear_decay_scheduler,
    make_adam,
    paired_datasets,
    set_requires_grad,
    validation_pairs,
)
from .losses import GaussPyramidL1, asp_loss, lambda_linear_p, patch_nce_loss
from .magnification import MultiMagnificationDataset
from .networks import AspDiscriminator, PatchSampleF, xavier_init

ENCODER_ARCHS = ("asp_resnet", "ammfi_resnet")  # generators with ``encode(x, layers)``
MIN_CROP = 64  # the Gaussian pyramid halves 5 times and reflect-pads by 2 at every level


class Asp(Method):
    name = "asp"

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        ac, dc = cfg.asp, cfg.data
        if dc.kind == "unpaired":
            raise ConfigError(
                "ASP/AMMFI learn from pairs of consecutive sections (their losses compare G(A) with its own "
                "IHC B); unpaired folders are for --preset cyclegan"
            )
        if cfg.model.arch not in ENCODER_ARCHS:
            raise ConfigError(
                f"the asp method needs model.arch in {', '.join(ENCODER_ARCHS)}, not {cfg.model.arch!r}"
            )
        if cfg.model.discriminator != "asp":
            raise ConfigError(
                f"the asp method trains ASP's own discriminator (model.discriminator=asp), not {cfg.model.discriminator!r}"
            )
        if cfg.loss.gan_mode not in ("vanilla", "lsgan"):
            raise ConfigError(f"loss.gan_mode must be vanilla or lsgan, not {cfg.loss.gan_mode!r}")
        if not ac.nce_layers or ac.num_patches < 1:
            raise ConfigError("asp.nce_layers must name at least one layer and asp.num_patches be >= 1")
        if ac.asp_schedule not in ("lambda_linear", "none"):
            raise ConfigError(f"asp.asp_schedule must be lambda_linear or none, not {ac.asp_schedule!r}")
        if ac.lambda_gp and len(ac.gp_weights) < 1:
            raise ConfigError("asp.gp_weights needs one weight per pyramid level")
        size = dc.crop_size if dc.preprocess != "none" else None
        if size is not None and size < MIN_CROP:
            raise ConfigError(
                f"data.crop_size {size} is too small for the Gaussian-pyramid loss (>= {MIN_CROP})"
            )

    @classmethod
    def build_datasets(cls, cfg: Config) -> tuple[Dataset, list[Pair]]:
        if not cfg.asp.multi_magnification:
            return paired_datasets(cfg)
        dc = cfg.data
        augment = Augment(dc.preprocess, dc.load_size, dc.crop_size, dc.flip, dc.rot90, dc.color_jitter)
        pairs = find_pairs(dc.kind, dc.root, dc.split, dc.source, dc.target)
        return MultiMagnificationDataset(pairs, augment, cfg.train.seed), validation_pairs(cfg)

    def __init__(self, cfg: Config, device: torch.device) -> None:
        super().__init__(cfg, device)
        mc, oc, ac = cfg.model, cfg.optim, cfg.asp
        netG = build_generator(mc.arch, **mc.arch_kwargs)
        netD = AspDiscriminator(3, mc.ndf, mc.n_layers_d, mc.norm_d)
        xavier_init(netG, mc.init_gain)
        xavier_init(netD, mc.init_gain)
        netF = PatchSampleF(ac.netf_nc, mc.init_gain)
        netF.create_mlp(self._nce_channels(netG))
        self.nets = {"G": netG.to(device).train(), "D": netD.to(device).train(), "F": netF.to(device).train()}
        self.G: nn.Module = self.nets["G"]
        self.D: nn.Module = self.nets["D"]
        betas = (oc.beta1, oc.beta2)
        self.opt_G = make_adam(netG, oc.lr, betas)
        self.opt_D = make_adam(netD, oc.lr, betas)
        self.opt_F: torch.optim.Adam | None = None  # after F's first forward
        self.sched_G = linear_decay_scheduler(self.opt_G, cfg)
        self.sched_D = linear_decay_scheduler(self.opt_D, cfg)
        self.sched_F: torch.optim.lr_scheduler.LambdaLR | None = None
        self.gan_loss = GANLoss(cfg.loss.gan_mode)
        self.gp_loss = GaussPyramidL1(ac.gp_weights)
        self.epoch = 1  # the 1-based epoch the ASP schedule is at
        self.patch_rng = torch.Generator().manual_seed(
            cfg.train.seed * 1000 + int(os.environ.get("RANK", "0"))
        )
        self.world = 1

    def _nce_channels(self, netG: nn.Module) -> list[int]:
        """Channels of the NCE layers, from a small probe (eval mode: spectral norm's vectors stay put)."""
        netG.eval()
        with torch.no_grad():
            feats = encode(netG, torch.zeros(1, netG_input_nc(netG), 32, 32), list(self.cfg.asp.nce_layers))
        netG.train()
        if len(feats) != len(self.cfg.asp.nce_layers):
            raise ConfigError(f"asp.nce_layers {self.cfg.asp.nce_layers}: the generator has no such layers")
        return [int(f.shape[1]) for f in feats]

    def wrap_ddp(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        # D through DDP; G and F are used several times per backward (G(A) and three encodings), which DDP's
        # reducer does not allow: their weights are broadcast once and their gradients averaged by hand.
        self.D = wrap(self.nets["D"])
        self.world = dist.get_world_size()
        for net in (self.nets["G"], self.nets["F"]):
            for t in list(net.parameters()) + list(net.buffers()):
                dist.broadcast(t.data, 0)

    def _average_gradients(self, nets: list[nn.Module]) -> None:
        if self.world == 1:
            return
        for net in nets:
            for p in net.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad.div_(self.world)

    def schedule_p(self) -> float:
        oc = self.cfg.optim
        if self.cfg.asp.asp_schedule == "none":
            return 1.0
        return lambda_linear_p(self.epoch, oc.n_epochs, oc.n_epochs_decay)

    def contrastive(self, feat_q: list[Tensor], feat_k: list[Tensor], paired: bool, batch: int) -> Tensor:
        """PatchNCE (or, ``paired``, ASP) between query and key features, averaged over patches and layers."""
        netF, ac = self.nets["F"], self.cfg.asp
        ids = PatchSampleF.sample_ids(feat_k, ac.num_patches, self.patch_rng)
        k_pool = netF(feat_k, ids)
        q_pool = netF(feat_q, ids)
        if self.opt_F is None:  # F has had its first forward: now its optimiser (CUT's data-dependent init)
            self.opt_F = make_adam(netF, self.cfg.optim.lr, (self.cfg.optim.beta1, self.cfg.optim.beta2))
            self.sched_F = linear_decay_scheduler(self.opt_F, self.cfg)
        total = torch.zeros((), device=self.device)
        p = self.schedule_p()
        for q, k in zip(q_pool, k_pool, strict=True):
            if paired:
                total = total + asp_loss(q, k, batch, p, ac.nce_temperature).mean()
            else:
                total = total + patch_nce_loss(q, k, batch, ac.nce_temperature).mean()
        return total / len(q_pool)

    def train_step(self, batch: dict[str, Any], step: Step) -> dict[str, Tensor]:
        ac, lc = self.cfg.asp, self.cfg.loss
        netG, netD, netF = self.nets["G"], self.nets["D"], self.nets["F"]
        real_A = batch["A"].to(self.device, non_blocking=True)
        real_B = batch["B"].to(self.device, non_blocking=True)
        n = real_A.shape[0]

        with step.autocast():
            fake_B = self.G(real_A)

        # ---- D: real IHC -> 1, generated -> 0
        set_requires_grad(netD, True)
        if step.micro == 0:
            self.opt_D.zero_grad(set_to_none=True)
        with step.no_sync(self.D), step.autocast():
            loss_D_fake = self.gan_loss(self.D(fake_B.detach()), False)
            loss_D_real = self.gan_loss(self.D(real_B), True)
            loss_D = (loss_D_fake + loss_D_real) * 0.5
        step.backward(loss_D, self.D)
        if step.last_micro:
            step.scaler.step(self.opt_D)

        # ---- G and F
        set_requires_grad(netD, False)
        if step.micro == 0:
            self.opt_G.zero_grad(set_to_none=True)
            if self.opt_F is not None:
                self.opt_F.zero_grad(set_to_none=True)
        layers = list(ac.nce_layers)
        with step.autocast():
            feat_real_A = encode(netG, real_A, layers)
            feat_fake_B = encode(netG, fake_B, layers)
            feat_real_B = encode(netG, real_B, layers)
            loss_G_GAN = self.gan_loss(netD(fake_B), True) * lc.lambda_gan
            zero = torch.zeros((), device=self.device)
            loss_NCE = (
                self.contrastive(feat_fake_B, feat_real_A, False, n) * ac.lambda_nce
                if ac.lambda_nce
                else zero
            )
            loss_ASP = (
                self.contrastive(feat_fake_B, feat_real_B, True, n) * ac.lambda_asp if ac.lambda_asp else zero
            )
            loss_GP = self.gp_loss(fake_B.float(), real_B) * ac.lambda_gp if ac.lambda_gp else zero
            loss_G = loss_G_GAN + loss_NCE + loss_ASP + loss_GP
        step.scaler.scale(loss_G / step.n_micro).backward()
        if step.last_micro:
            self._average_gradients([netG, netF])
            step.scaler.step(self.opt_G)
            if self.opt_F is not None:
                step.scaler.step(self.opt_F)
        return {
            "loss_D": loss_D,
            "loss_D_real": loss_D_real,
            "loss_D_fake": loss_D_fake,
            "loss_G": loss_G,
            "loss_G_GAN": loss_G_GAN,
            "loss_NCE": loss_NCE,
            "loss_ASP": loss_ASP,
            "loss_GP": loss_GP,
        }

    def end_epoch(self, epoch: int) -> None:
        self.epoch = epoch + 1

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        found: dict[str, torch.optim.Optimizer] = {"opt_G": self.opt_G, "opt_D": self.opt_D}
        if self.opt_F is not None:
            found["opt_F"] = self.opt_F
        return found

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LambdaLR]:
        found = {"sched_G": self.sched_G, "sched_D": self.sched_D}
        if self.sched_F is not None:
            found["sched_F"] = self.sched_F
        return found

    def state_dict(self) -> dict[str, Any]:
        return {"asp_epoch": self.epoch, "patch_rng": self.patch_rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (
            state.get("opt_F") is not None
        ):  # F's optimiser existed: make it as in the run; the loop restores it
            oc = self.cfg.optim
            self.opt_F = make_adam(self.nets["F"], oc.lr, (oc.beta1, oc.beta2))
            self.sched_F = linear_decay_scheduler(self.opt_F, self.cfg)
        self.epoch = int(state["asp_epoch"])
        self.patch_rng.set_state(state["patch_rng"])


def encode(netG: nn.Module, x: Tensor, layers: list[int]) -> list[Tensor]:
    """The generator's encoder features at ``layers`` (CUT's ``netG(x, layers, encode_only=True)``)."""
    if not isinstance(netG, (AspResnetGenerator, AmmfiGenerator)):
        raise ConfigError(f"{type(netG).__name__} has no encoder features for PatchNCE")
    return netG.encode(x, layers)


def netG_input_nc(netG: nn.Module) -> int:
    """Input channels of an ASP/AMMFI generator (its first convolution's)."""
    for m in netG.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.in_channels)
    raise ConfigError("the generator has no convolution")
