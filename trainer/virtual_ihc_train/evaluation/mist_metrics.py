"""The MIST papers' own metric conventions (ASP's ``evaluate.py`` / ``util/kid_score.py`` /
``util/perceptual.py``), so a row of ASP's or AMMFI's MIST-HER2 table can be reproduced:

- **KID, ASP convention** (:func:`kid_asp_from_features`): torchvision's Inception-v3 weights (``pretrained=True``,
  not pytorch-fid's FID graph), images /255, bilinear 299x299, scaled to [-1, 1], the 2048-d pool; unbiased
  MMD^2 with the kernel ``(x.y / d + 1)^3``, averaged over 100 subsets of ``min(n, 100)`` images, and reported
  x 1000 (ASP Table 1 "KID 12.4" is 0.0124). The project's other KID is torch-fidelity's: subsets of 1000,
  not scaled; both are ``distribution.kid_from_features``.
- **PHV** (:func:`phv_layers`): perceptual hash value on torchvision's ResNet-50 (``layer1..layer4``): per channel
  the spatial mean of the feature map, the fraction of channels where generated and real differ by more than
  0.01. As ASP's ``evaluate.py`` feeds ``to_tensor`` images (0..1) into a normalisation written for -1..1
  inputs, the network sees ``((x + 1) / 2 - mean) / std``; kept, since the table's numbers come from it.

Weights are never downloaded: pass local files (or put them in the weights folders ``inception.py`` names).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .distribution import kid_from_features
from .inception import TORCHVISION_FILE, InceptionPool3, MissingWeightsError, find_weights

RESNET50_FILES = ["resnet50-0676ba61.pth", "resnet50-19c8e357.pth"]  # torchvision IMAGENET1K_V1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PHV_THRESHOLD = 0.01


# ---------------------------------------------------------------- KID (ASP)
def kid_asp_from_features(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 100, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) x 1000 of the unbiased polynomial MMD^2 over ``subsets`` draws of ``min(n, subset_size)``.

    ASP draws with ``np.random.choice`` unseeded; here the draws are seeded for repeatable figures.
    """
    mean, std = kid_from_features(real, fake, subsets, subset_size, seed)
    return mean * 1000, std * 1000


def load_asp_inception(path: str | Path | None = None, device: str | torch.device = "cpu") -> InceptionPool3:
    """torchvision's Inception-v3 (``inception_v3_google-0cc3c7bd.pth``) up to the pool, ASP's KID network."""
    p = find_weights(
        path,
        [TORCHVISION_FILE],
        "KID, ASP convention (torchvision Inception-v3)",
        "--inception-torchvision",
        "https://download.pytorch.org/models/" + TORCHVISION_FILE,
    )
    sd = torch.load(p, map_location="cpu", weights_only=True)
    if "fc.weight" in sd and sd["fc.weight"].shape[0] != 1000:
        raise MissingWeightsError(
            f"{p} is not torchvision's Inception-v3 (its classifier has {sd['fc.weight'].shape[0]} classes)"
        )
    net = InceptionPool3(fid_variant=False)
    missing = [k for k in net.state_dict() if k not in sd]
    if missing:
        raise MissingWeightsError(f"{p} is not an Inception-v3 state dict (missing {missing[:3]}...)")
    net.load_state_dict({k: sd[k] for k in net.state_dict()}, strict=True)
    net.weights_files = [p]
    return net.eval().to(device)


# ---------------------------------------------------------------- PHV
class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (stride on the 3x3 conv), same parameter names."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class ResNet50Features(nn.Module):
    """torchvision's ResNet-50 without its classifier; ``forward`` returns the outputs of layer1..layer4.

    ``widths`` lets tests build a small net of the same structure.
    """

    def __init__(
        self, widths: tuple[int, int, int, int] = (64, 128, 256, 512), blocks=(3, 4, 6, 3), stem: int = 64
    ):
        super().__init__()
        self.weights_files: list[Path] = []  # what the loader read (the report names them)
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = stem
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            down = nn.Sequential(nn.Conv2d(cin, w * 4, 1, stride, bias=False), nn.BatchNorm2d(w * 4))
            layers = [Bottleneck(cin, w, stride, down)] + [Bottleneck(w * 4, w) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            cin = w * 4

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            feats.append(x)
        return feats


def load_resnet50(path: str | Path | None = None, device: str | torch.device = "cpu") -> ResNet50Features:
    """ResNet-50 feature layers from torchvision's ImageNet file (``weights_only``; ``fc`` ignored; strict)."""
    p = find_weights(
        path,
        RESNET50_FILES,
        "PHV (ResNet-50)",
        "--resnet50",
        "https://download.pytorch.org/models/" + RESNET50_FILES[0],
    )
    sd = torch.load(p, map_location="cpu", weights_only=True)
    net = ResNet50Features()
    wanted = net.state_dict()
    missing = [k for k in wanted if k not in sd]
    shapes = [k for k in wanted if k in sd and sd[k].shape != wanted[k].shape]
    if missing or shapes:
        raise MissingWeightsError(
            f"{p} is not a torchvision ResNet-50 state dict ({(missing + shapes)[:3]}...)"
        )
    net.load_state_dict({k: sd[k] for k in wanted}, strict=True)
    net.weights_files = [p]
    return net.eval().to(device)


def _phv_input(images_uint8: torch.Tensor) -> torch.Tensor:
    x = images_uint8.permute(0, 3, 1, 2).float() / 255.0  # to_tensor: 0..1
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std  # ASP's apply_imagenet_normalization, written for -1..1 inputs


@torch.no_grad()
def phv_layers(
    net: nn.Module, real_uint8: torch.Tensor, fake_uint8: torch.Tensor, threshold: float = PHV_THRESHOLD
) -> list[float]:
    """PHV per ResNet layer for one pair of (1, H, W, 3) uint8 images: share of channels whose spatial means
    differ by more than ``threshold``."""
    out = []
    for fr, ff in zip(net(_phv_input(real_uint8)), net(_phv_input(fake_uint8)), strict=True):
        b, c = fr.shape[:2]
        diff = (ff.reshape(b, c, -1).mean(-1) - fr.reshape(b, c, -1).mean(-1)).abs()
        out.append(float((diff > threshold).sum()) / (b * c))
    return out


def phv_columns(values: list[float]) -> dict[str, float]:
    """``phv_layer1..4`` and ``phv_avg`` (Table I of the AMMFI paper)."""
    cols = {f"phv_layer{i + 1}": v for i, v in enumerate(values)}
    cols["phv_avg"] = float(np.mean(values))
    return cols


__all__ = [
    "ResNet50Features",
    "kid_asp_from_features",
    "load_asp_inception",
    "load_resnet50",
    "phv_columns",
    "phv_layers",
]
