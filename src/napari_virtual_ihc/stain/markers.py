"""Marker profiles: how a pathologist scores each IHC marker, as pure functions of the per-cell table.

An ESTIMATE for comparing images, not a diagnosis. Every figure is over the cells given (the tumour cells
inside a region when one is drawn). Sources of the constants:

- HER2 (membrane): ASCO/CAP 2018 (reaffirmed 2023), see :mod:`.her2`.
- Ki-67 (nuclear): labelling index = DAB-positive tumour nuclei / all tumour nuclei (International Ki-67 in
  Breast Cancer Working Group, Nielsen et al., JNCI 2021); 95 % interval by Wilson's score method; the
  hot-spot index is the highest index over windows of ``HOTSPOT_CELLS`` = 500 neighbouring cells (the
  Working Group's hot-spot count), and over windows of ``HOTSPOT_AREA_MM2`` = 1 mm² when the region is
  that large.
- ER / PR (nuclear): ASCO/CAP 2020 (Allison et al., JCO 2020): negative < 1 %, low positive 1-10 %,
  positive > 10 % of tumour nuclei stained. Allred score (Harvey et al., Mod Pathol 1999) = proportion score
  (0 none, 1 < 1 %, 2 1-10 %, 3 10-33 %, 4 33-66 %, 5 > 66 %) + intensity score of the positive nuclei
  (1 weak, 2 moderate, 3 strong). H-score = 1 x %weak + 2 x %moderate + 3 x %strong nuclei (0-300).

A nucleus is positive when its mean DAB OD reaches the weak cut-off of the bins in use (the calibration).
Which compartment carries the DAB is measured (:func:`dab_compartment`): a nuclear marker on an image whose
DAB sits on membranes is reported as not fitting the stain, never as 0 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .her2 import CELL_CLASSES, CellTable, Her2Rules, categorize
from .membrane import BIN_NAMES, DabBins

MARKERS = ("her2", "ki67", "er", "pr")
MARKER_CHOICES = (*MARKERS, "auto")
COMPARTMENT = {"her2": "membrane", "ki67": "nuclear", "er": "nuclear", "pr": "nuclear"}
HOTSPOT_CELLS = 500
HOTSPOT_AREA_MM2 = 1.0
WILSON_Z = 1.959964  # two-sided 95 %
ER_PR_LOW = 0.01  # ASCO/CAP 2020: < 1 % negative
ER_PR_POSITIVE = 0.10  # 1-10 % low positive, > 10 % positive
ALLRED_PROPORTION_EDGES = (0.01, 0.10, 1 / 3, 2 / 3)  # proportion score 1..5 above 0
# where the DAB sits (dab_compartment): blobs up to 3 nucleus areas (two touching nuclei and a margin) are
# nucleus-like; NUCLEAR_EVIDENCE was chosen on the tune half of the validation set (docs/analysis.md:
# membrane ladder rungs <= 0.26, nuclear tune images >= 0.48) and held on the other half
NUCLEUS_LIKE_AREAS = 3.0
NUCLEAR_EVIDENCE = 0.375
# ... and the cell-level cue must agree: faint, sparse membrane stain breaks into separate nucleus-sized bits
# (blob share up to 1.0 on tissue-only areas of the ladder's x 0.3 / 0.45 rungs, whose stained nuclei are
# never darker than their rings: share <= 0.03), while stained nuclei of Ki-67 are darker than their rings
# in >= 0.74 of stained cells (issue 32; docs/analysis.md "Faint membranes are not nuclear")
NUCLEUS_DARKER_MIN = 0.5
MIN_STAINED_CELLS = 5
NO_REGION = "all cells (no tumour region given)"
NO_CELLS = "no tumour cells found"


class MarkerError(ValueError):
    """An unknown marker name."""


def check_marker(marker: str) -> str:
    if marker not in MARKER_CHOICES:
        raise MarkerError(f"marker must be one of {', '.join(MARKER_CHOICES)}, not {marker!r}")
    return marker


def wilson_interval(k: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """95 % Wilson score interval of the proportion k / n ((0, 1) when n = 0)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


@dataclass(frozen=True)
class CompartmentCall:
    """Where the DAB of an image sits, from two cues (see :func:`dab_compartment`)."""

    compartment: str  # "nuclear" | "membrane" | "none" (too little DAB to tell)
    stained_cells: int
    nucleus_darker_share: float  # stained cells whose nucleus is darker in DAB than their ring
    blob_share: float  # stain (thick parts) in separate, nucleus-sized blobs

    @property
    def nuclear_evidence(self) -> float:
        return (self.nucleus_darker_share + self.blob_share) / 2

    def as_dict(self) -> dict[str, Any]:
        return {
            "compartment": self.compartment,
            "stained_cells": self.stained_cells,
            "nucleus_darker_share": round(self.nucleus_darker_share, 4),
            "blob_share": round(self.blob_share, 4),
            "nuclear_evidence": round(self.nuclear_evidence, 4),
        }


def blob_share(dab_od: np.ndarray, bins: DabBins, diameter_px: float) -> float:
    """Share of the thick stained area (DAB >= weak, opened by a disk of a quarter nucleus diameter, which
    removes membranes) that lies in separate blobs of at most ``NUCLEUS_LIKE_AREAS`` nucleus areas:
    stained nuclei, not sheets of cytoplasm."""
    from scipy import ndimage as ndi
    from skimage.morphology import disk

    thick = ndi.binary_opening(
        np.asarray(dab_od) >= bins.weak, structure=disk(max(1, round(diameter_px / 4)))
    )
    n = int(thick.sum())
    if n == 0:
        return 0.0
    lab, k = ndi.label(thick)
    sizes = np.bincount(lab.ravel(), minlength=k + 1)
    small = sizes <= NUCLEUS_LIKE_AREAS * math.pi * (diameter_px / 2) ** 2
    small[0] = False
    return float(sizes[small].sum() / n)


def dab_compartment(
    cells: CellTable, dab_od: np.ndarray, bins: DabBins, diameter_px: float
) -> CompartmentCall:
    """Nuclear or membrane DAB. ``cells``: nuclei found on hematoxylin (DAB-aware membrane split), so a
    membrane's DAB lands in the rings; cue 1 is the share of stained cells (nucleus or ring >= weak) whose
    nucleus is darker than its ring, cue 2 :func:`blob_share`. Nuclear when their mean reaches
    ``NUCLEAR_EVIDENCE`` and cue 1 reaches ``NUCLEUS_DARKER_MIN``; fewer than ``MIN_STAINED_CELLS`` stained
    cells: "none"."""
    stained = (cells.nuclear_dab_od >= bins.weak) | (cells.ring_dab_od >= bins.weak)
    k = int(stained.sum())
    darker = float(np.mean(cells.nuclear_dab_od[stained] > cells.ring_dab_od[stained])) if k else 0.0
    call = CompartmentCall("none", k, darker, blob_share(dab_od, bins, diameter_px))
    if k < MIN_STAINED_CELLS:
        return call
    nuclear = call.nuclear_evidence >= NUCLEAR_EVIDENCE and darker >= NUCLEUS_DARKER_MIN
    return CompartmentCall("nuclear" if nuclear else "membrane", k, darker, call.blob_share)


def resolve_marker(marker: str, call: CompartmentCall) -> tuple[str, str]:
    """(marker used, why) for ``auto``: ki67 for nuclear DAB, her2 otherwise."""
    check_marker(marker)
    if marker != "auto":
        return marker, "chosen"
    evidence = f"nuclear evidence {call.nuclear_evidence:.2f} over {call.stained_cells} stained cells"
    if call.compartment == "nuclear":
        return "ki67", f"auto: DAB sits in nuclei ({evidence}), read as Ki-67"
    if call.compartment == "membrane":
        return "her2", f"auto: DAB sits on membranes ({evidence}), read as HER2"
    return (
        "her2",
        f"auto: too little DAB to tell ({call.stained_cells} stained cells), membrane (HER2) assumed",
    )


def nuclear_bins(cells: CellTable, bins: DabBins) -> np.ndarray:
    """0..3 intensity bin of each nucleus (its mean DAB OD against the cut-offs)."""
    return np.digitize(cells.nuclear_dab_od, bins.cutoffs).astype(np.int64)


def marker_calls(marker: str, cells: CellTable, bins: DabBins) -> list[str]:
    """The marker's call per cell, for the per-cell table."""
    if COMPARTMENT[marker] == "membrane":
        return [CELL_CLASSES[int(c)] for c in cells.cell_class]
    return ["positive" if b >= 1 else "negative" for b in nuclear_bins(cells, bins)]


def fit_note(marker: str, call: CompartmentCall) -> str:
    """Empty when the stain fits the marker, else why it does not (reported, not scored as 0)."""
    if COMPARTMENT[marker] == "nuclear" and call.compartment == "membrane":
        return (
            f"{marker} is a nuclear marker but this image's DAB sits on membranes (nuclear evidence "
            f"{call.nuclear_evidence:.2f} over {call.stained_cells} stained cells): not scored; choose a "
            "membrane marker or check the stain"
        )
    if COMPARTMENT[marker] == "membrane" and call.compartment == "nuclear":
        return (
            f"{marker} is a membrane marker but this image's DAB sits in nuclei (nuclear evidence "
            f"{call.nuclear_evidence:.2f} over {call.stained_cells} stained cells): not scored; choose a "
            "nuclear marker or check the stain"
        )
    return ""


def hotspot_index(y: np.ndarray, x: np.ndarray, positive: np.ndarray, mpp: float) -> dict[str, Any]:
    """Highest labelling index over windows of 500 neighbouring cells and of 1 mm² (circles around each
    cell); a window needs its full size, else the figure is None with the reason."""
    from scipy.spatial import cKDTree

    n = int(y.size)
    out: dict[str, Any] = {"hotspot_cells": HOTSPOT_CELLS}
    pts = np.stack([y, x], axis=1) * mpp  # µm
    if n >= HOTSPOT_CELLS:
        tree = cKDTree(pts)
        _, idx = tree.query(pts, k=HOTSPOT_CELLS)
        idx = np.asarray(idx).reshape(n, HOTSPOT_CELLS)
        share = positive[idx].mean(axis=1)
        best = int(np.argmax(share))
        out.update(hotspot_index=float(share[best]), hotspot_center_px=[float(y[best]), float(x[best])])
    else:
        out.update(hotspot_index=None, hotspot_note=f"fewer than {HOTSPOT_CELLS} cells: no 500-cell hot spot")
    radius_um = math.sqrt(HOTSPOT_AREA_MM2 / math.pi) * 1000.0
    extent = np.ptp(pts, axis=0) if n else np.zeros(2)
    if n and extent[0] * extent[1] >= HOTSPOT_AREA_MM2 * 1e6:
        tree = cKDTree(pts)
        groups = tree.query_ball_point(pts, radius_um)
        shares = np.array([positive[g].mean() if len(g) else 0.0 for g in groups])
        out["hotspot_index_1mm2"] = float(shares.max())
    else:
        out["hotspot_index_1mm2"] = None
    return out


def ki67_estimate(cells: CellTable, bins: DabBins, mpp: float) -> dict[str, Any]:
    """Ki-67 labelling index with its 95 % Wilson interval and the hot-spot index."""
    n = len(cells)
    pos = nuclear_bins(cells, bins) >= 1
    k = int(pos.sum())
    lo, hi = wilson_interval(k, n)
    out: dict[str, Any] = {
        "n_cells": n,
        "n_positive": k,
        "index": k / n if n else None,
        "index_ci95": [lo, hi] if n else None,
        "label": f"{k / n:.1%} ({k}/{n})" if n else NO_CELLS,
    }
    out.update(hotspot_index(cells.y, cells.x, pos, mpp))
    return out


def allred_proportion_score(share: float) -> int:
    if share <= 0:
        return 0
    return 1 + int(np.searchsorted(ALLRED_PROPORTION_EDGES, share, side="left"))


def er_pr_category(share: float) -> str:
    if share < ER_PR_LOW:
        return "negative"
    return "low positive" if share <= ER_PR_POSITIVE else "positive"


def er_pr_estimate(cells: CellTable, bins: DabBins) -> dict[str, Any]:
    """% positive nuclei, mean intensity of the positives, Allred score, H-score and the ASCO/CAP category."""
    n = len(cells)
    if n == 0:
        return {"n_cells": 0, "category": None, "label": NO_CELLS}
    b = nuclear_bins(cells, bins)
    shares = np.bincount(b, minlength=4)[:4] / n
    positive = float(shares[1:].sum())
    pos = b >= 1
    mean_od = float(cells.nuclear_dab_od[pos].mean()) if pos.any() else 0.0
    intensity = int(np.digitize(mean_od, bins.cutoffs)) if pos.any() else 0
    ps = allred_proportion_score(positive)
    cat = er_pr_category(positive)
    lo, hi = wilson_interval(int(pos.sum()), n)
    return {
        "n_cells": n,
        "n_positive": int(pos.sum()),
        "percent_positive": 100.0 * positive,
        "percent_positive_ci95": [100.0 * lo, 100.0 * hi],
        "mean_positive_nuclear_od": mean_od,
        "intensity_bin": BIN_NAMES[intensity],
        "allred_proportion": ps,
        "allred_intensity": intensity,
        "allred_score": ps + intensity,
        "h_score": float(100 * (shares[1] + 2 * shares[2] + 3 * shares[3])),
        "intensity_shares": {k: float(v) for k, v in zip(BIN_NAMES, shares, strict=True)},
        "category": cat,
        "label": f"{cat} ({100 * positive:.1f} %)",
    }


def marker_estimate(
    marker: str,
    cells: CellTable,
    bins: DabBins,
    mpp: float,
    rules: Her2Rules | None = None,
    *,
    call: CompartmentCall | None = None,
) -> dict[str, Any]:
    """The marker's figures over ``cells``; ``call`` (where the image's DAB sits) decides whether the marker
    fits. A region without cells reads "no tumour cells found", a misfit marker is not scored."""
    check_marker(marker)
    if marker == "auto":
        raise MarkerError("resolve 'auto' first (resolve_marker)")
    head: dict[str, Any] = {"marker": marker, "compartment": COMPARTMENT[marker], "assessable": True}
    misfit = fit_note(marker, call) if call is not None else ""
    if len(cells) == 0:
        return {**head, "assessable": False, "n_cells": 0, "label": NO_CELLS, "note": NO_CELLS}
    if misfit:
        return {
            **head,
            "assessable": False,
            "n_cells": len(cells),
            "label": "stain does not fit",
            "note": misfit,
        }
    if marker == "her2":
        return {
            **head,
            **categorize(cells.cell_class, cells.intensity_bin, rules or Her2Rules(bins=bins)).as_dict(),
        }
    if marker == "ki67":
        return {**head, **ki67_estimate(cells, bins, mpp)}
    return {**head, **er_pr_estimate(cells, bins)}
