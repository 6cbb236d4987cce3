"""The tumour / non-tumour tile classifier of the MIL-conditional CycleGAN (a ResNet-34), and the class plane
it gives a generator with a class channel.

Parameter names are torchvision's ``resnet34`` (``conv1``, ``bn1``, ``layer1.0.conv1``, ... ``fc``), so a
user's local ImageNet weights load into it (all but ``fc``) without torchvision being importable. Files are
``.safetensors`` with a JSON header; loading never runs code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import CheckpointNotFoundError, CorruptCheckpointError
from .validation import parse_header_json

CLASSIFIER_KEY = "virtual_ihc_classifier"
CLASSES = ("non-tumour", "tumour")  # output index -> class; the plane value is -1 / +1
CLASS_VALUES = {"non-tumour": -1.0, "tumour": 1.0}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet34(nn.Module):
    """torchvision ``resnet34`` layout (blocks 3, 4, 6, 3); input: ImageNet-normalised RGB."""

    def __init__(self, num_classes: int = 2, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans, layers, inplanes = [width, width * 2, width * 4, width * 8], [3, 4, 6, 3], width
        for i, (planes, n) in enumerate(zip(chans, layers, strict=True)):
            blocks = [BasicBlock(inplanes, planes, 1 if i == 0 else 2)]
            blocks += [BasicBlock(planes, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def normalise(images: Tensor) -> Tensor:
    """Generator-range images (-1..1) -> ImageNet-normalised input."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return ((images[:, :3].float() + 1) / 2 - mean) / std


def tumour_probability(model: nn.Module, images: Tensor) -> Tensor:
    """P(tumour) per image of a (B, 3, H, W) batch in -1..1."""
    return torch.softmax(model(normalise(images)), 1)[:, 1]


@torch.no_grad()
def classify(model: nn.Module, images: Tensor) -> list[str]:
    was = model.training
    model.eval()
    p = tumour_probability(model, images)
    model.train(was)
    return [CLASSES[int(v > 0.5)] for v in p]


@torch.no_grad()
def class_plane_tilewise(model: nn.Module, images: Tensor, tile: int = 224) -> Tensor:
    """(B, 1, H, W): each ``tile`` square of the image holds its classifier class (+1 / -1)."""
    b, _, h, w = images.shape
    plane = torch.empty(b, 1, h, w, device=images.device, dtype=images.dtype)
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            crop = images[:, :, y : y + tile, x : x + tile]
            values = torch.tensor([CLASS_VALUES[c] for c in classify(model, crop)], device=images.device)
            plane[:, :, y : y + tile, x : x + tile] = values.view(b, 1, 1, 1).to(images.dtype)
    return plane


def save_classifier(path: str | os.PathLike[str], model: ResNet34, info: dict[str, Any]) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = {"arch": "resnet34", "classes": list(CLASSES), "width": model.conv1.out_channels, **info}
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out), metadata={CLASSIFIER_KEY: json.dumps(header)})
    return out


def read_classifier_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointNotFoundError(f"tumour classifier not found: {p}")
    try:
        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise CorruptCheckpointError(f"{p}: not a readable .safetensors classifier ({exc})") from exc
    if CLASSIFIER_KEY not in meta:
        raise CorruptCheckpointError(f"{p}: not a tumour classifier (no '{CLASSIFIER_KEY}' header)")
    header = parse_header_json(meta[CLASSIFIER_KEY], str(p), CLASSIFIER_KEY)
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"{p}: unreadable '{CLASSIFIER_KEY}' header (not an object)")
    return header


def load_classifier(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> ResNet34:
    """The classifier in eval mode (strict: every torchvision resnet34 key, 2 classes)."""
    header = read_classifier_header(path)
    model = ResNet34(num_classes=len(header.get("classes", CLASSES)), width=int(header.get("width", 64)))
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.to(device).eval()


def load_imagenet_backbone(model: ResNet34, sd: dict[str, Tensor]) -> list[str]:
    """Load a torchvision ``resnet34`` ImageNet state dict into ``model`` except ``fc``; returns keys loaded."""
    own = model.state_dict()
    take = {k: v for k, v in sd.items() if not k.startswith("fc.") and k in own and own[k].shape == v.shape}
    missing = [k for k in own if not k.startswith("fc.") and k not in take and "num_batches" not in k]
    if missing:
        raise CorruptCheckpointError(
            f"not a torchvision resnet34 state dict: missing {', '.join(missing[:5])}"
        )
    model.load_state_dict(take, strict=False)
    return sorted(take)
