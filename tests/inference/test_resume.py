"""A killed or cancelled run resumes without recomputing finished tiles and ends equal to an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from slow_stain_job import SETTINGS, job_inputs

from napari_virtual_ihc.ihc_store import DONE_FILE
from napari_virtual_ihc.inference import stain_slide

HERE = Path(__file__).parent


def levels(store: Path) -> list[np.ndarray]:
    g = zarr.open_group(str(store), mode="r")
    return [np.asarray(g[str(i)][:]) for i in range(len(g.attrs["multiscales"][0]["datasets"]))]


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("ref") / "ref.ome.zarr"
    slide, model = job_inputs(data_dir)
    rep = stain_slide(slide, model, store, SETTINGS)
    assert rep.tiles_done == rep.tiles_total == 64 and not rep.cancelled
    return store


def test_kill_9_then_rerun_resumes_and_matches_uninterrupted(reference, data_dir, tmp_path):
    store = tmp_path / "killed.ome.zarr"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "slow_stain_job.py"), str(store), str(data_dir), "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    done_file = store / DONE_FILE
    deadline = time.time() + 60
    while time.time() < deadline:
        if done_file.exists() and done_file.read_text().count("\n") >= 8:
            break
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = done_file.read_text().count("\n")
    assert 8 <= finished_before < 64
    attrs = zarr.open_group(str(store), mode="r").attrs["virtual_ihc"]
    assert attrs["complete"] is False

    slide, model = job_inputs(data_dir)
    rep = stain_slide(slide, model, store, SETTINGS)
    print(
        f"kill -9 after {finished_before} tiles; rerun recomputed {rep.tiles_done}, resumed {rep.tiles_resumed}"
    )
    assert rep.tiles_resumed == finished_before
    assert rep.tiles_done == 64 - finished_before  # finished tiles were not recomputed
    assert zarr.open_group(str(store), mode="r").attrs["virtual_ihc"]["complete"] is True
    for a, b in zip(levels(store), levels(reference), strict=True):
        assert np.array_equal(a, b)


def test_cancel_between_batches_then_resume(reference, data_dir, tmp_path):
    store = tmp_path / "cancelled.ome.zarr"
    slide, model = job_inputs(data_dir)
    cancel = threading.Event()
    seen = []

    def on_progress(p):
        seen.append(p.done)
        if p.done >= 10:
            cancel.set()

    rep = stain_slide(slide, model, store, SETTINGS, progress=on_progress, cancel=cancel)
    assert rep.cancelled and 10 <= rep.tiles_done < 64
    assert rep.tiles_done == seen[-1]  # stopped at the next batch boundary: nothing half-done reported
    rep2 = stain_slide(slide, model, store, SETTINGS)
    assert rep2.tiles_resumed == rep.tiles_done and rep2.tiles_done == 64 - rep.tiles_done
    for a, b in zip(levels(store), levels(reference), strict=True):
        assert np.array_equal(a, b)
