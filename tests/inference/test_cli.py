"""`virtual-ihc stain`: one store and run.json per slide; torchrun ranks share the slides, each stained once."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from engine_helpers import small_generator
from skimage.io import imread, imsave

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.models import save_generator


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    model = small_generator("instance", ngf=4, n_blocks=2, mpp=0.5)
    return save_generator(tmp_path / "he2her2.safetensors", model.module, model.spec)


@pytest.fixture
def slides(data_dir, tmp_path) -> list[Path]:
    img = imread(data_dir / "tiatoolbox-target-image.png")[..., :3]
    paths = []
    for i, (y, x) in enumerate([(0, 0), (300, 300), (600, 100)]):
        p = tmp_path / f"case{i}.png"
        imsave(p, np.ascontiguousarray(img[y : y + 300, x : x + 400]), check_contrast=False)
        paths.append(p)
    return paths


def test_stain_cli_writes_store_and_run_json(checkpoint, slides, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "stain",
            str(slides[0]),
            "--model",
            str(checkpoint),
            "--out",
            str(out),
            "--tile",
            "128",
            "--batch",
            "2",
        ]
    )
    assert code == 0
    store = out / "case0.ome.zarr"
    run = json.loads((out / "case0.run.json").read_text())
    for key in ("device", "tiles_done", "tiles_skipped", "seconds", "mp_per_s", "precision", "tiles_resumed"):
        assert key in run
    assert run["device"] == "cpu" and run["tiles_done"] + run["tiles_skipped"] == run["tiles_total"] == 12
    assert run["mp_per_s"] > 0
    g = zarr.open_group(str(store), mode="r")
    assert g.attrs["virtual_ihc"]["complete"] is True
    assert g["0"].shape == (3, 300, 400)
    # Run again: the cohort has it done, nothing is touched.
    again = ["stain", str(slides[0]), "--model", str(checkpoint), "--out", str(out), "--tile", "128"]
    assert main(again) == 0
    assert "1 of 1 slides already settled" in capsys.readouterr().out
    # Interrupted before its record (no record): everything is resumed, nothing recomputed.
    (out / ".cohort" / "case0.ome.zarr.done.json").unlink()
    assert main(again) == 0
    assert json.loads((out / "case0.run.json").read_text())["tiles_resumed"] == 12


def test_stain_cli_bad_input_is_a_clear_error(checkpoint, slides, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["stain", str(slides[0]), "--model", str(checkpoint), "--out", str(blocker / "sub")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err
    assert (
        main(
            [
                "stain",
                str(slides[0]),
                "--model",
                str(tmp_path / "missing.safetensors"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "stain",
                str(slides[0]),
                "--model",
                str(checkpoint),
                "--out",
                str(tmp_path / "o"),
                "--region",
                "1,2,3",
            ]
        )
        == 2
    )
    code = main(
        [
            "stain",
            str(slides[0]),
            "--model",
            str(checkpoint),
            "--out",
            str(tmp_path / "o"),
            "--region",
            "9000,9000,10,10",
        ]
    )
    assert code == 1 and "outside the slide" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_torchrun_two_ranks_stain_three_slides_each_once(checkpoint, slides, tmp_path):
    out = tmp_path / "cohort"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        shutil.which("torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "napari_virtual_ihc.cli",
        "stain",
        *map(str, slides),
        "--model",
        str(checkpoint),
        "--out",
        str(out),
        "--tile",
        "128",
        "--quiet",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    started = re.findall(r"\[rank (\d)/2\] stain (\S+)", r.stdout)
    assert sorted(Path(s).name for _, s in started) == ["case0.png", "case1.png", "case2.png"]  # each once
    # which rank takes which slide is dynamic (claims, largest first): a rank that starts late may find them
    # all taken. Balance over processes is tests/inference/test_cohort.py's.
    assert {rank for rank, _ in started} <= {"0", "1"}
    for p in slides:
        run = json.loads((out / f"{p.stem}.run.json").read_text())
        assert run["world_size"] == 2 and run["tiles_resumed"] == 0
        assert (
            zarr.open_group(str(out / f"{p.stem}.ome.zarr"), mode="r").attrs["virtual_ihc"]["complete"]
            is True
        )
    assert sys.executable  # same interpreter family; torchrun uses the env's python
