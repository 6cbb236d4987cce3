"""Registered H&E / IHC tile pairs for training, in the paired folder layout ``virtual-ihc-train fit
--paired HE_DIR IHC_DIR`` reads (same file names, same sizes in both folders).

A tile is kept only when both sides hold enough tissue and the local alignment is good: the correlation of
the two hematoxylin images inside the tile's tissue (the global quality measure, per tile). Every tile's
figures, kept or not and why, go to ``tiles.csv``; with landmarks, each tile's local rTRE too.
"""

from __future__ import annotations

import csv
import math
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..slides.base import Slide
from .compare import _read
from .features import density, structure, tissue
from .landmarks import rtre
from .transform import SlideTransform

CSV_COLUMNS = (
    "name",
    "x",
    "y",
    "size_level0",
    "tissue_he",
    "tissue_ihc",
    "local_correlation",
    "landmarks",
    "local_rtre_median",
    "kept",
    "reason",
)


@dataclass
class PairSettings:
    size: int = 1024  # output px per tile side (BCI: 1024)
    downsample: float = 1.0  # fixed level-0 px per output px (from the wanted µm/px)
    min_tissue: float = 0.5  # tissue share needed on each side
    min_correlation: float = 0.3  # local hematoxylin correlation needed
    stride: int | None = None  # output px between tiles (default: size, no overlap)
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.size < 16 or self.downsample <= 0 or not 0 <= self.min_tissue <= 1:
            raise ValueError("size >= 16 px, downsample > 0, min_tissue in [0, 1]")


def local_correlation(he: np.ndarray, ihc: np.ndarray) -> tuple[float, float, float]:
    """(hematoxylin correlation inside the union of tissue, tissue share H&E, tissue share IHC)."""
    th, ti = tissue(density(he)), tissue(density(ihc))
    union = th | ti
    a, b = structure(he)[union].astype(np.float64), structure(ihc)[union].astype(np.float64)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.size > 10 and a.std() > 0 and b.std() > 0 else 0.0
    return corr, float(th.mean()), float(ti.mean())


def iter_pairs(
    fixed: Slide,
    moving: Slide,
    transform: SlideTransform,
    out: Path,
    settings: PairSettings,
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    cancel: threading.Event | None = None,
) -> Generator[tuple[int, int], None, list[dict[str, Any]]]:
    """Write ``out/HE/<name>.png`` and ``out/IHC/<name>.png`` for each kept tile and ``out/tiles.csv``;
    yields (done, total); returns the rows. ``landmarks``: (fixed points, moving points), index-matched."""
    s = settings
    he_dir, ihc_dir = out / "HE", out / "IHC"
    he_dir.mkdir(parents=True, exist_ok=True)
    ihc_dir.mkdir(parents=True, exist_ok=True)
    W, H = fixed.dimensions
    side0 = s.size * s.downsample
    stride0 = (s.stride or s.size) * s.downsample
    xs = np.arange(0, max(W - side0, 0) + 1, stride0)
    ys = np.arange(0, max(H - side0, 0) + 1, stride0)
    errors = fixed_pts = None
    if landmarks is not None:
        fixed_pts, moving_pts = landmarks
        n = min(len(fixed_pts), len(moving_pts))
        fixed_pts = fixed_pts[:n]
        errors = rtre(transform.moving_to_fixed(moving_pts[:n]), fixed_pts, fixed.dimensions)
    level = fixed.best_level_for_downsample(s.downsample)
    rows: list[dict[str, Any]] = []
    total = len(xs) * len(ys)
    for k, (y, x) in enumerate((y, x) for y in ys for x in xs):
        if cancel is not None and cancel.is_set():
            break
        rect = (round(x), round(y), round(side0), round(side0))
        he = _read(fixed, rect, s.downsample, level)[: s.size, : s.size]
        ihc = transform.resample(moving, rect, s.downsample)[: s.size, : s.size]
        corr, t_he, t_ihc = local_correlation(he, ihc)
        name = f"{s.prefix}x{rect[0]:06d}_y{rect[1]:06d}"
        row: dict[str, Any] = {
            "name": name,
            "x": rect[0],
            "y": rect[1],
            "size_level0": rect[2],
            "tissue_he": t_he,
            "tissue_ihc": t_ihc,
            "local_correlation": corr,
            "landmarks": 0,
            "local_rtre_median": None,
        }
        if errors is not None and fixed_pts is not None:
            inside = (
                (fixed_pts[:, 0] >= x)
                & (fixed_pts[:, 0] < x + side0)
                & (fixed_pts[:, 1] >= y)
                & (fixed_pts[:, 1] < y + side0)
            )
            row["landmarks"] = int(inside.sum())
            row["local_rtre_median"] = float(np.median(errors[inside])) if inside.any() else None
        reasons = []
        if min(t_he, t_ihc) < s.min_tissue:
            reasons.append(f"tissue {min(t_he, t_ihc):.2f} < {s.min_tissue}")
        if corr < s.min_correlation:
            reasons.append(f"local correlation {corr:.2f} < {s.min_correlation}")
        row["kept"] = not reasons
        row["reason"] = "; ".join(reasons)
        if not reasons:
            Image.fromarray(he).save(he_dir / f"{name}.png")
            Image.fromarray(ihc).save(ihc_dir / f"{name}.png")
        rows.append(row)
        yield k + 1, total
    with (out / "tiles.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow(
                {
                    c: ("" if r[c] is None else (f"{r[c]:.5g}" if isinstance(r[c], float) else r[c]))
                    for c in CSV_COLUMNS
                }
            )
    return rows


def summarize(rows: list[dict[str, Any]], settings: PairSettings) -> dict[str, Any]:
    kept = [r for r in rows if r["kept"]]
    loc = [r["local_rtre_median"] for r in kept if r["local_rtre_median"] is not None]
    return {
        "tiles": len(rows),
        "kept": len(kept),
        "size_px": settings.size,
        "downsample": settings.downsample,
        "min_tissue": settings.min_tissue,
        "min_correlation": settings.min_correlation,
        "kept_local_correlation_median": float(np.median([r["local_correlation"] for r in kept]))
        if kept
        else None,
        "kept_local_rtre_median": float(np.median(loc)) if loc else None,
        "kept_tiles_with_landmarks": len(loc),
    }


def downsample_for(fixed: Slide, mpp: float | None, downsample: float | None) -> float:
    """Fixed level-0 px per output px from the wanted µm/px (needs the slide's) or a given downsample."""
    if downsample is not None:
        return float(downsample)
    if mpp is None:
        return 1.0
    if fixed.mpp is None:
        raise ValueError(
            "the H&E slide records no pixel size, so µm/px cannot be converted: give --downsample instead"
        )
    return (
        float(mpp) / (sum(fixed.mpp) / 2) if not math.isclose(mpp, sum(fixed.mpp) / 2, rel_tol=0.02) else 1.0
    )
