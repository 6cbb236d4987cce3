"""MIST re-split grouped by slide id: no slide on both sides, every pair kept once, the shipped leak reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from virtual_ihc_train.cli import main
from virtual_ihc_train.data import mist_pairs
from virtual_ihc_train.mist_split import resplit_mist, slide_id


@pytest.fixture
def mist_leaky(tmp_path, data_dir):
    """A MIST-layout folder whose shipped split puts tiles of every slide on both sides (as MIST does)."""
    he = np.asarray(Image.open(data_dir / "Rat-Kidney_HE.jpg").convert("RGB"))
    ihc = np.asarray(Image.open(data_dir / "Rat-Kidney_PanCytokeratin.jpg").convert("RGB"))
    root = tmp_path / "MIST"
    for sub in ("trainA", "trainB", "valA", "valB"):
        (root / sub).mkdir(parents=True)
    k = 0
    for s, slide in enumerate(("1M01", "1M02", "2M05", "3M11", "4M20")):
        for t in range(4):
            split = "val" if t == 3 else "train"
            name = f"{slide}_{t}_{s}.jpg"
            y, x = 40 * k % 600, 50 * k % 900
            Image.fromarray(he[y : y + 32, x : x + 32]).save(root / f"{split}A" / name)
            Image.fromarray(ihc[y : y + 32, x : x + 32]).save(root / f"{split}B" / name)
            k += 1
    return root


def test_resplit_groups_by_slide(tmp_path, mist_leaky):
    out = tmp_path / "grouped"
    report = resplit_mist(mist_leaky, out, val_fraction=0.2, seed=0)
    assert report["shipped_split_slides_in_both"] == ["1M01", "1M02", "2M05", "3M11", "4M20"]
    train, val = mist_pairs(out, "train"), mist_pairs(out, "val")
    assert len(train) + len(val) == 20 and len(val) == report["val"]["tiles"] == 4
    train_ids, val_ids = {slide_id(p.name) for p in train}, {slide_id(p.name) for p in val}
    assert train_ids.isdisjoint(val_ids) and train_ids | val_ids == {"1M01", "1M02", "2M05", "3M11", "4M20"}
    assert json.loads((out / "split.json").read_text())["val"]["slides"] == sorted(val_ids)
    # the same seed gives the same split; the files are the originals (links)
    again = resplit_mist(mist_leaky, tmp_path / "again", val_fraction=0.2, seed=0)
    assert again["val"]["slides"] == report["val"]["slides"]
    linked = out / "valA" / f"{val[0].name}.jpg"
    assert linked.is_symlink() and linked.resolve().parent.parent == mist_leaky.resolve()


def test_resplit_cli_and_bad_input(tmp_path, mist_leaky, capsys):
    assert main(["mist-resplit", str(mist_leaky), "--out", str(tmp_path / "g"), "--copy"]) == 0
    assert "5 slides" in capsys.readouterr().out
    assert main(["mist-resplit", str(mist_leaky), "--out", str(tmp_path / "g")]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    bad = ["mist-resplit", str(mist_leaky), "--out", str(tmp_path / "h"), "--slide-pattern", "^(Z+)_"]
    assert main(bad) == 2
    assert "cannot parse a slide id" in capsys.readouterr().err
