"""Named recipes with the papers' defaults; every value can be overridden (see ``config.py``)."""

from __future__ import annotations

import copy
from typing import Any

from .config import Config, ConfigError, merge

PRESETS: dict[str, dict[str, Any]] = {
    # Isola et al. 2017 / junyanz defaults: U-Net-256 (batch norm, dropout), 70x70 PatchGAN, vanilla GAN,
    # 100 x L1, batch 1, resize to 286 then random 256 crop, 100 + 100 epochs.
    "pix2pix": {
        "method": "pix2pix",
        "data": {"preprocess": "resize_and_crop", "load_size": 286, "crop_size": 256, "rot90": False},
        "model": {
            "arch": "unet_256",
            "arch_kwargs": {"ngf": 64, "norm": "batch", "use_dropout": True},
            "discriminator": "patch",
            "norm_d": "batch",
        },
        "loss": {"gan_mode": "vanilla", "pyramid_weights": [100.0], "lambda_variance": 0.0},
        "optim": {"n_epochs": 100, "n_epochs_decay": 100},
        "train": {"batch_size": 1},
    },
    # Liu et al. 2022 (BCI): ResNet-9 with batch norm and dropout, vanilla GAN, 25 x L1 at full resolution and
    # 25 x L1 at each of three further octaves (4 blurs 3x3 sigma 1 then /2), batch 2, full 1024 px images
    # ("not preprocessed"), 100 + 100 epochs (the BCI code's defaults; the paper's text says 50 + 50).
    "pyramid-pix2pix": {
        "method": "pix2pix",
        "data": {"preprocess": "none", "crop_size": 1024, "rot90": False},
        "model": {
            "arch": "resnet",
            "arch_kwargs": {"n_blocks": 9, "ngf": 64, "norm": "batch", "use_dropout": True},
            "discriminator": "patch",
            "norm_d": "batch",
        },
        "loss": {"gan_mode": "vanilla", "pyramid_weights": [25.0, 25.0, 25.0, 25.0], "lambda_variance": 0.0},
        "optim": {"n_epochs": 100, "n_epochs_decay": 100},
        "train": {"batch_size": 2},
    },
    # Rehmat et al. (section 4.2, 5.3): the pyramid objective plus lambda_variance x the batch-variance penalty,
    # batch 8, 50 + 50 epochs, cropped inputs (size not stated: 256, the pix2pix crop). The text does not give
    # the penalty's weight (eq. 11 lost its symbols; it reads as a plain sum): 1.0.
    "variance-pyramid": {
        "method": "pix2pix",
        "data": {"preprocess": "crop", "crop_size": 256, "rot90": False},
        "model": {
            "arch": "resnet",
            "arch_kwargs": {"n_blocks": 9, "ngf": 64, "norm": "batch", "use_dropout": True},
            "discriminator": "patch",
            "norm_d": "batch",
        },
        "loss": {"gan_mode": "vanilla", "pyramid_weights": [25.0, 25.0, 25.0, 25.0], "lambda_variance": 1.0},
        "optim": {"n_epochs": 50, "n_epochs_decay": 50},
        "train": {"batch_size": 8},
    },
    # Liu et al. 2022 (BCI), Table 1's headline "pix2pix + S1" (PSNR 21.160 / SSIM 0.477): the pyramid preset
    # with the full-resolution L1 and ONE further octave (weights 25, 25). ``pyramid-pix2pix`` is the BCI
    # code's default, four levels ("pix2pix + S1 + S2 + S3", 21.138 / 0.472 in Table 3).
    "pyramid-pix2pix-s1": {
        "method": "pix2pix",
        "data": {"preprocess": "none", "crop_size": 1024, "rot90": False},
        "model": {
            "arch": "resnet",
            "arch_kwargs": {"n_blocks": 9, "ngf": 64, "norm": "batch", "use_dropout": True},
            "discriminator": "patch",
            "norm_d": "batch",
        },
        "loss": {"gan_mode": "vanilla", "pyramid_weights": [25.0, 25.0], "lambda_variance": 0.0},
        "optim": {"n_epochs": 100, "n_epochs_decay": 100},
        "train": {"batch_size": 2},
    },
    # Peng et al. 2024 (TDKstain), as balball/TDKstain trains: ResNet-9 with 3 downsamplings (64 -> 512),
    # instance norm, no dropout; 3-scale PatchGAN (n_layers 3, ndf 64, instance norm), LSGAN, NO feature
    # matching; nuclei density estimator (128 filters, 4 blocks) on the encoder; 10 x L1, 10 x membrane L1,
    # 10 x estimator MSE, 10 x nuclei MSE; Adam 2e-4 (0.5, 0.999) for G, D and E; batch 1, full 1024 px
    # images, horizontal flips; 50 + 50 epochs. Knowledge-map parameters: the ``tdkstain`` config section.
    "tdkstain": {
        "method": "tdkstain",
        "data": {"preprocess": "none", "crop_size": 1024, "flip": True, "rot90": False},
        "model": {
            "arch": "resnet",
            "arch_kwargs": {
                "n_blocks": 9,
                "ngf": 64,
                "norm": "instance",
                "use_dropout": False,
                "n_downsampling": 3,
            },
            "discriminator": "multiscale",
            "ndf": 64,
            "n_layers_d": 3,
            "norm_d": "instance",
            "num_d": 3,
        },
        "loss": {"gan_mode": "lsgan", "lambda_feat": 0.0},
        "optim": {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_epochs": 50, "n_epochs_decay": 50},
        "train": {"batch_size": 1},
    },
    # Zhu et al. 2017 as junyanz's cycle_gan_model.py: two ResNet-9 generators (instance norm, no dropout), two
    # 70x70 PatchGANs (instance norm), LSGAN, cycle L1 10 each way, identity 0.5 x 10, 50-image pools, Adam
    # beta1 0.5, constant-then-linear lr, batch 1. The MIL-conditional paper's own choices where stated:
    # lr 1e-4 (junyanz 2e-4), 224 px crops taken directly (junyanz resize 286 + crop 256), 100 epochs in all
    # (kept as junyanz's 50 constant + 50 decay). Its class channel: cyclegan.class_channel=true.
    "cyclegan": {
        "method": "cyclegan",
        "data": {"kind": "unpaired", "preprocess": "crop", "crop_size": 224, "rot90": False},
        "model": {
            "arch": "resnet",
            "arch_kwargs": {"n_blocks": 9, "ngf": 64, "norm": "instance", "use_dropout": False},
            "discriminator": "patch",
            "norm_d": "instance",
        },
        "loss": {"gan_mode": "lsgan", "pyramid_weights": [0.0], "lambda_variance": 0.0},
        "optim": {"lr": 1e-4, "n_epochs": 50, "n_epochs_decay": 50},
        "train": {"batch_size": 1},
    },
    # Li et al. 2023 (ASP), the MIST launcher (experiments/mist_launcher.py, model cpt, FastCUT mode): ASP's
    # ResNet-6 (instance norm, anti-aliased, spectral norm), F = 256-wide MLPs on 256 positions of layers
    # 0,4,8,12,16, D = 5-layer PatchGAN ndf 32 (instance norm, anti-aliased, spectral norm, unconditional), LSGAN;
    # 1 x GAN + 10 x PatchNCE(T 0.07) + 10 x ASP (lambda_linear) + 10 x Gaussian-pyramid L1; random 512 crops
    # of the 1024 tiles + flips, batch 1, Adam 2e-4 (0.5, 0.999), 30 + 10 epochs; xavier init gain 0.02.
    "asp": {
        "method": "asp",
        "data": {"preprocess": "crop", "crop_size": 512, "flip": True, "rot90": False},
        "model": {
            "arch": "asp_resnet",
            "arch_kwargs": {"ngf": 64, "n_blocks": 6, "norm": "instance", "spectral_norm": True},
            "discriminator": "asp",
            "ndf": 32,
            "n_layers_d": 5,
            "norm_d": "instance",
        },
        "loss": {"gan_mode": "lsgan", "lambda_gan": 1.0},
        "optim": {"n_epochs": 30, "n_epochs_decay": 10},
        "train": {"batch_size": 1},
    },
    # Qu et al. (AMMFI): ASP's objective and discriminator, the AMMFI generator (3x3 first conv, attention-gated
    # skips), trained on the four multi-magnification views of every pair (OpenCV resampling instead of the
    # paper's BSRGAN); the paper's "linear decay" schedule and epochs are not given: ASP's 30 + 10.
    "ammfi": {
        "method": "asp",
        "data": {"preprocess": "crop", "crop_size": 512, "flip": True, "rot90": False},
        "model": {
            "arch": "ammfi_resnet",
            "arch_kwargs": {"ngf": 64, "n_blocks": 6, "norm": "instance", "spectral_norm": True},
            "discriminator": "asp",
            "ndf": 32,
            "n_layers_d": 5,
            "norm_d": "instance",
        },
        "loss": {"gan_mode": "lsgan", "lambda_gan": 1.0},
        "optim": {"n_epochs": 30, "n_epochs_decay": 10},
        "train": {"batch_size": 1},
        "asp": {"multi_magnification": True},
    },
}

# What each preset is, in a line (shown by ``virtual-ihc-train fit --help``).
PRESET_NOTES: dict[str, str] = {
    "pix2pix": "Isola et al. 2017: U-Net-256, 70x70 PatchGAN, 100 x L1",
    "pyramid-pix2pix": "BCI code default: ResNet-9, L1 at 4 pyramid levels ('pix2pix+S1+S2+S3', BCI Table 3)",
    "pyramid-pix2pix-s1": "BCI Table 1 headline 'pix2pix + S1': L1 at full resolution + one octave",
    "variance-pyramid": "Rehmat et al.: the 4-level pyramid plus the batch-variance penalty",
    "tdkstain": (
        "Peng et al. 2024 (balball/TDKstain code): nuclei density estimator + membrane branch, 3-scale "
        "PatchGAN, LSGAN; no feature matching"
    ),
    "cyclegan": "Zhu et al. 2017 (junyanz code): unpaired, two ResNet-9 generators, cycle + identity L1, LSGAN",
}

# pix2pixHD (Wang et al. 2018): 3-scale discriminator, LSGAN, feature matching (x10), instance norm in D.
# TDKstain's discriminator is also 3-scale but has no feature matching (see the ``tdkstain`` preset).
MULTISCALE_DISCRIMINATOR: dict[str, Any] = {
    "model": {"discriminator": "multiscale", "num_d": 3, "norm_d": "instance"},
    "loss": {"gan_mode": "lsgan", "lambda_feat": 10.0},
}


def preset_config(name: str, multiscale_discriminator: bool = False) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    cfg = Config(preset=name)
    # copies: a config is changed by overrides, and must never change the preset tables themselves
    merge(cfg, copy.deepcopy(PRESETS[name]))
    if multiscale_discriminator:
        merge(cfg, copy.deepcopy(MULTISCALE_DISCRIMINATOR))
    return cfg
