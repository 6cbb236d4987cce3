"""Datasets (layouts, labels, augmentation, workers, errors) and the preset/config machinery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from virtual_ihc_train.config import Config, ConfigError, read_config_file, set_value
from virtual_ihc_train.data import (
    Augment,
    DatasetError,
    ImagePairDataset,
    bci_pairs,
    her2_label,
    mist_pairs,
    paired_folders,
    unpaired_folders,
)
from virtual_ihc_train.presets import PRESETS, preset_config

from .conftest import he_crops


def _write(folder: Path, names: list[str], imgs: list[np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n, im in zip(names, imgs, strict=True):
        Image.fromarray(im).save(folder / n)


def test_bci_layout_and_her2_labels(bci_small):
    train, test = bci_pairs(bci_small, "train"), bci_pairs(bci_small, "test")
    assert len(train) == 8 and len(test) == 4
    assert {p.label for p in train} == {"0", "1+", "2+", "3+"}
    assert all(p.source.parent.name == "train" and p.target.parts[-3] == "IHC" for p in train)
    assert her2_label("00000_train_1+.png") == "1+" and her2_label("slide_12.png") is None


def test_mist_paired_and_unpaired(tmp_path, data_dir):
    crops = he_crops(data_dir, 3, 32)
    for sub in ("trainA", "trainB", "valA", "valB"):
        _write(tmp_path / "mist" / sub, ["a.jpg", "b.jpg", "c.jpg"], crops)
    assert [p.name for p in mist_pairs(tmp_path / "mist", "val")] == ["a", "b", "c"]
    pairs = unpaired_folders(tmp_path / "mist" / "trainA", tmp_path / "mist" / "valB")
    ds = ImagePairDataset(pairs, Augment(preprocess="crop", crop_size=16))
    assert len(ds) == 3 and ds.unpaired
    assert ds[0]["A"].shape == ds[0]["B"].shape == (3, 16, 16)


def test_clear_errors(tmp_path, data_dir):
    crops = he_crops(data_dir, 3, 32)
    _write(tmp_path / "he", ["a.png", "b.png"], crops[:2])
    _write(tmp_path / "ihc", ["a.png", "c.png"], crops[:2])
    with pytest.raises(
        DatasetError, match=r"unmatched pairs.*1 only in the first \(b\).*1 only in the second \(c\)"
    ):
        paired_folders(tmp_path / "he", tmp_path / "ihc")
    _write(tmp_path / "ihc2", ["a.png", "b.png"], [crops[0], crops[1][:20]])
    with pytest.raises(DatasetError, match=r"size mismatch in pair b"):
        paired_folders(tmp_path / "he", tmp_path / "ihc2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        paired_folders(tmp_path / "empty", tmp_path / "ihc")
    _write(tmp_path / "ihc3", ["a.png"], [crops[0]])
    (tmp_path / "ihc3" / "b.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"unreadable image .*b\.png"):
        paired_folders(tmp_path / "he", tmp_path / "ihc3")
    with pytest.raises(DatasetError, match="not a BCI folder"):
        bci_pairs(tmp_path, "train")
    ds = ImagePairDataset(paired_folders(tmp_path / "he", tmp_path / "he"), Augment(crop_size=64))
    with pytest.raises(DatasetError, match="smaller than crop_size 64"):
        ds[0]


def test_augmentation_is_paired_deterministic_and_worker_independent(bci_small):
    pairs = bci_pairs(bci_small, "train")
    ds = ImagePairDataset(pairs, Augment(preprocess="crop", crop_size=32, color_jitter=0.0), seed=3)
    a, b = ds[5], ds[5]
    assert torch.equal(a["A"], b["A"]) and torch.equal(a["B"], b["B"])
    # A and B get the same crop/flip/rotation: the target stays the remix of the source crop
    from .conftest import stain_remix

    src = ((a["A"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    tgt = ((a["B"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    assert np.abs(stain_remix(src).astype(int) - tgt).mean() < 1.0
    ds.set_epoch(1)
    assert not torch.equal(ds[5]["A"], a["A"])  # a new epoch draws new crops
    ds.set_epoch(0)
    serial = [x["A"] for x in DataLoader(ds, batch_size=4, num_workers=0)]
    parallel = [x["A"] for x in DataLoader(ds, batch_size=4, num_workers=2)]
    assert all(torch.equal(s, p) for s, p in zip(serial, parallel, strict=True))


def test_presets_carry_the_papers_defaults():
    p = preset_config("pyramid-pix2pix")
    assert p.model.arch == "resnet" and p.model.arch_kwargs == {
        "n_blocks": 9,
        "ngf": 64,
        "norm": "batch",
        "use_dropout": True,
    }
    assert p.loss.pyramid_weights == [25.0] * 4 and p.loss.gan_mode == "vanilla"
    assert (p.train.batch_size, p.optim.n_epochs, p.optim.n_epochs_decay) == (2, 100, 100)
    v = preset_config("variance-pyramid")
    assert v.train.batch_size == 8 and v.loss.lambda_variance == 1.0 and v.loss.pyramid_weights == [25.0] * 4
    x = preset_config("pix2pix")
    assert (
        x.model.arch == "unet_256" and x.loss.pyramid_weights == [100.0] and x.model.discriminator == "patch"
    )
    assert (x.optim.lr, x.optim.beta1, x.optim.beta2) == (2e-4, 0.5, 0.999)
    m = preset_config("pyramid-pix2pix", multiscale_discriminator=True)
    assert (m.model.discriminator, m.model.num_d, m.loss.gan_mode, m.loss.lambda_feat) == (
        "multiscale",
        3,
        "lsgan",
        10.0,
    )
    assert {
        "pix2pix",
        "pyramid-pix2pix",
        "pyramid-pix2pix-s1",
        "variance-pyramid",
        "tdkstain",
        "asp",
        "ammfi",
        "cyclegan",
    } == set(PRESETS)


def test_overrides_files_and_errors(tmp_path):
    cfg = preset_config("variance-pyramid")
    set_value(cfg, "optim.lr", "1e-4")
    set_value(cfg, "train.batch_size", "4")
    set_value(cfg, "loss.pyramid_weights", "[25, 25]")
    assert (cfg.optim.lr, cfg.train.batch_size, cfg.loss.pyramid_weights) == (1e-4, 4, [25, 25])
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.learning_rate'"):
        set_value(cfg, "optim.learning_rate", "1")
    with pytest.raises(ConfigError, match=r"train\.batch_size: cannot parse"):
        set_value(cfg, "train.batch_size", "two")
    (tmp_path / "c.toml").write_text("[train]\nbatch_size = 3\n[loss]\nlambda_variance = 2.5\n")
    (tmp_path / "c.yaml").write_text("optim:\n  n_epochs: 7\n")
    from virtual_ihc_train.config import merge

    merge(cfg, read_config_file(tmp_path / "c.toml"))
    merge(cfg, read_config_file(tmp_path / "c.yaml"))
    assert (cfg.train.batch_size, cfg.loss.lambda_variance, cfg.optim.n_epochs) == (3, 2.5, 7)
    cfg.save(tmp_path / "saved.yaml")
    assert Config.from_dict(read_config_file(tmp_path / "saved.yaml")) == cfg


def test_fit_refuses_bad_input_before_writing_anything(tmp_path, data_dir, capsys):
    from virtual_ihc_train.cli import main

    crops = he_crops(data_dir, 2, 32)
    _write(tmp_path / "he", ["a.png", "b.png"], crops)
    _write(tmp_path / "ihc", ["a.png", "c.png"], crops)
    run = tmp_path / "run"
    assert main(["fit", "--paired", str(tmp_path / "he"), str(tmp_path / "ihc"), "--run-dir", str(run)]) == 2
    assert "unmatched pairs" in capsys.readouterr().err and not run.exists()
    assert (
        main(
            [
                "fit",
                "--paired",
                str(tmp_path / "he"),
                str(tmp_path / "he"),
                "--run-dir",
                str(run),
                "--set",
                "train.precision=fp8",
            ]
        )
        == 2
    )
    assert "train.precision must be fp32, fp16 or bf16" in capsys.readouterr().err and not run.exists()
    assert (
        main(["fit", "--unpaired", str(tmp_path / "he"), str(tmp_path / "ihc"), "--run-dir", str(run)]) == 2
    )
    assert "registered pairs" in capsys.readouterr().err and not run.exists()
    _write(tmp_path / "mixed", ["a.png", "b.png"], [crops[0], crops[1][:24, :24]])
    assert (
        main(
            [
                "fit",
                "--paired",
                str(tmp_path / "mixed"),
                str(tmp_path / "mixed"),
                "--run-dir",
                str(run),
                "--set",
                "data.preprocess=none",
                "--set",
                "train.batch_size=2",
            ]
        )
        == 2
    )
    assert "come in 2 sizes (24x24, 32x32)" in capsys.readouterr().err and not run.exists()
