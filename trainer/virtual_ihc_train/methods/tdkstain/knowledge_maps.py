"""TDKstain's knowledge maps of a training IHC image, computed once and cached (``preprocess/`` of
balball/TDKstain; the H&E is never used):

- ``dab`` (K_M): the DAB stain rendered alone (scikit-image's ``rgb2hed`` / ``hed2rgb``, the core's
  :func:`~napari_virtual_ihc.stain.dab_only_rendering`), uint8 RGB; a 3-channel target in [-1, 1];
- ``mask`` (M): HSV saturation of that rendering > 0.15 as 0/255, then a 9x9 Gaussian blur (sigma 3), uint8;
  used in [0, 1];
- ``density`` (K_N): nuclei centroids -- the hematoxylin channel rescaled to its 99th percentile, Otsu, small
  holes filled, a 1 px dilation, then Cellpose ``nuclei`` on that binary image, plus (as the reference)
  Cellpose ``cyto2`` centroids on the blurred membrane mask -- as unit impulses blurred by a Gaussian
  (sigma 11 px), min-max normalised, uint8; used in [0, 1]. An image without nuclei gives a zero map.

All three are stored as uint8 exactly as the reference writes its PNGs, so training sees the same values.
Cellpose runs through the core's segmenter: real weights, or a model file given; when no weights can be had
the core's classical method runs instead and its name is written into every cache entry, the cache's
``knowledge.json`` and the run's config (``tdkstain.nuclei_method_used``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from skimage.color import rgb2hsv
from skimage.exposure import rescale_intensity
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import label, regionprops
from skimage.morphology import dilation, disk, remove_small_holes
from tqdm import tqdm

from napari_virtual_ihc.nuclei import NucleiSegmenter, make_segmenter
from napari_virtual_ihc.stain import dab_only_rendering, skimage_hed

from ...data import Augment, DatasetError, ImagePairDataset, Pair, read_rgb, to_tensor

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when the maps' computation changes: every cached entry is then recomputed


class KnowledgeCacheError(RuntimeError):
    """The knowledge cache cannot be used (not writable where an entry must be written)."""


@dataclass(frozen=True)
class KnowledgeParams:
    """Every parameter the maps depend on (the cache key holds all of them)."""

    saturation_threshold: float = 0.15
    mask_blur_ksize: int = 9
    mask_blur_sigma: float = 3.0
    h_percentile: float = 99.0
    hole_area: int = 400  # holes smaller than this (px) are filled, as remove_small_holes(area_threshold=400)
    dilation_radius: int = 1
    nuclei_sigma: float = 11.0
    cellpose_diameter: float = 30.0  # cellpose's default, which the reference keeps
    membrane_nuclei: bool = True  # the reference's cyto2 centroids on the blurred membrane mask
    nuclei_method: str = "auto"  # auto | cellpose | classical
    nuclei_model: str = "nuclei"  # built-in Cellpose name or a model file
    membrane_model: str = "cyto2"


@dataclass
class KnowledgeMaps:
    dab: np.ndarray  # (h, w, 3) uint8
    mask: np.ndarray  # (h, w) uint8
    density: np.ndarray  # (h, w) uint8
    n_nuclei: int = 0


# ---------------------------------------------------------------- the maps
def dab_target(rgb: np.ndarray) -> np.ndarray:
    """K_M: uint8 DAB-only rendering (truncated, as the reference's ``np.array(x * 255, dtype=np.uint8)``)."""
    return (dab_only_rendering(rgb) * 255).astype(np.uint8)


def membrane_mask(rgb: np.ndarray, params: KnowledgeParams = KnowledgeParams()) -> np.ndarray:
    """M: uint8, saturation of the DAB-only rendering > threshold as 0/255, then the Gaussian blur."""
    saturation = rgb2hsv(dab_only_rendering(rgb))[..., 1]
    binary = np.where(saturation > params.saturation_threshold, 255, 0).astype(np.uint8)
    k, s = params.mask_blur_ksize, params.mask_blur_sigma
    return cv2.GaussianBlur(binary, (k, k), s, sigmaY=s) if k > 1 else binary


def hematoxylin_seed(rgb: np.ndarray, params: KnowledgeParams = KnowledgeParams()) -> np.ndarray:
    """uint8 0/255 nuclei map the reference hands to Cellpose: H rescaled to (min, p99), Otsu, holes, dilation."""
    h = skimage_hed(rgb)[..., 0]
    lo, hi = float(h.min()), float(np.percentile(h, params.h_percentile))
    if not hi > lo:  # flat hematoxylin: no nuclei
        return np.zeros(h.shape, np.uint8)
    scaled = rescale_intensity(h, in_range=(lo, hi), out_range=(0, 255))
    binary = scaled > threshold_otsu(scaled)
    if params.hole_area > 1:
        binary = remove_small_holes(binary, max_size=params.hole_area - 1, connectivity=2)
    seed = binary.astype(np.uint8) * 255
    return dilation(seed, disk(params.dilation_radius)) if params.dilation_radius > 0 else seed


def centroids(labels: np.ndarray) -> np.ndarray:
    """(n, 2) int (row, col) centroids of the labelled regions, truncated as the reference's ``int()``."""
    props = regionprops(label(labels))
    return np.array([[int(p.centroid[0]), int(p.centroid[1])] for p in props], dtype=np.int64).reshape(-1, 2)


def density_target(points_rc: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """K_N: unit impulses at the centroids, Gaussian (sigma px, 'nearest' border), min-max to uint8.

    No nuclei, or a map without contrast, gives zeros (the reference divides by zero there).
    """
    impulses = np.zeros(shape, np.float64)
    pts = np.asarray(points_rc, dtype=np.int64).reshape(-1, 2)
    if len(pts):
        np.add.at(impulses, (pts[:, 0], pts[:, 1]), 1.0)
    blurred = gaussian(impulses, sigma=sigma)
    lo, hi = float(blurred.min()), float(blurred.max())
    if not hi > lo:
        return np.zeros(shape, np.uint8)
    return ((blurred - lo) / (hi - lo) * 255).astype(np.uint8)


@dataclass
class Segmenters:
    """The nuclei segmenters that really run (Cellpose or the core's classical fallback)."""

    nuclei: NucleiSegmenter
    membrane: NucleiSegmenter | None
    requested: str = "auto"  # auto | cellpose | classical

    @property
    def label(self) -> str:
        """What ran, e.g. ``cellpose:nuclei + cellpose:cyto2`` or ``classical + classical``."""
        return self.nuclei.method + (f" + {self.membrane.method}" if self.membrane is not None else "")

    @property
    def fallback_reasons(self) -> list[str]:
        """Why Cellpose was asked for ("auto") but the classical method runs; empty when classical was chosen."""
        if self.requested != "auto":
            return []
        segs = [self.nuclei] + ([self.membrane] if self.membrane is not None else [])
        return [s.fallback_reason for s in segs if s.cellpose is None and s.fallback_reason]


def load_segmenters(params: KnowledgeParams, gpu: bool = False) -> Segmenters:
    nuclei = make_segmenter(params.nuclei_method, params.nuclei_model, gpu=gpu)
    membrane = (
        make_segmenter(params.nuclei_method, params.membrane_model, gpu=gpu)
        if params.membrane_nuclei
        else None
    )
    return Segmenters(nuclei, membrane, params.nuclei_method)


def compute_maps(rgb: np.ndarray, params: KnowledgeParams, segmenters: Segmenters) -> KnowledgeMaps:
    """All three maps of one IHC image (RGB uint8)."""
    dab = dab_target(rgb)
    mask = membrane_mask(rgb, params)
    seed = hematoxylin_seed(rgb, params)
    d = params.cellpose_diameter
    points = [centroids(segmenters.nuclei(seed.astype(np.float32) / 255.0, d))] if seed.any() else []
    if segmenters.membrane is not None and mask.any():
        points.append(centroids(segmenters.membrane(mask.astype(np.float32) / 255.0, d)))
    pts = np.concatenate(points) if points else np.zeros((0, 2), np.int64)
    density = density_target(pts, (rgb.shape[0], rgb.shape[1]), params.nuclei_sigma)
    return KnowledgeMaps(dab, mask, density, len(pts))


# ---------------------------------------------------------------- the cache
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_identity(model: str) -> str:
    """A built-in name as is; a model file by its content hash (a retrained file is a new model)."""
    path = Path(os.path.expanduser(model))
    return f"file:{file_sha256(path)}" if path.is_file() else model


class KnowledgeCache:
    """One ``.npz`` per (image content, parameters, methods that ran); ``computed`` / ``loaded`` count work.

    An entry that cannot be read, or whose recorded image hash, parameters or shape do not match, is
    recomputed and replaced (``rejected`` counts them), never trusted.
    """

    def __init__(self, folder: Path, params: KnowledgeParams, segmenters_label: str) -> None:
        self.folder = Path(folder)
        self.params = params
        self.segmenters_label = segmenters_label
        ident = asdict(params)
        ident["nuclei_model"] = _model_identity(params.nuclei_model)
        ident["membrane_model"] = _model_identity(params.membrane_model)
        self.fingerprint = json.dumps(
            {"format": FORMAT_VERSION, "params": ident, "methods": segmenters_label}, sort_keys=True
        )
        self.computed = 0
        self.loaded = 0
        self.rejected = 0
        self.fallback_reasons: list[str] = []

    def entry_path(self, image_sha: str) -> Path:
        key = hashlib.sha256((image_sha + "\n" + self.fingerprint).encode()).hexdigest()
        return self.folder / f"{key}.npz"

    def read(self, path: Path, image_sha: str, shape: tuple[int, int] | None = None) -> KnowledgeMaps | None:
        """The entry's maps, or None when it is missing, unreadable or not what it claims to be."""
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                maps = KnowledgeMaps(z["dab"], z["mask"], z["density"], int(meta["n_nuclei"]))
        except Exception as exc:  # truncated zip, missing keys, bad JSON...
            log.warning("knowledge cache entry %s is unreadable (%s): recomputing", path, exc)
            return None
        h, w = maps.mask.shape[:2] if maps.mask.ndim == 2 else (-1, -1)
        ok = (
            meta.get("image_sha256") == image_sha
            and meta.get("fingerprint") == self.fingerprint
            and maps.dab.dtype == np.uint8
            and maps.dab.shape == (h, w, 3)
            and maps.density.shape == (h, w)
            and (shape is None or (h, w) == tuple(shape))
        )
        if not ok:
            log.warning("knowledge cache entry %s does not match its image or parameters: recomputing", path)
            return None
        return maps

    def write(self, path: Path, image_sha: str, maps: KnowledgeMaps) -> None:
        meta = {
            "image_sha256": image_sha,
            "fingerprint": self.fingerprint,
            "methods": self.segmenters_label,
            "n_nuclei": maps.n_nuclei,
        }
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                np.savez(
                    f, dab=maps.dab, mask=maps.mask, density=maps.density, meta=np.array(json.dumps(meta))
                )
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise KnowledgeCacheError(
                f"cannot write the knowledge cache in {self.folder} ({exc.strerror or exc}); "
                "name a writable folder with --set tdkstain.cache_dir=DIR"
            ) from exc

    def write_metadata(self, extra: dict[str, Any]) -> None:
        """``knowledge.json``: parameters and the methods that ran (a read-only folder is left as is)."""
        info = {"format": FORMAT_VERSION, "params": asdict(self.params), "methods": self.segmenters_label}
        info.update(extra)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "knowledge.json").write_text(json.dumps(info, indent=2))
        except OSError as exc:
            log.warning("cannot write %s: %s", self.folder / "knowledge.json", exc)


def prepare_knowledge(
    targets: Iterable[Path],
    folder: Path,
    params: KnowledgeParams,
    segmenters: Segmenters | None = None,
    progress: bool = True,
) -> tuple[list[Path], KnowledgeCache]:
    """Make sure every target image has a valid cache entry; returns the entries (in order) and the cache.

    The segmenters are resolved first (``segmenters`` overrides, for tests): the method that runs is part of
    the key, so weights that appear later make new entries instead of silently reusing classical ones.
    """
    segs = segmenters if segmenters is not None else load_segmenters(params)
    cache = KnowledgeCache(folder, params, segs.label)
    cache.fallback_reasons = segs.fallback_reasons
    targets = list(targets)
    entries: list[Path] = []
    for path in tqdm(targets, desc="knowledge maps", unit="img", disable=not progress):
        sha = file_sha256(path)
        entry = cache.entry_path(sha)
        if entry.exists() and not entry.is_file():
            raise KnowledgeCacheError(
                f"{entry} is a folder, not a knowledge cache entry (of {path.name}); remove it or name "
                "another folder with --set tdkstain.cache_dir=DIR"
            )
        if entry.is_file() and cache.read(entry, sha) is not None:
            cache.loaded += 1
        else:
            if entry.is_file():
                cache.rejected += 1
            rgb = read_rgb(path)
            if rgb.shape[0] < 1 or rgb.shape[1] < 1:
                raise DatasetError(f"empty image {path}")
            cache.write(entry, sha, compute_maps(rgb, params, segs))
            cache.computed += 1
        entries.append(entry)
    cache.write_metadata(
        {
            "fallback_reasons": segs.fallback_reasons,
            "images": len(entries),
            "last_run": {"computed": cache.computed, "loaded": cache.loaded, "rejected": cache.rejected},
        }
    )
    return entries, cache


def load_entry(path: Path) -> KnowledgeMaps:
    """Read a prepared entry (no checks: :func:`prepare_knowledge` validated it)."""
    with np.load(path, allow_pickle=False) as z:
        return KnowledgeMaps(z["dab"], z["mask"], z["density"])


# ---------------------------------------------------------------- the training dataset
class KnowledgePairDataset(ImagePairDataset):
    """Paired images plus their knowledge maps, every map cropped and flipped exactly as the IHC image.

    Items: ``A``, ``B``, ``dab`` (K_M) in [-1, 1]; ``mask`` (M) and ``density`` (K_N), one channel, in
    [0, 1] (the reference reads them as greyscale PNGs through ``ToTensor``).
    """

    def __init__(
        self,
        pairs: list[Pair],
        augment: Augment,
        seed: int,
        entries: list[Path],
        multiple: int = 1,
        min_size: int = 1,
    ) -> None:
        super().__init__(pairs, augment, seed)
        if self.unpaired or len(entries) != len(self.sources):
            raise DatasetError("TDKstain learns from registered pairs, one knowledge entry per IHC image")
        self.entries = entries
        self.multiple, self.min_size = multiple, min_size

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        pair = self.sources[index]
        assert pair.target is not None
        a, b = read_rgb(pair.source), read_rgb(pair.target)
        maps = load_entry(self.entries[index])
        if a.shape != b.shape or maps.mask.shape != b.shape[:2]:
            raise DatasetError(
                f"size mismatch in pair {pair.name}: H&E {a.shape}, IHC {b.shape}, maps {maps.mask.shape}"
            )
        stacked = np.concatenate([b, maps.dab, maps.mask[..., None], maps.density[..., None]], axis=2)
        a, stacked = self.augment(a, stacked, rng)
        assert stacked is not None
        h, w = a.shape[:2]
        if h % self.multiple or w % self.multiple or min(h, w) < self.min_size:
            raise DatasetError(
                f"{pair.name}: the network sees {w}x{h} px; it needs sides that are multiples of "
                f"{self.multiple} and at least {self.min_size} px (crop with data.preprocess=crop)"
            )
        unit = torch.from_numpy(np.ascontiguousarray(stacked[..., 6:8])).permute(2, 0, 1).float().div_(255.0)
        return {
            "A": to_tensor(a),
            "B": to_tensor(stacked[..., :3]),
            "dab": to_tensor(stacked[..., 3:6]),
            "mask": unit[0:1],
            "density": unit[1:2],
            "index": index,
            "label": pair.label or "",
        }
