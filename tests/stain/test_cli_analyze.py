"""`virtual-ihc analyze` end to end on a small real IHC image, and bad input."""

from __future__ import annotations

import csv
import json

from skimage import data
from skimage.io import imsave

from napari_virtual_ihc.cli import main


def test_analyze_writes_maps_summary_and_cells(tmp_path):
    img = tmp_path / "ihc.png"
    imsave(img, data.immunohistochemistry()[:256, :256])
    out = tmp_path / "out"
    assert main(["analyze", str(img), "--out", str(out), "--nuclei", "classical", "--cells-csv"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["mpp"] == 0.5 and s["mpp_assumed"] is True and "assumed" in s["mpp_note"]
    assert s["nuclei_method"] == "classical" and s["nuclei_count"] > 20
    assert abs(sum(s["dab_fractions"].values()) - 1) < 1e-6
    assert s["her2"]["category"] in ("0", "1+", "2+", "3+") and 0 <= s["her2"]["h_score"] <= 300
    for name in ("nuclei_labels", "density_per_mm2", "dab_bins", "membrane_mask"):
        assert (out / f"{name}.png").is_file()
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert len(rows) == s["nuclei_count"]
    assert (
        main(["analyze", str(img), "--out", str(tmp_path / "o2"), "--nuclei", "classical", "--mpp", "0.25"])
        == 0
    )
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["mpp_assumed"] is False


def test_analyze_bad_input(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "missing.svs"), "--out", str(tmp_path / "o")]) == 2
    assert "missing" in capsys.readouterr().err
    assert (
        main(
            [
                "analyze",
                str(tmp_path / "x.png"),
                "--out",
                str(tmp_path / "o"),
                "--cutoffs",
                "0.5",
                "0.2",
                "0.6",
            ]
        )
        == 2
    )


def test_analyze_records_and_takes_stain_calibration(tmp_path, capsys):
    img = tmp_path / "ihc.png"
    imsave(img, data.immunohistochemistry())
    out = tmp_path / "est"
    args = ["analyze", str(img), "--nuclei", "classical"]
    assert main([*args, "--out", str(out), "--stain-vectors", "estimate"]) == 0
    cal = json.loads((out / "summary.json").read_text())["stain_calibration"]
    assert cal["background_source"] == "glass" and cal["vectors_source"] == "estimated"
    assert (
        main([*args, "--out", str(tmp_path / "u"), "--background", "default", "--dab", "0.3", "0.55", "0.78"])
        == 0
    )
    cal = json.loads((tmp_path / "u" / "summary.json").read_text())["stain_calibration"]
    assert cal["vectors_source"] == "user" and cal["background"] == [255.0, 255.0, 255.0]
    assert main([*args, "--out", str(tmp_path / "bad"), "--dab", "0", "0", "0"]) == 2
    assert "no length" in capsys.readouterr().err
