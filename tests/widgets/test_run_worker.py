"""The worker side of a widget run: when the GUI may stop waiting for the engine's planning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_virtual_ihc._widgets._run_worker import LiveStoreView, _with_live_view
from napari_virtual_ihc.inference import EngineSettings, iter_stain_slide
from napari_virtual_ihc.inference.api import RunPlan, TileProgress
from napari_virtual_ihc.inference.errors import RegionError
from napari_virtual_ihc.models import load_generator
from napari_virtual_ihc.slides import ArraySlide


def test_ready_is_set_once_the_engine_has_planned_and_when_a_run_fails(
    he_crop: np.ndarray, inverting_model: Path, tmp_path: Path
) -> None:
    model = load_generator(inverting_model)
    settings = EngineSettings(tile=64, batch=1, device="cpu")
    live = LiveStoreView()
    events = _with_live_view(
        iter_stain_slide(ArraySlide(he_crop), model, tmp_path / "a.ome.zarr", settings), live
    )
    assert isinstance(next(events), RunPlan)
    assert not live.ready.is_set()  # the store exists, kernels not chosen yet
    assert isinstance(next(events), TileProgress)
    assert live.ready.is_set()
    events.close()

    failing = LiveStoreView()
    region = (10**6, 10**6, 64, 64)  # outside the slide: refused before any progress
    run = _with_live_view(
        iter_stain_slide(ArraySlide(he_crop), model, tmp_path / "b.ome.zarr", settings, region=region),
        failing,
    )
    with pytest.raises(RegionError):
        next(run)
    assert failing.ready.is_set()  # the GUI never waits for a run that has ended


def test_the_view_shows_what_the_run_wrote_from_memory_and_a_resumed_run_sees_it_too(
    he_crop: np.ndarray, inverting_model: Path, tmp_path: Path
) -> None:
    """The worker's view is the one it opened with the plan: its first batch is read into the cache before
    it is reported, unwritten chunks read as white without zarr, so the whole level comes from memory; a
    resumed run's view shows the earlier tiles."""
    import zarr

    model = load_generator(inverting_model)
    settings = EngineSettings(tile=64, batch=1, device="cpu")
    store = tmp_path / "a.ome.zarr"
    live = LiveStoreView()
    events = _with_live_view(iter_stain_slide(ArraySlide(he_crop), model, store, settings), live)
    plan = next(events)
    assert isinstance(plan, RunPlan) and plan.tiles_resumed == 0
    first = next(events)
    while not (isinstance(first, TileProgress) and first.new_boxes):
        first = next(events)
    events.close()  # a cancelled run: one tile written
    assert live.opened is not None
    level = live.opened.levels[0]
    reads = level.chunk_reads
    assert reads >= 1  # the reload after the write
    on_disk = np.moveaxis(np.asarray(zarr.open_group(str(store), mode="r")["0"]), 0, -1)
    np.testing.assert_array_equal(level[:, :], on_disk)  # the tile where it was written, white elsewhere
    assert level.chunk_reads == reads  # all of it from memory

    resumed = LiveStoreView()
    again = _with_live_view(iter_stain_slide(ArraySlide(he_crop), model, store, settings), resumed)
    plan = next(again)
    assert isinstance(plan, RunPlan) and plan.tiles_resumed >= 1
    again.close()
    assert resumed.opened is not None
    np.testing.assert_array_equal(resumed.opened.levels[0][:, :], on_disk)
