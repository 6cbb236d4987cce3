"""Issue 20, engine part: a non-finite window stops the run (nothing written, store not complete), and a
one-window job resumed after an interruption (cancel, a full disk) ends identical to an uninterrupted run."""

from __future__ import annotations

import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from skimage.io import imread

from napari_virtual_ihc.ihc_store import DONE_FILE
from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.errors import NonFiniteOutputError, StoreWriteError
from napari_virtual_ihc.models import ModelSpec, build_generator
from napari_virtual_ihc.models.spec import LoadedGenerator
from napari_virtual_ihc.slides.base import ArraySlide


def _generator(norm: str, seed: int = 0, broken: bool = False) -> LoadedGenerator:
    torch.manual_seed(seed)
    module = build_generator("resnet", ngf=4, n_blocks=1, norm=norm).eval()
    if broken:  # what a diverged training leaves: one NaN weight poisons every output pixel
        with torch.no_grad():
            module.model[1].weight[0, 0, 0, 0] = float("nan")
    spec = ModelSpec("resnet", {"ngf": 4, "n_blocks": 1, "norm": norm}, mpp=None, name=f"t-{norm}")
    return LoadedGenerator(module=module, spec=spec, source="test", sha256=f"t-{norm}-{seed}-{broken}")


@pytest.fixture(scope="module")
def he_tissue(data_dir: Path) -> np.ndarray:
    """A real H&E field (tiatoolbox target image), 256 x 256."""
    return np.ascontiguousarray(imread(data_dir / "tiatoolbox-target-image.png")[200:456, 200:456, :3])


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_nan_model_output_is_refused_and_the_store_is_not_complete(
    he_tissue: np.ndarray, tmp_path: Path, norm: str
) -> None:
    store = tmp_path / "nan.ome.zarr"
    with pytest.raises(NonFiniteOutputError, match="NaN or infinity"):
        stain_slide(
            ArraySlide(he_tissue, 0.5), _generator(norm, broken=True), store, EngineSettings(tile=128)
        )
    done = store / DONE_FILE
    assert not done.exists() or done.read_text() == ""
    if (store / ".zattrs").exists():
        assert zarr.open_group(str(store), mode="r").attrs["virtual_ihc"].get("complete") is not True


def _levels(store: Path) -> list[np.ndarray]:
    g = zarr.open_group(str(store), mode="r")
    return [np.asarray(g[str(i)][:]) for i in range(len(g.attrs["multiscales"][0]["datasets"]))]


def _with_glass(tissue: np.ndarray) -> np.ndarray:
    """Tissue in the top-left of a 512 px field of blank glass: 16 tiles of 128, some background."""
    img = np.full((512, 512, 3), 255, np.uint8)
    img[:256, :256] = tissue
    return img


SETTINGS = EngineSettings(tile=128, batch=1)


def test_one_window_job_cancelled_then_resumed_equals_uninterrupted(
    he_tissue: np.ndarray, tmp_path: Path
) -> None:
    img = _with_glass(he_tissue)
    model = _generator("instance")
    ref = tmp_path / "ref.ome.zarr"
    rep = stain_slide(ArraySlide(img, 0.5), model, ref, SETTINGS)
    assert rep.tiles_total == 16 and 0 < rep.tiles_skipped < 16

    store = tmp_path / "cut.ome.zarr"
    cancel = threading.Event()
    first = stain_slide(
        ArraySlide(img, 0.5), model, store, SETTINGS, progress=lambda p: cancel.set(), cancel=cancel
    )
    assert first.cancelled and first.tiles_done == 0  # statistics saved, the pooled tiles not yet written
    second = stain_slide(ArraySlide(img, 0.5), model, store, SETTINGS)
    assert not second.cancelled and second.tiles_done > 0
    for a, b in zip(_levels(store), _levels(ref), strict=True):
        assert np.array_equal(a, b)


def test_one_window_job_after_disk_full_resumes_identical(he_tissue: np.ndarray, tmp_path: Path) -> None:
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", f"vihc-{uuid.uuid4().hex[:8]}", str(mnt)],
        capture_output=True,
    )
    if r.returncode != 0:
        pytest.skip("needs permission to mount a small tmpfs (a real full disk)")
    rng = np.random.default_rng(0)  # tissue-coloured noise compresses badly, so the disk fills mid-job
    img = np.clip(he_tissue.astype(int) + rng.integers(-40, 40, he_tissue.shape), 0, 255).astype(np.uint8)
    model = _generator("instance", seed=1)
    settings = EngineSettings(tile=64, batch=1)  # 16 tiles: the one-window path
    try:
        full = mnt / "job.ome.zarr"
        with pytest.raises(StoreWriteError, match="disk full"):
            stain_slide(ArraySlide(img, 0.5), model, full, settings)
        n_done = len((full / DONE_FILE).read_text().splitlines()) if (full / DONE_FILE).exists() else 0
        moved = tmp_path / "job.ome.zarr"
        shutil.copytree(full, moved)  # the user frees space: here, the store moves to a roomier disk
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    assert n_done < 16
    resumed = stain_slide(ArraySlide(img, 0.5), model, moved, settings)
    assert resumed.tiles_resumed == n_done and resumed.tiles_done == 16 - n_done
    ref = tmp_path / "ref.ome.zarr"
    stain_slide(ArraySlide(img, 0.5), model, ref, settings)
    for a, b in zip(_levels(moved), _levels(ref), strict=True):
        assert np.array_equal(a, b)
