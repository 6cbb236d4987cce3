"""TDKstain (Peng et al. 2024; balball/TDKstain ``models/tdk_model.py``): pix2pix-style training with HER2
scoring knowledge -- a nuclei density estimator E on the generator's encoder and a membrane branch.

Per micro-batch, in the reference's ``optimize_parameters`` order:

1. forward: ``G(A)`` and ``G(A * M)`` (one batched call: instance norm and convolutions act per sample);
2. E learns with G frozen: ``L_E = 10 MSE(E(G_enc(B)), K_N)``;
3. D learns: LSGAN over the 3 scales, ``1/2 (fake -> 0 + real -> 1)`` on (A, G(A)) / (A, B);
4. G learns with D and E frozen: ``sum_s LSGAN(D_s(A, G(A)), 1) + 10 L1(G(A), B) + 10 L1(G(A * M), K_M)
   + 10 MSE(E(G_enc(G(A))), K_N)``.

No feature matching (TDKstain's discriminator returns predictions only). The knowledge maps (K_M, M, K_N)
come from ``knowledge_maps.py`` and are cached beside the run (``RUN_DIR/knowledge``) or in
``tdkstain.cache_dir``. Where the paper and the code differ, this follows the code (docs/training.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from napari_virtual_ihc.models import ModelSpec, build_generator
from napari_virtual_ihc.models.resnet import ResnetGenerator

from ...config import Config, ConfigError
from ...data import Augment
from ...discriminators import init_weights
from ..base import Method, Step, linear_decay_scheduler, make_adam, paired_datasets, set_requires_grad
from .knowledge_maps import KnowledgePairDataset, KnowledgeParams, prepare_knowledge
from .losses import discriminator_loss, estimator_loss, generator_loss
from .nets import (
    MultiscalePatchDiscriminator,
    NucleiDensityEstimator,
    encoder_channels,
    encoder_features,
    encoder_layers,
)

NUCLEI_METHODS = ("auto", "cellpose", "classical")


def knowledge_params(cfg: Config) -> KnowledgeParams:
    t = cfg.tdkstain
    return KnowledgeParams(
        saturation_threshold=t.saturation_threshold,
        mask_blur_ksize=t.mask_blur_ksize,
        mask_blur_sigma=t.mask_blur_sigma,
        h_percentile=t.h_percentile,
        hole_area=t.hole_area,
        dilation_radius=t.dilation_radius,
        nuclei_sigma=t.nuclei_sigma,
        cellpose_diameter=t.cellpose_diameter,
        membrane_nuclei=t.membrane_nuclei,
        nuclei_method=t.nuclei_method,
        nuclei_model=t.cellpose_model,
        membrane_model=t.membrane_cellpose_model,
    )


def knowledge_identity(cfg: Config) -> str:
    """What the maps a run learns from depend on: every parameter and the segmenters that really ran."""
    return json.dumps(
        {"params": asdict(knowledge_params(cfg)), "methods": cfg.tdkstain.nuclei_method_used}, sort_keys=True
    )


def n_downsampling(cfg: Config) -> int:
    return int(cfg.model.arch_kwargs.get("n_downsampling", 2))


def min_image_size(cfg: Config) -> int:
    """Smallest side the 3-scale PatchGAN accepts: its coarsest input needs >= 3 * 2**n_layers px (instance
    norm in the penultimate layer needs 2 x 2 values)."""
    return 3 * 2**cfg.model.n_layers_d * 2 ** (cfg.model.num_d - 1)


class TDKstain(Method):
    name = "tdkstain"

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if cfg.data.kind == "unpaired":
            raise ConfigError(
                "TDKstain learns from registered H&E/IHC pairs; unpaired folders cannot train it"
            )
        if cfg.model.arch != "resnet":
            raise ConfigError(
                f"TDKstain's estimator reads the ResNet generator's encoder; model.arch={cfg.model.arch!r}"
            )
        if n_downsampling(cfg) < 1:
            raise ConfigError("model.arch_kwargs.n_downsampling must be >= 1 (E reads each downsampling)")
        if cfg.model.discriminator != "multiscale":
            raise ConfigError("TDKstain trains a multiscale PatchGAN: model.discriminator must be multiscale")
        if cfg.loss.gan_mode != "lsgan":
            raise ConfigError("TDKstain's objective is LSGAN: loss.gan_mode must be lsgan")
        if cfg.tdkstain.nuclei_method not in NUCLEI_METHODS:
            raise ConfigError(f"tdkstain.nuclei_method must be one of {', '.join(NUCLEI_METHODS)}")
        dc, m = cfg.data, 2 ** n_downsampling(cfg)
        if dc.preprocess != "none" and (dc.crop_size % m or dc.crop_size < min_image_size(cfg)):
            raise ConfigError(
                f"data.crop_size={dc.crop_size}: TDKstain needs a multiple of {m} (the generator's "
                f"downsamplings) of at least {min_image_size(cfg)} px (the coarsest discriminator scale)"
            )

    @classmethod
    def configure_run(cls, cfg: Config, run_dir: Path) -> None:
        if not cfg.tdkstain.cache_dir:
            cfg.tdkstain.cache_dir = str(Path(run_dir) / "knowledge")

    @classmethod
    def build_datasets(cls, cfg: Config) -> tuple[KnowledgePairDataset, list]:
        """Paired data plus the cached knowledge maps of every training IHC image (computed when missing)."""
        t, dc = cfg.tdkstain, cfg.data
        if not t.cache_dir:
            raise ConfigError("tdkstain.cache_dir is empty (the loop sets RUN_DIR/knowledge)")
        paired, val = paired_datasets(cfg)
        targets = [p.target for p in paired.sources if p.target is not None]
        entries, cache = prepare_knowledge(
            targets, Path(t.cache_dir), knowledge_params(cfg), progress=cfg.train.progress
        )
        reasons = cache.fallback_reasons
        used_label = cache.segmenters_label + (f" (fallback: {'; '.join(reasons)})" if reasons else "")
        if t.nuclei_method_used and t.nuclei_method_used != used_label and not t.allow_knowledge_change:
            raise ConfigError(
                f"this run's nuclei maps came from {t.nuclei_method_used!r}, now {used_label!r} would run; "
                "pass --set tdkstain.allow_knowledge_change=true to continue on the new maps"
            )
        t.nuclei_method_used = used_label
        augment = Augment(dc.preprocess, dc.load_size, dc.crop_size, dc.flip, dc.rot90, dc.color_jitter)
        multiple = 2 ** n_downsampling(cfg)
        dataset = KnowledgePairDataset(
            paired.sources, augment, cfg.train.seed, entries, multiple, min_image_size(cfg)
        )
        return dataset, val

    def __init__(self, cfg: Config, device: torch.device) -> None:
        super().__init__(cfg, device)
        mc, oc, t = cfg.model, cfg.optim, cfg.tdkstain
        netG = build_generator(mc.arch, **mc.arch_kwargs)
        if not isinstance(netG, ResnetGenerator):
            raise ConfigError(f"model.arch={mc.arch!r} did not build the ResNet generator E reads")
        self.generator: ResnetGenerator = netG
        self.layers = encoder_layers(n_downsampling(cfg))
        feats_nc = sum(encoder_channels(int(mc.arch_kwargs.get("ngf", 64)), n_downsampling(cfg)))
        netD = MultiscalePatchDiscriminator(6, mc.ndf, mc.n_layers_d, mc.norm_d, mc.num_d)
        norm = str(mc.arch_kwargs.get("norm", "instance"))
        netE = NucleiDensityEstimator(feats_nc, 1, t.nef, t.n_estimator_blocks, norm)
        for net in (netG, netD, netE):
            init_weights(net, mc.init_gain)
        self.nets = {"G": netG.to(device).train(), "D": netD.to(device).train(), "E": netE.to(device).train()}
        self.G: nn.Module = self.nets["G"]  # DDP-wrapped when world > 1
        self.D: nn.Module = self.nets["D"]
        self.E: nn.Module = self.nets["E"]
        betas = (oc.beta1, oc.beta2)
        self.opt_G = make_adam(netG, oc.lr, betas)
        self.opt_D = make_adam(netD, oc.lr, betas)
        self.opt_E = make_adam(netE, oc.lr, betas)
        self.sched_G = linear_decay_scheduler(self.opt_G, cfg, step_at_epoch_start=True)
        self.sched_D = linear_decay_scheduler(self.opt_D, cfg, step_at_epoch_start=True)
        self.sched_E = linear_decay_scheduler(self.opt_E, cfg, step_at_epoch_start=True)
        self.knowledge = knowledge_identity(cfg)

    def wrap_ddp(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        self.G, self.D, self.E = wrap(self.nets["G"]), wrap(self.nets["D"]), wrap(self.nets["E"])

    def train_step(self, batch: dict[str, Any], step: Step) -> dict[str, torch.Tensor]:
        t = self.cfg.tdkstain
        netG, netD, netE = self.nets["G"], self.nets["D"], self.nets["E"]
        dev = self.device
        real_A, real_B = batch["A"].to(dev, non_blocking=True), batch["B"].to(dev, non_blocking=True)
        dab = batch["dab"].to(dev, non_blocking=True)
        mask = batch["mask"].to(dev, non_blocking=True)
        density = batch["density"].to(dev, non_blocking=True)
        size = density.shape[-2:]
        n = real_A.shape[0]

        # ---- forward: G(A) and the membrane branch G(A * M)
        set_requires_grad(netG, True)
        with step.no_sync(self.G), step.autocast():
            fake_B, fake_B_masked = self.G(torch.cat((real_A, real_A * mask))).split(n)

        # ---- update E on the real IHC's encoder features, G frozen
        set_requires_grad(netG, False)
        set_requires_grad(netE, True)
        if step.micro == 0:
            self.opt_E.zero_grad(set_to_none=True)
        with step.no_sync(self.E), step.autocast():
            with torch.no_grad():
                feats_real = encoder_features(self.generator, real_B, self.layers)
            loss_E = estimator_loss(self.E(feats_real, size).float(), density, t.lambda_estimator)
        step.backward(loss_E, self.E)
        if step.last_micro:
            step.scaler.step(self.opt_E)

        # ---- update D: LSGAN over the scales
        set_requires_grad(netD, True)
        if step.micro == 0:
            self.opt_D.zero_grad(set_to_none=True)
        with step.no_sync(self.D), step.autocast():
            pred_fake = self.D(torch.cat((real_A, fake_B.detach()), 1))
            pred_real = self.D(torch.cat((real_A, real_B), 1))
            d_terms = discriminator_loss([p.float() for p in pred_fake], [p.float() for p in pred_real])
        step.backward(d_terms["D"], self.D)
        if step.last_micro:
            step.scaler.step(self.opt_D)

        # ---- update G with D and E frozen
        set_requires_grad(netD, False)
        set_requires_grad(netE, False)
        set_requires_grad(netG, True)
        if step.micro == 0:
            self.opt_G.zero_grad(set_to_none=True)
        with step.no_sync(self.G), step.autocast():
            pred_fake = netD(torch.cat((real_A, fake_B), 1))
            pred_density = netE(encoder_features(self.generator, fake_B, self.layers), size)
            g_terms = generator_loss(
                [p.float() for p in pred_fake],
                fake_B.float(),
                real_B,
                fake_B_masked.float(),
                dab,
                pred_density.float(),
                density,
                t.lambda_l1,
                t.lambda_mask,
                t.lambda_nuclei,
            )
        step.backward(g_terms["G"], self.G)
        if step.last_micro:
            step.scaler.step(self.opt_G)
        set_requires_grad(netE, True)
        return {
            "loss_E": loss_E,
            "loss_D": d_terms["D"],
            "loss_D_real": d_terms["D_real"],
            "loss_D_fake": d_terms["D_fake"],
            "loss_G": g_terms["G"],
            "loss_G_GAN": g_terms["G_GAN"],
            "loss_G_L1": g_terms["G_L1"],
            "loss_G_mask": g_terms["G_mask"],
            "loss_G_nuclei": g_terms["G_nuclei"],
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_G": self.opt_G, "opt_D": self.opt_D, "opt_E": self.opt_E}

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LambdaLR]:
        return {"sched_G": self.sched_G, "sched_D": self.sched_D, "sched_E": self.sched_E}

    def state_dict(self) -> dict[str, Any]:
        return {"tdkstain_knowledge": self.knowledge}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        before = state.get("tdkstain_knowledge")
        if before != self.knowledge and not self.cfg.tdkstain.allow_knowledge_change:
            raise ConfigError(
                "the run was trained on knowledge maps made with other parameters or segmenters "
                f"({before}); now: {self.knowledge}. Resume with the run's own tdkstain.* values, or pass "
                "--set tdkstain.allow_knowledge_change=true to continue on the recomputed maps"
            )

    def generator_spec(self) -> ModelSpec:
        spec = super().generator_spec()
        prov = dict(spec.provenance or {})
        t = self.cfg.tdkstain
        prov["nuclei_method"] = t.nuclei_method_used
        prov["tdkstain_losses"] = {
            "lambda_l1": t.lambda_l1,
            "lambda_mask": t.lambda_mask,
            "lambda_estimator": t.lambda_estimator,
            "lambda_nuclei": t.lambda_nuclei,
        }
        return replace(spec, provenance=prov)
