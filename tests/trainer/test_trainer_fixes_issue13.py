"""Issue 13 points 4 and 5: pix2pixHD feature matching with one discriminator, what the presets say about
TDKstain and BCI, both BCI configurations by name."""

from __future__ import annotations

import argparse
import copy

import pytest
import torch
from virtual_ihc_train.cli import add_config_args
from virtual_ihc_train.losses import feature_matching_loss
from virtual_ihc_train.methods import Step, method_class
from virtual_ihc_train.presets import MULTISCALE_DISCRIMINATOR, PRESET_NOTES, PRESETS, preset_config

from .conftest import tiny_config


def test_feature_matching_takes_real_and_fake_features_from_the_same_discriminator(bci_small):
    cfg = tiny_config(
        bci_small,
        **{
            "model.arch_kwargs": {"n_blocks": 1, "ngf": 8, "norm": "instance", "use_dropout": False},
            "model.discriminator": "multiscale",
            "model.norm_d": "instance",
            "model.n_layers_d": 2,
            "loss.gan_mode": "lsgan",
            "loss.lambda_feat": 10.0,
        },
    )
    torch.manual_seed(0)
    cls = method_class(cfg)
    dataset, _ = cls.build_datasets(cfg)
    method = cls(cfg, torch.device("cpu"))
    items = [dataset[i] for i in range(2)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("A", "B")}
    G0, D0 = copy.deepcopy(method.nets["G"]), copy.deepcopy(method.nets["D"])
    losses = method.train_step(
        batch, Step(0, 1, True, torch.amp.GradScaler("cuda", enabled=False), torch.device("cpu"))
    )
    D1 = method.nets["D"]  # the D whose verdict on G(A) the generator's loss used
    a, b = batch["A"], batch["B"]
    with torch.no_grad():
        fake = G0(a)
        pred_fake = D1(torch.cat((a, fake), 1))
        same = feature_matching_loss(pred_fake, D1(torch.cat((a, b), 1))) * 10
        mixed = feature_matching_loss(pred_fake, D0(torch.cat((a, b), 1))) * 10  # the old, mixed version
    got = float(losses["loss_G_feat"])
    assert got == pytest.approx(float(same), rel=1e-5)
    assert abs(float(mixed) - float(same)) > 100 * 1e-5 * float(same)  # the two really differ


def test_presets_say_tdkstain_has_no_feature_matching():
    assert set(PRESET_NOTES) <= set(PRESETS) and {"tdkstain", "pyramid-pix2pix", "pyramid-pix2pix-s1"} <= set(
        PRESET_NOTES
    )
    tdk = preset_config("tdkstain")
    assert (
        tdk.method == "tdkstain" and tdk.loss.lambda_feat == 0.0 and tdk.model.discriminator == "multiscale"
    )
    assert "no feature matching" in PRESET_NOTES["tdkstain"]
    assert MULTISCALE_DISCRIMINATOR["loss"]["lambda_feat"] > 0  # pix2pixHD's option keeps its matching
    fit = argparse.ArgumentParser()
    add_config_args(fit)
    ms = next(a for a in fit._actions if "--multiscale-discriminator" in a.option_strings)
    assert "TDKstain" not in (ms.help or "") and "pix2pixHD" in (ms.help or "")


def test_both_bci_configurations_are_reachable_by_name():
    headline = preset_config("pyramid-pix2pix-s1")
    default = preset_config("pyramid-pix2pix")
    assert headline.loss.pyramid_weights == [25.0, 25.0]  # full resolution + S1: Table 1, 21.160 / 0.477
    assert default.loss.pyramid_weights == [25.0] * 4  # + S2 + S3: the BCI code's default, Table 3
    assert "Table 1" in PRESET_NOTES["pyramid-pix2pix-s1"] and "Table 3" in PRESET_NOTES["pyramid-pix2pix"]
    for cfg in (headline, default):
        assert cfg.model.arch_kwargs == {"n_blocks": 9, "ngf": 64, "norm": "batch", "use_dropout": True}
