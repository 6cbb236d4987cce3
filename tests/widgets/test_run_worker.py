"""The worker side of a widget run: when the GUI may stop waiting for the engine's planning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_virtual_ihc._widgets.stain.worker import LiveStoreView, _with_live_view
from napari_virtual_ihc.inference import EngineSettings, iter_stain_slide
from napari_virtual_ihc.inference.api import RunPlan, TileProgress
from napari_virtual_ihc.inference.errors import RegionError
from napari_virtual_ihc.models import load_generator
from napari_virtual_ihc.slides import ArraySlide


def test_the_report_after_the_plan_comes_before_any_tile_and_a_refused_run_yields_nothing(
    he_crop: np.ndarray, inverting_model: Path, tmp_path: Path
) -> None:
    """The widget builds its layer on the first report (the engine has planned and chosen its kernels, so
    napari's build overlaps the first batch): that report must come before any tile is computed."""
    model = load_generator(inverting_model)
    settings = EngineSettings(tile=64, batch=1, device="cpu")
    live = LiveStoreView()
    events = _with_live_view(
        iter_stain_slide(ArraySlide(he_crop), model, tmp_path / "a.ome.zarr", settings), live
    )
    assert isinstance(next(events), RunPlan)
    assert live.opened is not None  # the store is open before the GUI sees the plan
    planned = next(events)
    assert isinstance(planned, TileProgress) and planned.new_boxes == [] and planned.done == 0
    events.close()

    region = (10**6, 10**6, 64, 64)  # outside the slide: refused before any plan or progress
    run = _with_live_view(
        iter_stain_slide(ArraySlide(he_crop), model, tmp_path / "b.ome.zarr", settings, region=region),
        LiveStoreView(),
    )
    with pytest.raises(RegionError):
        next(run)


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
