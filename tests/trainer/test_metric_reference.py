"""Metric values against the reference packages, on identical seeded random backbones.

Pretrained backbones cannot be downloaded here, so every comparison loads the same seeded random weights into
both sides. The LPIPS heads and DISTS alpha/beta are the real ones, copied unchanged from the ``lpips`` 0.1.4
and ``DISTS-pytorch`` 0.1 wheels into ``tests/data/metric-heads``.

Two kinds of test:
- always on: a re-computation written from the reference code, functional ops only, independent of the
  trainer's modules;
- against the packages themselves (``lpips``, ``DISTS_pytorch``, ``pytorch_fid``, ``torch_fidelity``, with
  the real ``torchvision`` 0.28.0 that matches torch 2.13), each building its own network through its own
  loading code: the seeded random weights are written under the real file names into a fresh
  ``$TORCH_HOME/hub/checkpoints``, where ``torch.hub.load_state_dict_from_url`` finds them without a download.
  torchvision's PyPI wheel is built against CUDA torch, so its C++ ops (``torchvision/_C.so``, which links
  ``libtorch_cuda.so``) cannot load beside the CPU build of torch; torchvision handles that
  (``extension._has_ops()`` is False) except that 0.28.0's ``_meta_registrations`` registers fake kernels for
  ``torchvision::nms`` and ``::qnms`` unconditionally and the import fails ("operator torchvision::nms does not
  exist"). :func:`_import_torchvision` then declares those two operators' schemas (never called: no feature
  network uses torchvision's C++ ops) and imports again; every model, layer and weight loader is torchvision's
  own. Where a package is not installed the test skips, naming it.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

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


REFERENCE_INSTALL = (
    "pip install torchvision==0.28.0 lpips==0.1.4 pytorch-fid==0.3.0 torch-fidelity==0.4.0 DISTS-pytorch==0.1 "
    "(pip install -e '.[metric-reference]')"
)


def _import_torchvision() -> ModuleType:
    """The real torchvision, also where its C++ ops cannot load (see the module docstring)."""
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip(f"torchvision is not installed: {REFERENCE_INSTALL}")
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as e:
        if "torchvision::nms does not exist" not in str(e):
            raise
    for op in ("nms", "qnms"):  # what _meta_registrations registers fake kernels for without checking _C
        torch.library.define(
            f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
        )
    return importlib.import_module("torchvision")


def _reference(module: str) -> ModuleType:
    """Reference package ``module`` imported (beside the real torchvision), or the test skips, naming it."""
    package = module.split(".")[0]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"reference package {package!r} is not installed: {REFERENCE_INSTALL}")
    _import_torchvision()
    return importlib.import_module(module)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$TORCH_HOME/hub/checkpoints``: the packages' ``load_state_dict_from_url`` reads from it."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    d = tmp_path / "torch" / "hub" / "checkpoints"
    d.mkdir(parents=True)
    return d


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


# ---------------------------------------------------------------- against the packages themselves
TORCHVISION_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def _torchvision_file(hub: Path, net: str, seed: int) -> dict[str, torch.Tensor]:
    """torchvision's whole ``vgg16``/``alexnet`` state dict, features seeded random, saved under the real file
    name (what ``weights=IMAGENET1K_V1`` loads); returns the ``features`` part as ``N.weight`` keys. The
    classifier (unused by LPIPS/DISTS, 120 M values for VGG16) is one zero broadcast to its shape: a few bytes
    on disk, loaded by the strict load all the same."""
    tv = _import_torchvision()
    with torch.device("meta"):
        shapes = (tv.models.vgg16() if net == "vgg" else tv.models.alexnet()).state_dict()
    features = LPIPS(net).features  # our torchvision-layout copy gives the same shapes (checked by the load)
    sd = _random_backbone(features, hub / "features.pth", seed=seed)
    whole = {k: torch.zeros(1).expand(v.shape) for k, v in shapes.items() if not k.startswith("features.")}
    torch.save({**{f"features.{k}": v for k, v in sd.items()}, **whole}, hub / TORCHVISION_FILES[net])
    return sd


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_matches_the_lpips_package(hub: Path, net: str) -> None:
    lpips = _reference("lpips")
    a, b = _real_pairs()
    _torchvision_file(hub, net, seed=5)
    ours = load_lpips(hub / TORCHVISION_FILES[net], LPIPS_HEADS[net], net=net)
    # the package as its README runs it: torchvision's pretrained backbone (here our seeded file), its own heads
    ref = lpips.LPIPS(net=net, verbose=False).eval()
    to_ref = lambda x: x.permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    with torch.no_grad():
        got, want = ours(a, b), ref(to_ref(a), to_ref(b), normalize=True).flatten()
    diff = (got - want).abs().max().item()
    print(f"LPIPS-{net} vs the lpips package: {want.tolist()} max {diff:.1e}")
    assert (got > 0).all() and diff < TOL


def test_dists_matches_the_dists_package(hub: Path) -> None:
    dists_pt = _reference("DISTS_pytorch.DISTS_pt")
    a, b = _real_pairs()
    _torchvision_file(hub, "vgg", seed=9)
    ours = load_dists(hub / TORCHVISION_FILES["vgg"], DISTS_WEIGHTS)
    # vgg16(pretrained=True) from the hub folder; alpha/beta: the wheel's weights.pt (installed under
    # sys.prefix, copied unchanged into tests/data/metric-heads)
    ref = dists_pt.DISTS(load_weights=False).eval()
    w = torch.load(DISTS_WEIGHTS, map_location="cpu", weights_only=True)
    ref.alpha.data, ref.beta.data = w["alpha"], w["beta"]
    to_ref = lambda x: x.permute(0, 3, 1, 2).float() / 255.0  # noqa: E731
    with torch.no_grad():
        got, want = ours(a, b), ref(to_ref(a), to_ref(b)).flatten()
    diff = (got - want).abs().max().item()
    print(f"DISTS vs DISTS_pytorch: {want.tolist()} max {diff:.1e}")
    assert (got > 0).all() and diff < TOL


def _random_like(sd: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights for an Inception state dict: He-scaled convs, BN near identity, so that 2048-d
    pool features stay in a sane range through the 94 layers."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.dtype.is_floating_point:
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = torch.rand(v.shape, generator=g) * 0.5 + 0.75
        elif k.endswith("running_mean") or k.endswith("bias"):
            out[k] = torch.randn(v.shape, generator=g) * 0.05
        elif v.dim() > 1:
            out[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        else:  # BN weight
            out[k] = 1 + torch.randn(v.shape, generator=g) * 0.05
    return out


def _he_images(n: int, size: int) -> torch.Tensor:
    """``n`` real H&E crops (two sources), uint8 NHWC."""
    lung = np.asarray(Image.open(DATA / "histolab-tcga-lung.png").convert("RGB"))
    tia = np.asarray(Image.open(DATA / "tiatoolbox-target-image.png").convert("RGB"))
    crops = [(lung if i % 2 else tia)[20 * i : 20 * i + size, 30 * i : 30 * i + size] for i in range(n)]
    return torch.from_numpy(np.stack(crops).copy())


def test_inception_pool_features_and_fid_match_pytorch_fid(hub: Path) -> None:
    from virtual_ihc_train.evaluation.inception import PYTORCH_FID_FILE, InceptionPool3, load_inception

    pf_inception = _reference("pytorch_fid.inception")
    from pytorch_fid.fid_score import calculate_frechet_distance

    sd = InceptionPool3(fid_variant=True).state_dict()
    sd["fc.weight"], sd["fc.bias"] = (
        torch.zeros(1008, 2048),
        torch.zeros(1008),
    )  # the FID graph's 1008 classes
    torch.save(_random_like(sd, seed=11), hub / PYTORCH_FID_FILE)
    ours = load_inception(hub / PYTORCH_FID_FILE)
    ref = pf_inception.InceptionV3([pf_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()  # its loader
    real, fake = _he_images(3, 64), _he_images(3, 96)[:, 16:80, 16:80]
    with torch.no_grad():
        mine = [ours(x).double().numpy() for x in (real, fake)]
        theirs = [
            ref(x.permute(0, 3, 1, 2).float() / 255.0)[0].flatten(1).double().numpy() for x in (real, fake)
        ]
    diff = max(np.abs(m - t).max() for m, t in zip(mine, theirs, strict=True))
    scale = max(np.abs(t).max() for t in theirs)
    # FID on the first 2 feature dimensions: 3 images cannot span 2048 (sqrtm of a singular 2048 x 2048 product
    # takes minutes); the formula itself is checked on other features in test_fid_formula_matches_pytorch_fid
    m8, t8 = [m[:, :2] for m in mine], [t[:, :2] for t in theirs]
    fid_ours = fid_from_features(*m8)
    fid_ref = calculate_frechet_distance(
        t8[0].mean(0), np.cov(t8[0], rowvar=False), t8[1].mean(0), np.cov(t8[1], rowvar=False)
    )
    print(
        f"Inception pool3 vs pytorch-fid: max abs {diff:.1e} (features up to {scale:.2f}); FID {fid_ours:.6f} vs {fid_ref:.6f}"
    )
    assert diff < 1e-4 * max(1.0, scale)
    assert abs(fid_ours - fid_ref) < 1e-4 * max(1.0, fid_ref)


def test_inception_pool_features_against_torch_fidelity(hub: Path) -> None:
    """torch-fidelity's own Inception (ported from the same TF graph, same file layout) on 299 px input, where
    neither side resizes. Its input scaling is (x - 128) / 128, pytorch-fid's (and ours) x / 127.5 - 1: fed
    the same scaled tensor the networks agree; the scaling difference alone is measured and bounded."""
    from virtual_ihc_train.evaluation.inception import PYTORCH_FID_FILE, InceptionPool3, load_inception

    fe = _reference("torch_fidelity.feature_extractor_inceptionv3")
    sd = InceptionPool3(fid_variant=True).state_dict()
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    torch.save(_random_like(sd, seed=12), hub / PYTORCH_FID_FILE)
    ours = load_inception(hub / PYTORCH_FID_FILE)
    ref = fe.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(hub / PYTORCH_FID_FILE)
    )
    x = _he_images(2, 299)
    with torch.no_grad():
        mine = ours(x)
        theirs = ref(x.permute(0, 3, 1, 2).contiguous())[0]
        # the same network input on our side: torch-fidelity's scaling fed to our first layer
        hook = ours.Conv2d_1a_3x3.register_forward_pre_hook(
            lambda m, args: ((x.permute(0, 3, 1, 2).float() - 128) / 128,)
        )
        same_input = ours(x)
        hook.remove()
    net_diff = (same_input - theirs).abs().max().item()
    scaling = (mine - theirs).abs().max().item()
    top = theirs.abs().max().item()
    print(
        f"Inception pool3 vs torch-fidelity: same input max abs {net_diff:.1e}; with each side's own scaling "
        f"(x/127.5-1 vs (x-128)/128) {scaling:.1e}, features up to {top:.2f}"
    )
    assert net_diff < 1e-4 * max(1.0, top)
    assert scaling < 0.02 * top


def test_asp_kid_inception_matches_torchvision(hub: Path) -> None:
    """ASP's KID network is torchvision's ``inception_v3`` up to its average pool: the real one, same weights."""
    from virtual_ihc_train.evaluation.inception import TORCHVISION_FILE
    from virtual_ihc_train.evaluation.mist_metrics import load_asp_inception

    tv = _import_torchvision()
    model = tv.models.inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=False)
    model.load_state_dict(_random_like(model.state_dict(), seed=13))
    torch.save(model.state_dict(), hub / TORCHVISION_FILE)
    ours = load_asp_inception(hub / TORCHVISION_FILE)
    x = _he_images(2, 299)  # 299 px: no resize on either side
    feats: list[torch.Tensor] = []
    model.avgpool.register_forward_hook(lambda m, i, o: feats.append(o.flatten(1)))
    with torch.no_grad():
        mine = ours(x)
        model.eval()(x.permute(0, 3, 1, 2).float() / 127.5 - 1)
    diff = (mine - feats[0]).abs().max().item()
    print(f"ASP KID Inception vs torchvision inception_v3: max abs {diff:.1e} of {feats[0].abs().max():.2f}")
    assert diff < 1e-4 * max(1.0, feats[0].abs().max().item())


def test_fid_formula_matches_pytorch_fid() -> None:
    _reference("pytorch_fid")
    from pytorch_fid.fid_score import calculate_frechet_distance

    real, fake = _features(6)
    want = calculate_frechet_distance(
        real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False)
    )
    assert abs(fid_from_features(real, fake) - want) < 1e-9 * max(1.0, want)


def test_kid_matches_torch_fidelity() -> None:
    metric_kid = _reference("torch_fidelity.metric_kid")
    real, fake = _features(7)
    n = 50
    want = metric_kid.kid_features_to_metric(
        torch.from_numpy(real[:n]),
        torch.from_numpy(fake[:n]),
        kid_subsets=1,
        kid_subset_size=n,
        verbose=False,
    )[metric_kid.KEY_METRIC_KID_MEAN]
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


def test_evaluate_report_names_conventions_networks_and_weights_checksums(tmp_path: Path) -> None:
    """metrics.md / metrics.json state the PSNR/SSIM convention, the LPIPS backbone and the SHA-256 of every
    weights file a figure came from."""
    import hashlib
    import json

    from virtual_ihc_train.cli import main

    _random_backbone(LPIPS("alex").features, tmp_path / "alexnet.pth", seed=8)
    a, b = _real_pairs()
    for sub, imgs in (("gen", a), ("real", b)):
        (tmp_path / sub).mkdir()
        for i, img in enumerate(imgs.numpy()):
            Image.fromarray(img).save(tmp_path / sub / f"{i}.png")
    args = ["evaluate", "--generated", str(tmp_path / "gen"), "--real", str(tmp_path / "real")]
    args += ["--out", str(tmp_path / "ev"), "--metrics", "psnr,ssim,lpips", "--no-progress"]
    args += ["--lpips-net", "alex", "--alexnet", str(tmp_path / "alexnet.pth")]
    assert main([*args, "--lpips-lin", str(LPIPS_HEADS["alex"])]) == 0
    result = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    md = (tmp_path / "ev" / "metrics.md").read_text()
    for f in (tmp_path / "alexnet.pth", LPIPS_HEADS["alex"]):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        assert digest in result["networks"]["lpips"] and digest in md
    assert "AlexNet backbone" in md and "data_range=255" in md and "no crop, no colour-space change" in md
    assert "how the generator ran is not known" in md  # images given: no protocol claimed
