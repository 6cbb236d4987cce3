"""HER2 rules at every boundary: per-cell class (completeness, intensity) and region category (10 % cuts)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_virtual_ihc.stain import Her2Rules, categorize, classify_cells, measure_cells
from napari_virtual_ihc.stain.her2 import cells_in_polygons

RULES = Her2Rules()


@pytest.mark.parametrize(
    ("od", "completeness", "ibin", "cls"),
    [
        (0.0, 0.0, 0, 0),  # no staining
        (0.19, 0.0, 0, 0),  # just below weak, no sector above
        (0.05, 0.0625, 0, 1),  # one sector stained: incomplete faint
        (0.21, 0.5, 1, 1),  # weak but incomplete
        (0.21, 0.89, 1, 1),  # just below completeness
        (0.21, 0.9, 1, 2),  # weak complete -> 2+ cell
        (0.45, 1.0, 2, 2),  # moderate complete -> 2+ cell
        (0.59, 1.0, 2, 2),  # just below strong
        (0.61, 1.0, 3, 3),  # strong complete -> 3+ cell
        (0.9, 0.8, 3, 1),  # strong but incomplete
    ],
)
def test_cell_class_boundaries(od, completeness, ibin, cls):
    b, c = classify_cells(np.array([od]), np.array([completeness]), RULES)
    assert (int(b[0]), int(c[0])) == (ibin, cls)


def _region(n3=0, n2=0, n1=0, n=100):
    cls = np.array([3] * n3 + [2] * n2 + [1] * n1 + [0] * (n - n3 - n2 - n1))
    ib = np.where(cls == 3, 3, np.where(cls == 2, 2, np.where(cls == 1, 1, 0)))
    return categorize(cls, ib, RULES)


@pytest.mark.parametrize(
    ("kw", "label"),
    [
        ({}, "0 (null)"),
        ({"n1": 1}, "0 (ultralow)"),
        ({"n1": 10}, "0 (ultralow)"),  # exactly 10 % is not > 10 %
        ({"n1": 11}, "1+"),
        ({"n2": 10}, "0 (ultralow)"),
        ({"n2": 11}, "2+"),
        ({"n2": 5, "n3": 6}, "2+"),  # complete staining in 11 %, strong only in 6 %
        ({"n3": 10}, "0 (ultralow)"),
        ({"n3": 10, "n2": 1}, "2+"),
        ({"n3": 11}, "3+"),
        ({"n3": 11, "n2": 50, "n1": 30}, "3+"),
    ],
)
def test_region_category_boundaries(kw, label):
    assert _region(**kw).label == label


def test_h_score_range_and_weights():
    assert _region().h_score == 0
    assert _region(n3=100).h_score == pytest.approx(300)
    assert _region(n1=50, n2=25, n3=25).h_score == pytest.approx(50 + 50 + 75)


def _ring_image(strong_fraction: float, od: float, size=60, r_nuc=6, r_ring=9):
    """One nucleus in the centre; DAB ring over ``strong_fraction`` of the circumference."""
    yy, xx = np.mgrid[:size, :size] - size // 2
    nuclei = ((yy**2 + xx**2) <= r_nuc**2).astype(np.int32)
    ring = ((yy**2 + xx**2) > r_nuc**2) & ((yy**2 + xx**2) <= r_ring**2)
    ang = (np.arctan2(yy, xx) + np.pi) / (2 * np.pi)
    dab = np.where(ring & (ang < strong_fraction), od, 0.0)
    return nuclei, dab


@pytest.mark.parametrize(
    ("fraction", "od", "cls"),
    [(1.0, 0.8, 3), (1.0, 0.5, 2), (0.5, 0.8, 1), (0.0, 0.0, 0)],
)
def test_measured_rings(fraction, od, cls):
    nuclei, dab = _ring_image(fraction, od)
    t = measure_cells(nuclei, dab, mpp=1.0, rules=Her2Rules(ring_um=3.0))
    assert len(t) == 1
    assert t.completeness[0] == pytest.approx(fraction, abs=0.07)
    assert int(t.cell_class[0]) == cls


def test_ring_limited_by_neighbours():
    nuclei = np.zeros((20, 40), np.int32)
    nuclei[8:12, 8:12] = 1
    nuclei[8:12, 16:20] = 2  # 4 px apart: rings meet half-way
    dab = np.zeros(nuclei.shape)
    dab[:, 14] = 1.0  # a stained line between them, at x=14 (closer to cell 2's border? equal: 13/14 split)
    t = measure_cells(nuclei, dab, mpp=1.0, rules=Her2Rules(ring_um=10.0))
    assert len(t) == 2
    assert t.ring_dab_od.sum() > 0
    # rings did not grow into each other: every ring pixel belongs to exactly one cell; column 14 to one
    assert (t.ring_dab_od > 0).sum() == 1


def test_polygons_restrict_cells():
    y = np.array([5.0, 50.0])
    x = np.array([5.0, 50.0])
    square = np.array([[0, 0], [0, 10], [10, 10], [10, 0]])
    assert cells_in_polygons(y, x, [square]).tolist() == [True, False]
    with pytest.raises(ValueError):
        cells_in_polygons(y, x, [np.array([[0, 0], [1, 1]])])
