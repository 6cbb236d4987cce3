"""A tumour classifier in the trainer's file format whose decision is known: P(tumour) rises with how dark
(hematoxylin-dense) a tile is. A real ResNet-34 (models.classifier) with its weights set by hand, saved by
``save_classifier`` as ``virtual-ihc-train mil`` saves it, so the tests need no training run."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from napari_virtual_ihc.models.classifier import BasicBlock, ResNet34, save_classifier


def darkness_classifier(path: Path, tile: int = 32, mpp: float | None = None, cut: float = 0.3) -> Path:
    """Channel 0 of ``conv1`` = minus the mean ImageNet-normalised RGB of a 7 x 7 window (dark > 0, white
    and pink < 0, cut at 0 by the ReLU); every residual branch zero and every shortcut an identity, so the
    pooled feature 0 is the tile's mean darkness; ``fc``: logit(tumour) = 20 x (darkness - ``cut``)."""
    m = ResNet34(2, width=4)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):  # eval mode: identity
                mod.weight.fill_(1.0)
                mod.running_mean.zero_()
                mod.running_var.fill_(1.0)
            if isinstance(mod, BasicBlock) and mod.downsample is not None:
                conv = mod.downsample[0]
                for c in range(conv.in_channels):
                    conv.weight[c, c, 0, 0] = 1.0
        m.conv1.weight[0] = -1.0 / (3 * 49)
        m.fc.weight[1, 0] = 20.0
        m.fc.bias[1] = -20.0 * cut
    info = {"tile": tile, "epochs": 0, "bags": 0, "k": 1, "min_tissue": 0.25}
    if mpp is not None:
        info["mpp"] = mpp
    return save_classifier(path, m.eval(), info)
