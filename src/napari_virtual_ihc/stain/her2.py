"""HER2 membrane estimate: per-cell rings, completeness and intensity, region category and H-score.

An ESTIMATE for comparing images, not a diagnosis. Rules (ASCO/CAP 2018, reaffirmed 2023; "ultralow" per
the 2023 update/DESTINY-Breast06 usage), with the share of cells counted over all cells found (or those in
the user's regions):
- 3+  : complete, intense (strong) membrane staining in > 10 % of cells
- 2+  : complete weak-to-moderate (or strong) membrane staining in > 10 % of cells (and not 3+)
- 1+  : incomplete faint staining in > 10 % of cells
- 0   : "ultralow" when > 0 and <= 10 % of cells have faint/incomplete staining, "null" when none do.
H-score = 1 x %weak + 2 x %moderate + 3 x %strong cells (0-300), by the cell's ring intensity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import expand_labels

from .membrane import DabBins

CELL_CLASSES = ("none", "incomplete", "complete_weak_moderate", "complete_strong")


@dataclass(frozen=True)
class Her2Rules:
    bins: DabBins = field(default_factory=DabBins)
    ring_um: float = 3.0
    sectors: int = 16
    complete_fraction: float = 0.9  # share of measured sectors above the weak cut-off to call a ring complete
    # fewer measured sectors than this (a nucleus walled in by touching neighbours) count as this many,
    # so a ring seen on one side only is never called complete
    min_measured_sectors: int = 8
    share_cutoff: float = 0.10  # ASCO/CAP "> 10 % of tumour cells"


@dataclass
class CellTable:
    """One row per cell (arrays of equal length); coordinates in pixels of the analysed plane."""

    label: np.ndarray
    y: np.ndarray
    x: np.ndarray
    area_px: np.ndarray
    ring_dab_od: np.ndarray  # membrane: mean over the ring's measured sectors of each sector's peak DAB OD
    completeness: np.ndarray
    intensity_bin: np.ndarray  # 0..3 of the membrane ring
    cell_class: np.ndarray  # index into CELL_CLASSES
    nuclear_dab_od: np.ndarray  # mean DAB OD inside the nucleus (Ki-67, ER, PR)

    def __len__(self) -> int:
        return int(self.label.size)

    @classmethod
    def empty(cls) -> CellTable:
        z = np.zeros(0)
        zi = np.zeros(0, dtype=np.int64)
        return cls(zi, z, z, zi, z, z, zi, zi, z)

    def select(self, keep: np.ndarray) -> CellTable:
        return CellTable(**{k: v[keep] for k, v in self.__dict__.items()})

    @classmethod
    def concat(cls, tables: list[CellTable]) -> CellTable:
        if not tables:
            return cls.empty()
        return cls(**{k: np.concatenate([getattr(t, k) for t in tables]) for k in cls.empty().__dict__})


def classify_cells(
    ring_dab_od: np.ndarray, completeness: np.ndarray, rules: Her2Rules = Her2Rules()
) -> tuple[np.ndarray, np.ndarray]:
    """(intensity bin 0..3, cell class index) from ring intensity and completeness."""
    ibin = np.digitize(ring_dab_od, rules.bins.cutoffs).astype(np.int64)
    complete = completeness >= rules.complete_fraction
    stained = (ibin >= 1) | (completeness > 0)
    cls = np.zeros(ibin.shape, dtype=np.int64)
    cls[stained] = 1
    cls[complete & (ibin >= 1)] = 2
    cls[complete & (ibin >= 3)] = 3
    return ibin, cls


def measure_cells(
    nuclei: np.ndarray, dab_od: np.ndarray, mpp: float, rules: Her2Rules = Her2Rules()
) -> CellTable:
    """Membrane ring per nucleus (``expand_labels`` by ring_um, so neighbours split the space between
    them): its intensity (mean sector peak DAB OD), the share of measured angular sectors whose peak
    exceeds the weak cut-off, and the nucleus's own mean DAB OD."""
    if nuclei.shape != dab_od.shape:
        raise ValueError(f"nuclei {nuclei.shape} and DAB {dab_od.shape} differ in shape")
    ids = np.unique(nuclei)
    ids = ids[ids > 0]
    if ids.size == 0:
        return CellTable.empty()
    dist = max(rules.ring_um / mpp, 1.0)
    cells = expand_labels(nuclei, distance=dist)
    ring = np.where(nuclei == 0, cells, 0)
    cy, cx = (np.asarray(c) for c in zip(*ndi.center_of_mass(np.ones_like(nuclei), nuclei, ids), strict=True))
    area = ndi.sum_labels(np.ones_like(nuclei), nuclei, ids).astype(np.int64)
    # ring pixels -> (cell index, sector)
    rr, cc = np.nonzero(ring)
    lab = ring[rr, cc]
    index = np.searchsorted(ids, lab)
    ang = np.arctan2(rr - cy[index], cc - cx[index])
    sector = ((ang + np.pi) / (2 * np.pi) * rules.sectors).astype(np.int64) % rules.sectors
    # the membrane is a thin line inside the ring: each sector is read at its peak (the ring's own pixels
    # only, so a neighbour's membrane never leaks in), the ring's intensity is the mean peak over the
    # measured sectors
    vals = dab_od[rr, cc].astype(np.float64)
    n = ids.size
    flat = index * rules.sectors + sector
    s_cnt = np.bincount(flat, minlength=n * rules.sectors).reshape(n, rules.sectors)
    s_peak = np.zeros(n * rules.sectors)
    np.maximum.at(s_peak, flat, vals)
    s_peak = s_peak.reshape(n, rules.sectors)
    has = s_cnt > 0
    # a sector without ring pixels faces a touching neighbour's nucleus: no membrane can be measured there,
    # so completeness is the stained share of the sectors that have ring pixels
    n_measured = has.sum(axis=1)
    ring_peak = np.where(n_measured > 0, (s_peak * has).sum(axis=1) / np.maximum(n_measured, 1), 0.0)
    completeness = ((s_peak > rules.bins.weak) & has).sum(axis=1) / np.maximum(
        n_measured, rules.min_measured_sectors
    )
    ibin, cls = classify_cells(ring_peak, completeness, rules)
    nuclear = ndi.mean(dab_od.astype(np.float64), nuclei, ids)
    return CellTable(
        ids.astype(np.int64), cy, cx, area, ring_peak, completeness, ibin, cls, np.asarray(nuclear)
    )


@dataclass(frozen=True)
class Her2Estimate:
    n_cells: int
    shares: dict[str, float]  # per CELL_CLASSES
    category: str  # "0", "1+", "2+", "3+"
    subcategory: str  # "null" / "ultralow" for 0, else ""
    h_score: float
    intensity_shares: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return {
            "n_cells": self.n_cells,
            "category": self.category,
            "subcategory": self.subcategory,
            "label": self.label,
            "cell_shares": self.shares,
            "h_score": self.h_score,
            "intensity_shares": self.intensity_shares,
            "note": "estimate for comparison, not a diagnosis",
        }

    @property
    def label(self) -> str:
        return f"0 ({self.subcategory})" if self.category == "0" else self.category

    @property
    def code(self) -> int:
        """0..3 for maps (0 ultralow/null both 0)."""
        return {"0": 0, "1+": 1, "2+": 2, "3+": 3}[self.category]


def categorize(
    cell_class: np.ndarray, intensity_bin: np.ndarray, rules: Her2Rules = Her2Rules()
) -> Her2Estimate:
    """Region category from per-cell classes (see module docstring for the rules)."""
    n = int(cell_class.size)
    counts = np.bincount(cell_class.astype(np.int64), minlength=4)[:4] if n else np.zeros(4, int)
    shares = counts / max(n, 1)
    cut = rules.share_cutoff
    share3 = shares[3]
    share23 = shares[2] + shares[3]
    share_any = shares[1] + shares[2] + shares[3]
    sub = ""
    if share3 > cut:
        cat = "3+"
    elif share23 > cut:
        cat = "2+"
    elif share_any > cut:
        cat = "1+"
    else:
        cat = "0"
        sub = "ultralow" if share_any > 0 else "null"
    icounts = np.bincount(intensity_bin.astype(np.int64), minlength=4)[:4] if n else np.zeros(4, int)
    ishares = icounts / max(n, 1)
    h = float(100 * (1 * ishares[1] + 2 * ishares[2] + 3 * ishares[3]))
    return Her2Estimate(
        n,
        {k: float(v) for k, v in zip(CELL_CLASSES, shares, strict=True)},
        cat,
        sub,
        h,
        {k: float(v) for k, v in zip(("negative", "weak", "moderate", "strong"), ishares, strict=True)},
    )


def cells_in_polygons(y: np.ndarray, x: np.ndarray, polygons: list[np.ndarray]) -> np.ndarray:
    """Bool mask of points inside any polygon (vertices (n, 2) as (row, col), as napari Shapes give them)."""
    from skimage.measure import points_in_poly

    keep = np.zeros(y.shape, dtype=bool)
    pts = np.stack([y, x], axis=1)
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
            raise ValueError(f"a polygon needs >= 3 (row, col) vertices, got shape {p.shape}")
        if len(pts):
            keep |= points_in_poly(pts, p)
    return keep
