"""Protocols (issue 30 item 1): ``evaluate`` runs a generator as its paper's test.py did, from the header.

A reference-layout BCI checkpoint (the project's builder of junyanz's ResnetGenerator: batch norm, non-trivial
running statistics) saved as the reference ``save_networks`` writes it: ``evaluate`` must give the PSNR/SSIM of
test.py's forward (train mode, batch 1: each image normalised by its own statistics), computed here directly,
not the eval-mode figures; with dropout the seed makes the figure repeatable, and the exports record the mode.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from virtual_ihc_train.cli import main
from virtual_ihc_train.reporting import to_uint8

from napari_virtual_ihc.models import build_generator

from .conftest import he_crops, stain_remix


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights and running statistics (as tests/models/test_models_reference_layouts.py)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                noise = torch.randn(t.shape, generator=g) * 0.2
                t.copy_(noise.abs() + 0.5 if name.endswith("running_var") else noise)


@pytest.fixture
def paired(tmp_path, data_dir):
    for sub in ("he", "ihc"):
        (tmp_path / sub).mkdir()
    for i, crop in enumerate(he_crops(data_dir, 3, 64, seed=3)):
        Image.fromarray(crop).save(tmp_path / "he" / f"{i}.png")
        Image.fromarray(stain_remix(crop)).save(tmp_path / "ihc" / f"{i}.png")
    return tmp_path / "he", tmp_path / "ihc"


def _reference(net: torch.nn.Module, he_dir, ihc_dir, train_mode: bool) -> tuple[float, float]:
    """BCI test.py's forward (train mode, batch 1) or an eval-mode one; evaluate.py's per-image mean."""
    p, s = [], []
    for f in sorted(he_dir.iterdir()):
        model = copy.deepcopy(net).train(train_mode)  # train mode updates running stats: a fresh copy each
        x = torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1).float()
        with torch.no_grad():
            fake = to_uint8(model((x / 127.5 - 1)[None])[0])
        real = np.asarray(Image.open(ihc_dir / f.name).convert("RGB"))
        p.append(peak_signal_noise_ratio(real, fake, data_range=255))
        s.append(structural_similarity(real, fake, channel_axis=2, data_range=255))
    return float(np.mean(p)), float(np.mean(s))


def _evaluate(ckpt, he_dir, ihc_dir, out, *extra) -> dict:
    args = ["evaluate", "--checkpoint", str(ckpt), "--paired", str(he_dir), str(ihc_dir)]
    assert main([*args, "--out", str(out), "--metrics", "psnr,ssim", "--no-progress", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_bci_checkpoint_is_evaluated_as_its_test_py_ran_it(tmp_path, paired):
    he_dir, ihc_dir = paired
    torch.manual_seed(0)
    net = build_generator("resnet", ngf=8, n_blocks=2, norm="batch", use_dropout=False)
    _randomise(net, seed=5)
    ckpt = tmp_path / "latest_net_G.pth"
    torch.save(net.state_dict(), ckpt)  # what BCI's save_networks writes
    ref_psnr, ref_ssim = _reference(net, he_dir, ihc_dir, train_mode=True)
    eval_psnr, _ = _reference(net, he_dir, ihc_dir, train_mode=False)
    assert abs(ref_psnr - eval_psnr) > 0.5  # the two protocols really differ here

    result = _evaluate(ckpt, he_dir, ihc_dir, tmp_path / "ev")
    got = result["summary"]["overall"]
    assert got["psnr"] == pytest.approx(ref_psnr, abs=1e-3) and got["ssim"] == pytest.approx(
        ref_ssim, abs=1e-4
    )
    assert (
        result["protocol"]["bn_stats"] == "slide" and result["protocol"]["source"]["bn_stats"] == "checkpoint"
    )
    md = (tmp_path / "ev" / "metrics.md").read_text()
    assert "own statistics" in md and "per-image values" in md and "Deviation" in md
    print(f"test.py protocol {ref_psnr:.3f} dB (evaluate {got['psnr']:.3f}), eval mode {eval_psnr:.3f} dB")

    # the flag overrides the header: eval mode gives the eval-mode figure, and the report says so
    result = _evaluate(ckpt, he_dir, ihc_dir, tmp_path / "ev_eval", "--bn-stats", "running")
    assert result["summary"]["overall"]["psnr"] == pytest.approx(eval_psnr, abs=1e-3)
    assert result["protocol"]["source"]["bn_stats"] == "settings"


def test_dropout_protocol_is_repeatable_by_its_seed(tmp_path, paired):
    he_dir, ihc_dir = paired
    torch.manual_seed(0)
    net = build_generator("resnet", ngf=8, n_blocks=2, norm="batch", use_dropout=True)
    _randomise(net, seed=7)
    ckpt = tmp_path / "drop_net_G.pth"
    torch.save(net.state_dict(), ckpt)
    a = _evaluate(ckpt, he_dir, ihc_dir, tmp_path / "a", "--dropout-seed", "3")
    b = _evaluate(ckpt, he_dir, ihc_dir, tmp_path / "b", "--dropout-seed", "3")
    c = _evaluate(ckpt, he_dir, ihc_dir, tmp_path / "c", "--dropout-seed", "4")
    assert a["protocol"]["dropout"] == "sample" and a["protocol"]["dropout_seed"] == 3
    assert a["per_image"] == b["per_image"]
    assert a["summary"]["overall"]["psnr"] != c["summary"]["overall"]["psnr"]
    # a bad override is a message, not a traceback
    args = [
        "evaluate",
        "--checkpoint",
        str(ckpt),
        "--paired",
        str(he_dir),
        str(ihc_dir),
        "--out",
        str(tmp_path / "d"),
    ]
    assert main([*args, "--metrics", "psnr", "--no-progress", "--dropout", "often"]) == 2


def test_exports_record_their_presets_test_mode_and_validation_uses_it(bci_small, tmp_path):
    import csv

    from virtual_ihc_train.loop import fit

    from napari_virtual_ihc.models import read_checkpoint

    from .conftest import tiny_config

    settings = {
        "data.preprocess": "crop",
        "data.crop_size": 32,
        "train.max_steps": 1,
        "data.val_split": "test",
    }
    cfg = tiny_config(bci_small, **settings)
    cfg.model.arch_kwargs["use_dropout"] = True
    fit(cfg, tmp_path / "run")
    model = tmp_path / "m.safetensors"
    assert main(["export", str(tmp_path / "run"), "--out", str(model), "--mpp", "0.5"]) == 0
    spec = read_checkpoint(model)[0]
    assert (spec.bn_stats, spec.dropout) == ("slide", "sample")
    # the loop's validation ran G as evaluate runs the export (same protocol, same dropout seed)
    val = list(csv.DictReader((tmp_path / "run" / "val.csv").open()))[-1]
    result = _evaluate(model, bci_small / "HE" / "test", bci_small / "IHC" / "test", tmp_path / "ev")
    assert float(val["psnr"]) == pytest.approx(result["summary"]["overall"]["psnr"], abs=1e-9)


def test_a_checkpoint_without_a_mode_is_run_by_the_default_and_the_report_names_it(tmp_path, paired):
    """An instance-norm state dict carries no bn_stats/dropout header: the report says the mode came from the
    default."""
    he_dir, ihc_dir = paired
    torch.manual_seed(0)
    net = build_generator("resnet", ngf=8, n_blocks=2, norm="instance", use_dropout=False)
    ckpt = tmp_path / "latest_net_G.pth"
    torch.save(net.state_dict(), ckpt)
    result = _evaluate(ckpt, he_dir, ihc_dir, tmp_path / "ev")
    protocol = result["protocol"]
    assert protocol["source"]["bn_stats"] == "default" and protocol["source"]["dropout"] == "default"
    md = (tmp_path / "ev" / "metrics.md").read_text()
    assert "bn_stats from default" in md and "dropout from default" in md
    # --dropout sample on a model without dropout: run, with the reason in the report, not silently
    result = _evaluate(ckpt, he_dir, ihc_dir, tmp_path / "ev_drop", "--dropout", "sample")
    assert any("no dropout layers" in w for w in result["protocol"]["warnings"])
