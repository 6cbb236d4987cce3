"""The asp and ammfi presets train on real serial-section pairs (not pixel-aligned, the case ASP is for),
resume bit-exactly with the ASP schedule and F's lazily made optimiser, export, and stain seam-free."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from PIL import Image
from safetensors.torch import load_file
from virtual_ihc_train.cli import main
from virtual_ihc_train.config import ConfigError, set_value
from virtual_ihc_train.data import DatasetError
from virtual_ihc_train.evaluation.protocol import ProtocolForward, resolve_protocol
from virtual_ihc_train.export import export_run
from virtual_ihc_train.loop import fit
from virtual_ihc_train.presets import preset_config
from virtual_ihc_train.run_state import latest_checkpoint

from napari_virtual_ihc.cli import main as ihc_main
from napari_virtual_ihc.inference.quality import psnr
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.models import load_generator

PAIRS = (
    ("Rat-Kidney_HE.jpg", "Rat-Kidney_PanCytokeratin.jpg"),
    ("Izd2-29-041-w35_HE.jpg", "Izd2-29-041-w35_proSPC.jpg"),
)
TINY = {
    "asp": {"ngf": 4, "n_blocks": 5, "norm": "instance", "spectral_norm": True},
    "ammfi": {"ngf": 4, "n_blocks": 5, "norm": "instance", "spectral_norm": True, "reduction": 4},
}


@pytest.fixture(scope="module")
def section_pairs(tmp_path_factory, data_dir) -> Path:
    """Two 96 px crops per serial-section pair, the same box in the H&E and the IHC (misregistered)."""
    root = tmp_path_factory.mktemp("sections")
    (root / "he").mkdir()
    (root / "ihc").mkdir()
    for he_name, ihc_name in PAIRS:
        he = np.asarray(Image.open(data_dir / he_name).convert("RGB"))
        ihc = np.asarray(Image.open(data_dir / ihc_name).convert("RGB"))
        for j, (y, x) in enumerate(((300, 400), (420, 560))):
            stem = f"{Path(he_name).stem.split('_')[0]}_{j}"
            Image.fromarray(he[y : y + 96, x : x + 96]).save(root / "he" / f"{stem}.png")
            Image.fromarray(ihc[y : y + 96, x : x + 96]).save(root / "ihc" / f"{stem}.png")
    return root


def tiny(preset: str, root: Path, **overrides):
    cfg = preset_config(preset)
    settings = {
        "data.kind": "paired",
        "data.source": str(root / "he"),
        "data.target": str(root / "ihc"),
        "data.crop_size": 64,
        "data.num_workers": 0,
        "model.arch_kwargs": TINY[preset],
        "model.ndf": 4,
        "model.n_layers_d": 3,
        "asp.netf_nc": 16,
        "asp.num_patches": 32,
        "optim.n_epochs": 1,
        "optim.n_epochs_decay": 3,
        "train.checkpoint_every": 0,
        "train.checkpoint_each_epoch": False,
        "train.grid_every_epoch": False,
        "train.log_every": 1,
        "train.progress": False,
        "train.tensorboard": False,
    }
    settings.update(overrides)
    for k, v in settings.items():
        set_value(cfg, k, v)
    return cfg


def _state(run: Path):
    ckpt = latest_checkpoint(run)
    nets = {
        n: load_file(str(ckpt / f))
        for n, f in (
            ("G", "generator.safetensors"),
            ("D", "discriminator.safetensors"),
            ("F", "F.safetensors"),
        )
    }
    return nets, torch.load(ckpt / "state.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["asp", "ammfi"])
def test_train_resume_bit_exact_export_and_stain_seam_free(tmp_path, section_pairs, data_dir, preset):
    # asp: 4 pairs, batch 1 -> 4 steps an epoch, 2N = 10 steps end in epoch 3 (1-based), where p = 2/3;
    # ammfi: 4 pairs x 4 views -> 16 steps an epoch. The split run stops mid-epoch.
    n = 5
    straight, split = tmp_path / "straight", tmp_path / "split"
    fit(tiny(preset, section_pairs, **{"train.max_steps": 2 * n}), straight)
    fit(tiny(preset, section_pairs, **{"train.max_steps": n}), split)
    _, half = _state(split)
    assert half["opt_F"] is not None and half["asp_epoch"] == (2 if preset == "asp" else 1)
    assert main(["resume", str(split), "--set", f"train.max_steps={2 * n}"]) == 0
    (n1, s1), (n2, s2) = _state(straight), _state(split)
    assert s1["step"] == s2["step"] == 2 * n and s1["asp_epoch"] == s2["asp_epoch"] == (
        3 if preset == "asp" else 1
    )
    for name in n1:
        assert n1[name].keys() == n2[name].keys()
        for k in n1[name]:
            assert torch.equal(n1[name][k], n2[name][k]), f"{name} {k} differs after resume"
    for key in ("opt_G", "opt_D", "opt_F"):
        for i, v in s1[key]["state"].items():
            assert torch.equal(v["exp_avg"], s2[key]["state"][i]["exp_avg"]), f"{key} differs"
    assert torch.equal(s1["patch_rng"], s2["patch_rng"])
    import csv

    rows = list(csv.DictReader((split / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 2 * n + 1))
    assert all(
        np.isfinite(float(r[k])) for r in rows for k in ("loss_NCE", "loss_ASP", "loss_GP", "loss_G_GAN")
    )

    # export, then `virtual-ihc stain` a slide: the tiled store matches a whole-image pass
    exported = export_run(straight, tmp_path / f"{preset}.safetensors")
    loaded = load_generator(exported)
    assert loaded.spec.arch == ("asp_resnet" if preset == "asp" else "ammfi_resnet")
    # ASP's test.py runs without --eval: AMMFI's attention BatchNorm uses each image's own statistics
    assert loaded.spec.bn_stats == (None if preset == "asp" else "slide")
    he = np.asarray(Image.open(data_dir / "Rat-Kidney_HE.jpg").convert("RGB"))[200:500, 300:700]
    slide = tmp_path / "slide.png"
    Image.fromarray(np.ascontiguousarray(he)).save(slide)
    out = tmp_path / "out"
    assert ihc_main(["stain", str(slide), "--model", str(exported), "--out", str(out), "--tile", "128"]) == 0
    tiled = np.asarray(zarr.open_group(str(out / "slide.ome.zarr"), mode="r")["0"][:]).transpose(1, 2, 0)
    forward = ProtocolForward(loaded.module, resolve_protocol(loaded.module, loaded.spec))
    whole = to_uint8(forward(to_input(he[None], "minus_one_one")), "minus_one_one")[0]
    p = psnr(tiled, whole)
    print(f"{preset}: tiled `virtual-ihc stain` vs whole-image pass: PSNR {p:.1f} dB")
    assert tiled.shape == whole.shape and p >= 35.0


def test_bad_input_is_refused_clearly(tmp_path, section_pairs):
    # images smaller than the crop: refused before anything is written
    with pytest.raises(DatasetError, match="smaller than crop_size"):
        fit(tiny("asp", section_pairs, **{"data.crop_size": 128, "train.max_steps": 1}), tmp_path / "a")
    assert not (tmp_path / "a" / "config.yaml").exists()
    with pytest.raises(ConfigError, match="pairs"):
        fit(tiny("ammfi", section_pairs, **{"data.kind": "unpaired", "train.max_steps": 1}), tmp_path / "b")
    mismatched = tmp_path / "ihc_mismatched"
    mismatched.mkdir()
    for p in sorted((section_pairs / "ihc").iterdir())[:-1]:
        (mismatched / p.name).write_bytes(p.read_bytes())
    with pytest.raises(DatasetError, match="unmatched pairs"):
        fit(
            tiny("asp", section_pairs, **{"data.target": str(mismatched), "train.max_steps": 1}),
            tmp_path / "c",
        )
    with pytest.raises(ConfigError, match="too small"):
        fit(tiny("asp", section_pairs, **{"data.crop_size": 32, "train.max_steps": 1}), tmp_path / "d")
    with pytest.raises(ConfigError, match="discriminator"):
        fit(
            tiny("asp", section_pairs, **{"model.discriminator": "multiscale", "train.max_steps": 1}),
            tmp_path / "e",
        )


def test_few_positions_and_a_nan_loss(tmp_path, section_pairs, capsys):
    # 64 px crops: layers 12 and 16 have 16 x 16 = 256 positions, layer 8 1024; ask for 2048 -> all there are
    run = tmp_path / "few"
    fit(
        tiny(
            "asp",
            section_pairs,
            **{"asp.num_patches": 2048, "train.max_steps": 1, "train.checkpoint_every": 1},
        ),
        run,
    )
    good = latest_checkpoint(run)
    # an infinite ASP weight: the first resumed step's loss is not finite; the run stops, the checkpoint stays
    assert main(["resume", str(run), "--set", "asp.lambda_asp=inf", "--set", "train.max_steps=3"]) == 1
    err = capsys.readouterr().err
    assert "not finite at step 2" in err and "loss_ASP" in err and str(good) in err, err
    assert latest_checkpoint(run) == good
