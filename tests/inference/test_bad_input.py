"""Bad input gets a clear, typed error and nothing half-written is reported as done."""

from __future__ import annotations

import subprocess
import uuid

import numpy as np
import pytest
import torch
import zarr
from engine_helpers import small_generator

from napari_virtual_ihc.ihc_store import DONE_FILE
from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.errors import (
    OutputNotWritableError,
    RegionError,
    StoreMismatchError,
    StoreWriteError,
)
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.slides.base import ArraySlide


class ExplodingSlide(ArraySlide):
    """Proves no work started: any pixel read fails the test."""

    def read_region(self, location, level, size):
        raise AssertionError("the engine read pixels before checking the output folder")


def test_unwritable_output_folder_fails_before_any_work(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    slide = ExplodingSlide(np.zeros((64, 64, 3), np.uint8), 0.5)
    with pytest.raises(OutputNotWritableError, match="cannot write to output folder"):
        stain_slide(slide, small_generator("batch", ngf=4, n_blocks=1), blocker / "out" / "s.ome.zarr")


def test_region_outside_the_slide(he_1024, tmp_path):
    slide = ArraySlide(he_1024, 0.5)
    model = small_generator("batch", ngf=4, n_blocks=1)
    with pytest.raises(RegionError, match="outside the slide"):
        stain_slide(slide, model, tmp_path / "r.ome.zarr", region=(5000, 5000, 100, 100))
    with pytest.raises(RegionError, match="empty"):
        stain_slide(slide, model, tmp_path / "r.ome.zarr", region=(0, 0, 0, 10))
    # A region hanging over the edge is clipped to the slide; only its tiles are stained.
    rep = stain_slide(
        slide, model, tmp_path / "r2.ome.zarr", EngineSettings(tile=256), region=(900, 900, 500, 500)
    )
    assert rep.tiles_total == 1 and rep.tiles_done == 1
    out = np.asarray(zarr.open_group(str(tmp_path / "r2.ome.zarr"), mode="r")["0"][:])
    assert (out[:, :700, :700] == 255).all()  # outside the region: unwritten (reads white)


def test_slide_smaller_than_one_tile(he_1024, tmp_path):
    img = np.ascontiguousarray(he_1024[:83, :101])
    model = small_generator("batch", ngf=4, n_blocks=2)
    rep = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "tiny.ome.zarr", EngineSettings(tile=512))
    assert rep.tiles_total == 1 and rep.tiles_done + rep.tiles_skipped == 1
    out = np.asarray(zarr.open_group(str(tmp_path / "tiny.ome.zarr"), mode="r")["0"][:]).transpose(1, 2, 0)
    assert out.shape == (83, 101, 3)
    # Equals the model on the whole image (padded by reflection to the stride, as the engine does).
    padded = np.pad(img, ((0, 1), (0, 3), (0, 0)), mode="reflect")
    with torch.inference_mode():
        ref = to_uint8(model.module(to_input(padded[None], "minus_one_one")), "minus_one_one")[0, :83, :101]
    assert np.abs(out.astype(int) - ref).max() <= 1


def test_resuming_with_other_settings_is_refused(he_1024, tmp_path):
    slide = ArraySlide(he_1024[:300, :300].copy(), 0.5)
    model = small_generator("batch", ngf=4, n_blocks=1)
    stain_slide(slide, model, tmp_path / "m.ome.zarr", EngineSettings(tile=128))
    with pytest.raises(StoreMismatchError, match="other settings"):
        stain_slide(slide, model, tmp_path / "m.ome.zarr", EngineSettings(tile=256))


def test_full_disk_mid_run_is_a_clear_error_and_the_tile_is_not_marked_done(he_1024, tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    tag = f"vihc-{uuid.uuid4().hex[:8]}"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", tag, str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("needs permission to mount a small tmpfs (a real full disk)")
    try:
        rng = np.random.default_rng(0)  # incompressible pixels fill the disk after a few tiles
        img = rng.integers(0, 256, (768, 768, 3), dtype=np.uint8)
        model = small_generator("none", ngf=4, n_blocks=0)
        store = mnt / "full.ome.zarr"
        with pytest.raises(StoreWriteError, match="disk full"):
            stain_slide(
                ArraySlide(img, 0.5), model, store, EngineSettings(tile=64, batch=1, skip_background=False)
            )
        done = [int(line.split()[0]) for line in (store / DONE_FILE).read_text().splitlines()]
        assert 0 < len(done) < 144
        # Every tile marked done has its pixels (a chunk file) in the store.
        arr = zarr.open_group(str(store), mode="r")["0"]
        for i in done:
            row, col = divmod(i, 12)
            assert (store / "0" / f"0.{row}.{col}").exists()
        assert np.asarray(arr[:, :64, :64]).std() > 0
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
