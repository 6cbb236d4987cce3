"""Runs that go wrong lose nothing: a diverged loss stops training with the last good checkpoint kept
(issue 20 item 5), and a ``resume --set`` the run cannot take leaves ``config.yaml`` as it was (item 11)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from virtual_ihc_train.cli import main
from virtual_ihc_train.config import Config
from virtual_ihc_train.loop import fit
from virtual_ihc_train.run_state import latest_checkpoint

from .conftest import tiny_config

SMALL = {"data.preprocess": "crop", "data.crop_size": 32}


def _write_run(tmp_path, root, **overrides):
    run = tmp_path / "run"
    cfg = tiny_config(root, **SMALL, **overrides)
    cfg.save(tmp_path / "cfg.yaml")
    return run, tmp_path / "cfg.yaml"


def test_non_finite_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, bci_small, capsys):
    run = tmp_path / "run"
    fit(tiny_config(bci_small, **SMALL, **{"train.max_steps": 2}), run)
    good = latest_checkpoint(run)
    # an infinite GAN weight makes G's loss inf on the first resumed step
    assert main(["resume", str(run), "--set", "loss.lambda_gan=inf", "--set", "train.max_steps=6"]) == 1
    err = capsys.readouterr().err
    assert "loss_G" in err and "not finite at step 3" in err and "last good checkpoint" in err, err
    assert str(good) in err and latest_checkpoint(run) == good
    for name in ("generator", "discriminator"):
        for k, v in load_file(str(good / f"{name}.safetensors")).items():
            assert torch.isfinite(v).all(), f"{name} {k} saved non-finite"
    assert torch.load(good / "state.pt", weights_only=True)["step"] == 2


def test_exploding_lr_stops_at_once_and_writes_no_checkpoint(tmp_path, bci_small, capsys):
    run, cfg_file = _write_run(tmp_path, bci_small, **{"train.checkpoint_every": 1, "train.max_steps": 6})
    args = ["fit", "--preset", "pyramid-pix2pix", "--config", str(cfg_file), "--run-dir", str(run)]
    assert main([*args, "--set", "optim.lr=1e30"]) == 1
    err = capsys.readouterr().err
    assert "not finite" in err and "no checkpoint was written" in err, err
    assert not (run / "checkpoints" / "latest.txt").exists()


def test_failed_resume_override_does_not_touch_config_yaml(tmp_path, bci_small, capsys):
    run = tmp_path / "run"
    fit(tiny_config(bci_small, **SMALL, **{"train.max_steps": 2}), run)
    before = (run / "config.yaml").read_text()
    # the images are 64 px: a 128 px crop cannot be taken, the run must refuse and keep its config
    assert main(["resume", str(run), "--set", "data.crop_size=128", "--set", "train.max_steps=4"]) == 2
    assert "crop_size" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == before
    # a net the checkpoint does not hold (wider generator): refused at load, config unchanged
    wider = "model.arch_kwargs={n_blocks: 1, ngf: 16, norm: batch, use_dropout: false}"
    assert main(["resume", str(run), "--set", wider, "--set", "train.max_steps=4"]) == 2
    assert "does not fit" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == before
    # and the run still resumes
    assert main(["resume", str(run), "--set", "train.max_steps=4"]) == 0
    assert (
        Config.from_dict(__import__("yaml").safe_load((run / "config.yaml").read_text())).train.max_steps == 4
    )
