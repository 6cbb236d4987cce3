"""How well can the ANHIR landmarks themselves be predicted? A floor for any smooth registration.

For each landmark pair, leave it out and predict its fixed position from the other pairs by a
distance-weighted local affine fit of its k nearest neighbours in the moving image (k = 5 ... all): an
"oracle" that knows every other true correspondence. The median of those errors (rTRE: distance / fixed image
diagonal) is what a smooth transform interpolating the true displacements reaches; a registration that only
sees the images does well to come near it. Also prints the best single affine map (least squares on all
landmarks) for comparison.

Run:  python benchmarks/landmark_oracle.py   (reads tests/data: the four ANHIR pairs, BSD-3-Clause)
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
PAIRS = {
    "kidney": ("Rat-Kidney_HE", "Rat-Kidney_PanCytokeratin"),
    "lesion": ("Izd2-29-041-w35_HE", "Izd2-29-041-w35_proSPC"),
    "cd31": ("lesion3_HE", "lesion3_CD31"),
    "cc10": ("lesion3_HE", "lesion3_Cc10"),
}


def _points(path: Path) -> np.ndarray:
    with path.open(newline="") as f:
        return np.array([[float(r["X"]), float(r["Y"])] for r in csv.DictReader(f)])


def loo_local_affine(moving: np.ndarray, fixed: np.ndarray, k: int) -> np.ndarray:
    """Leave-one-out prediction errors (px) of a weighted affine fit to the k nearest other landmarks."""
    errors = []
    for i in range(len(moving)):
        d = np.hypot(*(moving - moving[i]).T)
        d[i] = np.inf
        near = np.argsort(d)[:k]
        w = 1.0 / (d[near] + 1.0)
        a = np.c_[moving[near], np.ones(k)] * w[:, None]
        sol, *_ = np.linalg.lstsq(a, fixed[near] * w[:, None], rcond=None)
        errors.append(np.hypot(*(np.r_[moving[i], 1.0] @ sol - fixed[i])))
    return np.asarray(errors)


def main() -> None:
    for name, (fixed_stem, moving_stem) in PAIRS.items():
        fixed, moving = (
            _points(DATA / f"{fixed_stem}.landmarks.csv"),
            _points(DATA / f"{moving_stem}.landmarks.csv"),
        )
        n = min(len(fixed), len(moving))
        fixed, moving = fixed[:n], moving[:n]
        with Image.open(DATA / f"{fixed_stem}.jpg") as im:
            diag = float(np.hypot(*im.size))
        sol, *_ = np.linalg.lstsq(np.c_[moving, np.ones(n)], fixed, rcond=None)
        affine = np.hypot(*(np.c_[moving, np.ones(n)] @ sol - fixed).T) / diag
        print(
            f"{name}: {n} landmarks, diagonal {diag:.0f} px; best affine (least squares) median rTRE "
            f"{np.median(affine):.4f}"
        )
        for k in (5, 8, 10, 15, 25, n - 1):
            e = loo_local_affine(moving, fixed, k) / diag
            print(
                f"  leave-one-out local affine, k={k:2d}: median rTRE {np.median(e):.4f}, "
                f"90th pct {np.percentile(e, 90):.4f}"
            )


if __name__ == "__main__":
    main()
