"""AMMFI's multi-magnification training views (Qu et al., section III-B, Fig. 1a).

Each registered pair gives four views of the same size as the pair: the native image; a x2 downscale
re-enlarged (coarser detail at the native field of view); a random half-size region zoomed x2; a random
quarter-size region zoomed x4. H&E and IHC get the same region and resampling. The paper enlarges with a
pretrained super-resolution network (BSRGAN), which is not available here: the views are resampled with
OpenCV, area averaging to shrink and bicubic interpolation to enlarge (``cv2.INTER_AREA`` / ``INTER_CUBIC``).
The dataset holds every view of every pair (4 x the pairs), each then cropped and flipped as ASP trains.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ...data import Augment, DatasetError, Pair, read_rgb, to_tensor

VIEWS = ("native", "down2", "zoom2", "zoom4")
Box = tuple[int, int, int, int]  # x, y, width, height in the source image


def view_box(view: str, width: int, height: int, rng: np.random.Generator) -> Box:
    """The region of the source image that ``view`` shows (the whole image, or a random 1/2 or 1/4 of it)."""
    if view in ("native", "down2"):
        return (0, 0, width, height)
    factor = {"zoom2": 2, "zoom4": 4}.get(view)
    if factor is None:
        raise ValueError(f"unknown view {view!r}; known: {', '.join(VIEWS)}")
    w, h = max(1, width // factor), max(1, height // factor)
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return (x, y, w, h)


def make_view(image: np.ndarray, view: str, box: Box) -> np.ndarray:
    """``image`` as ``view`` sees the region ``box``, at the image's own size."""
    height, width = image.shape[:2]
    if view == "native":
        return image
    if view == "down2":
        small = cv2.resize(image, (max(1, width // 2), max(1, height // 2)), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    x, y, w, h = box
    region = np.ascontiguousarray(image[y : y + h, x : x + w])
    return cv2.resize(region, (width, height), interpolation=cv2.INTER_CUBIC)


class MultiMagnificationDataset(Dataset):
    """Registered pairs x the four views, each then augmented (crop + flip) as ASP; deterministic per
    ``(seed, epoch, index)`` like ``ImagePairDataset``. Sample ``i`` is view ``i % 4`` of pair ``i // 4``."""

    def __init__(self, pairs: list[Pair], augment: Augment, seed: int = 0) -> None:
        if not pairs:
            raise DatasetError("the dataset is empty")
        if any(p.target is None for p in pairs):
            raise DatasetError("multi-magnification views need registered pairs (an H&E and its IHC)")
        self.pairs = pairs
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs) * len(VIEWS)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        pair, view = self.pairs[index // len(VIEWS)], VIEWS[index % len(VIEWS)]
        assert pair.target is not None
        a, b = read_rgb(pair.source), read_rgb(pair.target)
        if a.shape != b.shape:
            raise DatasetError(f"size mismatch in pair {pair.name}: {a.shape} vs {b.shape}")
        box = view_box(view, a.shape[1], a.shape[0], rng)
        a, b = self.augment(make_view(a, view, box), make_view(b, view, box), rng)
        return {
            "A": to_tensor(a),
            "B": to_tensor(b),
            "index": index,
            "view": torch.tensor(index % len(VIEWS)),
            "label": pair.label or "",
        }
