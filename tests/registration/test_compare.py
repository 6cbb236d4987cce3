"""Virtual vs real measures on a real IHC image: Dice of an image with itself is 1, falls with a shift."""

from __future__ import annotations

import itertools

import numpy as np
from skimage import data

from napari_virtual_ihc.registration.compare import ComparisonSettings, compare, dab_positive, dice_iou
from napari_virtual_ihc.slides import ArraySlide


def test_dab_dice_is_one_on_itself_and_falls_with_the_shift():
    rgb = np.ascontiguousarray(data.immunohistochemistry()[:384, :384])
    assert dab_positive(rgb).mean() > 0.05  # real DAB staining in the image
    settings = ComparisonSettings(tile_px=128, mpp=0.5)
    same = compare(ArraySlide(rgb), ArraySlide(rgb), None, settings)
    assert same.dice == 1.0 and same.iou == 1.0
    assert all(r["dab_fraction_diff"] == 0 for r in same.rows if r["dab_dice"] is not None)
    assert same.summary()["her2_tile_agreement"] in (1.0, None)
    dices = []
    for shift in (2, 6, 16, 40):
        shifted = np.full_like(rgb, 255)
        shifted[:, shift:] = rgb[:, :-shift]
        dices.append(compare(ArraySlide(rgb), ArraySlide(shifted), None, settings).dice)
    print("DAB Dice by shift 2/6/16/40 px:", [round(d, 3) for d in dices])
    assert all(a > b for a, b in itertools.pairwise(dices))
    assert dices[0] < 1.0 and dices[-1] < 0.85 * dices[0]


def test_dice_iou_edge_cases():
    a = np.zeros((4, 4), bool)
    assert dice_iou(a, a) == (1.0, 1.0)
    b = a.copy()
    b[0, 0] = True
    assert dice_iou(a, b) == (0.0, 0.0)
