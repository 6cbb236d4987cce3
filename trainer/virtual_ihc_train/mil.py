"""Multiple-instance learning of the tumour classifier as the Ki-67 paper trains it (section "MIL for Getting
Class-Related Information", after Campanella et al. 2019): a bag is an image (or region) with a weak label in a
CSV, cut into tiles; background tiles (glass: less than ``min_tissue`` of the tile is tissue by the core's
tissue mask) are skipped. Each round:

1. the classifier (eval mode) scores every tissue tile of every bag: P(tumour);
2. the ``k`` highest-scoring tiles of each bag (k = 1 by default) get the bag's label;
3. one full mini-batch epoch over those selected tiles (shuffled, seeded; cross entropy, Adam).

The slide-level prediction of a round is the bag's highest tile probability (before that round's epoch):
the round's accuracy (threshold 0.5) and AUC, the epoch's mean loss and the selection are logged beside the
classifier (``OUT.mil.csv``, ``OUT.selection.csv``). A state file after every round (``OUT.mil_state.pt``:
weights, optimiser, round, shuffle RNG; tensors and primitives only) lets ``--resume`` continue bit-exactly.
The paper's bags are 2240 px patches of 224 px tiles; the tile size is an argument here.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_virtual_ihc.inference.tissue import tissue_mask
from napari_virtual_ihc.models.classifier import (
    CLASSES,
    ResNet34,
    classify,
    load_classifier,
    load_imagenet_backbone,
    normalise,
    save_classifier,
    tumour_probability,
)

from .data import DatasetError, list_images, read_rgb, to_tensor
from .methods.cyclegan import read_class_labels

__all__ = ["classify", "load_classifier", "select_top_k", "slide_auc", "top_instances", "train_mil"]


@dataclass
class Bag:
    name: str
    label: int  # index in CLASSES
    tiles: torch.Tensor  # (n, 3, tile, tile) tissue tiles in -1..1
    positions: list[tuple[int, int]]  # (x, y) of each tile in the image


def bag_tiles(
    image: np.ndarray, tile: int, min_tissue: float = 0.0
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Non-overlapping ``tile`` squares of an RGB image in -1..1 and their (x, y), row by row, keeping those
    whose tissue fraction (the core's tissue mask) is at least ``min_tissue`` (the whole image if smaller)."""
    h, w = image.shape[:2]
    if h < tile or w < tile:
        return to_tensor(image)[None], [(0, 0)]
    mask = tissue_mask(image) if min_tissue > 0 else None
    crops, where = [], []
    for y in range(0, h - tile + 1, tile):
        for x in range(0, w - tile + 1, tile):
            if mask is not None and mask[y : y + tile, x : x + tile].mean() < min_tissue:
                continue
            crops.append(to_tensor(image[y : y + tile, x : x + tile]))
            where.append((x, y))
    return (torch.stack(crops) if crops else torch.empty(0, 3, tile, tile)), where


def select_top_k(scores: list[torch.Tensor], k: int = 1) -> list[list[int]]:
    """Per bag, the indices of its ``k`` highest-scoring tiles, highest first (all of them when fewer; ties
    keep the earlier tile)."""
    picks = []
    for s in scores:
        order = sorted(range(len(s)), key=lambda i: (-float(s[i]), i))
        picks.append(order[: min(k, len(s))])
    return picks


def top_instances(scores: list[torch.Tensor]) -> list[int]:
    """Index of the highest-scoring tile of each bag (k = 1)."""
    return [p[0] for p in select_top_k(scores, 1)]


def slide_auc(labels: list[int], probabilities: list[float]) -> float:
    """ROC AUC of the slide-level probabilities (Mann-Whitney: ties count one half); NaN with one class."""
    pos = [p for lab, p in zip(labels, probabilities, strict=True) if lab == 1]
    neg = [p for lab, p in zip(labels, probabilities, strict=True) if lab == 0]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return float(wins / (len(pos) * len(neg)))


@torch.no_grad()
def score_bags(model: nn.Module, bags: list[Bag], device: str, batch: int = 64) -> list[torch.Tensor]:
    """P(tumour) of every tile of every bag, the model in eval mode."""
    model.eval()
    out = []
    for bag in bags:
        parts = [
            tumour_probability(model, bag.tiles[i : i + batch].to(device)).cpu()
            for i in range(0, len(bag.tiles), batch)
        ]
        out.append(torch.cat(parts))
    return out


def read_bags(images_dir: Path, labels_csv: Path, tile: int, min_tissue: float) -> list[Bag]:
    files = list_images(images_dir)
    labels = read_class_labels(labels_csv, files)
    bags = []
    for f in files:
        if f.stem not in labels:
            continue
        tiles, where = bag_tiles(read_rgb(f), tile, min_tissue)
        if not len(tiles):
            raise DatasetError(
                f"{f}: no {tile} px tile has {min_tissue:.0%} tissue; lower --min-tissue or check the image"
            )
        bags.append(Bag(f.stem, CLASSES.index(labels[f.stem]), tiles, where))
    if not bags or len({b.label for b in bags}) < 2:
        raise DatasetError(f"{labels_csv}: MIL needs labelled images of both classes ({', '.join(CLASSES)})")
    return bags


def check_output_file(out: Path, may_replace: bool) -> None:
    """Refuse, before any training, an ``--out`` that is a folder, an existing file (unless resuming or
    ``--overwrite``: nothing outside what the user named is replaced) or one whose folder cannot be written."""
    if out.is_dir():
        raise DatasetError(f"--out {out} is a folder: give the classifier's file name (.safetensors)")
    if (out.exists() or out.is_symlink()) and not may_replace:
        raise DatasetError(f"{out} exists: choose another --out, or add --overwrite to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as e:
        raise DatasetError(f"cannot write the classifier in {out.parent}: {e.strerror or e}") from None


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".mil_state.pt")


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
    k: int = 1,
    batch_size: int = 16,
    min_tissue: float = 0.25,
    resume: bool = False,
    overwrite: bool = False,
    mpp: float | None = None,
) -> Path:
    """Train ``epochs`` rounds (score, select top-k per bag, one epoch on the selection); writes the classifier
    and, beside it, the per-round log, the selections and the resume state."""
    check_output_file(Path(out), resume or overwrite)
    if k < 1 or batch_size < 1 or epochs < 1:
        raise ValueError("--k, --batch-size and --epochs must be >= 1")
    if mpp is not None and not (0 < mpp < 100):
        raise ValueError(f"--mpp must be a pixel size in µm (0..100), not {mpp}")
    if not 0 <= min_tissue <= 1:
        raise ValueError(f"--min-tissue must be between 0 and 1, not {min_tissue}")
    out = Path(out)
    bags = read_bags(images_dir, labels_csv, tile, min_tissue)
    torch.manual_seed(seed)
    model = ResNet34(2, width).to(device)
    if imagenet is not None and not resume:
        from safetensors.torch import load_file

        sd = (
            load_file(str(imagenet))
            if str(imagenet).endswith(".safetensors")
            else torch.load(imagenet, weights_only=True)
        )
        load_imagenet_backbone(model, sd)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(seed)
    start = 0
    log_file, sel_file = out.with_name(out.name + ".mil.csv"), out.with_name(out.name + ".selection.csv")
    if resume:
        if not state_path(out).is_file():
            raise DatasetError(f"nothing to resume: {state_path(out)} does not exist (run without --resume)")
        state = torch.load(state_path(out), map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        shuffle.set_state(state["shuffle"])
        start = int(state["round"])
        _truncate(log_file, start)
        _truncate(sel_file, start)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("round,train_loss,slide_accuracy,slide_auc,selected\n")
        sel_file.write_text("round,bag,label,tile,x,y,p_tumour\n")
    ce = nn.CrossEntropyLoss()
    labels = [b.label for b in bags]
    for rnd in range(start, epochs):
        scores = score_bags(model, bags, device)
        picks = select_top_k(scores, k)
        slide_p = [float(s.max()) for s in scores]
        accuracy = float(np.mean([(p > 0.5) == bool(lab) for p, lab in zip(slide_p, labels, strict=True)]))
        xs = torch.cat([b.tiles[idx] for b, idx in zip(bags, picks, strict=True)])
        ys = torch.tensor([b.label for b, idx in zip(bags, picks, strict=True) for _ in idx])
        order = torch.randperm(len(xs), generator=shuffle)
        model.train()
        losses = []
        for i in range(0, len(order), batch_size):
            sel = order[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = ce(model(normalise(xs[sel].to(device))), ys[sel].to(device))
            loss.backward()
            opt.step()
            losses.append(loss.item())
        with log_file.open("a") as f:
            f.write(
                f"{rnd},{np.mean(losses):.6g},{accuracy:.6g},{slide_auc(labels, slide_p):.6g},{len(xs)}\n"
            )
        with sel_file.open("a") as f:
            for b, s, idx in zip(bags, scores, picks, strict=True):
                for i in idx:
                    x, y = b.positions[i]
                    f.write(f"{rnd},{b.name},{CLASSES[b.label]},{i},{x},{y},{float(s[i]):.6g}\n")
        state = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "shuffle": shuffle.get_state(),
            "round": rnd + 1,
        }
        torch.save(state, state_path(out).with_suffix(".tmp"))
        state_path(out).with_suffix(".tmp").replace(state_path(out))
    info = {"tile": tile, "epochs": epochs, "bags": len(bags), "k": k, "min_tissue": min_tissue}
    if mpp is not None:  # the core's tumour map (stain.tumour_map) reads the H&E at this µm/px
        info["mpp"] = float(mpp)
    return save_classifier(out, model.eval(), info)


def _truncate(log: Path, rounds: int) -> None:
    """Keep the header and the rows of the first ``rounds`` rounds (a resumed run rewrites the rest)."""
    if not log.is_file():
        return
    with log.open() as f:
        rows = list(csv.reader(f))
    kept = [rows[0]] + [r for r in rows[1:] if int(r[0]) < rounds]
    with log.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(kept)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", help="folder of bag images (H&E or IHC, one domain)")
    p.add_argument("labels", help="CSV file,class (tumour | non-tumour) per image")
    p.add_argument("--out", required=True, help="classifier .safetensors")
    p.add_argument("--tile", type=int, default=224)
    p.add_argument("--epochs", type=int, default=100, help="MIL rounds (score, select, one epoch)")
    p.add_argument("--k", type=int, default=1, help="top-scoring tiles per bag trained on its label")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--min-tissue", type=float, default=0.25, help="tiles with less tissue than this fraction are skipped"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT.mil_state.pt, bit-exactly")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--width", type=int, default=64, help="ResNet-34 base width (64 = torchvision)")
    p.add_argument("--imagenet", help="local torchvision resnet34 ImageNet weights to start from")
    p.add_argument(
        "--mpp", type=float, help="µm/px of the bag images (recorded; tumour maps read the H&E at this scale)"
    )
