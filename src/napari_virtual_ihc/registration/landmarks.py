"""ANHIR landmark files and the relative target registration error (rTRE).

ANHIR CSVs have an unnamed index column then ``X`` and ``Y`` in the image's pixels; row *i* of the two files
of a pair marks the same structure. rTRE = distance / diagonal of the fixed (reference) image, as ANHIR
reports it (Borovec et al., IEEE TMI 2020).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .errors import RegistrationError


def read_points(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str]]:
    """((n, 2) float (x, y), row labels) from a CSV with ``X`` and ``Y`` columns (any case)."""
    p = Path(path)
    try:
        with p.open(newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise RegistrationError(f"{p}: cannot read the points file ({e})") from e
    if not rows:
        raise RegistrationError(f"{p}: empty points file")
    header = [h.strip() for h in rows[0]]
    upper = [h.upper() for h in header]
    if "X" not in upper or "Y" not in upper:
        raise RegistrationError(f"{p}: needs 'X' and 'Y' columns (ANHIR layout), found {header}")
    ix, iy = upper.index("X"), upper.index("Y")
    label_col = 0 if ix != 0 and iy != 0 else None
    pts: list[tuple[float, float]] = []
    labels: list[str] = []
    for k, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        try:
            pts.append((float(row[ix]), float(row[iy])))
        except (ValueError, IndexError) as e:
            raise RegistrationError(f"{p}, line {k}: X/Y are not numbers ({row})") from e
        labels.append(row[label_col] if label_col is not None else str(len(labels)))
    arr = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(arr).all():
        raise RegistrationError(f"{p}: X/Y must be finite numbers")
    return arr, labels


def write_points(path: str | os.PathLike[str], xy: np.ndarray, labels: list[str] | None = None) -> Path:
    """Write ``xy`` in the ANHIR layout (index column, ``X``, ``Y``), one row per point, same order."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    labs = labels if labels is not None else [str(i) for i in range(len(pts))]
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "X", "Y"])
        for lab, (x, y) in zip(labs, pts, strict=True):
            w.writerow([lab, f"{x:.3f}", f"{y:.3f}"])
    return p


def rtre(mapped: np.ndarray, reference: np.ndarray, dimensions: tuple[int, int]) -> np.ndarray:
    """Per-point relative target registration error: distance / diagonal of ``dimensions`` (w, h)."""
    n = min(len(mapped), len(reference))
    d = np.linalg.norm(np.asarray(mapped)[:n] - np.asarray(reference)[:n], axis=1)
    return d / float(np.hypot(*dimensions))


def summary(errors: np.ndarray) -> dict[str, float]:
    e = np.asarray(errors, dtype=np.float64)
    if e.size == 0:
        return {"n": 0}
    return {
        "n": int(e.size),
        "median": float(np.median(e)),
        "p90": float(np.percentile(e, 90)),
        "mean": float(e.mean()),
        "max": float(e.max()),
    }
