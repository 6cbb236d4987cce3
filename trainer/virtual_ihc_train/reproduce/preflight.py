"""Checks ``reproduce`` makes before any training: the data folder follows the paper's layout (which file breaks
which rule), the metrics' weight files are here (resolved and checksummed, or the missing file named with where
to put it), and the disk can hold the runs (an estimate)."""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..data import IMAGE_SUFFIXES, DatasetError, image_size
from ..evaluation.inception import PYTORCH_FID_FILE, TORCHVISION_FILE, MissingWeightsError, find_weights
from ..evaluation.mist_metrics import RESNET50_FILES
from ..evaluation.perceptual import (
    ALEXNET_FILE,
    ALEXNET_URL,
    DISTS_FILE,
    DISTS_URL,
    LPIPS_ALEX_FILE,
    LPIPS_URL,
    VGG_FILE,
    VGG_URL,
)

BCI_NAME = re.compile(r"^\d+_(train|test)_(0|1\+|2\+|3\+)$")
KI67_SPLITS = ("train", "val", "test")

LAYOUTS = {
    "bci": "ROOT/HE/train, ROOT/IHC/train, ROOT/HE/test, ROOT/IHC/test; names NNNNN_<split>_<HER2 class>.png "
    "(e.g. 00000_train_1+.png; class 0, 1+, 2+ or 3+), the same names under HE/ and IHC/",
    "mist": "ROOT/trainA (H&E), ROOT/trainB (IHC), ROOT/valA, ROOT/valB (MIST's test set); the same names in A "
    "and B (e.g. MIST/HER2/TrainValAB)",
    "ki67": "ROOT/HE/{train,val,test} and ROOT/Ki67/{train,val,test} (unpaired tiles: no name matching), and "
    "for the MIL classifiers ROOT/mil/HE + ROOT/mil/HE.csv, ROOT/mil/Ki67 + ROOT/mil/Ki67.csv (file,class; "
    "class tumour or non-tumour)",
}


class LayoutError(DatasetError):
    """The data folder does not follow the paper's layout; the message names the file and the rule."""


class DiskSpaceError(ValueError):
    """Too little free disk for the runs (estimated before training)."""


def _images(folder: Path, rule: str) -> list[Path]:
    if not folder.is_dir():
        raise LayoutError(f"{folder} is missing (layout: {rule})")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise LayoutError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}) (layout: {rule})")
    return files


def _same_names(a: Path, b: Path, fa: list[Path], fb: list[Path], rule: str) -> None:
    na, nb = {p.name for p in fa}, {p.name for p in fb}
    for name in sorted(na ^ nb):
        where, other = (a, b) if name in na else (b, a)
        raise LayoutError(f"{where / name} has no partner {other / name} (layout: {rule})")


def check_layout(layout: str, root: Path) -> dict[str, int]:
    """Raise :class:`LayoutError` naming the first file or folder that breaks the layout; return image counts."""
    rule = LAYOUTS[layout]
    if not root.is_dir():
        raise LayoutError(f"--data {root} is not a folder (layout: {rule})")
    counts: dict[str, int] = {}
    if layout == "bci":
        for split in ("train", "test"):
            he, ihc = _images(root / "HE" / split, rule), _images(root / "IHC" / split, rule)
            for p in he + ihc:
                m = BCI_NAME.match(p.stem)
                if p.suffix.lower() != ".png" or not m:
                    raise LayoutError(f"{p}: BCI names are NNNNN_<split>_<HER2 class>.png (layout: {rule})")
                if m.group(1) != split:
                    raise LayoutError(f"{p}: its name says {m.group(1)!r} but it is under {split}/ ({rule})")
            _same_names(root / "HE" / split, root / "IHC" / split, he, ihc, rule)
            counts[split] = len(he)
    elif layout == "mist":
        for split in ("train", "val"):
            a, b = root / f"{split}A", root / f"{split}B"
            fa, fb = _images(a, rule), _images(b, rule)
            _same_names(a, b, fa, fb, rule)
            counts[split] = len(fa)
    elif layout == "ki67":
        for split in KI67_SPLITS:
            counts[split] = len(_images(root / "HE" / split, rule))
            _images(root / "Ki67" / split, rule)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    return counts


def check_mil_labels(root: Path) -> dict[str, tuple[Path, Path]]:
    """The Ki-67 layout's MIL bags and their label CSVs (every image needs a row, every row an image)."""
    from ..methods.cyclegan import read_class_labels

    rule = LAYOUTS["ki67"]
    out = {}
    for side in ("HE", "Ki67"):
        folder, csv = root / "mil" / side, root / "mil" / f"{side}.csv"
        files = _images(folder, rule)
        if not csv.is_file():
            raise LayoutError(f"{csv} is missing: the MIL labels of {folder} (layout: {rule})")
        read_class_labels(csv, files)  # names the line or file that does not fit
        out[side] = (folder, csv)
    return out


# ------------------------------------------------------------------ metric weights
@dataclass(frozen=True)
class WeightsFile:
    what: str
    path: Path
    sha256: str


WEIGHTS_FLAGS = (
    "inception",
    "inception_torchvision",
    "resnet50",
    "vgg16",
    "alexnet",
    "lpips_lin",
    "dists_weights",
)


def weights_needed(metric: str) -> list[tuple[str, list[str], str, str, str]]:
    """(argument name, file names, what, flag, where to download) for each file ``metric`` reads."""
    tv = "https://download.pytorch.org/models/"
    fid_url = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PYTORCH_FID_FILE
    return {
        "fid": [
            (
                "inception",
                [PYTORCH_FID_FILE, TORCHVISION_FILE],
                "FID/KID (Inception-v3)",
                "--inception",
                fid_url,
            )
        ],
        "kid": [
            (
                "inception",
                [PYTORCH_FID_FILE, TORCHVISION_FILE],
                "FID/KID (Inception-v3)",
                "--inception",
                fid_url,
            )
        ],
        "kid_asp": [
            (
                "inception_torchvision",
                [TORCHVISION_FILE],
                "KID, ASP convention (torchvision Inception-v3)",
                "--inception-torchvision",
                tv + TORCHVISION_FILE,
            )
        ],
        "phv": [("resnet50", RESNET50_FILES, "PHV (ResNet-50)", "--resnet50", tv + RESNET50_FILES[0])],
        "lpips": [
            ("alexnet", [ALEXNET_FILE], "LPIPS-Alex (AlexNet backbone)", "--alexnet", ALEXNET_URL),
            (
                "lpips_lin",
                [LPIPS_ALEX_FILE],
                "LPIPS-alex (linear heads)",
                "--lpips-lin",
                LPIPS_URL + LPIPS_ALEX_FILE,
            ),
        ],
        "dists": [
            ("vgg16", [VGG_FILE], "LPIPS/DISTS (VGG16 backbone)", "--vgg16", VGG_URL),
            ("dists_weights", [DISTS_FILE], "DISTS (alpha/beta)", "--dists-weights", DISTS_URL),
        ],
    }.get(metric, [])


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_weights(metrics: tuple[str, ...], given: dict[str, Any]) -> dict[str, WeightsFile]:
    """Every weights file the metrics read, found now (``MissingWeightsError`` names the file and where to put
    it) and checksummed, so the table can say which weights made each figure."""
    out: dict[str, WeightsFile] = {}
    for metric in metrics:
        for arg, names, what, flag, url in weights_needed(metric):
            if arg not in out:
                path = find_weights(given.get(arg), names, what, flag, url)
                out[arg] = WeightsFile(what, path, sha256(path))
    return out


# ------------------------------------------------------------------ disk
def _folder_bytes(folders: list[Path]) -> int:
    return sum(p.stat().st_size for d in folders if d.is_dir() for p in d.iterdir() if p.is_file())


def _param_count(cfg: Config) -> int:
    """Parameters of every network a checkpoint of ``cfg`` holds (built once on the CPU; the meta device is slower
    here: it intercepts every call of spectral norm's initial power iteration)."""
    from napari_virtual_ihc.models import build_generator

    from ..discriminators import build_discriminator

    mc = cfg.model
    kwargs = dict(mc.arch_kwargs)
    if cfg.cyclegan.class_channel:
        kwargs["input_nc"] = 4
    kind = (
        mc.discriminator if mc.discriminator in ("patch", "multiscale") else "patch"
    )  # ASP's: about a PatchGAN
    with torch.no_grad():
        g = build_generator(mc.arch, **kwargs)
        d_in = 3 if cfg.method in ("cyclegan", "asp") else 6
        d = build_discriminator(kind, d_in, mc.ndf, mc.n_layers_d, mc.norm_d, mc.num_d)
    n_g = sum(p.numel() for p in g.parameters())
    n_d = sum(p.numel() for p in d.parameters())
    return 2 * (n_g + n_d) if cfg.method == "cyclegan" else n_g + n_d


def estimate_row_bytes(cfg: Config, keep: int, eval_folder: list[Path], train_targets: list[Path]) -> int:
    """Checkpoints (weights + two Adam moments, ``keep`` of them) + the generated test images (as large as the
    real ones) + TDKstain's knowledge maps (about the training IHC images' size again)."""
    ckpt = 3 * 4 * _param_count(cfg) * max(1, keep)
    gen = _folder_bytes(eval_folder)
    knowledge = _folder_bytes(train_targets) if cfg.method == "tdkstain" else 0
    return ckpt + gen + knowledge


def check_disk(run_dir: Path, needed: int) -> int:
    """Free bytes where ``run_dir`` will be; :class:`DiskSpaceError` when fewer than ``needed``."""
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise DiskSpaceError(
            f"{run_dir}: about {_human(needed)} is needed for the runs (checkpoints, generated images, caches; "
            f"an estimate) but {probe} has {_human(free)} free. Free space, choose another --run-dir, or run "
            "fewer --rows."
        )
    return free


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


def human_bytes(n: float) -> str:
    return _human(n)


def images_size(folder: Path) -> tuple[int, int] | None:
    """(width, height) of the first image in ``folder`` (for the plan), None when there is none."""
    files = (
        sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    )
    return image_size(files[0]) if files else None


__all__ = [
    "LAYOUTS",
    "DiskSpaceError",
    "LayoutError",
    "MissingWeightsError",
    "WeightsFile",
    "check_disk",
    "check_layout",
    "check_mil_labels",
    "estimate_row_bytes",
    "find_weights",
    "human_bytes",
    "resolve_weights",
    "sha256",
]
