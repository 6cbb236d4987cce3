"""Real IHC images re-stained through deconvolution, for the marker tests (the same tissue, known stain).

- ``dab_ladder``: the DAB concentration of a real IHC scaled (issue 32's ladder).
- ``nuclear_marker_image``: scikit-image's IHC with its own (membrane/cytoplasm) DAB removed and DAB put into
  the nuclei marked by eye in ``tests/data/ihc-nuclei-marks.csv`` (every ``every``-th mark, ordered by box
  and position): a Ki-67-like image whose positive nuclei are known. The nuclei are the real ones (their
  hematoxylin blobs around the marks); only the DAB is placed.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from napari_virtual_ihc.stain import estimate_background, hdab_matrix

MARKS = Path(__file__).parents[1] / "data" / "ihc-nuclei-marks.csv"


def _recompose(rgb: np.ndarray, scale_dab: float, add_dab: np.ndarray | None = None) -> np.ndarray:
    white, _ = estimate_background(rgb)
    m = hdab_matrix(background=white)
    od = -np.log10(np.maximum(rgb.astype(np.float64), 1.0) / np.asarray(white))
    conc = (od.reshape(-1, 3) @ m.inverse).reshape(rgb.shape)
    conc[..., 1] *= scale_dab
    if add_dab is not None:
        conc[..., 1] += add_dab
    out = (conc.reshape(-1, 3) @ m.matrix).reshape(rgb.shape)
    return np.clip(np.round(np.asarray(white) * 10 ** (-out)), 0, 255).astype(np.uint8)


def dab_ladder(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Deconvolve, scale the DAB concentration, recompose: the same tissue, more or less stain."""
    return _recompose(rgb, factor)


def marks() -> list[dict[str, str]]:
    with MARKS.open() as f:
        return list(csv.DictReader(f))


def nuclear_marker_image(
    rgb: np.ndarray, every: int = 3, od: float = 0.6, radius: int = 6
) -> tuple[np.ndarray, list[tuple[float, float, bool]]]:
    """(image, [(y, x, positive)] of every mark): DAB of ``od`` over each positive mark's nucleus (the
    mark's disk of ``radius`` px where hematoxylin is above the image's median), smoothed by 1 px."""
    hem = _recompose(rgb, 0.0)  # the tissue without its own DAB
    white, _ = estimate_background(rgb)
    m = hdab_matrix(background=white)
    h_od = (
        (-np.log10(np.maximum(hem.astype(np.float64), 1.0) / np.asarray(white))).reshape(-1, 3) @ m.inverse
    )[:, 0].reshape(rgb.shape[:2])
    yy, xx = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
    add = np.zeros(rgb.shape[:2])
    cut = float(np.median(h_od))
    out = []
    for i, row in enumerate(marks()):
        y, x = float(row["y"]), float(row["x"])
        positive = i % every == 0
        if positive:
            disk = (yy - y) ** 2 + (xx - x) ** 2 <= radius**2
            add[disk & (h_od > cut)] = od
        out.append((y, x, positive))
    return _recompose(hem, 1.0, ndi.gaussian_filter(add, 1.0)), out
