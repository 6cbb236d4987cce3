"""evaluate: skimage PSNR/SSIM reproduced, per-HER2-class table, FID/KID maths, weight files, export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from virtual_ihc_train.cli import main
from virtual_ihc_train.evaluation.distribution import fid_from_features, kid_from_features
from virtual_ihc_train.evaluation.inception import PYTORCH_FID_FILE, InceptionPool3, load_inception
from virtual_ihc_train.loop import fit

from napari_virtual_ihc.models import load_generator

from .conftest import tiny_config


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("VIRTUAL_IHC_WEIGHTS", raising=False)


def _fake_results(bci_small, tmp_path):
    """'Generated' images: the real IHC test images, perturbed differently per image."""
    real_dir = bci_small / "IHC" / "test"
    gen_dir = tmp_path / "generated"
    gen_dir.mkdir()
    rng = np.random.default_rng(0)
    for i, p in enumerate(sorted(real_dir.iterdir())):
        real = np.asarray(Image.open(p))
        noisy = np.clip(real.astype(int) + rng.integers(-8 * (i + 1), 8 * (i + 1) + 1, real.shape), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(gen_dir / p.name)
    return gen_dir, real_dir


def test_evaluate_reproduces_skimage_and_writes_per_class_table(tmp_path, bci_small, no_weights):
    gen_dir, real_dir = _fake_results(bci_small, tmp_path)
    out = tmp_path / "eval"
    rc = main(
        [
            "evaluate",
            "--generated",
            str(gen_dir),
            "--real",
            str(real_dir),
            "--out",
            str(out),
            "--metrics",
            "psnr,ssim,nuclei,membrane",
            "--no-progress",
        ]
    )
    assert rc == 0
    result = json.loads((out / "metrics.json").read_text())
    assert "data_range=255" in result["convention"] and "channel_axis=2" in result["convention"]
    by_name = {r["name"]: r for r in result["per_image"]}
    expected = {}
    for p in sorted(real_dir.iterdir()):
        real, gen = np.asarray(Image.open(p)), np.asarray(Image.open(gen_dir / p.name))
        expected[p.stem] = (
            peak_signal_noise_ratio(real, gen, data_range=255),
            structural_similarity(real, gen, channel_axis=2, data_range=255),
        )
        assert by_name[p.stem]["psnr"] == expected[p.stem][0]
        assert by_name[p.stem]["ssim"] == expected[p.stem][1]
    s = result["summary"]
    assert set(s) == {"overall", "0", "1+", "2+", "3+"}
    for cls in ("0", "1+", "2+", "3+"):
        members = [k for k in expected if k.endswith("_" + cls)]
        assert s[cls]["n"] == len(members) == 1
        assert s[cls]["psnr"] == pytest.approx(np.mean([expected[k][0] for k in members]))
    assert s["overall"]["ssim"] == pytest.approx(np.mean([v[1] for v in expected.values()]))
    table = (out / "metrics.md").read_text()
    assert "| HER2 class | n | PSNR (dB) | SSIM |" in table and "| 3+ | 1 |" in table
    assert "nuclei_count_error_mae" in s["overall"] and "membrane_intensity_error" in s["overall"]
    assert (out / "plots" / "psnr.png").is_file()


def test_missing_inception_weights_names_the_file_and_where(tmp_path, bci_small, no_weights, capsys):
    gen_dir, real_dir = _fake_results(bci_small, tmp_path)
    out = tmp_path / "eval"
    rc = main(["evaluate", "--generated", str(gen_dir), "--real", str(real_dir), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert PYTORCH_FID_FILE in err and str(tmp_path / "home" / ".cache" / "virtual_ihc" / "weights") in err
    assert "--inception PATH" in err
    assert not out.exists()  # failed before doing (and half-writing) anything


def test_inception_loads_pytorch_fid_layout_from_a_local_file(tmp_path):
    net = InceptionPool3(fid_variant=True)
    sd = dict(net.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)  # pytorch-fid file has fc
    torch.save(sd, tmp_path / PYTORCH_FID_FILE)
    loaded = load_inception(tmp_path / PYTORCH_FID_FILE)
    feats = loaded(torch.zeros(1, 40, 40, 3, dtype=torch.uint8))
    assert feats.shape == (1, 2048)


def test_fid_and_kid_match_direct_formulas():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 4)), rng.normal(loc=0.5, size=(200, 4))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(s1 @ s2)
    direct = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2) - 2 * np.sum(np.sqrt(eig.real))
    assert fid_from_features(a, b) == pytest.approx(direct, rel=1e-6)
    assert abs(fid_from_features(a, a)) <= 1e-9 * np.trace(s1)  # relative to the covariances' magnitude
    a2 = rng.normal(size=(200, 4))  # same distribution as a, independent sample: unbiased KID ~ 0
    kid_same, _ = kid_from_features(a, a2, subsets=5, subset_size=200)
    kid_diff, _ = kid_from_features(a, b, subsets=5, subset_size=200)
    assert abs(kid_same) < kid_diff / 10


def test_lpips_and_dists_load_local_files(tmp_path):
    from virtual_ihc_train.evaluation.perceptual import (
        DISTS_FILE,
        LPIPS,
        LPIPS_FILE,
        VGG_FILE,
        load_dists,
        load_lpips,
    )

    torch.manual_seed(0)
    feats = LPIPS().features
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, tmp_path / VGG_FILE)
    torch.save(
        {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(LPIPS.chns)},
        tmp_path / LPIPS_FILE,
    )
    torch.save({"alpha": torch.rand(1, 1475, 1, 1), "beta": torch.rand(1, 1475, 1, 1)}, tmp_path / DISTS_FILE)
    lp = load_lpips(tmp_path / VGG_FILE, tmp_path / LPIPS_FILE)
    ds = load_dists(tmp_path / VGG_FILE, tmp_path / DISTS_FILE)
    x = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    y = torch.randint(0, 256, (1, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert lp(x, x).item() == 0.0 and lp(x, y).item() > 0
        assert abs(ds(x, x).item()) < 1e-4 and ds(x, y).item() > ds(x, x).item()


def test_export_then_evaluate_from_checkpoint(tmp_path, bci_small):
    run = tmp_path / "run"
    fit(tiny_config(bci_small, **{"train.max_steps": 2, "data.mpp": 0.46}), run)
    metrics_json = tmp_path / "m.json"
    metrics_json.write_text(
        json.dumps({"summary": {"overall": {"psnr": 20.0}}, "convention": "x", "n_images": 4})
    )
    out = tmp_path / "model.safetensors"
    assert main(["export", str(run), "--out", str(out), "--metrics", str(metrics_json)]) == 0
    g = load_generator(out)
    assert g.spec.mpp == 0.46 and g.spec.arch == "resnet"
    prov = g.spec.provenance
    assert prov["preset"] == "pyramid-pix2pix" and prov["steps"] == 2 and prov["data"]["kind"] == "bci"
    assert prov["metrics"]["summary"]["overall"]["psnr"] == 20.0 and "epochs" in prov
    ev = tmp_path / "ev"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out),
                "--bci",
                str(bci_small),
                "--out",
                str(ev),
                "--metrics",
                "psnr,ssim",
                "--no-progress",
            ]
        )
        == 0
    )
    gen = sorted((ev / "generated").iterdir())
    assert len(gen) == 4 and Image.open(gen[0]).size == (64, 64)  # full resolution, never resized


def test_fid_with_fewer_images_than_features_is_exact_without_sqrtm() -> None:
    """A few images against 2048 features: the singular-value form (scipy's sqrtm of the singular 2048 x 2048
    product took minutes) equals the Fréchet distance from an eigendecomposition on small dimensions."""
    rng = np.random.default_rng(3)
    for n, d in [(3, 8), (6, 6), (4, 40)]:
        a, b = rng.normal(size=(n, d)), rng.normal(size=(n + 2, d)) + 0.5
        s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        e, v = np.linalg.eigh(s1)
        r1 = v @ np.diag(np.sqrt(np.clip(e, 0, None))) @ v.T
        tr = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
        diff = a.mean(0) - b.mean(0)
        want = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr
        assert fid_from_features(a, b) == pytest.approx(want, rel=1e-6)
    big = rng.normal(size=(2, 2048)), rng.normal(size=(2, 2048))
    assert np.isfinite(fid_from_features(*big))  # returns at once (no 2048 x 2048 sqrtm)
    assert abs(fid_from_features(big[0], big[0])) < 1e-9 * np.abs(big[0]).sum()
