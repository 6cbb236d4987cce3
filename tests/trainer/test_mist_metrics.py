"""The MIST papers' metric conventions: ASP's KID (subsets of 100, x1000) and PHV (ResNet-50, threshold 0.01),
checked against direct computations with small networks the test builds (no weights can be downloaded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics.pairwise import polynomial_kernel
from virtual_ihc_train.evaluation.evaluate import Backends, EvalItem, evaluate_items
from virtual_ihc_train.evaluation.inception import MissingWeightsError
from virtual_ihc_train.evaluation.mist_metrics import (
    ResNet50Features,
    _phv_input,
    kid_asp_from_features,
    load_asp_inception,
    load_resnet50,
    phv_layers,
)


def test_kid_asp_is_the_unbiased_polynomial_mmd_times_1000():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(100, 16)), rng.normal(0.3, 1.2, size=(100, 16))
    kxx, kyy, kxy = (
        polynomial_kernel(a, b, degree=3, coef0=1) for a, b in ((real, real), (fake, fake), (real, fake))
    )
    m = 100
    direct = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2
    mean, std = kid_asp_from_features(real, fake)  # n = 100: every subset is the whole set
    assert mean == pytest.approx(direct * 1000, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9 * abs(mean))
    # subsets of 100 out of 300: the mean of draws, each a direct MMD of its subset
    big_r, big_f = rng.normal(size=(300, 16)), rng.normal(0.3, 1.2, size=(300, 16))
    draws = np.random.default_rng(7)
    expected = []
    for _ in range(3):
        x, y = big_r[draws.choice(300, 100, replace=False)], big_f[draws.choice(300, 100, replace=False)]
        kxx, kyy, kxy = (polynomial_kernel(a, b, degree=3, coef0=1) for a, b in ((x, x), (y, y), (x, y)))
        expected.append(
            (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.sum() / m**2
        )
    got, _ = kid_asp_from_features(big_r, big_f, subsets=3, seed=7)
    assert got == pytest.approx(np.mean(expected) * 1000, rel=1e-9)


def small_resnet() -> ResNet50Features:
    torch.manual_seed(0)
    net = ResNet50Features(widths=(4, 8, 8, 8), blocks=(1, 1, 1, 1), stem=4).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net


def test_phv_equals_a_direct_computation(data_dir):
    net = small_resnet()
    img = np.asarray(Image.open(data_dir / "Rat-Kidney_PanCytokeratin.jpg").convert("RGB"))[:96, :96]
    real = torch.from_numpy(img.copy())[None]
    fake = torch.from_numpy(np.clip(img.astype(int) + 12, 0, 255).astype(np.uint8))[None]
    values = phv_layers(net, real, fake)
    x_r = (real.permute(0, 3, 1, 2).float() / 255 + 1) / 2  # ASP: 0..1 images through a -1..1 normalisation
    x_f = (fake.permute(0, 3, 1, 2).float() / 255 + 1) / 2
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    assert torch.allclose(_phv_input(real), (x_r - mean) / std)
    with torch.no_grad():
        fr, ff = net((x_r - mean) / std), net((x_f - mean) / std)
    direct = [
        float(((a.mean((2, 3)) - b.mean((2, 3))).abs() > 0.01).float().mean())
        for a, b in zip(fr, ff, strict=True)
    ]
    assert values == pytest.approx(direct)
    assert [int(f.shape[1]) for f in fr] == [16, 32, 32, 32] and 0 < max(values) <= 1
    assert phv_layers(net, real, real) == [0.0, 0.0, 0.0, 0.0]


def test_missing_or_wrong_weights_fail_clearly(tmp_path):
    with pytest.raises(MissingWeightsError, match="does not exist"):
        load_resnet50(tmp_path / "resnet50-0676ba61.pth")
    wrong = tmp_path / "small.pth"
    torch.save(small_resnet().state_dict(), wrong)
    with pytest.raises(MissingWeightsError, match="not a torchvision ResNet-50"):
        load_resnet50(wrong)
    with pytest.raises(MissingWeightsError, match="does not exist"):
        load_asp_inception(tmp_path / "inception_v3_google-0cc3c7bd.pth")


def test_evaluate_reports_phv_and_asp_kid(tmp_path, data_dir):
    img = np.asarray(Image.open(data_dir / "Rat-Kidney_PanCytokeratin.jpg").convert("RGB"))
    items = []
    for i in range(4):
        real = img[i * 64 : i * 64 + 64, 200:264]
        fake = np.clip(real.astype(int) + 8 * i, 0, 255).astype(np.uint8)
        Image.fromarray(np.ascontiguousarray(real)).save(tmp_path / f"r{i}.png")
        Image.fromarray(fake).save(tmp_path / f"f{i}.png")
        items.append(EvalItem(f"{i}", "", tmp_path / f"r{i}.png", tmp_path / f"f{i}.png"))

    def colour_features(x: torch.Tensor) -> torch.Tensor:  # a tiny stand-in for Inception's pool
        return x.float().mean((1, 2))

    backends = Backends(asp_features=colour_features, phv=small_resnet())
    result = evaluate_items(items, {"psnr", "kid_asp", "phv"}, backends, tmp_path / "out", progress=False)
    s = result["summary"]["overall"]
    assert {"phv_layer1", "phv_layer4", "phv_avg", "kid_asp_x1000"} <= set(s)
    assert "KID x1000 (ASP)" in (tmp_path / "out" / "metrics.md").read_text()
