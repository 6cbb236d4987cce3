"""Virtual vs real IHC over a registered region: DAB overlap, DAB fractions, nuclei density, HER2 per tile.

Both images go through the same core functions the overlays use (``stain.deconvolve``, ``stain.dab_bins``,
``nuclei.segment_classical``, ``stain.measure_cells`` / ``stain.categorize``), tile by tile, so memory is
bounded by one tile pair whatever the slide. The real IHC is read through the registration transform
(:meth:`SlideTransform.resample`), i.e. in the virtual (= H&E) frame.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..nuclei.classical import segment_classical
from ..slides.base import Slide
from ..stain.deconvolution import deconvolve, hdab_matrix
from ..stain.her2 import Her2Rules, categorize, measure_cells
from ..stain.markers import COMPARTMENT
from ..stain.membrane import DabBins, dab_bins
from .features import density, tissue
from .transform import SlideTransform

#: µm/px assumed when neither the option nor the slide gives one (the plugin's 20x default).
ASSUMED_MPP = 0.5
COLUMNS = (
    "row",
    "col",
    "x",
    "y",
    "w",
    "h",
    "tissue_fraction",
    "dab_dice",
    "dab_iou",
    "dab_fraction_virtual",
    "dab_fraction_real",
    "dab_fraction_diff",
    "nuclei_per_mm2_virtual",
    "nuclei_per_mm2_real",
    "nuclei_density_diff",
    "her2_virtual",
    "her2_real",
    "positive_ratio_virtual",
    "positive_ratio_real",
    "positive_ratio_diff",
)


def dab_positive(rgb: np.ndarray, bins: DabBins | None = None) -> np.ndarray:
    """DAB-positive pixels: DAB OD in the weak bin or above (the overlay's bins)."""
    dab = deconvolve(rgb, hdab_matrix())["dab"]
    return dab_bins(dab, bins) >= 1


def dice_iou(a: np.ndarray, b: np.ndarray, within: np.ndarray | None = None) -> tuple[float, float]:
    """Dice and IoU of two masks (inside ``within``); both empty counts as perfect agreement (1, 1)."""
    if within is not None:
        a, b = a & within, b & within
    inter = int(np.count_nonzero(a & b))
    sa, sb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    if sa + sb == 0:
        return 1.0, 1.0
    return 2.0 * inter / (sa + sb), inter / (sa + sb - inter)


@dataclass
class ComparisonSettings:
    tile_px: int = 512  # output px per tile side
    downsample: float = 1.0  # fixed level-0 px per output px
    mpp: float | None = None  # µm/px of the fixed level 0 (else the slide's, else ASSUMED_MPP)
    bins: DabBins = field(default_factory=DabBins)
    diameter_um: float = 7.0
    min_tissue: float = 0.05  # tiles with less tissue (in both) are skipped
    marker: str = "her2"  # her2 (membrane) | ki67 / er / pr (nuclear: nuclei found on H + DAB)

    def __post_init__(self) -> None:
        if self.tile_px < 32 or self.downsample < 1 or self.diameter_um <= 0:
            raise ValueError("tile_px >= 32, downsample >= 1 and diameter_um > 0")
        if self.marker not in COMPARTMENT:
            raise ValueError(f"marker must be one of {', '.join(COMPARTMENT)}, not {self.marker!r}")


@dataclass
class Comparison:
    rows: list[dict[str, Any]]
    grid: tuple[int, int]  # tile rows, cols
    region: tuple[int, int, int, int]
    settings: ComparisonSettings
    mpp: float
    mpp_assumed: bool
    dab_intersection: int = 0
    dab_virtual: int = 0
    dab_real: int = 0

    @property
    def dice(self) -> float:
        s = self.dab_virtual + self.dab_real
        return 1.0 if s == 0 else 2.0 * self.dab_intersection / s

    @property
    def iou(self) -> float:
        u = self.dab_virtual + self.dab_real - self.dab_intersection
        return 1.0 if u == 0 else self.dab_intersection / u

    def tile_map(self, column: str) -> np.ndarray:
        """(rows, cols) float map of one per-tile column (NaN where the tile was skipped)."""
        out = np.full(self.grid, np.nan, np.float32)
        for r in self.rows:
            v = r[column]
            out[r["row"], r["col"]] = np.nan if v is None else float(v)
        return out

    def summary(self) -> dict[str, Any]:
        used = [r for r in self.rows if r["dab_dice"] is not None]
        fr_diff = [abs(r["dab_fraction_diff"]) for r in used]
        dens = [abs(r["nuclei_density_diff"]) for r in used]
        her2 = [(r["her2_virtual"], r["her2_real"]) for r in used if r["her2_virtual"] is not None]
        agree = [a == b for a, b in her2 if a >= 0 and b >= 0]
        ratios = [r for r in used if r["positive_ratio_diff"] is not None]
        return {
            "region_level0": list(self.region),
            "downsample": self.settings.downsample,
            "mpp": self.mpp,
            "mpp_assumed": self.mpp_assumed,
            "tiles_compared": len(used),
            "tiles_total": len(self.rows),
            "dab_dice": self.dice,
            "dab_iou": self.iou,
            "dab_fraction_abs_diff_mean": float(np.mean(fr_diff)) if fr_diff else None,
            "nuclei_density_abs_diff_mean": float(np.mean(dens)) if dens else None,
            "her2_tile_agreement": float(np.mean(agree)) if agree else None,
            "her2_tiles_with_cells": len(agree),
            "marker": self.settings.marker,
            # the seed paper's metric for nuclear markers: positive cells / all cells, per tile
            "positive_ratio_virtual_mean": _mean([r["positive_ratio_virtual"] for r in ratios]),
            "positive_ratio_real_mean": _mean([r["positive_ratio_real"] for r in ratios]),
            "positive_ratio_abs_diff_mean": _mean([abs(r["positive_ratio_diff"]) for r in ratios]),
            "positive_ratio_tiles": len(ratios),
            "dab_cutoffs_od": list(self.settings.bins.cutoffs),
            "note": "HER2 categories are estimates for comparison, not a diagnosis; DAB cut-offs uncalibrated",
        }


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _tile_measures(
    virtual: np.ndarray, real: np.ndarray, mpp_out: float, s: ComparisonSettings
) -> dict[str, Any] | None:
    tis = tissue(density(virtual)) | tissue(density(real))
    frac = float(tis.mean())
    if frac < s.min_tissue:
        return None
    rules = Her2Rules(bins=s.bins)
    out: dict[str, Any] = {"tissue_fraction": frac}
    masks, dens, her2, ratio = [], [], [], []
    compartment = COMPARTMENT[s.marker]
    area_mm2 = tis.sum() * (mpp_out * 1e-3) ** 2
    for rgb in (virtual, real):
        st = deconvolve(rgb, hdab_matrix())
        pos = dab_bins(st["dab"], s.bins) >= 1
        masks.append(pos & tis)
        nuc = segment_classical(
            st["hematoxylin"], s.diameter_um / mpp_out, dab_od=st["dab"], dab_compartment=compartment
        )
        nuc = np.where(tis, nuc, 0)
        n_nuclei = len(np.unique(nuc)) - (1 if (nuc == 0).any() else 0)
        dens.append(n_nuclei / area_mm2 if area_mm2 > 0 else 0.0)
        cells = measure_cells(nuc, st["dab"], mpp_out, rules)
        her2.append(categorize(cells.cell_class, cells.intensity_bin, rules).code if len(cells) else -1)
        ratio.append(float((cells.nuclear_dab_od >= s.bins.weak).mean()) if len(cells) else None)
    d, j = dice_iou(masks[0], masks[1])
    fv, fr = float(masks[0].sum() / tis.sum()), float(masks[1].sum() / tis.sum())
    out.update(
        dab_dice=d,
        dab_iou=j,
        dab_fraction_virtual=fv,
        dab_fraction_real=fr,
        dab_fraction_diff=fv - fr,
        nuclei_per_mm2_virtual=dens[0],
        nuclei_per_mm2_real=dens[1],
        nuclei_density_diff=dens[0] - dens[1],
        her2_virtual=her2[0],
        her2_real=her2[1],
        positive_ratio_virtual=ratio[0],
        positive_ratio_real=ratio[1],
        positive_ratio_diff=None if None in ratio else ratio[0] - ratio[1],  # type: ignore[operator]
        _counts=(int((masks[0] & masks[1]).sum()), int(masks[0].sum()), int(masks[1].sum())),
    )
    return out


def iter_comparison(
    virtual: Slide,
    real: Slide,
    transform: SlideTransform | None,
    settings: ComparisonSettings | None = None,
    region: tuple[int, int, int, int] | None = None,
    cancel: threading.Event | None = None,
) -> Generator[tuple[int, int], None, Comparison]:
    """Compare ``virtual`` (in the fixed frame) with ``real`` seen through ``transform`` (``None``: the two
    are already aligned pixel for pixel) tile by tile; yields (done, total), returns the :class:`Comparison`."""
    s = settings or ComparisonSettings()
    if s.mpp is not None:
        mpp, assumed = float(s.mpp), False
    elif virtual.mpp is not None:
        mpp, assumed = float(sum(virtual.mpp) / 2), False
    else:
        mpp, assumed = ASSUMED_MPP, True
    W, H = virtual.dimensions
    bx, by, bw, bh = region or (0, 0, W, H)
    step = s.tile_px * s.downsample  # level-0 px per tile
    cols, rows_n = max(1, math.ceil(bw / step)), max(1, math.ceil(bh / step))
    out_rows: list[dict[str, Any]] = []
    counts = np.zeros(3, np.int64)
    level = virtual.best_level_for_downsample(s.downsample)
    total = rows_n * cols
    for k in range(total):
        if cancel is not None and cancel.is_set():
            break
        r, c = divmod(k, cols)
        x, y = bx + round(c * step), by + round(r * step)
        w, h = min(round(step), bx + bw - x), min(round(step), by + bh - y)
        row: dict[str, Any] = {name: None for name in COLUMNS}
        row.update(row=r, col=c, x=x, y=y, w=w, h=h)
        ow, oh = max(1, math.ceil(w / s.downsample)), max(1, math.ceil(h / s.downsample))
        v = _read(virtual, (x, y, w, h), s.downsample, level)[:oh, :ow]
        if transform is None:
            re = _read(real, (x, y, w, h), s.downsample, real.best_level_for_downsample(s.downsample))[
                :oh, :ow
            ]
        else:
            re = transform.resample(real, (x, y, w, h), s.downsample)
        m = _tile_measures(v, re, mpp * s.downsample, s)
        if m is not None:
            counts += m.pop("_counts")
            row.update(m)
        out_rows.append(row)
        yield k + 1, total
    return Comparison(out_rows, (rows_n, cols), (bx, by, bw, bh), s, mpp, assumed, *map(int, counts))


def compare(
    virtual: Slide,
    real: Slide,
    transform: SlideTransform | None,
    settings: ComparisonSettings | None = None,
    region: tuple[int, int, int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Comparison:
    steps = iter_comparison(virtual, real, transform, settings, region)
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)


def _read(slide: Slide, rect: tuple[int, int, int, int], downsample: float, level: int) -> np.ndarray:
    """``rect`` (level-0) at ``downsample`` px per output px, from ``level`` then resized if needed."""
    x, y, w, h = rect
    lds = float(slide.level_downsamples[level])
    lw, lh = max(1, math.ceil(w / lds)), max(1, math.ceil(h / lds))
    px = slide.read_region((x, y), level, (lw, lh))
    ow, oh = max(1, math.ceil(w / downsample)), max(1, math.ceil(h / downsample))
    if (lw, lh) == (ow, oh):
        return px
    from skimage.transform import resize

    return np.clip(resize(px, (oh, ow), order=1, anti_aliasing=True, preserve_range=True), 0, 255).astype(
        np.uint8
    )
