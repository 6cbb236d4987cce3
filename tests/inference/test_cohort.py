"""Cohorts that share work: claim files, leases, take-over, the summary, a corrupt tile failing one slide."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from engine_helpers import small_generator
from skimage.io import imread, imsave

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.cohort import COHORT_DIR, Cohort, SlideRecord
from napari_virtual_ihc.models import save_generator

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    model = small_generator("batch", ngf=4, n_blocks=1, mpp=0.5)
    return save_generator(tmp_path / "tiny.safetensors", model.module, model.spec)


@pytest.fixture
def image(data_dir) -> np.ndarray:
    return imread(data_dir / "tiatoolbox-target-image.png")[..., :3]


def _stain_args(slides: list[Path], checkpoint: Path, out: Path) -> list[str]:
    return [
        "stain",
        *map(str, slides),
        "--model",
        str(checkpoint),
        "--out",
        str(out),
        "--tile",
        "64",
        "--bn-stats",
        "running",
        "--no-skip-background",
        "--quiet",
    ]


def test_claims_are_exclusive_and_a_stale_one_is_taken_over(tmp_path):
    a = Cohort(tmp_path, "host:1", lease_s=0.3)
    b = Cohort(tmp_path, "host:2", lease_s=0.3)
    a.register([("s1", "s1.svs"), ("s2", "s2.svs")])
    (tmp_path / "s1").mkdir()  # the stores (a done record counts while its store exists)
    assert a.claim_next(["s1", "s2"]) == "s1"
    assert b.claim_next(["s1", "s2"]) == "s2"  # s1 is held
    assert b.claim_next(["s1", "s2"]) is None  # both held, none stale yet
    with a.hold("s1") as lost:  # a renews while it works: never stale however long b watches
        t = time.monotonic()
        while time.monotonic() - t < 0.8:
            assert b.claim_next(["s1"]) is None
            time.sleep(0.05)
        assert not lost.is_set()
    # a stops renewing (as if killed): b takes s1 over once a lease has passed by b's own clock
    t = time.monotonic()
    while b.claim_next(["s1"]) != "s1":
        assert time.monotonic() - t < 3
        time.sleep(0.05)
    assert (
        time.monotonic() - t >= 0.3 - 0.3 / 4
    )  # a lease after a's last renewal (at most lease / 4 before t)
    with a.hold("s1") as lost:  # a, back, finds its claim gone and is told
        lost.wait(2)
        assert lost.is_set()
    assert b.finish("s1", SlideRecord("s1.svs", "done", tiles=4, seconds=1.0, mp_per_s=0.5))
    assert not a.finish("s1", SlideRecord("s1.svs", "done"))  # recorded once only
    assert b.claim_next(["s1"]) is None and a.unsettled(["s1", "s2"]) == ["s2"]
    rows = {r.slide: r for r in a.records()}
    assert rows["s1.svs"].state == "done" and rows["s1.svs"].worker == ""  # the record, as b wrote it
    assert rows["s2.svs"].state == "claimed" and rows["s2.svs"].worker == "host:2"


def test_three_processes_share_six_slides_and_finish_a_killed_ones(checkpoint, image, tmp_path):
    sizes = [(448, 384), (64, 64), (320, 256), (128, 96), (256, 192), (96, 128)]  # uneven: 1 to 42 tiles
    slides = []
    for i, (w, h) in enumerate(sizes):
        p = tmp_path / f"case{i}.png"
        imsave(p, np.ascontiguousarray(image[i * 50 : i * 50 + h, i * 40 : i * 40 + w]), check_contrast=False)
        slides.append(p)
    out = tmp_path / "out"
    env = dict(
        os.environ, OMP_NUM_THREADS="1", PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    cmd = [
        sys.executable,
        "-m",
        "napari_virtual_ihc.cli",
        *_stain_args(slides, checkpoint, out),
        "--lease",
        "1",
    ]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    # Kill (SIGKILL: no clean-up) the first worker seen holding a slide.
    victim = None
    t0 = time.monotonic()
    while victim is None and time.monotonic() - t0 < 60:
        for claim in (out / COHORT_DIR).glob("*.claim"):
            try:
                pid = int(json.loads(claim.read_text())["worker"].split(":")[1])
            except (OSError, ValueError, KeyError, IndexError):
                continue
            victim, victim_key = next(p for p in procs if p.pid == pid), claim.name[: -len(".claim")]
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert victim is not None
    outputs = {p.pid: p.communicate(timeout=120) for p in procs}
    survivors = [p for p in procs if p is not victim]
    assert all(p.returncode == 0 for p in survivors), [outputs[p.pid] for p in survivors]
    done_lines = [line for p in procs for line in outputs[p.pid][0].splitlines() if line.startswith("done ")]
    assert sorted(line.split()[1].rstrip(":") for line in done_lines) == sorted(p.name for p in slides)
    rows = list(csv.DictReader((out / "cohort.csv").open()))
    assert sorted(Path(r["slide"]).name for r in rows) == sorted(p.name for p in slides)
    assert {r["state"] for r in rows} == {"done"}
    killed = next(r for r in rows if Path(r["slide"]).stem == victim_key.removesuffix(".ome.zarr"))
    assert str(victim.pid) not in killed["worker"]  # finished by another worker
    workers = {r["worker"] for r in rows}
    assert len(workers) >= 2
    for p in slides:  # complete stores
        assert json.loads((out / f"{p.stem}.run.json").read_text())["store_complete"] is True
    assert not list((out / COHORT_DIR).glob("*.claim*"))
    status = subprocess.run(
        [sys.executable, "-m", "napari_virtual_ihc.cli", "cohort", "status", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0 and "6 done, 0 failed, 0 claimed, 0 pending of 6 slides" in status.stdout


def test_a_corrupt_tile_fails_its_slide_with_the_tile_named_and_the_cohort_goes_on(
    checkpoint, image, tmp_path, capsys
):
    bad = tmp_path / "bad.tif"
    tifffile.imwrite(bad, np.ascontiguousarray(image[:384, :512]), tile=(128, 128), compression="zlib")
    with tifffile.TiffFile(bad) as t:
        offset, count = t.pages[0].dataoffsets[5], t.pages[0].databytecounts[5]
    with bad.open("r+b") as f:  # tile 5 (row 1, column 1) no longer decodes
        f.seek(offset)
        f.write(b"\0" * count)
    good = tmp_path / "good.png"
    imsave(good, np.ascontiguousarray(image[:128, :192]), check_contrast=False)
    out = tmp_path / "out"
    assert main(_stain_args([bad, good], checkpoint, out)) == 1
    err = capsys.readouterr().err
    assert "cannot read tile" in err and "x=" in err and "Traceback" not in err
    rows = {Path(r["slide"]).name: r for r in csv.DictReader((out / "cohort.csv").open())}
    assert rows["good.png"]["state"] == "done"
    assert rows["bad.tif"]["state"] == "failed" and "cannot read tile" in rows["bad.tif"]["error"]
    assert main(["cohort", "status", str(out)]) == 0
    assert "1 done, 1 failed" in capsys.readouterr().out
    # A worker started on this folder with another model is refused before it claims anything.
    other = small_generator("batch", ngf=4, n_blocks=1, seed=1, mpp=0.5)
    other_ckpt = save_generator(tmp_path / "other.safetensors", other.module, other.spec)
    assert main(_stain_args([good], other_ckpt, out)) == 2
    assert "holds a cohort started with other settings (model_sha256" in capsys.readouterr().err
    assert main(["cohort", "status", str(tmp_path / "nothing")]) == 2
