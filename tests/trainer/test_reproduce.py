"""``virtual-ihc-train reproduce``: every paper table end to end on tiny folders of real H&E / IHC crops (tiny
networks, a few iterations), the dry-run plan, and the checks made before any training (layout, weights, disk).

The metric networks (Inception, ResNet-50, VGG16, AlexNet) are seeded random weights written by the test in the
published files' layouts and found by the real lookup code (``$VIRTUAL_IHC_WEIGHTS``); the LPIPS heads and DISTS
weights are the real ones (tests/data/metric-heads). The tables must say the weights are not the published ones.
"""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from virtual_ihc_train.cli import main
from virtual_ihc_train.reproduce import TABLES

SECTIONS = (  # serial sections: H&E and an IHC of the next section (not pixel-aligned; real stains)
    ("Rat-Kidney_HE.jpg", "Rat-Kidney_PanCytokeratin.jpg", (200, 300)),
    ("Izd2-29-041-w35_HE.jpg", "Izd2-29-041-w35_proSPC.jpg", (250, 350)),
    ("lesion3_HE.jpg", "lesion3_CD31.jpg", (200, 300)),
    ("Rat-Kidney_HE.jpg", "Rat-Kidney_PanCytokeratin.jpg", (420, 560)),
    ("Izd2-29-041-w35_HE.jpg", "Izd2-29-041-w35_proSPC.jpg", (420, 500)),
)
HER2 = ("0", "1+", "2+", "3+", "0")
TINY = [  # the presets' own keys, shrunk: tiny networks, no workers, no logs
    "--set", "model.arch_kwargs.ngf=4",
    "--set", "model.arch_kwargs.n_blocks=1",
    "--set", "model.ndf=4",
    "--set", "model.n_layers_d=2",
    "--set", "data.num_workers=0",
    "--set", "train.progress=false",
    "--set", "train.tensorboard=false",
    "--set", "train.grid_every_epoch=false",
    "--set", "train.batch_size=1",
    "--nuclei-method", "classical",
]  # fmt: skip


def _crops(data_dir: Path, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for he_name, ihc_name, (y, x) in SECTIONS:
        he = np.asarray(Image.open(data_dir / he_name).convert("RGB"))
        ihc = np.asarray(Image.open(data_dir / ihc_name).convert("RGB"))
        out.append((he[y : y + size, x : x + size], ihc[y : y + size, x : x + size]))
    return out


@pytest.fixture(scope="module")
def bci_root(tmp_path_factory, data_dir) -> Path:
    """BCI layout, 64 px: 3 training and 2 test pairs of real H&E / IHC crops."""
    root = tmp_path_factory.mktemp("bci")
    for i, (he, ihc) in enumerate(_crops(data_dir, 64)):
        split = "train" if i < 3 else "test"
        for sub, img in (("HE", he), ("IHC", ihc)):
            (root / sub / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / sub / split / f"{i:05d}_{split}_{HER2[i]}.png")
    return root


@pytest.fixture(scope="module")
def mist_root(tmp_path_factory, data_dir) -> Path:
    """MIST layout, 96 px: 3 training and 2 validation pairs."""
    root = tmp_path_factory.mktemp("mist")
    for i, (he, ihc) in enumerate(_crops(data_dir, 96)):
        split = "train" if i < 3 else "val"
        for side, img in (("A", he), ("B", ihc)):
            (root / f"{split}{side}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / f"{split}{side}" / f"slide{i}_0_0.png")
    return root


@pytest.fixture(scope="module")
def ki67_root(tmp_path_factory, data_dir) -> Path:
    """Ki-67 layout: real H&E tiles and real Ki-67 IHC tiles (DeepLIIF, OpenSlide), 64 px, unpaired; MIL bags."""
    root = tmp_path_factory.mktemp("ki67")
    he_src = [
        np.asarray(Image.open(data_dir / f).convert("RGB"))
        for f in ("histolab-tcga-lung.png", "tiatoolbox-target-image.png")
    ]
    ki_src = [
        np.asarray(Image.open(data_dir / "nuclei-any-stain" / f).convert("RGB"))
        for f in ("deepliif-ki67-Bladder1.jpg", "deepliif-ki67-Lung1.jpg")
    ]
    for side, srcs in (("HE", he_src), ("Ki67", ki_src)):
        for s, split in enumerate(("train", "train", "val", "test")):
            (root / side / split).mkdir(parents=True, exist_ok=True)
            img = srcs[s % 2][64 * s : 64 * s + 64, 100:164]
            Image.fromarray(img).save(root / side / split / f"{side}{s}.png")
        (root / "mil" / side).mkdir(parents=True)
        rows = ["file,class"]
        for b in range(2):
            Image.fromarray(srcs[b][300:364, 300:364]).save(root / "mil" / side / f"bag{b}.png")
            rows.append(f"bag{b}.png,{'tumour' if b else 'non-tumour'}")
        (root / "mil" / f"{side}.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory, data_dir) -> Path:
    """Seeded random metric networks in the published files' layouts and names (their checksums do not match
    the hash in the names), plus the real LPIPS-Alex heads and DISTS weights."""
    from virtual_ihc_train.evaluation.inception import InceptionPool3
    from virtual_ihc_train.evaluation.mist_metrics import ResNet50Features
    from virtual_ihc_train.evaluation.perceptual import alexnet_features, vgg16_features

    d = tmp_path_factory.mktemp("weights")
    pool = torch.randn(65_537, generator=torch.Generator().manual_seed(0)) * 0.05  # seeded; tiled (fast)

    def seeded(module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
        """Seeded weights for the module's own keys (built on the meta device: no init cost), BN statistics 0 / 1."""
        out = {}
        for i, (k, v) in enumerate(module.state_dict().items()):
            if k.endswith("running_var"):
                out[prefix + k] = torch.ones(v.shape)
            elif k.endswith(("running_mean", "bias")):
                out[prefix + k] = torch.zeros(v.shape)
            elif k.endswith("num_batches_tracked"):
                out[prefix + k] = torch.tensor(0)
            else:
                n = v.numel()
                out[prefix + k] = pool.roll(i).repeat(n // pool.numel() + 1)[:n].reshape(v.shape).clone()
        return out

    with torch.device("meta"):
        nets = (InceptionPool3(), ResNet50Features(), vgg16_features(), alexnet_features())
    inception = seeded(nets[0])
    fc = {"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}  # FID's file: see FID_NOTE
    torch.save({**inception, **fc}, d / "inception_v3_google-0cc3c7bd.pth")
    torch.save(seeded(nets[1]), d / "resnet50-0676ba61.pth")
    torch.save(seeded(nets[2], "features."), d / "vgg16-397923af.pth")
    torch.save(seeded(nets[3], "features."), d / "alexnet-owt-7be5be79.pth")
    shutil.copyfile(data_dir / "metric-heads" / "lpips-v0.1-alex.pth", d / "alex.pth")
    shutil.copyfile(data_dir / "metric-heads" / "dists-weights.pt", d / "weights.pt")
    return d


@pytest.fixture
def weights(weights_dir, monkeypatch) -> Path:
    monkeypatch.setenv("VIRTUAL_IHC_WEIGHTS", str(weights_dir))
    return weights_dir


# FID_NOTE: FID is left out of the end-to-end runs: evaluation's fid_from_features (scipy sqrtm of a 2048 x 2048
# covariance product) takes about 190 s per call for a handful of images on this 2-core CPU. The FID weights
# file is still resolved, checksummed and named when missing (tests above).


def _table(run: Path, key: str) -> tuple[str, list[dict[str, str]]]:
    md = (run / f"{key}.md").read_text()
    with (run / f"{key}.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert Image.open(run / f"{key}.png").size[0] > 100
    return md, rows


def _ours(rows: list[dict[str, str]], row: str, group: str = "overall") -> dict[str, str]:
    return next(r for r in rows if r["row"] == row and r["group"] == group and r["source"] == "ours")


def _paper(rows: list[dict[str, str]], row: str, group: str = "overall") -> dict[str, str]:
    return next(r for r in rows if r["row"] == row and r["group"] == group and r["source"] == "paper")


# ------------------------------------------------------------------ the plan
@pytest.mark.parametrize("target", sorted(TABLES))
def test_without_data_the_plan_names_every_step_and_nothing_is_written(target, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["reproduce", target, "--run-dir", str(run), "--iterations", "3"]) == 0
    out = capsys.readouterr().out
    table = TABLES[target]
    trainable = [r for r in table.rows if r.preset]
    assert out.count("    fit: preset ") == len(trainable)
    assert out.count("stopping at 3 iterations") == len(trainable)
    for row in trainable:
        assert f"preset {row.preset}" in out and str(run / row.key / "model.safetensors") in out
    assert out.count("    select: ") == len(trainable) and table.selection_text in out
    assert out.count("    evaluate: ") == len(trainable) and "generator run as: " in out
    assert table.psnr_convention in out and table.crop in out and table.citation in out
    assert "dry run: nothing trained or written" in out
    assert not run.exists()


def test_dry_run_with_data_checks_no_weights_and_trains_nothing(bci_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIRTUAL_IHC_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    assert main(["reproduce", "variance", "--data", str(bci_root), "--run-dir", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "weights for fid: pt_inception-2015-12-05-6726825d.pth" in out and "NOT FOUND" in out
    assert "(batch 8," not in out and "batch 8" in out  # the paper's batch for every row
    assert not run.exists()


# ------------------------------------------------------------------ refused before training
def test_a_name_off_the_bci_layout_is_named_with_its_rule(bci_root, tmp_path, capsys):
    root = tmp_path / "bci"
    shutil.copytree(bci_root, root)
    bad = root / "IHC" / "train" / "00001_train_1+.png"
    bad.rename(root / "IHC" / "train" / "00001_train_4+.png")
    run = tmp_path / "run"
    assert main(["reproduce", "bci-table3", "--data", str(root), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert (
        "00001_train_4+.png: BCI names are NNNNN_<split>_<HER2 class>.png" in err and "Traceback" not in err
    )
    assert not run.exists()
    (root / "IHC" / "train" / "00001_train_4+.png").rename(bad)
    shutil.rmtree(root / "IHC" / "test")
    assert main(["reproduce", "bci-table3", "--data", str(root), "--run-dir", str(run)]) == 2
    assert (
        f"{root / 'IHC' / 'test'} is missing (layout: ROOT/HE/train, ROOT/IHC/train"
        in capsys.readouterr().err
    )
    assert not run.exists()


def test_a_bad_value_in_the_last_row_is_refused_before_the_first_row_trains(bci_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["reproduce", "bci-table3", "--data", str(bci_root), "--run-dir", str(run)]
    assert main([*args, "--set", "pix2pix-s1-s2-s3:train.precision=fp64"]) == 2
    assert "train.precision must be fp32, fp16 or bf16, not 'fp64'" in capsys.readouterr().err
    assert main([*args, "--set", "nope:train.seed=1"]) == 2
    assert (
        "no row 'nope'; rows: pix2pix, pix2pix-s1, pix2pix-s1-s2, pix2pix-s1-s2-s3" in capsys.readouterr().err
    )
    assert not run.exists()


def test_a_mist_pair_without_partner_is_named(mist_root, tmp_path, capsys):
    root = tmp_path / "mist"
    shutil.copytree(mist_root, root)
    (root / "valB" / "slide4_0_0.png").unlink()
    assert main(["reproduce", "asp-mist-her2", "--data", str(root), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{root / 'valA' / 'slide4_0_0.png'} has no partner {root / 'valB' / 'slide4_0_0.png'}" in err


def test_missing_metric_weights_are_named_before_training(bci_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIRTUAL_IHC_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    run = tmp_path / "run"
    assert main(["reproduce", "tdkstain", "--data", str(bci_root), "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "needs the weights file pt_inception-2015-12-05-6726825d.pth" in err
    assert str(tmp_path / "home" / ".cache" / "virtual_ihc" / "weights") in err and "--inception PATH" in err
    assert not run.exists()


def test_too_little_disk_is_refused_before_training(bci_root, tmp_path, capsys):
    """The full-size presets' checkpoints (estimate) do not fit a 1 MB tmpfs (root: mount it; else skip)."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", f"vihc-{uuid.uuid4().hex[:8]}", str(small)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        assert (
            main(["reproduce", "bci-table3", "--data", str(bci_root), "--run-dir", str(small / "run")]) == 2
        )
        err = capsys.readouterr().err
        assert ("is needed for the runs" in err and "MB free" in err) or "KB free" in err
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=True)


# ------------------------------------------------------------------ every table, end to end
def _run(target: str, data: Path, run: Path, *extra: str) -> None:
    args = [
        "reproduce",
        target,
        "--data",
        str(data),
        "--run-dir",
        str(run),
        "--iterations",
        "2",
        *TINY,
        *extra,
    ]
    assert main(args) == 0


def test_bci_table1_end_to_end(bci_root, tmp_path, capsys):
    run = tmp_path / "t1"
    _run("bci-table1", bci_root, run, "--set", "cyclegan:data.crop_size=32", "--rows", "cyclegan")
    md, rows = _table(run, "bci-table1")
    assert _paper(rows, "pix2pix-s1")["psnr"] == "21.16" and _paper(rows, "cyclegan")["ssim"] == "0.373"
    import json

    for row in ("cyclegan",):
        ours = _ours(rows, row)
        evaluated = json.loads((run / row / "eval" / "metrics.json").read_text())["summary"]["overall"]
        assert float(ours["psnr"]) == pytest.approx(evaluated["psnr"]) and math.isfinite(float(ours["ssim"]))
        assert ours["checkpoint"] == "step_00000002" and (run / row / "model.safetensors").is_file()
    assert (
        _ours(rows, "pix2pix-unet")["status"] == "not in --rows"
        and _paper(rows, "pix2pix-unet")["psnr"] == "18.654"
    )
    cyclegan = _ours(rows, "cyclegan")["protocol"]
    assert "eval mode (batch norm with running statistics; instance norm per image); dropout off" in cyclegan
    assert "no weights files" in cyclegan and "Liu et al." in md


def test_bci_table3_end_to_end_and_a_second_call_reuses_the_rows(bci_root, tmp_path, capsys):
    run = tmp_path / "t3"
    _run("bci-table3", bci_root, run, "--rows", "pix2pix-s1-s2")
    md, rows = _table(run, "bci-table3")
    assert len(rows) == 2 * len(TABLES["bci-table3"].rows)
    assert "| pix2pix + S1 + S2 + S3 (ours) | paper | 21.138 | 0.4720 |" in md
    proto = _ours(rows, "pix2pix-s1-s2")["protocol"]
    assert "each image's own statistics" in proto and "dropout on" in proto  # as test.py without --eval
    before = (run / "pix2pix-s1-s2" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    _run("bci-table3", bci_root, run, "--rows", "pix2pix-s1-s2")
    assert "row pix2pix-s1-s2: already evaluated" in capsys.readouterr().out
    assert (run / "pix2pix-s1-s2" / "model.safetensors").stat().st_mtime_ns == before
    # interrupted after training, before its evaluation: resumed (nothing left to train), then evaluated
    for name in ("trained.json", "selected.json"):
        (run / "pix2pix-s1-s2" / name).unlink()
    shutil.rmtree(run / "pix2pix-s1-s2" / "eval")
    _run("bci-table3", bci_root, run, "--rows", "pix2pix-s1-s2")
    assert "pix2pix-s1-s2: resuming the interrupted run" in capsys.readouterr().out
    assert _ours(_table(run, "bci-table3")[1], "pix2pix-s1-s2")["checkpoint"] == "step_00000002"


def test_variance_end_to_end_per_her2_class(bci_root, tmp_path):
    run = tmp_path / "var"
    _run(
        "variance",
        bci_root,
        run,
        "--metrics",
        "psnr,ssim",
        "--rows",
        "variance-pyramid",
        "--set",
        "data.crop_size=32",
    )
    md, rows = _table(run, "variance")
    assert _paper(rows, "variance-pyramid", "3+")["fid"] == "508.38"
    ours = _ours(rows, "variance-pyramid", "3+")
    assert math.isfinite(float(ours["psnr"])) and ours["n_images"] == "1"  # FID left out: see FID_NOTE
    assert ours["fid"] == "" and "Left out with --metrics (their columns are empty for our rows): fid" in md


def test_asp_mist_her2_end_to_end(mist_root, tmp_path, weights):
    run = tmp_path / "asp"
    _run(
        "asp-mist-her2", mist_root, run,
        "--set", "data.crop_size=64", "--set", "asp.netf_nc=8", "--set", "asp.num_patches=16",
        "--set", "model.arch_kwargs.n_blocks=5",  # ASP's NCE layers 0-16 need 5 blocks
        "--rows", "ammfi", "--metrics", "ssim,phv,kid_asp,lpips,psnr",
    )  # fmt: skip
    md, rows = _table(run, "asp-mist-her2")
    for key in ("ammfi",):
        ours = _ours(rows, key)
        for col in ("ssim", "phv_avg", "kid_asp_x1000", "lpips", "psnr"):
            assert math.isfinite(float(ours[col])), (key, col)
    assert _ours(rows, "cut")["status"] == "not in --rows" and _paper(rows, "cut")["kid_asp_x1000"] == "19.0"
    proto = _ours(rows, "ammfi")["protocol"]
    for name in ("inception_v3_google-0cc3c7bd.pth", "resnet50-0676ba61.pth", "alexnet-owt-7be5be79.pth"):
        assert f"{name} sha256" in proto
    assert "alex.pth sha256 df73285e35b2 (published file)" in proto
    assert "NOT the published weights" in proto and "Not a comparison with the paper" in md


def test_tdkstain_end_to_end(bci_root, tmp_path, weights):
    run = tmp_path / "tdk"
    _run("tdkstain", bci_root, run, "--set", "tdkstain.nef=4", "--set", "tdkstain.n_estimator_blocks=1",
         "--set", "cyclegan:data.crop_size=64", "--set", "asp:data.crop_size=64", "--set", "asp:asp.netf_nc=8",
         "--set", "tdkstain.nuclei_method=classical",
         "--rows", "tdkstain", "--metrics", "ssim,dists,nuclei,membrane")  # fmt: skip
    _, rows = _table(run, "tdkstain")
    for key in ("tdkstain",):
        ours = _ours(rows, key)
        for col in ("ssim", "dists", "nuclei_count_error_mae", "membrane_intensity_error"):
            assert math.isfinite(float(ours[col])), (key, col)
    assert "weights.pt sha256 f5e65c96230b (published file)" in _ours(rows, "tdkstain")["protocol"]
    assert _paper(rows, "tdkstain")["fid"] == "33.92"
    assert any((run / "knowledge").iterdir())  # one knowledge cache for the TDKstain rows


def test_cyclegan_ki67_end_to_end_ratio_and_selection(ki67_root, tmp_path):
    import json

    from napari_virtual_ihc.slides import ArraySlide
    from napari_virtual_ihc.stain import AnalysisSettings, analyze_slide
    from napari_virtual_ihc.stain.markers import ki67_estimate

    run = tmp_path / "ki"
    args = ["--epochs", "2", "--set", "data.crop_size=32", "--set", "mil.tile=32", "--set", "mil.width=4"]
    args += ["--set", "mil.epochs=1", "--rows", "cyclegan-mil"]
    assert (
        main(["reproduce", "cyclegan-ki67", "--data", str(ki67_root), "--run-dir", str(run), *TINY, *args])
        == 0
    )
    _, rows = _table(run, "cyclegan-ki67")
    assert _paper(rows, "cyclegan-mil")["ratio_eval_synthetic"] == "0.2771"
    # the evaluation set's real ratio: pooled positive / all nuclei by the core's Ki-67 index, computed directly
    pos = cells = 0
    for f in sorted((ki67_root / "Ki67" / "test").iterdir()):
        res = analyze_slide(
            ArraySlide(np.asarray(Image.open(f).convert("RGB")), mpp=0.5),
            AnalysisSettings(marker="ki67", nuclei_method="classical", mpp=0.5),
        )
        est = ki67_estimate(res.cells, res.bins, res.mpp)
        pos, cells = pos + est["n_positive"], cells + est["n_cells"]
    for key in ("cyclegan-mil",):
        ours = _ours(rows, key)
        assert float(ours["ratio_eval_real"]) == pytest.approx(pos / cells)
        assert 0 <= float(ours["ratio_eval_synthetic"]) <= 1
        sel = json.loads((run / key / "eval" / "metrics.json").read_text())["selection"]
        assert len(sel["errors"]) >= 2  # one checkpoint per epoch, all kept
        best = min((e["val_ratio_error"], e["checkpoint"]) for e in sel["errors"])[1]
        assert sel["chosen"] == best == ours["checkpoint"]
    assert (run / "mil" / "HE.safetensors").is_file() and (run / "cyclegan-mil" / "HE.safetensors").is_file()
    assert "classical" in _ours(rows, "cyclegan-mil")["protocol"]
