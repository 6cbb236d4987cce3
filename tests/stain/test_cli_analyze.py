"""`virtual-ihc analyze` end to end on a small real IHC image, and bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from skimage import data
from skimage.io import imread, imsave

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


def test_analyze_workers_give_the_same_summary_and_are_checked(tmp_path, capsys):
    img = tmp_path / "ihc.png"
    imsave(img, data.immunohistochemistry()[:384, :384])
    args = ["analyze", str(img), "--nuclei", "offline", "--tile", "128"]
    assert main([*args, "--out", str(tmp_path / "one"), "--workers", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    one = json.loads((tmp_path / "one" / "summary.json").read_text())
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert one == two and one["glass_tiles"] == 0 and one["tissue_mm2"] > 0
    with pytest.raises(SystemExit):
        main([*args, "--out", str(tmp_path / "bad"), "--workers", "0"])
    assert "--workers" in capsys.readouterr().err


def test_analyze_he_reads_large_nuclei_larger_unless_the_diameter_is_fixed(tmp_path):
    """A tiatoolbox field of large vesicular nuclei (tests/data/nuclei-any-stain): read at 12 µm, and said so;
    ``--fixed-diameter`` keeps the 7 µm asked for."""
    from pathlib import Path

    img = Path(__file__).parents[1] / "data/nuclei-any-stain/fresh-he-tiatoolbox-c.png"
    args = ["analyze", str(img), "--he", "--nuclei", "offline", "--mpp", "0.4"]
    assert main([*args, "--out", str(tmp_path / "auto")]) == 0
    assert main([*args, "--out", str(tmp_path / "fixed"), "--fixed-diameter"]) == 0
    auto = json.loads((tmp_path / "auto" / "summary.json").read_text())
    fixed = json.loads((tmp_path / "fixed" / "summary.json").read_text())
    assert (
        auto["nuclei_diameter_um"] == pytest.approx(12.0) and "large nuclei" in auto["nuclei_diameter_note"]
    )
    assert fixed["nuclei_diameter_um"] == pytest.approx(7.0) and fixed["nuclei_diameter_note"] == ""


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


def test_analyze_region_marker_cells_and_calibration(tmp_path, capsys):
    """Issue 32: --region (GeoJSON), --marker, per-cell calls, and a calibration saved on one run and
    loaded on the next."""
    img = tmp_path / "ihc.png"
    imsave(img, data.immunohistochemistry())
    gland = [[255, 325], [360, 325], [360, 400], [255, 400], [255, 325]]  # [x, y]: the round gland's top
    region = tmp_path / "tumour.geojson"
    region.write_text(
        json.dumps({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [gland]}})
    )
    out = tmp_path / "o"
    cal = tmp_path / "lab" / "her2-lab1.json"
    args = ["analyze", str(img), "--nuclei", "classical"]
    assert (
        main(
            [*args, "--out", str(out), "--region", str(region), "--cells-csv", "--save-calibration", str(cal)]
        )
        == 0
    )
    s = json.loads((out / "summary.json").read_text())
    assert s["marker"] == "her2" and s["marker_reason"].startswith("auto:")
    assert s["her2"]["scope"].startswith("tumour region") and s["her2"]["n_cells"] == s["tumour_cells"] < 40
    assert s["nuclei_count"] > 300 and s["dab_cutoffs_od"] == {"weak": 0.2, "moderate": 0.4, "strong": 0.6}
    rows = list(csv.DictReader((out / "cells.csv").open()))
    assert sum(int(r["in_tumour_region"]) for r in rows) == s["tumour_cells"]
    assert {r["marker"] for r in rows} == {"her2"} and rows[0]["compartment"] == "membrane"
    drawn = imread(out / s["maps"]["tumour_region"])  # the region itself, on the maps' grid
    assert drawn.shape == (512, 512) and drawn[326:399, 256:359].min() == 255
    outside = np.ones(drawn.shape, bool)
    outside[324:402, 254:362] = False
    assert drawn[outside].max() == 0
    assert "tumour region" in capsys.readouterr().out
    saved = json.loads(cal.read_text())
    assert saved["name"] == "her2-lab1" and saved["stains"]["background_source"] == "glass"
    # the next slide, read with the saved calibration and other cut-offs in it
    saved["dab_cutoffs_od"] = {"weak": 0.25, "moderate": 0.45, "strong": 0.7}
    cal.write_text(json.dumps(saved))
    assert main([*args, "--out", str(tmp_path / "o2"), "--calibration", str(cal), "--marker", "ki67"]) == 0
    s2 = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert s2["calibration_name"] == "her2-lab1" and s2["dab_cutoffs_od"]["strong"] == 0.7
    assert s2["stain_calibration"]["background"] == saved["stains"]["background"]
    assert "her2-lab1" in s2["stain_calibration"]["background_source"]
    # ki67 on membrane DAB: reported, not scored as 0
    assert s2["ki67"]["assessable"] is False and "index" not in s2["ki67"]
    assert "nuclear marker" in capsys.readouterr().err


def test_analyze_bad_regions_and_calibrations(tmp_path, capsys):
    img = tmp_path / "ihc.png"
    imsave(img, data.immunohistochemistry()[:128, :128])
    other = tmp_path / "other.geojson"
    other.write_text(
        json.dumps({"type": "Polygon", "coordinates": [[[5000, 10], [5100, 10], [5100, 90], [5000, 10]]]})
    )
    mask = tmp_path / "mask.png"
    imsave(mask, np.full((64, 64), 255, np.uint8), check_contrast=False)
    bad_cal = tmp_path / "cal.json"
    bad_cal.write_text(json.dumps({"format": "something else"}))
    for extra, message in (
        (["--region", str(other)], "another image"),
        (["--region", str(mask)], "image's size"),
        (["--calibration", str(bad_cal)], "not a stain calibration"),
        (["--marker", "egfr"], None),
    ):
        out = tmp_path / f"o{len(extra[1])}"
        if message is None:
            with pytest.raises(SystemExit):
                main(["analyze", str(img), "--out", str(out), *extra])
            continue
        assert main(["analyze", str(img), "--out", str(out), "--nuclei", "classical", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not (out / "summary.json").exists()


def test_the_nuclei_choices_of_the_clis_are_the_segmenters_methods():
    from napari_virtual_ihc.cli.argtypes import NUCLEI_CHOICES
    from napari_virtual_ihc.nuclei import NUCLEI_METHODS

    assert NUCLEI_CHOICES == NUCLEI_METHODS
