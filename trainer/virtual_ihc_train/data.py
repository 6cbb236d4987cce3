"""Datasets: BCI, MIST, generic paired folders and unpaired folders, with the pix2pix augmentations.

Every random choice of a sample (crop position, flips, rotation, colour jitter) is drawn from a generator
seeded by ``(seed, epoch, index)``, so a sample looks the same whichever worker process loads it and a
resumed run sees exactly the crops the interrupted run would have seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
HER2_LABEL = re.compile(r"_(0|1\+|2\+|3\+)$")
HER2_CLASSES = ("0", "1+", "2+", "3+")


class DatasetError(ValueError):
    """The data on disk does not form the dataset asked for (the message names the files)."""


@dataclass(frozen=True)
class Pair:
    """One training example: an H&E image, its target (``None`` in unpaired data) and its HER2 class."""

    source: Path
    target: Path | None
    name: str
    label: str | None = None


def her2_label(name: str) -> str | None:
    """HER2 class from a BCI file stem such as ``00000_train_1+`` (None when the name has none)."""
    m = HER2_LABEL.search(Path(name).stem)
    return m.group(1) if m else None


def list_images(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as exc:  # PIL raises many types for bad files
        raise DatasetError(f"unreadable image {path}: {exc}") from exc


def paired_folders(source_dir: Path, target_dir: Path, check_sizes: bool = True) -> list[Pair]:
    """Pairs matched by file stem in two folders; every unmatched name is reported."""
    src = {p.stem: p for p in list_images(source_dir)}
    tgt = {p.stem: p for p in list_images(target_dir)}
    only_src, only_tgt = sorted(set(src) - set(tgt)), sorted(set(tgt) - set(src))
    if only_src or only_tgt:
        raise DatasetError(
            f"unmatched pairs between {source_dir} and {target_dir}: "
            f"{len(only_src)} only in the first ({', '.join(only_src[:5])}{'...' if len(only_src) > 5 else ''}), "
            f"{len(only_tgt)} only in the second ({', '.join(only_tgt[:5])}{'...' if len(only_tgt) > 5 else ''})"
        )
    pairs = [Pair(src[k], tgt[k], k, her2_label(k)) for k in sorted(src)]
    if check_sizes:
        for p in pairs:
            assert p.target is not None
            a, b = image_size(p.source), image_size(p.target)
            if a != b:
                raise DatasetError(f"size mismatch in pair {p.name}: {p.source} is {a}, {p.target} is {b}")
    return pairs


def bci_pairs(root: Path, split: str = "train") -> list[Pair]:
    """BCI layout: ``root/HE/<split>/00000_train_1+.png`` paired with ``root/IHC/<split>/`` by name."""
    root = Path(root)
    for sub in ("HE", "IHC"):
        if not (root / sub / split).is_dir():
            raise DatasetError(
                f"not a BCI folder: {root / sub / split} is missing (expected HE/ and IHC/ with {split}/)"
            )
    return paired_folders(root / "HE" / split, root / "IHC" / split)


def mist_pairs(root: Path, split: str = "train") -> list[Pair]:
    """MIST layout: ``root/trainA`` (H&E) + ``root/trainB`` (IHC), or ``valA``/``valB`` for ``split='val'``."""
    root = Path(root)
    prefix = {"train": "train", "val": "val", "test": "val"}.get(split, split)
    a, b = root / f"{prefix}A", root / f"{prefix}B"
    if not a.is_dir() or not b.is_dir():
        raise DatasetError(f"not a MIST folder: expected {a} and {b}")
    return paired_folders(a, b)


def unpaired_folders(source_dir: Path, target_dir: Path) -> list[Pair]:
    """Unpaired data (CycleGAN style): targets are drawn at random per sample, see ``ImagePairDataset``."""
    return [Pair(p, None, p.stem, her2_label(p.stem)) for p in list_images(source_dir)] + [
        Pair(Path(), p, "target:" + p.stem) for p in list_images(target_dir)
    ]


def find_pairs(
    kind: str,
    root: str | Path | None,
    split: str,
    source: str | Path | None = None,
    target: str | Path | None = None,
) -> list[Pair]:
    """Dispatch on the dataset kind named in the config."""
    if kind == "bci":
        return bci_pairs(Path(_need(root, "data.root")), split)
    if kind == "mist":
        return mist_pairs(Path(_need(root, "data.root")), split)
    if kind == "paired":
        return paired_folders(Path(_need(source, "data.source")), Path(_need(target, "data.target")))
    if kind == "unpaired":
        return unpaired_folders(Path(_need(source, "data.source")), Path(_need(target, "data.target")))
    raise DatasetError(f"data.kind must be bci, mist, paired or unpaired, not {kind!r}")


def _need(value: str | Path | None, key: str) -> str | Path:
    if value in (None, ""):
        raise DatasetError(f"{key} is required for this dataset kind")
    assert value is not None
    return value


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); OpenCV decodes PNG/JPEG faster than PIL."""
    arr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if arr is None:
        try:  # formats or modes OpenCV refuses
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except Exception as exc:
            raise DatasetError(f"unreadable image {path}: {exc}") from exc
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


@dataclass
class Augment:
    """pix2pix preprocessing: ``crop`` | ``resize_and_crop`` (to ``load_size`` first) | ``none``."""

    preprocess: str = "crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    rot90: bool = True
    color_jitter: float = 0.0  # max relative brightness/contrast/saturation change applied to the source

    def __call__(
        self, a: np.ndarray, b: np.ndarray | None, rng: np.random.Generator, where: object = "image"
    ):
        """Crop/flip/rotate ``a`` (and ``b`` alike); ``where`` names the file in error messages."""
        if self.preprocess == "resize_and_crop":
            a = cv2.resize(a, (self.load_size, self.load_size), interpolation=cv2.INTER_CUBIC)
            if b is not None:
                b = cv2.resize(b, (self.load_size, self.load_size), interpolation=cv2.INTER_CUBIC)
        if self.preprocess in ("crop", "resize_and_crop"):
            h, w = a.shape[:2]
            cs = self.crop_size
            if h < cs or w < cs:
                raise DatasetError(
                    f"{where}: {w}x{h} px is smaller than crop_size {cs}; remove the file or lower "
                    "data.crop_size (--set data.crop_size=...)"
                )
            y, x = int(rng.integers(0, h - cs + 1)), int(rng.integers(0, w - cs + 1))
            a = a[y : y + cs, x : x + cs]
            if b is not None:
                b = b[y : y + cs, x : x + cs]
        elif self.preprocess != "none":
            raise DatasetError(f"preprocess must be crop, resize_and_crop or none, not {self.preprocess!r}")
        k = int(rng.integers(0, 4)) if self.rot90 else 0
        flip = bool(rng.integers(0, 2)) if self.flip else False
        a = _orient(a, k, flip)
        b = _orient(b, k, flip) if b is not None else None
        if self.color_jitter > 0:
            a = _jitter(a, rng, self.color_jitter)
        return a, b


def _orient(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    if flip:
        x = x[:, ::-1]
    return np.rot90(x, k) if k else x


def _jitter(x: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    f = x.astype(np.float32)
    brightness, contrast, saturation = 1 + rng.uniform(-amount, amount, size=3)
    f = f * brightness
    f = (f - f.mean()) * contrast + f.mean()
    grey = f.mean(axis=2, keepdims=True)
    f = (f - grey) * saturation + grey
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 HWC -> float CHW in [-1, 1] (the pix2pix convention)."""
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class ImagePairDataset(Dataset):
    """Paired (or unpaired) images as ``{"A", "B", "index", "label"}`` with deterministic augmentation."""

    def __init__(self, pairs: list[Pair], augment: Augment, seed: int = 0) -> None:
        if not pairs:
            raise DatasetError("the dataset is empty")
        self.sources = [p for p in pairs if p.source != Path()]
        self.targets = [p.target for p in pairs if p.source == Path() and p.target is not None]
        self.unpaired = bool(self.targets)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        pair = self.sources[index]
        a = read_rgb(pair.source)
        if self.unpaired:
            b_path = self.targets[int(rng.integers(0, len(self.targets)))]
            b = read_rgb(b_path)
            a, _ = self.augment(a, None, rng, where=pair.source)
            b, _ = self.augment(b, None, rng, where=b_path)
        else:
            assert pair.target is not None
            b = read_rgb(pair.target)
            if a.shape != b.shape:
                raise DatasetError(f"size mismatch in pair {pair.name}: {a.shape} vs {b.shape}")
            a, b = self.augment(a, b, rng, where=pair.source)
        return {"A": to_tensor(a), "B": to_tensor(b), "index": index, "label": pair.label or ""}
