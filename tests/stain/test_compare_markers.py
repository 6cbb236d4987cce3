"""`virtual-ihc compare --marker ki67` (issue 32): the positive-cell ratio of virtual and real IHC per tile,
the seed paper's metric, beside the DAB Dice."""

from __future__ import annotations

import csv
import json

import numpy as np
from skimage import data
from skimage.io import imsave

from napari_virtual_ihc.cli import main

from ._ihc_images import nuclear_marker_image


def test_compare_reports_the_positive_cell_ratio_per_tile(tmp_path, capsys):
    rgb = data.immunohistochemistry()
    virtual, _ = nuclear_marker_image(rgb, every=2)  # half the marked nuclei positive
    real, _ = nuclear_marker_image(rgb, every=5)  # a fifth positive: the same cells, fewer stained
    imsave(tmp_path / "virtual.png", virtual[256:])  # the lower half (two tiles) keeps the test fast
    imsave(tmp_path / "real.png", real[256:])
    out = tmp_path / "cmp"
    args = [
        "compare",
        str(tmp_path / "virtual.png"),
        str(tmp_path / "real.png"),
        "--mpp",
        "0.5",
        "--tile",
        "256",
    ]
    assert main([*args, "--out", str(out), "--marker", "ki67"]) == 0
    printed = capsys.readouterr().out
    s = json.loads((out / "compare.json").read_text())
    assert s["marker"] == "ki67" and s["positive_ratio_tiles"] == 2
    assert s["positive_ratio_virtual_mean"] > s["positive_ratio_real_mean"] + 0.05
    rows = list(csv.DictReader((out / "tiles.csv").open()))
    diffs = [float(r["positive_ratio_diff"]) for r in rows]
    assert all(d >= 0 for d in diffs) and np.mean(diffs) > 0.05
    assert "ki67 positive-cell ratio virtual" in printed and "DAB Dice" in printed
    assert "positive-cell ratio" in (out / "report.md").read_text()
