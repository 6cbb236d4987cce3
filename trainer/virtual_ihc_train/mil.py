"""Multiple-instance learning of the tumour classifier (paper: section "MIL for Getting Class-Related
Information"): a bag is an image (or region) with a weak label in a CSV; each epoch the classifier scores
every tile of every bag, the top-scoring tile (highest P(tumour)) of each bag is labelled with the bag's
label, and the classifier trains on those tiles (cross entropy, Adam 1e-4, ResNet-34).

The paper's bags are 2240 px patches of 224 px tiles; the tile size is an argument here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_virtual_ihc.models.classifier import (
    CLASSES,
    ResNet34,
    classify,
    load_classifier,
    load_imagenet_backbone,
    save_classifier,
    tumour_probability,
)

from .data import DatasetError, list_images, read_rgb, to_tensor
from .methods.cyclegan import read_class_labels

__all__ = ["classify", "load_classifier", "top_instances", "train_mil"]


def bag_tiles(image: np.ndarray, tile: int) -> torch.Tensor:
    """(n, 3, tile, tile) non-overlapping tiles of an RGB image in -1..1 (the whole image if smaller)."""
    h, w = image.shape[:2]
    if h < tile or w < tile:
        return to_tensor(image)[None]
    crops = [
        image[y : y + tile, x : x + tile]
        for y in range(0, h - tile + 1, tile)
        for x in range(0, w - tile + 1, tile)
    ]
    return torch.stack([to_tensor(c) for c in crops])


def top_instances(scores: list[torch.Tensor]) -> list[int]:
    """Index of the highest-scoring tile of each bag (the MIL instance trained on the bag's label)."""
    return [int(torch.argmax(s)) for s in scores]


def train_mil(
    images_dir: Path,
    labels_csv: Path,
    out: Path,
    tile: int = 224,
    epochs: int = 100,
    lr: float = 1e-4,
    seed: int = 0,
    width: int = 64,
    imagenet: Path | None = None,
    device: str = "cpu",
) -> Path:
    files = list_images(images_dir)
    labels = read_class_labels(labels_csv, files)
    bags = [(f, labels[f.stem]) for f in files if f.stem in labels]
    if not bags or len({lab for _, lab in bags}) < 2:
        raise DatasetError(f"{labels_csv}: MIL needs labelled images of both classes ({', '.join(CLASSES)})")
    torch.manual_seed(seed)
    model = ResNet34(2, width).to(device)
    if imagenet is not None:
        from safetensors.torch import load_file

        sd = (
            load_file(str(imagenet))
            if str(imagenet).endswith(".safetensors")
            else torch.load(imagenet, weights_only=True)
        )
        load_imagenet_backbone(model, sd)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ce = nn.CrossEntropyLoss()
    tiles = [bag_tiles(read_rgb(f), tile) for f, _ in bags]
    targets = torch.tensor([CLASSES.index(lab) for _, lab in bags], device=device)
    for _ in range(epochs):
        model.eval()
        with torch.no_grad():
            scores = [tumour_probability(model, t.to(device)) for t in tiles]
        picked = torch.stack([t[i] for t, i in zip(tiles, top_instances(scores), strict=True)]).to(device)
        model.train()
        opt.zero_grad(set_to_none=True)
        from napari_virtual_ihc.models.classifier import normalise

        loss = ce(model(normalise(picked)), targets)
        loss.backward()
        opt.step()
    return save_classifier(out, model.eval(), {"tile": tile, "epochs": epochs, "bags": len(bags)})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", help="folder of bag images (H&E or IHC, one domain)")
    p.add_argument("labels", help="CSV file,class (tumour | non-tumour) per image")
    p.add_argument("--out", required=True, help="classifier .safetensors")
    p.add_argument("--tile", type=int, default=224)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--width", type=int, default=64, help="ResNet-34 base width (64 = torchvision)")
    p.add_argument("--imagenet", help="local torchvision resnet34 ImageNet weights to start from")
