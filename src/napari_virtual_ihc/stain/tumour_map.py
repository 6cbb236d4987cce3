"""Tumour map from the trainer's MIL tumour classifier, used as the tumour region of an IHC (issue 32 item 3).

``virtual-ihc-train mil`` writes the classifier in the core's format (``models.classifier``: a ResNet-34
``.safetensors`` whose JSON header gives ``tile``, ``width``, ``classes``, ``min_tissue`` and, when the
trainer was told, ``mpp``: the µm/px of the tiles it learnt from). The map is what MIL scores: P(tumour) of
every ``tile`` square of the H&E at that resolution (glass tiles, below ``min_tissue``, are not scored and
are not tumour); tumour = P >= the threshold. The map is made on the H&E the IHC came from and read on the
IHC through a point map:

- a virtual IHC (a store the engine wrote): its source slide, recorded in the store, store px x the
  store's ``level0_downsample``;
- a real IHC: the H&E it was registered to and the saved transform (``registration.SlideTransform``, fixed
  = H&E, moving = IHC); the files are checked against the transform's fingerprints;
- an IHC of exactly the H&E's size with no transform (the same section restained): the same pixels, said so.

Only the H&E under the analysed IHC is scored. The core owns the format; the trainer only writes it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..slides.base import Slide
from .regions import PointMap, RegionError, TumourRegion

MIL_THRESHOLD = 0.5  # P(tumour) from which a tile is tumour (the classifier's own decision, classify())
DEFAULT_TILE = 224  # the paper's tile, when a header does not say
DEFAULT_MIN_TISSUE = 0.25  # the trainer's default, when a header does not say
BORDER_SAMPLES = 64  # points per side of the IHC mapped onto the H&E to find the area to score

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class TumourMap:
    """P(tumour) per classifier tile of the H&E (NaN: glass, not scored), placed in H&E level-0 pixels."""

    probability: np.ndarray  # float32 (rows, cols)
    tile_level0: float  # H&E level-0 px per map cell (one classifier tile)
    origin: tuple[float, float]  # H&E level-0 (row, col) of the map's top-left corner
    threshold: float
    model: str  # the classifier's file name
    model_sha256: str
    he: str  # the H&E it was run on
    read_mpp: float | None  # µm/px the classifier read at (None: the H&E's level 0, scale unknown)
    notes: tuple[str, ...] = ()

    @property
    def scored(self) -> np.ndarray:
        return ~np.isnan(self.probability)

    @property
    def mask(self) -> np.ndarray:
        """Tumour tiles: scored (tissue) and P(tumour) >= threshold."""
        return self.scored & (np.nan_to_num(self.probability, nan=0.0) >= self.threshold)

    def describe(self) -> str:
        return (
            f"tumour map from MIL model {self.model} at threshold {self.threshold:g} "
            f"({int(self.mask.sum())} of {int(self.scored.sum())} tissue tiles of {Path(self.he).name})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "mil_tumour_map",
            "model": self.model,
            "model_sha256": self.model_sha256,
            "threshold": self.threshold,
            "he": self.he,
            "tile_level0_px": self.tile_level0,
            "read_mpp": self.read_mpp,
            "tiles_scored": int(self.scored.sum()),
            "tiles_tumour": int(self.mask.sum()),
            "notes": list(self.notes),
        }

    def region(self, point_map: PointMap | None = None, mapping: str = "") -> TumourRegion:
        """The map as the tumour region of an image whose level-0 (row, col) ``point_map`` takes onto the
        H&E (None: the same pixels)."""
        return TumourRegion(
            source=f"MIL {self.model}",
            mask=self.mask,
            mask_scale=(self.tile_level0, self.tile_level0),
            mask_origin=self.origin,
            point_map=point_map,
            description=self.describe(),
            record={**self.as_dict(), "mapping": mapping},
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tumour_map(
    he: Slide,
    classifier: str | Path,
    *,
    threshold: float = MIL_THRESHOLD,
    bounds: tuple[int, int, int, int] | None = None,
    classifier_mpp: float | None = None,
    device: str = "cpu",
    batch: int = 32,
    progress: Progress | None = None,
) -> TumourMap:
    """Score the H&E's ``bounds`` (level-0 x, y, w, h; the whole slide by default) tile by tile.

    The classifier reads at its header's ``mpp`` (or ``classifier_mpp``); when that or the H&E's µm/px is
    unknown it reads the H&E's level 0 as it is, and the notes say so. Tiles sit on a grid from the slide's
    origin, so the map of a part is the same as the whole map's part.
    """
    import torch

    from ..inference.tissue import tissue_mask
    from ..models.classifier import load_classifier, read_classifier_header, tumour_probability
    from ..models.errors import CorruptCheckpointError

    if not 0.0 <= threshold <= 1.0 or not math.isfinite(threshold):
        raise ValueError(f"the MIL threshold must be between 0 and 1, not {threshold}")
    path = Path(classifier)
    header = read_classifier_header(path)  # a clear error for a missing file or another kind of file
    try:
        model = load_classifier(path, device)
    except RuntimeError as e:  # weights that do not fit the header's network
        raise CorruptCheckpointError(f"{path}: its weights do not fit its header ({e})") from e
    tile = int(header.get("tile", DEFAULT_TILE))
    min_tissue = float(header.get("min_tissue", DEFAULT_MIN_TISSUE))
    notes: list[str] = []
    read_mpp = classifier_mpp if classifier_mpp is not None else header.get("mpp")
    he_mpp = float(sum(he.mpp) / 2) if he.mpp is not None else None
    if read_mpp is not None and he_mpp is not None:
        f = float(read_mpp) / he_mpp
    else:
        f = 1.0
        why = "the classifier records no µm/px" if read_mpp is None else "the H&E records no µm/px"
        notes.append(f"{why}: the classifier read the H&E's level 0 as it is")
        read_mpp = he_mpp if read_mpp is None else None
    t0 = tile * f  # H&E level-0 px per classifier tile
    W, H = he.dimensions
    bx, by, bw, bh = bounds or (0, 0, W, H)
    c0, r0 = max(math.floor(bx / t0), 0), max(math.floor(by / t0), 0)
    c1, r1 = (
        min(math.ceil((bx + bw) / t0), math.ceil(W / t0)),
        min(math.ceil((by + bh) / t0), math.ceil(H / t0)),
    )
    rows, cols = max(r1 - r0, 0), max(c1 - c0, 0)
    prob = np.full((rows, cols), np.nan, np.float32)
    level = he.best_level_for_downsample(f)
    lds = float(he.level_downsamples[level])
    side = max(round(t0 / lds), 1)
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    done = 0
    for start in range(0, len(cells), batch):
        part = cells[start : start + batch]
        crops, where = [], []
        for r, c in part:
            x, y = round((c0 + c) * t0), round((r0 + r) * t0)
            rgb = he.read_region((x, y), level, (side, side))
            if side != tile:
                from skimage.transform import resize

                rgb = (
                    resize(rgb, (tile, tile), anti_aliasing=side > tile, preserve_range=True) + 0.5
                ).astype(np.uint8)
            if tissue_mask(rgb).mean() >= min_tissue:
                crops.append(rgb)
                where.append((r, c))
        if crops:
            x_in = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
            with torch.no_grad():
                p = tumour_probability(model, x_in.to(device)).cpu().numpy()
            for (r, c), v in zip(where, p, strict=True):
                prob[r, c] = v
        done += len(part)
        if progress is not None:
            progress(done, len(cells))
    if not np.isfinite(prob).any():
        notes.append("no tile of the H&E under the image holds tissue: the tumour map is empty")
    return TumourMap(
        probability=prob,
        tile_level0=t0,
        origin=(r0 * t0, c0 * t0),
        threshold=float(threshold),
        model=path.name,
        model_sha256=_sha256(path),
        he=str(Path(he.path).resolve()) if he.path else "(in memory)",
        read_mpp=None if read_mpp is None else float(read_mpp),
        notes=tuple(notes),
    )


# --- where the H&E is, seen from the IHC ---------------------------------------------------------------
@dataclass(frozen=True)
class HeSource:
    """The H&E a tumour map is made on, and how the IHC's level-0 (row, col) reach it."""

    path: Path
    point_map: PointMap | None
    mapping: str  # said in summary.json


def scaled_point_map(d: float) -> PointMap:
    """Store px -> source px of a virtual IHC written at ``d`` source px per store px (pixel centres)."""

    def to_he(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return y * d + (d - 1) / 2, x * d + (d - 1) / 2

    return to_he


def transform_point_map(transform: Any) -> PointMap:
    """IHC (the transform's moving slide) level-0 (row, col) -> H&E (fixed) level-0 (row, col)."""

    def to_he(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xy = transform.moving_to_fixed(np.stack([x.ravel(), y.ravel()], axis=1))
        return xy[:, 1].reshape(y.shape), xy[:, 0].reshape(x.shape)

    return to_he


def find_he(
    ihc_path: str | Path,
    ihc_dimensions: tuple[int, int],
    he: str | Path | None = None,
    transform: str | Path | None = None,
) -> HeSource:
    """Which H&E the IHC came from and how to reach it (see the module); a RegionError says what to give."""
    from ..ihc_store import read_store_provenance, same_source, source_identity
    from ..slides import open_slide

    ihc_path = Path(ihc_path)
    if transform is not None:
        from ..registration import RegistrationError, load_transform

        if he is None:
            raise RegionError("a registration transform needs the H&E it was registered to (--mil-he)")
        try:
            t = load_transform(transform, he, ihc_path)
        except RegistrationError as e:
            raise RegionError(str(e)) from e
        if tuple(t.moving.dimensions) != tuple(ihc_dimensions):
            raise RegionError(
                f"the transform {Path(transform).name} maps a {t.moving.dimensions[0]} x "
                f"{t.moving.dimensions[1]} px moving slide ({t.moving.name}), not this "
                f"{ihc_dimensions[0]} x {ihc_dimensions[1]} px IHC: register this IHC onto its H&E"
            )
        return HeSource(
            Path(he), transform_point_map(t), f"registration transform {Path(transform).resolve()}"
        )
    prov = read_store_provenance(ihc_path) if ihc_path.is_dir() else None
    if prov is not None:  # a virtual IHC: its source slide
        recorded = prov.get("source") or {}
        d = float(prov.get("level0_downsample", 1.0) or 1.0)
        where = Path(he) if he is not None else Path(str(recorded.get("path") or ""))
        if not str(recorded.get("path") or "") and he is None:
            raise RegionError(
                f"the virtual IHC {ihc_path.name} records no source slide: give its H&E (--mil-he)"
            )
        if not where.is_file() and not where.is_dir():
            raise RegionError(
                f"the virtual IHC's source slide {where} is not there (moved?): give its H&E (--mil-he)"
            )
        with open_slide(where) as slide:
            if not same_source(recorded, source_identity(slide)):
                raise RegionError(
                    f"{where} is not the slide the virtual IHC {ihc_path.name} was made from "
                    f"({recorded.get('path')}): give that slide"
                )
        return HeSource(
            where, scaled_point_map(d) if d != 1 else None, f"virtual IHC of its source (x {d:g})"
        )
    if he is None:
        raise RegionError(
            "a real IHC needs the H&E it was cut next to (--mil-he) and the registration transform "
            "(--mil-transform, from `virtual-ihc register`); a virtual IHC store finds its source itself"
        )
    with open_slide(he) as slide:
        dims = tuple(slide.dimensions)
    if dims != tuple(ihc_dimensions):
        raise RegionError(
            f"the H&E is {dims[0]} x {dims[1]} px and the IHC {ihc_dimensions[0]} x {ihc_dimensions[1]}: "
            "give the registration transform (--mil-transform) that maps one onto the other"
        )
    return HeSource(Path(he), None, "same pixels (no transform given: the H&E and the IHC taken as aligned)")


def he_bounds(
    source: HeSource, ihc_bounds: tuple[int, int, int, int], he_dimensions: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The H&E area (level-0 x, y, w, h) under the IHC's ``ihc_bounds``: its border mapped, boxed, clipped."""
    x, y, w, h = ihc_bounds
    if source.point_map is None:
        return ihc_bounds
    t = np.linspace(0.0, 1.0, BORDER_SAMPLES)
    xs = np.r_[x + t * w, x + t * w, np.full_like(t, x), np.full_like(t, x + w)]
    ys = np.r_[np.full_like(t, y), np.full_like(t, y + h), y + t * h, y + t * h]
    hy, hx = source.point_map(ys, xs)
    ok = np.isfinite(hx) & np.isfinite(hy)
    W, H = he_dimensions
    x0, y0 = max(math.floor(hx[ok].min(initial=W)), 0), max(math.floor(hy[ok].min(initial=H)), 0)
    x1, y1 = min(math.ceil(hx[ok].max(initial=0)), W), min(math.ceil(hy[ok].max(initial=0)), H)
    if x1 <= x0 or y1 <= y0:
        raise RegionError("the IHC does not lie on the H&E under this mapping: nothing to score")
    return (x0, y0, x1 - x0, y1 - y0)


def mil_region(
    ihc_path: str | Path,
    ihc_dimensions: tuple[int, int],
    classifier: str | Path,
    *,
    he: str | Path | None = None,
    transform: str | Path | None = None,
    threshold: float = MIL_THRESHOLD,
    classifier_mpp: float | None = None,
    ihc_bounds: tuple[int, int, int, int] | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
) -> TumourRegion:
    """The tumour region of an IHC from the MIL classifier run on its H&E (what ``analyze --region-mil``
    does): find the H&E, score the part under the IHC, return the map as a region of the IHC."""
    from ..slides import open_slide

    source = find_he(ihc_path, ihc_dimensions, he, transform)
    with open_slide(source.path) as slide:
        area = he_bounds(source, ihc_bounds or (0, 0, *ihc_dimensions), slide.dimensions)
        tmap = tumour_map(
            slide,
            classifier,
            threshold=threshold,
            bounds=area,
            classifier_mpp=classifier_mpp,
            device=device,
            progress=progress,
        )
    return tmap.region(source.point_map, source.mapping)
