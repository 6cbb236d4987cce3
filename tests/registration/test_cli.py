"""`virtual-ihc register | compare | pairs` on the real kidney pair, then training on the pairs it cut."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest
from PIL import Image

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.registration import SlideTransform, read_points, rtre

FIXED, MOVING = "Rat-Kidney_HE", "Rat-Kidney_PanCytokeratin"
pytestmark = pytest.mark.slow


_STDOUT: list[str] = []  # what `register` printed (a module fixture cannot take capsys)


@pytest.fixture(scope="module")
def registered_dir(tmp_path_factory, data_dir):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("register")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            [
                "register",
                str(data_dir / f"{FIXED}.jpg"),
                str(data_dir / f"{MOVING}.jpg"),
                "--out",
                str(out),
                "--points",
                str(data_dir / f"{MOVING}.landmarks.csv"),
            ]
        )
    _STDOUT.append(printed.getvalue())
    assert code == 0
    return out


def test_register_writes_transform_and_points_in_fixed(registered_dir, data_dir):
    t = SlideTransform.load(registered_dir / "transform.json")
    assert t.converged and t.fixed.digest and t.moving.digest
    mapped, labels = read_points(registered_dir / "points_in_fixed.csv")
    moving, moving_labels = read_points(data_dir / f"{MOVING}.landmarks.csv")
    assert labels == moving_labels and len(mapped) == len(moving)  # same layout, same order
    header = (registered_dir / "points_in_fixed.csv").read_text().splitlines()[0]
    assert header == ",X,Y"
    fixed, _ = read_points(data_dir / f"{FIXED}.landmarks.csv")
    n = min(len(fixed), len(mapped))
    errors = rtre(mapped[:n], fixed[:n], t.fixed.dimensions)
    print(f"CLI points: rTRE median {np.median(errors):.4f}, p90 {np.percentile(errors, 90):.4f}")
    assert np.median(errors) <= 0.004
    report = json.loads((registered_dir / "registration.json").read_text())
    assert report["converged"] and report["points_in_fixed"] == "points_in_fixed.csv"
    # the summary line gives the gate's figures (what decided), not the old correlation / Dice rule
    summary = _STDOUT[-1]
    print(summary)
    assert summary.startswith("converged (coarse + rigid + affine")
    q = report["quality"]
    assert f"{q['peak_margin']:+.3f} over its best perturbation" in summary
    assert f"{q['peak_contrast']:+.3f} over their median" in summary


def test_register_refuses_swapped_inputs(tmp_path, data_dir, capsys):
    code = main(
        ["register", str(data_dir / f"{MOVING}.jpg"), str(data_dir / f"{FIXED}.jpg"), "--out", str(tmp_path)]
    )
    assert code == 2
    assert "swapped" in capsys.readouterr().err
    assert not (tmp_path / "transform.json").exists()


def test_compare_on_the_registered_pair_writes_the_report(registered_dir, data_dir, tmp_path):
    # a stand-in "virtual IHC" in the H&E frame: the real IHC resampled through the transform, then made
    # lighter in half the image so the measures have something to find
    t = SlideTransform.load(registered_dir / "transform.json")
    from napari_virtual_ihc.slides import open_slide

    w, h = t.fixed.dimensions
    virtual = t.resample(open_slide(data_dir / f"{MOVING}.jpg"), (0, 0, w, h), 1.0)
    virtual[:, w // 2 :] = (255 - (255 - virtual[:, w // 2 :].astype(np.int16)) // 3).astype(np.uint8)
    Image.fromarray(virtual).save(tmp_path / "virtual.png")
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            str(tmp_path / "virtual.png"),
            str(data_dir / f"{MOVING}.jpg"),
            "--transform",
            str(registered_dir / "transform.json"),
            "--out",
            str(out),
            "--tile",
            "256",
        ]
    )
    assert code == 0
    summary = json.loads((out / "compare.json").read_text())
    rows = list(csv.DictReader((out / "tiles.csv").open()))
    print(
        "compare:", {k: summary[k] for k in ("dab_dice", "dab_iou", "tiles_compared", "her2_tile_agreement")}
    )
    assert 0.3 < summary["dab_dice"] < 0.99  # left half identical, right half lighter
    left = [float(r["dab_dice"]) for r in rows if r["dab_dice"] and int(r["x"]) + int(r["w"]) <= w // 2]
    right = [float(r["dab_dice"]) for r in rows if r["dab_dice"] and int(r["x"]) >= w // 2]
    assert left and right and min(left) > 0.97 and max(right) < min(left)
    assert (out / "report.png").stat().st_size > 10_000 and (out / "report.md").is_file()
    # the transform belongs to another IHC file: refused
    assert (
        main(
            [
                "compare",
                str(tmp_path / "virtual.png"),
                str(data_dir / f"{FIXED}.jpg"),
                "--transform",
                str(registered_dir / "transform.json"),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )


def test_pairs_cut_from_the_registered_pair_train_the_pyramid_preset(
    registered_dir, data_dir, tmp_path, capsys
):
    out = tmp_path / "pairs"
    code = main(
        [
            "pairs",
            str(data_dir / f"{FIXED}.jpg"),
            str(data_dir / f"{MOVING}.jpg"),
            "--transform",
            str(registered_dir / "transform.json"),
            "--out",
            str(out),
            "--size",
            "64",
            "--downsample",
            "2",
            "--min-tissue",
            "0.6",
            "--landmarks",
            str(data_dir / f"{FIXED}.landmarks.csv"),
            str(data_dir / f"{MOVING}.landmarks.csv"),
        ]
    )
    assert code == 0
    summary = json.loads((out / "pairs.json").read_text())
    rows = list(csv.DictReader((out / "tiles.csv").open()))
    print("pairs:", summary)
    assert summary["kept"] >= 8 and summary["kept"] < summary["tiles"]  # some glass / poor tiles dropped
    assert summary["kept_local_rtre_median"] is not None and summary["kept_local_rtre_median"] < 0.006
    assert all(r["reason"] for r in rows if r["kept"] == "False")
    he = sorted(p.name for p in (out / "HE").iterdir())
    assert he == sorted(p.name for p in (out / "IHC").iterdir()) and len(he) == summary["kept"]
    assert Image.open(out / "HE" / he[0]).size == (64, 64)
    # the trainer reads them as they are (paired folders) and trains the pyramid preset a few steps
    from virtual_ihc_train.cli import main as train_main

    run = tmp_path / "run"
    tiny = tmp_path / "tiny.yaml"  # the preset shrunk to a CPU-sized model, a few steps
    tiny.write_text(
        "model:\n  arch_kwargs: {n_blocks: 1, ngf: 8, norm: batch, use_dropout: false}\n  ndf: 8\n"
        "data:\n  preprocess: none\n  num_workers: 0\n"
        "train:\n  batch_size: 4\n  max_steps: 3\n  checkpoint_every: 0\n  checkpoint_each_epoch: false\n"
        "  grid_every_epoch: false\n  log_every: 1\n  progress: false\n  tensorboard: false\n"
    )
    code = train_main(
        [
            "fit",
            "--preset",
            "pyramid-pix2pix",
            "--config",
            str(tiny),
            "--paired",
            str(out / "HE"),
            str(out / "IHC"),
            "--run-dir",
            str(run),
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = list(csv.DictReader((run / "metrics.csv").open()))
    assert int(metrics[-1]["step"]) == 3 and np.isfinite(float(metrics[-1]["loss_G_L1_scale0"]))
    # a stale transform (another IHC file) is refused before anything is cut
    assert (
        main(
            [
                "pairs",
                str(data_dir / f"{FIXED}.jpg"),
                str(data_dir / f"{FIXED}.jpg"),
                "--transform",
                str(registered_dir / "transform.json"),
                "--out",
                str(tmp_path / "stale"),
                "--downsample",
                "2",
            ]
        )
        == 2
    )
    assert not (tmp_path / "stale").exists()
