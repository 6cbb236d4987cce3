"""Exact resume: N steps, stop, resume, N more steps gives bitwise the weights of 2N steps straight."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from virtual_ihc_train.cli import main
from virtual_ihc_train.loop import fit
from virtual_ihc_train.run_state import latest_checkpoint

from .conftest import tiny_config

CASES = {
    # pyramid preset: PatchGAN, dropout on (uses the RNG), random crops/flips/rotations, mid-epoch stop
    "pyramid-patch": {
        "data.preprocess": "crop",
        "data.crop_size": 48,
        "data.rot90": True,
        "model.arch_kwargs": {"n_blocks": 1, "ngf": 8, "norm": "batch", "use_dropout": True},
    },
    # variance penalty + multiscale D (LSGAN, feature matching) + gradient accumulation
    "variance-multiscale-accum": {
        "data.preprocess": "crop",
        "data.crop_size": 32,
        "loss.lambda_variance": 1.0,
        "model.discriminator": "multiscale",
        "model.norm_d": "instance",
        "model.n_layers_d": 2,
        "loss.gan_mode": "lsgan",
        "loss.lambda_feat": 10.0,
        "train.batch_size": 2,
        "train.grad_accum": 2,
    },
}


def _weights(run):
    ckpt = latest_checkpoint(run)
    g, d = load_file(str(ckpt / "generator.safetensors")), load_file(str(ckpt / "discriminator.safetensors"))
    state = torch.load(ckpt / "state.pt", weights_only=True)
    return g, d, state


@pytest.mark.parametrize("case", sorted(CASES))
def test_n_plus_resume_plus_n_equals_2n(tmp_path, bci_small, case):
    n = 5  # 8 images, batch 4 -> 2 steps per epoch: the stop falls mid-epoch
    straight, split = tmp_path / "straight", tmp_path / "split"
    fit(tiny_config(bci_small, **CASES[case], **{"train.max_steps": 2 * n}), straight)
    fit(tiny_config(bci_small, **CASES[case], **{"train.max_steps": n}), split)
    assert main(["resume", str(split), "--set", f"train.max_steps={2 * n}"]) == 0
    g1, d1, s1 = _weights(straight)
    g2, d2, s2 = _weights(split)
    assert s1["step"] == s2["step"] == 2 * n and s1["epoch"] == s2["epoch"]
    assert g1.keys() == g2.keys() and d1.keys() == d2.keys()
    for k in g1:
        assert torch.equal(g1[k], g2[k]), f"generator {k} differs"
    for k in d1:
        assert torch.equal(d1[k], d2[k]), f"discriminator {k} differs"
    for k, v in s1["opt_G"]["state"].items():
        assert torch.equal(v["exp_avg"], s2["opt_G"]["state"][k]["exp_avg"])
    # the CSV log of the resumed run reads like the straight one: each step once, in order
    import csv

    steps = [int(r["step"]) for r in csv.DictReader((split / "metrics.csv").open())]
    assert steps == list(range(1, 2 * n + 1))
    # the initial weights differ from the final ones, so equality above is not vacuous
    assert not torch.equal(g1["model.1.weight"], tiny_init_weight(bci_small, case))


def tiny_init_weight(root, case):
    from virtual_ihc_train.discriminators import init_weights

    from napari_virtual_ihc.models import build_generator

    cfg = tiny_config(root, **CASES[case])
    torch.manual_seed(cfg.train.seed)
    g = build_generator(cfg.model.arch, **cfg.model.arch_kwargs)
    init_weights(g)
    return g.state_dict()["model.1.weight"]


def test_resume_without_checkpoint_says_so(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
