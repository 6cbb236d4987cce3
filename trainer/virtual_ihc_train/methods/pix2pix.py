"""The pix2pix family (pix2pix, pyramid-pix2pix, variance-pyramid; pix2pixHD's multiscale D): one G, one D.

Per micro-batch, as junyanz's ``optimize_parameters``: fake = G(A); D learns real-vs-fake on (A, B) /
(A, fake.detach()) and, on the step's last micro-batch, steps; then G learns from D's verdict on (A, fake)
plus the pyramid L1 / variance / feature-matching terms. With ``grad_accum=1`` this is exactly the
reference order (D updated before G's loss is taken).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from napari_virtual_ihc.models import build_generator

from ..config import Config, ConfigError
from ..discriminators import build_discriminator, init_weights
from ..losses import GANLoss, PyramidL1, feature_matching_loss, variance_penalty
from .base import Method, Step, linear_decay_scheduler, make_adam, set_requires_grad


def check_gan_config(cfg: Config) -> None:
    if cfg.model.discriminator not in ("patch", "multiscale"):
        raise ConfigError(f"model.discriminator must be patch or multiscale, not {cfg.model.discriminator!r}")
    if cfg.loss.gan_mode not in ("vanilla", "lsgan"):
        raise ConfigError(f"loss.gan_mode must be vanilla or lsgan, not {cfg.loss.gan_mode!r}")


class Pix2Pix(Method):
    name = "pix2pix"

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        check_gan_config(cfg)
        if cfg.data.kind == "unpaired":
            raise ConfigError(
                "the pix2pix family learns from registered pairs; unpaired folders are for unpaired methods "
                "(--preset cyclegan)"
            )
        if not cfg.loss.pyramid_weights:
            raise ConfigError("loss.pyramid_weights needs at least the full-resolution L1 weight")

    def __init__(self, cfg: Config, device: torch.device) -> None:
        super().__init__(cfg, device)
        mc, oc, lc = cfg.model, cfg.optim, cfg.loss
        # initialised N(0, 0.02) as pix2pix; DDP broadcasts rank 0's weights
        netG = build_generator(mc.arch, **mc.arch_kwargs)
        netD = build_discriminator(mc.discriminator, 6, mc.ndf, mc.n_layers_d, mc.norm_d, mc.num_d)
        init_weights(netG, mc.init_gain)
        init_weights(netD, mc.init_gain)
        self.nets = {"G": netG.to(device).train(), "D": netD.to(device).train()}
        self.G: nn.Module = self.nets["G"]  # DDP-wrapped when world > 1
        self.D: nn.Module = self.nets["D"]
        self.opt_G = make_adam(netG, oc.lr, (oc.beta1, oc.beta2))
        self.opt_D = make_adam(netD, oc.lr, (oc.beta1, oc.beta2))
        self.sched_G = linear_decay_scheduler(self.opt_G, cfg)
        self.sched_D = linear_decay_scheduler(self.opt_D, cfg)
        self.gan_loss = GANLoss(lc.gan_mode)
        self.pyramid = PyramidL1(lc.pyramid_weights, lc.pyramid_blurs, lc.pyramid_sigma)

    def wrap_ddp(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        self.G, self.D = wrap(self.nets["G"]), wrap(self.nets["D"])

    def train_step(self, batch: dict[str, Any], step: Step) -> dict[str, torch.Tensor]:
        lc, netD = self.cfg.loss, self.nets["D"]
        real_A = batch["A"].to(self.device, non_blocking=True)
        real_B = batch["B"].to(self.device, non_blocking=True)

        # ---- forward G
        with step.no_sync(self.G), step.autocast():
            fake_B = self.G(real_A)

        # ---- update D: real pairs -> 1, generated pairs -> 0
        set_requires_grad(netD, True)
        if step.micro == 0:
            self.opt_D.zero_grad(set_to_none=True)
        with step.no_sync(self.D), step.autocast():
            pred_fake = self.D(torch.cat((real_A, fake_B.detach()), 1))
            pred_real = self.D(torch.cat((real_A, real_B), 1))
            loss_D_fake, loss_D_real = self.gan_loss(pred_fake, False), self.gan_loss(pred_real, True)
            loss_D = (loss_D_fake + loss_D_real) * 0.5
        step.backward(loss_D, self.D)
        if step.last_micro:
            step.scaler.step(self.opt_D)

        # ---- update G: fool D, match the target at every pyramid scale (+ variance, feature matching)
        set_requires_grad(netD, False)
        if step.micro == 0:
            self.opt_G.zero_grad(set_to_none=True)
        with step.no_sync(self.G), step.autocast():
            pred_fake = netD(torch.cat((real_A, fake_B), 1))
            loss_G_GAN = self.gan_loss(pred_fake, True) * lc.lambda_gan
            loss_G_pyr, pyr_terms = self.pyramid(fake_B.float(), real_B)
            loss_G = loss_G_GAN + loss_G_pyr
            extra: dict[str, torch.Tensor] = {}
            if lc.lambda_variance:
                extra["loss_G_variance"] = loss_G_var = variance_penalty(fake_B.float(), real_B)
                loss_G = loss_G + loss_G_var * lc.lambda_variance
            if lc.lambda_feat and self.cfg.model.discriminator == "multiscale":
                # pix2pixHD: real and fake features from the same D (here: D after its update)
                with torch.no_grad():
                    pred_real_feats = netD(torch.cat((real_A, real_B), 1))
                loss_G_feat = feature_matching_loss(pred_fake, pred_real_feats) * lc.lambda_feat
                extra["loss_G_feat"] = loss_G_feat
                loss_G = loss_G + loss_G_feat
        step.backward(loss_G, self.G)
        if step.last_micro:
            step.scaler.step(self.opt_G)
        return {
            "loss_D": loss_D,
            "loss_D_real": loss_D_real,
            "loss_D_fake": loss_D_fake,
            "loss_G": loss_G,
            "loss_G_GAN": loss_G_GAN,
            **{f"loss_G_L1_scale{i}": t for i, t in enumerate(pyr_terms)},
            **extra,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_G": self.opt_G, "opt_D": self.opt_D}

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LambdaLR]:
        return {"sched_G": self.sched_G, "sched_D": self.sched_D}
