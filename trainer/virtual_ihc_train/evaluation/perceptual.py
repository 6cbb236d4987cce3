"""LPIPS (v0.1, VGG or AlexNet backbone) and DISTS, from local weight files, without torchvision or the
lpips package.

Both use a torchvision backbone (``vgg16-397923af.pth`` or, for LPIPS-Alex, ``alexnet-owt-7be5be79.pth``;
keys ``features.N.*``) plus their own small heads: LPIPS's linear layers (``vgg.pth`` / ``alex.pth`` from
the lpips package, keys ``linN.model.1.weight``) and DISTS's alpha/beta (``weights.pt`` from the DISTS
repository, keys ``alpha``, ``beta``). ``tests/trainer/test_metric_reference.py`` checks both against the
reference formulas with the heads the lpips and DISTS-pytorch wheels ship.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .inception import find_weights

VGG_FILE = "vgg16-397923af.pth"
VGG_URL = "https://download.pytorch.org/models/" + VGG_FILE
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_URL = "https://download.pytorch.org/models/" + ALEXNET_FILE
LPIPS_FILE = "vgg.pth"
LPIPS_ALEX_FILE = "alex.pth"
LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"
DISTS_FILE = "weights.pt"
DISTS_URL = "https://github.com/dingkeyan93/DISTS/raw/master/DISTS_pytorch/weights.pt"

VGG_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]


def vgg16_features(pool: str = "max") -> nn.Sequential:
    """torchvision's ``vgg16().features`` layout (same indices), minus the last max-pool."""
    layers: list[nn.Module] = []
    cin = 3
    for v in VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2) if pool == "max" else L2Pool(cin))
        else:
            assert isinstance(v, int)
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
            cin = v
    return nn.Sequential(*layers)


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` layout (same indices), minus the last max-pool."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=False),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=False),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=False),
    )


def load_vgg(features: nn.Sequential, path: str | Path | None) -> Path:
    """Load torchvision's VGG16 features; returns the file read."""
    p = find_weights(path, [VGG_FILE], "LPIPS/DISTS (VGG16 backbone)", "--vgg16", VGG_URL)
    _load_features(features, p)
    return p


def _load_features(features: nn.Sequential, p: Path) -> None:
    sd = torch.load(p, map_location="cpu", weights_only=True)
    own = {k: v for k, v in features.state_dict().items()}
    features.load_state_dict({k: sd[f"features.{k}"] for k in own}, strict=True)


class L2Pool(nn.Module):
    """DISTS's L2 pooling: Hanning-window blur of x^2, stride 2, then sqrt."""

    filter: torch.Tensor  # a registered buffer

    def __init__(self, channels: int) -> None:
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        g = g / g.sum()
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1), persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x**2, self.filter, stride=2, padding=1, groups=self.channels)
        return (out + 1e-12).sqrt()


def _to_unit(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.permute(0, 3, 1, 2).float() / 255.0


# per backbone: feature taps (indices into ``features``) and their channel counts, as the lpips package slices them
LPIPS_NETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "vgg": ((3, 8, 15, 22, 29), (64, 128, 256, 512, 512)),  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    "alex": ((1, 4, 7, 9, 11), (64, 192, 384, 256, 256)),  # relu1 .. relu5
}


class LPIPS(nn.Module):
    """LPIPS v0.1 (Zhang et al. 2018): distance between unit-normalised VGG16 or AlexNet features, linearly
    weighted. ``net="alex"`` is the lpips package's default (and most papers' LPIPS)."""

    shift: torch.Tensor  # registered buffers
    scale: torch.Tensor

    taps, chns = LPIPS_NETS["vgg"]  # the default's; an instance holds its own backbone's

    def __init__(self, net: str = "vgg") -> None:
        super().__init__()
        if net not in LPIPS_NETS:
            raise ValueError(f"LPIPS backbone {net!r}: choose one of {', '.join(LPIPS_NETS)}")
        self.weights_files: list[Path] = []  # what the loader read (the report names them)
        self.net = net
        self.taps, self.chns = LPIPS_NETS[net]
        self.features = vgg16_features("max") if net == "vgg" else alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.chns)
        self.register_buffer(
            "shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x * 2 - 1 - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
            if i >= self.taps[-1]:
                break
        return out

    def forward(self, a_uint8: torch.Tensor, b_uint8: torch.Tensor) -> torch.Tensor:
        fa, fb = self._feats(_to_unit(a_uint8)), self._feats(_to_unit(b_uint8))
        return sum(
            lin((x - y) ** 2).mean((2, 3)) for lin, x, y in zip(self.lins, fa, fb, strict=True)
        ).flatten()


def load_lpips(backbone: str | Path | None = None, lin: str | Path | None = None, net: str = "vgg") -> LPIPS:
    """LPIPS with ``net``'s backbone file (torchvision's VGG16 or AlexNet) and the lpips package's v0.1 heads."""
    model = LPIPS(net)
    if net == "vgg":
        backbone_file = load_vgg(model.features, backbone)
    else:
        backbone_file = find_weights(
            backbone, [ALEXNET_FILE], "LPIPS-Alex (AlexNet backbone)", "--alexnet", ALEXNET_URL
        )
        _load_features(model.features, backbone_file)
    lin_file = LPIPS_FILE if net == "vgg" else LPIPS_ALEX_FILE
    p = find_weights(lin, [lin_file], f"LPIPS-{net} (linear heads)", "--lpips-lin", LPIPS_URL + lin_file)
    model.weights_files = [backbone_file, p]
    sd = torch.load(p, map_location="cpu", weights_only=True)
    for i, conv in enumerate(model.lins):
        weight: Any = conv.weight
        weight.data.copy_(sd[f"lin{i}.model.1.weight"])
    return model.eval()


class DISTS(nn.Module):
    """DISTS (Ding et al. 2020): texture and structure similarity of VGG features (L2-pooled VGG16)."""

    mean: torch.Tensor  # registered buffers
    std: torch.Tensor

    stage_ends = (3, 8, 15, 22, 29)
    chns = (3, 64, 128, 256, 512, 512)

    def __init__(self) -> None:
        super().__init__()
        self.weights_files: list[Path] = []  # what the loader read (the report names them)
        self.features = vgg16_features("l2")
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.alpha = nn.Parameter(torch.zeros(1, sum(self.chns), 1, 1), requires_grad=False)
        self.beta = nn.Parameter(torch.zeros(1, sum(self.chns), 1, 1), requires_grad=False)

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        out = [x]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.stage_ends:
                out.append(x)
            if i >= self.stage_ends[-1]:
                break
        return out

    def forward(self, a_uint8: torch.Tensor, b_uint8: torch.Tensor) -> torch.Tensor:
        # DISTS feeds the unnormalised [0, 1] image as the first "feature"
        xa, xb = _to_unit(a_uint8), _to_unit(b_uint8)
        fa, fb = self._feats(xa), self._feats(xb)
        fa[0], fb[0] = xa, xb
        w_sum = self.alpha.sum() + self.beta.sum()
        alpha = torch.split(self.alpha / w_sum, list(self.chns), dim=1)
        beta = torch.split(self.beta / w_sum, list(self.chns), dim=1)
        d1: Any = 0.0
        d2: Any = 0.0
        c1 = c2 = 1e-6
        for k in range(len(self.chns)):
            xm, ym = fa[k].mean([2, 3], keepdim=True), fb[k].mean([2, 3], keepdim=True)
            s1 = (2 * xm * ym + c1) / (xm**2 + ym**2 + c1)
            d1 = d1 + (alpha[k] * s1).sum(1, keepdim=True)
            xv = ((fa[k] - xm) ** 2).mean([2, 3], keepdim=True)
            yv = ((fb[k] - ym) ** 2).mean([2, 3], keepdim=True)
            cov = (fa[k] * fb[k]).mean([2, 3], keepdim=True) - xm * ym
            s2 = (2 * cov + c2) / (xv + yv + c2)
            d2 = d2 + (beta[k] * s2).sum(1, keepdim=True)
        return (1 - (d1 + d2)).flatten()


def load_dists(vgg16: str | Path | None = None, weights: str | Path | None = None) -> DISTS:
    net = DISTS()
    backbone_file = load_vgg(net.features, vgg16)
    p = find_weights(weights, [DISTS_FILE], "DISTS (alpha/beta)", "--dists-weights", DISTS_URL)
    net.weights_files = [backbone_file, p]
    sd = torch.load(p, map_location="cpu", weights_only=True)
    net.alpha.data.copy_(sd["alpha"].reshape(net.alpha.shape))
    net.beta.data.copy_(sd["beta"].reshape(net.beta.shape))
    return net.eval()
