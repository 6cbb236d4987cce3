"""Small InstanceNorm jobs run as one exact pooled pass: up to what memory allows in batch jobs, never
switching a resumed job's statistics."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from engine_helpers import assert_same_up_to_rounding, small_generator
from test_engine_quality import level0, whole_pass

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.devices.probes import cpu_has_bf16
from napari_virtual_ihc.inference.quality import psnr
from napari_virtual_ihc.inference.tiling import INTERACTIVE_POOLED_MP, pooled_pass_limit_mp
from napari_virtual_ihc.slides.base import ArraySlide


def test_a_batch_job_above_the_interactive_limit_is_one_exact_pass_when_memory_allows(he_2048, tmp_path):
    model = small_generator("instance", ngf=4, n_blocks=9)  # ResNet-9 layout, narrow for CI
    top = np.concatenate([he_2048, he_2048[:, ::-1][:, :1024]], axis=1)
    img = np.ascontiguousarray(np.concatenate([top, top[::-1][:1024]], axis=0))  # 3072^2 real H&E texture
    limit = pooled_pass_limit_mp(model.module, torch.device("cpu"), interactive=False)
    assert pooled_pass_limit_mp(model.module, torch.device("cpu"), interactive=True) == INTERACTIVE_POOLED_MP
    assert limit > img.shape[0] * img.shape[1] / 1e6 > INTERACTIVE_POOLED_MP  # 4 channels: a few hundred MB
    rep = stain_slide(
        ArraySlide(img, 0.5),
        model,
        tmp_path / "p.ome.zarr",
        EngineSettings(tile=1024, batch=1, skip_background=False),
    )
    assert rep.settings["pooled_pass"] is True and rep.tiles_done == 9
    p = psnr(level0(tmp_path / "p.ome.zarr"), whole_pass(model, img))
    print(f"one pooled pass over 9.4 MP: PSNR {p:.1f} dB against the model's whole-image forward")
    assert p >= 60.0  # the same computation, up to float rounding


def test_a_job_of_many_small_tiles_is_one_pooled_pass_equal_to_the_whole_image_forward(he_1024, tmp_path):
    """More tiles than the statistics pass would sample, but their windows hold more pixels than the image:
    one pass over the image is exact and cheaper than the tile pass's halos."""
    model = small_generator("instance", ngf=4, n_blocks=3)
    img = he_1024[:768, :768]
    settings = EngineSettings(tile=96, batch=2, skip_background=False, stats_windows=4)
    rep = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "p.ome.zarr", settings)
    assert rep.tiles_done == 64 and rep.settings["pooled_pass"] is True
    assert rep.settings["stats"]["source"] == "pooled" and rep.settings["stats"]["reused_tiles"] == 64
    assert psnr(level0(tmp_path / "p.ome.zarr"), whole_pass(model, img)) >= 60.0


@pytest.mark.skipif(not cpu_has_bf16(), reason="bf16 runs only where the CPU has bf16 instructions")
def test_a_bf16_pooled_pass_is_saved_as_such_and_a_resume_reruns_it_to_the_same_pixels(he_1024, tmp_path):
    from napari_virtual_ihc.ihc_store.layout import DONE_FILE, NORM_STATS_FILE
    from napari_virtual_ihc.inference.slide_stats import POOLED_PRECISION_MARK

    model = small_generator("instance", ngf=16, n_blocks=3)  # wide enough for the Winograd kernels
    img = he_1024[:512, :512]
    bf16 = EngineSettings(tile=128, batch=2, skip_background=False, precision="bf16", winograd=True)
    reference = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "ref.ome.zarr", bf16)
    assert reference.settings["pooled_pass"] is True and reference.settings["compute"]["precision"] == "bf16"
    store = tmp_path / "killed.ome.zarr"
    stain_slide(ArraySlide(img, 0.5), model, store, bf16)
    with np.load(store / NORM_STATS_FILE) as z:
        assert str(z[POOLED_PRECISION_MARK]) == "bf16"
    lines = (store / DONE_FILE).read_text().splitlines(keepends=True)
    (store / DONE_FILE).write_text("".join(lines[:5]))  # killed while writing the pass's tiles
    resumed = stain_slide(ArraySlide(img, 0.5), model, store, bf16)
    assert resumed.tiles_resumed == 5 and resumed.settings["pooled_pass"] is True
    assert np.array_equal(level0(store), level0(tmp_path / "ref.ome.zarr"))
    # bf16 arithmetic, whole-image statistics: close to the fp32 whole-image forward
    assert psnr(level0(store), whole_pass(model, img)) >= 40.0


def test_a_job_whose_statistics_were_sampled_resumes_with_them(he_1024, tmp_path):
    model = small_generator("instance", ngf=4, n_blocks=3)
    img = he_1024[:768, :768]
    # 4 of the 16 tiles sampled (lock-step, their outputs kept as tiles), the other 12 run with those statistics
    sampled = EngineSettings(tile=192, batch=2, skip_background=False, pooled_pass_mp=0.0, stats_windows=4)
    reference = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "ref.ome.zarr", sampled)
    assert reference.settings["pooled_pass"] is False and reference.tiles_done == 16
    assert reference.settings["stats"]["reused_tiles"] == 4 and reference.settings["stats"]["forwards"] == 1

    cancel = threading.Event()
    store = tmp_path / "resumed.ome.zarr"

    def stop_after_the_first_tiles(progress) -> None:
        if progress.done >= 2:
            cancel.set()

    first = stain_slide(
        ArraySlide(img, 0.5), model, store, sampled, progress=stop_after_the_first_tiles, cancel=cancel
    )
    assert first.cancelled and 2 <= first.tiles_done < 16
    # The default would run this small batch job as one pooled pass; the store's statistics were sampled, so
    # the rest must use them: one set of statistics per store, no seam between the two runs' tiles.
    resumed = stain_slide(
        ArraySlide(img, 0.5), model, store, EngineSettings(tile=192, batch=2, skip_background=False)
    )
    assert resumed.settings["pooled_pass"] is False
    assert resumed.tiles_resumed == first.tiles_done
    assert np.array_equal(level0(store), level0(tmp_path / "ref.ome.zarr"))


def _as_before_the_mark(store, keep_tiles: int) -> None:
    """A store written before the statistics recorded their origin, its run killed after ``keep_tiles``."""
    from napari_virtual_ihc.ihc_store.layout import DONE_FILE, NORM_STATS_FILE
    from napari_virtual_ihc.inference.slide_stats import POOLED_MARK, POOLED_PRECISION_MARK

    with np.load(store / NORM_STATS_FILE) as z:
        arrays = {k: z[k] for k in z.files if k not in (POOLED_MARK, POOLED_PRECISION_MARK)}
    assert len(arrays) > 0
    np.savez(store / NORM_STATS_FILE, **arrays)
    lines = (store / DONE_FILE).read_text().splitlines(keepends=True)
    (store / DONE_FILE).write_text("".join(lines[:keep_tiles]))


def test_a_store_from_before_the_mark_resumes_by_the_rule_it_was_written_with(he_1024, tmp_path, monkeypatch):
    """Small jobs were one pooled pass when their windows summed to at most 8 MP: such a store resumes with
    that pass (the same pixels as uninterrupted); above it, its statistics were sampled and are kept."""
    import napari_virtual_ihc.inference.slide_stats as slide_stats

    model = small_generator("instance", ngf=4, n_blocks=3)
    img = he_1024[:768, :768]
    pooled = EngineSettings(tile=192, batch=2, skip_background=False)
    reference = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "ref.ome.zarr", pooled)
    assert reference.settings["pooled_pass"] is True

    store = tmp_path / "old.ome.zarr"
    stain_slide(ArraySlide(img, 0.5), model, store, pooled)
    _as_before_the_mark(store, keep_tiles=5)
    resumed = stain_slide(ArraySlide(img, 0.5), model, store, pooled)
    assert resumed.tiles_resumed == 5 and resumed.settings["pooled_pass"] is True
    assert np.array_equal(level0(store), level0(tmp_path / "ref.ome.zarr"))

    # statistics from small windows (none of them a tile: every tile from the tile pass, as before the mark)
    sampled = EngineSettings(
        tile=192, batch=2, skip_background=False, pooled_pass_mp=0.0, stats_tile=64, stats_share=1.0
    )
    stain_slide(ArraySlide(img, 0.5), model, tmp_path / "ref_s.ome.zarr", sampled)
    old_sampled = tmp_path / "old_s.ome.zarr"
    stain_slide(ArraySlide(img, 0.5), model, old_sampled, sampled)
    _as_before_the_mark(old_sampled, keep_tiles=5)
    monkeypatch.setattr(
        slide_stats, "LEGACY_POOLED_MP", 0.0
    )  # this job's windows were above the old rule's limit
    resumed = stain_slide(ArraySlide(img, 0.5), model, old_sampled, pooled)
    assert resumed.tiles_resumed == 5 and resumed.settings["pooled_pass"] is False
    assert_same_up_to_rounding(level0(old_sampled), level0(tmp_path / "ref_s.ome.zarr"))  # tiles re-paired
