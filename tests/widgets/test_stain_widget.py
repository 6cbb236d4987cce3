"""The Virtual IHC dock widget, driven through the plugin manifest in a real napari viewer (Xvfb).

Every run goes through the real threaded path (``WidgetTask`` on napari's worker pool + the real tile engine) and is
waited on with ``qtbot.waitUntil``. The model is a real ResNet generator whose weights make its output a
known per-pixel function of the input (a negative image), so every written pixel can be checked.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_virtual_ihc.ihc_store import CachedStoreLevel, open_store, store_path_for

pytestmark = pytest.mark.gui

SCALE = (0.5, 0.5)  # µm/px
TRANSLATE = (100.0, 250.0)  # µm
RUN_TIMEOUT_MS = 25_000


# --- helpers ----------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def engine_available(inverting_model: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip the engine-dependent tests, saying why, while ``stain_slide`` is still a stub."""
    from napari_virtual_ihc.inference import EngineSettings, stain_slide
    from napari_virtual_ihc.models import load_generator
    from napari_virtual_ihc.slides import ArraySlide

    slide = ArraySlide(np.full((32, 32, 3), 128, np.uint8))
    try:
        stain_slide(
            slide,
            load_generator(inverting_model),
            tmp_path_factory.mktemp("probe") / "probe.ome.zarr",
            EngineSettings(tile=64, batch=1, device="cpu"),
        )
    except NotImplementedError:
        pytest.skip("the tile engine (inference.stain_slide) is not implemented yet")


def dock_widget(viewer: Any) -> Any:
    _, widget = viewer.window.add_plugin_dock_widget("napari-virtual-ihc", "Virtual IHC")
    return widget


def add_he(viewer: Any, rgb: np.ndarray, name: str = "H&E", translate: tuple = TRANSLATE) -> Any:
    return viewer.add_image(rgb, name=name, rgb=True, scale=SCALE, translate=translate, units=("um", "um"))


def configure(widget: Any, model: Path, out: Path, tile: int = 128, batch: int = 2) -> None:
    widget.set_model_path(model)
    widget.output_edit.setText(str(out))
    widget.tile_spin.setValue(tile)
    widget.batch_spin.setValue(batch)
    widget.set_device("cpu")


def run_and_wait(qtbot: Any, widget: Any) -> Any:
    run = widget.start_run()
    assert run is not None, "Run did not start"
    qtbot.waitUntil(lambda: not run.running, timeout=RUN_TIMEOUT_MS)
    return run


def store_rgb(store: Path, level: int = 0) -> np.ndarray:
    import zarr

    return np.moveaxis(np.asarray(zarr.open_group(str(store), mode="r")[str(level)][:]), 0, -1)


def gray(img: np.ndarray) -> np.ndarray:
    return img[..., :3].astype(np.float64).mean(axis=-1)


# --- no engine needed ---------------------------------------------------------------------------------
def test_dock_widget_from_manifest_lists_rgb_layers_and_devices(
    make_napari_viewer: Any, he_crop: np.ndarray
) -> None:
    viewer = make_napari_viewer()
    widget = dock_widget(viewer)
    he = add_he(viewer, he_crop)
    viewer.add_image(np.zeros((20, 20), np.float32), name="not rgb")
    assert [widget.source_combo.itemText(i) for i in range(widget.source_combo.count())] == ["H&E"]
    assert widget.selected_source_layer() is he
    devices = [widget.device_combo.itemData(i) for i in range(widget.device_combo.count())]
    assert devices[0] == "auto" and "cpu" in devices
    widget.set_device("cpu")
    assert widget.device_label.text().startswith("running on cpu")
    # the advanced fold
    widget.advanced_button.setChecked(False)
    assert widget.advanced_panel.isHidden()
    widget.advanced_button.setChecked(True)
    assert not widget.advanced_panel.isHidden()
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def test_settings_persist_between_sessions(
    make_napari_viewer: Any, tmp_path: Path, inverting_model: Path
) -> None:
    viewer = make_napari_viewer()
    widget = dock_widget(viewer)
    widget.set_model_path(inverting_model)
    widget.tile_spin.setValue(256)
    widget.halo_spin.setValue(24)
    widget.batch_spin.setValue(3)
    widget.set_device("cpu")
    widget.output_edit.setText(str(tmp_path / "out"))
    widget._on_output_changed()

    from napari_virtual_ihc._widgets.stain import VirtualIHCWidget

    again = VirtualIHCWidget(viewer)  # a new session reads the saved file
    assert again.model_path() == str(inverting_model)
    assert (again.tile_spin.value(), again.halo_spin.value(), again.batch_spin.value()) == (256, 24, 3)
    assert again.device() == "cpu"
    assert again.output_edit.text() == str(tmp_path / "out")
    assert again.engine_settings().halo == 24
    again.halo_spin.setValue(0)
    assert again.engine_settings().halo is None  # 0 = automatic
    again.deleteLater()


def test_cached_store_level_indexes_like_numpy_and_rereads_only_invalidated_chunks(tmp_path: Path) -> None:
    import zarr

    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (3, 70, 90), dtype=np.uint8)
    z = zarr.create_array(
        str(tmp_path / "a.zarr"),
        shape=data.shape,
        chunks=(3, 32, 32),
        dtype="uint8",
        fill_value=255,
        zarr_format=2,
    )
    z[:] = data
    level = CachedStoreLevel(z)
    ref = np.moveaxis(data, 0, -1)
    assert level.shape == ref.shape
    for key in [
        (slice(None), slice(None)),
        (slice(5, 40), slice(33, 89, 3)),
        (7, slice(None, None, -2)),
        (slice(60, 10, -4), 3, 1),
        (Ellipsis, 2),
        (slice(-20, None), slice(-7, -1)),
    ]:
        np.testing.assert_array_equal(level[key], ref[key])
    reads = level.chunk_reads
    level[:, :]
    assert level.chunk_reads == reads  # everything cached
    assert level.invalidate(0, 10, 40, 50) == 1  # one chunk under that box
    level[:, :]
    assert level.chunk_reads == reads + 1


def test_the_writer_reloads_changed_chunks_so_a_refresh_reads_only_memory(tmp_path: Path) -> None:
    """The worker's ``reload`` after a write: the next read shows the new pixels without touching the disk,
    and a read that began before the write never leaves the old pixels in the cache."""
    import zarr

    z = zarr.create_array(
        str(tmp_path / "b.zarr"),
        shape=(3, 64, 96),
        chunks=(3, 32, 32),
        dtype="uint8",
        fill_value=255,
        zarr_format=2,
    )
    level = CachedStoreLevel(z)
    np.testing.assert_array_equal(level[:, :], 255)  # white: no chunk written yet
    reads = level.chunk_reads
    z[:, 0:32, 32:64] = 7  # the engine writes one tile...
    assert level.reload(0, 32, 32, 64, margin=0) == 1  # ...and re-reads the one chunk under it
    assert level.chunk_reads == reads + 1
    assert (level[0:32, 32:64] == 7).all() and (level[0:32, 0:32] == 255).all()
    assert level.chunk_reads == reads + 1  # that read came from memory
    # a chunk never viewed is read into the cache too (the first tile's refresh finds it there)
    level.clear()
    z[:, 32:64, 64:96] = 9
    assert level.reload(32, 64, 64, 96, margin=0) == 1
    assert (level[32:64, 64:96] == 9).all() and level.chunk_reads == reads + 2  # from memory

    # a read that began before a write and ends after the writer's reload is shown but not cached
    level.clear()
    version = 0
    stale = level._read_chunk(z, 0, 0)  # the viewer's read, begun before the write
    z[:, 0:32, 0:32] = 3
    level.reload(0, 32, 0, 32, margin=0)
    level._store((0, 0), stale, version, z)  # ...finishing after the reload: must not replace it
    assert (level[0:32, 0:32] == 3).all()


def test_unwritten_chunks_read_as_white_without_going_through_zarr(tmp_path: Path) -> None:
    """A chunk whose file is missing was never written: white, by a file check instead of a zarr read (a
    run's first refresh asks for a screenful of them on the GUI thread); once written it is read."""
    import zarr

    z = zarr.create_array(
        str(tmp_path / "c.zarr"),
        shape=(3, 64, 96),
        chunks=(3, 32, 32),
        dtype="uint8",
        fill_value=255,
        zarr_format=2,
    )
    z[:, 32:64, 32:64] = 7  # one tile written
    level = CachedStoreLevel(z)
    view = level[:, :]
    assert (view[32:64, 32:64] == 7).all() and (view[:32] == 255).all() and (view[:, :32] == 255).all()
    assert level.chunk_reads == 1  # only the written chunk went through zarr
    z[:, 0:32, 0:32] = 5  # another tile is written: the next read finds it
    assert (level[0:32, 0:32] == 5).all() and level.chunk_reads == 2


# --- with the engine ----------------------------------------------------------------------------------
@pytest.mark.usefixtures("engine_available")
def test_run_shows_aligned_layer_with_provenance(
    make_napari_viewer: Any,
    qtbot: Any,
    he_crop: np.ndarray,
    inverting_model: Path,
    tmp_path: Path,
    expected_ihc: Any,
) -> None:
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1300, 850)  # Xvfb's default screen is small; leave the canvas room beside the dock
    widget = dock_widget(viewer)
    he = add_he(viewer, he_crop)
    configure(widget, inverting_model, tmp_path)
    notes_before = sum("no µm/px recorded" in m for m in _notifications())
    run = widget.start_run()
    assert run is not None and run.running
    assert run.layer is None  # the click returns at once: napari builds the layer in an event of its own
    qtbot.waitUntil(lambda: run.layer is not None, timeout=2000)  # up once the engine has planned
    assert run.layer in viewer.layers
    qtbot.waitUntil(lambda: run.plan is not None or not run.running, timeout=RUN_TIMEOUT_MS)
    # what the model assumes is in the dock from the plan on, and notified once, when the run ends
    assert "no µm/px recorded" in widget.notes_label.text() and not widget.notes_label.isHidden()
    qtbot.waitUntil(lambda: not run.running, timeout=RUN_TIMEOUT_MS)
    assert run.state == "done", run.error
    assert sum("no µm/px recorded" in m for m in _notifications()) == notes_before + 1
    store = store_path_for(tmp_path, "H&E")
    assert run.store == store.resolve()
    layer = run.layer
    assert layer is not None and layer in viewer.layers
    assert layer.name == "HER2 vIHC - invert-test"
    assert layer.multiscale and layer.rgb
    np.testing.assert_allclose(layer.scale, he.scale)
    np.testing.assert_allclose(layer.translate, he.translate)
    assert tuple(str(u) for u in layer.units) == tuple(str(u) for u in he.units) == ("micrometer",) * 2
    prov = layer.metadata["virtual_ihc"]
    assert prov["model"]["name"] == "invert-test" and len(prov["model"]["sha256"]) == 64
    assert prov["settings"]["tile"] == 128 and prov["device"] == "cpu" and prov["time"]
    assert prov["complete"] is True

    # every pixel is the model's output for the pixel under it
    written = store_rgb(store)
    assert written.shape == he_crop.shape
    assert np.abs(written.astype(int) - expected_ihc(he_crop)).max() <= 2
    np.testing.assert_array_equal(np.asarray(layer.data[0][:, :]), written)

    # a canvas screenshot shows the IHC exactly over the H&E (the IHC is the H&E's negative)
    from skimage.registration import phase_cross_correlation

    # fill the canvas with the slide's interior so every screen pixel shows slide pixels
    (y0, x0), (y1, x1) = he.extent.world[:, -2:]
    viewer.scene.camera.center = ((y0 + y1) / 2, (x0 + x1) / 2)
    canvas_h, canvas_w = viewer.canvas.size
    viewer.scene.camera.zoom = 1.25 * max(canvas_h / (y1 - y0), canvas_w / (x1 - x0))
    layer.visible = False
    shot_he = viewer.screenshot(canvas_only=True, flash=False)
    layer.visible, layer.opacity, he.visible = True, 1.0, False
    shot_ihc = viewer.screenshot(canvas_only=True, flash=False)
    he.visible = True
    a, b = gray(shot_he), 255.0 - gray(shot_ihc)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9
    shift, _, _ = phase_cross_correlation(a, b, upsample_factor=4)
    assert np.abs(shift).max() <= 0.5, f"IHC is displaced by {shift} screen pixels"

    # re-running updates the same layer (the store is complete: every tile resumed, none recomputed)
    n_layers = len(viewer.layers)
    again = run_and_wait(qtbot, widget)
    assert again.state == "done" and again.report is not None
    assert again.report.tiles_resumed == again.report.tiles_total
    assert len(viewer.layers) == n_layers
    assert again.layer is layer, (again.layer, layer, id(again.layer), id(layer))

    # display modes: side by side is napari's grid mode, overlay uses the opacity slider
    widget.side_by_side_button.click()
    assert viewer.canvas.grid.enabled and layer.opacity == 1.0
    widget.overlay_button.click()
    widget.opacity_slider.setValue(40)
    assert not viewer.canvas.grid.enabled and layer.opacity == pytest.approx(0.4)


@pytest.mark.usefixtures("engine_available")
def test_model_at_another_resolution_is_placed_exactly(
    make_napari_viewer: Any, qtbot: Any, he_crop: np.ndarray, inverting_model_1um: Path, tmp_path: Path
) -> None:
    """A 1 µm/px model on a 0.5 µm/px slide: the store is half-size and still lands on the H&E."""
    from skimage.registration import phase_cross_correlation

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1300, 850)
    widget = dock_widget(viewer)
    he = add_he(viewer, he_crop)
    configure(widget, inverting_model_1um, tmp_path)
    run = run_and_wait(qtbot, widget)
    assert run.state == "done", run.error
    layer = run.layer
    assert run.view is not None and run.view.level0_downsample == pytest.approx(2.0)
    assert layer.data[0].shape[:2] == (160, 200)
    np.testing.assert_allclose(layer.scale, np.asarray(he.scale) * 2)
    np.testing.assert_allclose(layer.translate, np.asarray(he.translate) + np.asarray(he.scale) * 0.5)
    (y0, x0), (y1, x1) = he.extent.world[:, -2:]
    viewer.scene.camera.center = ((y0 + y1) / 2, (x0 + x1) / 2)
    canvas_h, canvas_w = viewer.canvas.size
    viewer.scene.camera.zoom = 1.25 * max(canvas_h / (y1 - y0), canvas_w / (x1 - x0))
    layer.visible = False
    shot_he = viewer.screenshot(canvas_only=True, flash=False)
    layer.visible, layer.opacity, he.visible = True, 1.0, False
    shot_ihc = viewer.screenshot(canvas_only=True, flash=False)
    a, b = gray(shot_he), 255.0 - gray(shot_ihc)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8
    shift, _, _ = phase_cross_correlation(a, b, upsample_factor=4)
    # one store pixel is 2 source pixels, about 2.5 screen pixels at this zoom: allow a fraction of it
    assert np.abs(shift).max() <= 1.0, f"IHC is displaced by {shift} screen pixels"


@pytest.mark.usefixtures("engine_available")
def test_visible_field_goes_first(
    make_napari_viewer: Any,
    qtbot: Any,
    he_crop: np.ndarray,
    inverting_model: Path,
    tmp_path: Path,
    expected_ihc: Any,
) -> None:
    viewer = make_napari_viewer()
    widget = dock_widget(viewer)
    he = add_he(viewer, he_crop)
    configure(widget, inverting_model, tmp_path, tile=64, batch=1)
    # look at the bottom-right corner only
    corner = np.asarray(he.data_to_world((280, 360)))
    viewer.scene.camera.center = tuple(corner)
    viewer.scene.camera.zoom = 40.0 * max(viewer.canvas.size) / 800
    reports: list[Any] = []
    fov_after_pan: list[Any] = []

    def pan_once(run: Any, tp: Any) -> None:
        reports.append(tp)
        if not fov_after_pan:  # panning updates the box the engine polls before each batch
            viewer.scene.camera.center = tuple(np.asarray(he.data_to_world((40, 40))))
            fov_after_pan.append(run._fov)
            viewer.scene.camera.center = tuple(corner)

    widget.run_started.connect(lambda run: run.progressed.connect(lambda tp: pan_once(run, tp)))
    run = run_and_wait(qtbot, widget)
    px, py, _, _ = fov_after_pan[0]
    assert px < 100 and py < 100, f"the field of view did not follow the camera: {fov_after_pan[0]}"
    assert run.state == "done", run.error
    x, y, w, h = run._fov
    assert x > 200 and y > 150, f"field of view {run._fov} is not the corner we look at"
    # the first tile the model computed (background tiles are filled first, and counted as skipped)
    first = next(
        r.new_boxes[0] for prev, r in itertools.pairwise(reports) if r.new_boxes and r.skipped == prev.skipped
    )
    bx, by, bw, bh = first
    assert bx < x + w and x < bx + bw and by < y + h and y < by + bh, (first, run._fov)


@pytest.mark.usefixtures("engine_available")
def test_cancel_keeps_finished_tiles_and_run_again_resumes(
    make_napari_viewer: Any,
    qtbot: Any,
    monkeypatch: pytest.MonkeyPatch,
    he_crop: np.ndarray,
    inverting_model: Path,
    tmp_path: Path,
    expected_ihc: Any,
) -> None:
    from napari_virtual_ihc.inference import engine

    viewer = make_napari_viewer()
    widget = dock_widget(viewer)
    add_he(viewer, he_crop)
    configure(widget, inverting_model, tmp_path, tile=32, batch=1)
    loads_when_chosen = widget.preloader.loads
    first_boxes: list[tuple] = []
    # The worker computes while the progress signal crosses to the main thread: on a loaded machine it once
    # finished every tile before the cancel landed. So, in the first run, a batch after the first waits until
    # the cancel has been pressed (a user who presses Cancel mid-run; at most 30 s, so a defect cannot hang).
    pressed, holding = threading.Event(), [True]
    run_batch = engine._StainJob.run_batch

    def run_batch_after_the_cancel(job: Any, indices: list[int], windows: np.ndarray) -> Any:
        if holding[0] and job.count.done > 0:
            pressed.wait(30)
        return run_batch(job, indices, windows)

    monkeypatch.setattr(engine._StainJob, "run_batch", run_batch_after_the_cancel)

    def cancel_on_first_tiles(run: Any, tp: Any) -> None:
        first_boxes.extend(tp.new_boxes)
        if first_boxes and not pressed.is_set():
            run.progress_bar.show()  # the bar shows itself a little after the first tile; the user sees it now
            assert run.progress_bar.bar is not None
            run.progress_bar.bar.cancel()  # what the Cancel button of napari's progress bar (activity panel) calls
            pressed.set()

    widget.run_started.connect(lambda run: run.progressed.connect(lambda tp: cancel_on_first_tiles(run, tp)))
    run = run_and_wait(qtbot, widget)
    assert run.state == "cancelled"
    assert run.report is not None and run.report.cancelled
    done_first = run.report.tiles_done
    assert 0 < done_first < run.report.tiles_total
    assert not widget.cancel_button.isEnabled() and widget.run_button.isEnabled()
    # consistent store: finished tiles hold the model's output, the store says it is not complete
    store = run.store
    written, expected = store_rgb(store), expected_ihc(he_crop)
    for x, y, w, h in first_boxes:
        assert np.abs(written[y : y + h, x : x + w].astype(int) - expected[y : y + h, x : x + w]).max() <= 2
    assert open_store(store).complete is False
    assert run.layer.metadata["virtual_ihc"]["complete"] is False

    widget.run_started.disconnect()
    holding[0] = False
    second_boxes: list[tuple] = []
    widget.run_started.connect(
        lambda run: run.progressed.connect(lambda tp: second_boxes.extend(tp.new_boxes))
    )
    resumed = run_and_wait(qtbot, widget)
    assert resumed.state == "done", resumed.error
    assert resumed.report.tiles_resumed == done_first
    assert resumed.layer is run.layer  # same layer, updated
    # nothing finished before was computed again
    for x, y, w, h in second_boxes:
        for fx, fy, fw, fh in first_boxes:
            assert not (x < fx + fw and fx < x + w and y < fy + fh and fy < y + h)
    assert np.abs(store_rgb(store).astype(int) - expected).max() <= 2
    assert open_store(store).complete
    assert widget.preloader.loads == loads_when_chosen  # loaded once, when it was chosen, for both runs
    assert (
        widget.model_combo.findData(str(inverting_model)) >= 0
    )  # listed among the recent models after the run


@pytest.mark.usefixtures("engine_available")
def test_switching_or_removing_the_source_mid_run_never_writes_elsewhere(
    make_napari_viewer: Any,
    qtbot: Any,
    he_crop: np.ndarray,
    inverting_model: Path,
    tmp_path: Path,
    expected_ihc: Any,
) -> None:
    viewer = make_napari_viewer()
    widget = dock_widget(viewer)
    slide_a = add_he(viewer, he_crop, name="slide A")
    slide_b = add_he(viewer, np.ascontiguousarray(he_crop[::-1, ::-1]), name="slide B", translate=(0.0, 0.0))
    configure(widget, inverting_model, tmp_path, tile=64, batch=1)
    widget.set_source_layer(slide_a)

    def switch_to_b(tp: Any) -> None:
        if widget.selected_source_layer() is slide_a:
            widget.set_source_layer(slide_b)

    widget.run_started.connect(lambda run: run.progressed.connect(switch_to_b))
    run = run_and_wait(qtbot, widget)
    assert run.state == "done", run.error
    assert widget.selected_source_layer() is slide_b
    store_a, store_b = store_path_for(tmp_path, "slide A"), store_path_for(tmp_path, "slide B")
    assert not store_b.exists()
    assert np.abs(store_rgb(store_a).astype(int) - expected_ihc(he_crop)).max() <= 2
    ihc = [layer for layer in viewer.layers if "virtual_ihc" in layer.metadata]
    assert len(ihc) == 1 and ihc[0] is run.layer
    np.testing.assert_allclose(ihc[0].translate, slide_a.translate)
    assert ihc[0].metadata["virtual_ihc"]["source_layer"] == "slide A"
    assert widget.ihc_layer_for_selected() is None  # slide B has no result

    # removing the source layer mid-run stops that run; its tiles stay in its own store only
    widget.run_started.disconnect()
    widget.output_edit.setText(str(tmp_path / "second"))
    widget.run_started.connect(
        lambda run: run.progressed.connect(
            lambda tp: viewer.layers.remove(slide_b) if slide_b in viewer.layers else None
        )
    )
    run_b = run_and_wait(qtbot, widget)
    assert run_b.state == "cancelled"
    assert run_b.store == store_path_for(tmp_path / "second", "slide B").resolve()
    assert not store_path_for(tmp_path / "second", "slide A").exists()
    assert run_b.layer is None or run_b.layer.metadata["virtual_ihc"]["source_layer"] == "slide B"
    assert run.layer in viewer.layers and run.layer.metadata["virtual_ihc"]["source_layer"] == "slide A"


@pytest.mark.usefixtures("engine_available")
def test_event_loop_never_stalls_while_staining(
    make_napari_viewer: Any,
    qtbot: Any,
    he_crop: np.ndarray,
    inverting_model: Path,
    tmp_path: Path,
    expected_ihc: Any,
) -> None:
    viewer = make_napari_viewer(show=True)
    widget = dock_widget(viewer)
    add_he(viewer, he_crop)
    configure(widget, inverting_model, tmp_path, tile=64, batch=2)
    gaps: list[float] = []
    stamps: list[float] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        stamps.append(now)
        last[0] = now

    probe = QTimer()
    probe.setInterval(5)
    probe.timeout.connect(tick)
    qtbot.wait(50)
    last[0] = clicked = time.perf_counter()
    probe.start()
    run = widget.start_run()  # starts the worker; napari builds the (white) IHC layer in a later event
    assert run is not None
    click_ms = (time.perf_counter() - clicked) * 1000
    try:
        qtbot.waitUntil(lambda: not run.running, timeout=RUN_TIMEOUT_MS)
    finally:
        probe.stop()
    assert run.state == "done", run.error
    assert run.refresh_count >= 2
    assert click_ms < 100, f"the Run handler blocked the event loop {click_ms:.0f} ms"
    # napari's own build of the new layer and its first paint (one add_image: 150-500 ms of GUI-thread CPU
    # on software OpenGL, run or no run; bench_widget.py measures it beside napari alone) are left out
    built_from, built = run.timeline["layer_building"], run.timeline["layer_shown"]
    during = [
        i
        for i, (g, end) in enumerate(zip(gaps, stamps, strict=True))
        if end >= built_from and end - g <= built
    ]
    left_out = set(during) | {during[-1] + 1} if during else set()  # ... and the paint right after it
    worst = max(g for i, g in enumerate(gaps) if i not in left_out)
    t0 = run.timeline["started"]
    print("timeline ms:", {k: round((v - t0) * 1000) for k, v in run.timeline.items()})
    print(
        "gaps > 30 ms (end ms, gap ms):",
        [(round((stamps[i] - t0) * 1000), round(g * 1000)) for i, g in enumerate(gaps) if g > 0.03],
    )
    print(
        f"Run click handler {click_ms:.0f} ms; worst Qt event-loop stall while staining, napari's layer build "
        f"aside: {worst * 1000:.1f} ms over {len(gaps)} ticks"
    )
    # The 100 ms target is measured and reported by benchmarks/bench_widget.py. On a shared, overloaded CI
    # core a single repaint can exceed it, so this test guards against what would really be broken
    # (staining or reading the whole store on the GUI thread stalls it for most of the run) with a margin
    # that does not flake.
    assert worst < 0.5 * (run.timeline["ended"] - run.timeline["started"]), "the GUI thread did the work"
    assert worst < 0.5, f"the Qt event loop stalled {worst * 1000:.0f} ms"


@pytest.mark.usefixtures("engine_available")
def test_existing_result_is_offered_when_the_slide_is_reopened(
    make_napari_viewer: Any,
    qtbot: Any,
    he_crop: np.ndarray,
    inverting_model: Path,
    tmp_path: Path,
    expected_ihc: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    viewer = make_napari_viewer()
    widget = dock_widget(viewer)
    add_he(viewer, he_crop)
    configure(widget, inverting_model, tmp_path)
    run = run_and_wait(qtbot, widget)
    assert run.state == "done", run.error
    assert widget.load_existing_button.isHidden()  # the result is already shown
    viewer.layers.clear()

    # Whether the store holds this slide needs the slide's content hash (a 3 GB scan: ~10 s the first
    # time): it is computed on a worker thread, the GUI thread goes on at once and shows the answer later.
    from napari_virtual_ihc.ihc_store import existing

    real_identity, on_gui_thread = existing.source_identity, []

    def slow_identity(slide: Any) -> dict[str, Any]:  # the real hash, as slow as a big scan's
        on_gui_thread.append(threading.current_thread() is threading.main_thread())
        time.sleep(1.5)
        return real_identity(slide)

    monkeypatch.setattr(existing, "source_identity", slow_identity)
    started = time.perf_counter()
    reopened = add_he(viewer, he_crop)  # the widget checks the store found for the new layer
    assert time.perf_counter() - started < 1.0, "the GUI thread waited for the slide's hash"
    assert widget.load_existing_button.isHidden()  # not known yet
    qtbot.waitUntil(lambda: not widget.load_existing_button.isHidden(), timeout=10_000)
    # never on the GUI thread; a check the widget restarted (the combo and the layer event both ask) may have
    # begun hashing before it was cancelled on a loaded machine, so the hash may run twice (CI saw it once)
    assert on_gui_thread and not any(on_gui_thread)
    assert "complete" in widget.load_existing_button.text()
    started = time.perf_counter()
    layer = widget.load_existing()
    assert time.perf_counter() - started < 2.0
    assert layer is not None and layer.name == "HER2 vIHC - invert-test"
    np.testing.assert_allclose(layer.translate, reopened.translate)
    np.testing.assert_allclose(layer.scale, reopened.scale)
    np.testing.assert_array_equal(np.asarray(layer.data[0][:, :]), store_rgb(run.store))
    assert widget.load_existing_button.isHidden()


def _notifications() -> list[str]:
    from napari.utils.notifications import notification_manager

    return [str(n.message) for n in notification_manager.records]


@pytest.mark.usefixtures("engine_available")
def test_errors_become_notifications_and_the_widget_stays_usable(
    make_napari_viewer: Any,
    qtbot: Any,
    he_crop: np.ndarray,
    inverting_model: Path,
    tmp_path: Path,
    expected_ihc: Any,
) -> None:
    viewer = make_napari_viewer()
    widget = dock_widget(viewer)
    add_he(viewer, he_crop)
    configure(widget, inverting_model, tmp_path)

    widget.set_model_path("")
    assert widget.start_run() is None
    assert any("no model chosen" in m for m in _notifications())

    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00not a checkpoint" * 10)
    widget.set_model_path(bad)
    run = run_and_wait(qtbot, widget)
    assert run.state == "failed" and run.layer is None
    assert any("Could not load the model" in m for m in _notifications())
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()

    widget.set_model_path(inverting_model)
    widget.set_device("cuda:0")
    assert widget.start_run() is None
    assert any("CUDA is not available" in m for m in _notifications())
    widget.set_device("cpu")

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    widget.output_edit.setText(str(blocker / "out"))
    assert widget.start_run() is None
    assert any("cannot create the output folder" in m for m in _notifications())

    # after all that, a good run still works
    widget.output_edit.setText(str(tmp_path / "ok"))
    run = run_and_wait(qtbot, widget)
    assert run.state == "done", run.error


def test_write_errors_are_reported_as_such() -> None:
    import errno

    from napari_virtual_ihc._widgets.stain.messages import user_message
    from napari_virtual_ihc.models import CorruptCheckpointError

    store = Path("/data/x.ome.zarr")
    assert "Disk full" in user_message(OSError(errno.ENOSPC, "No space left on device"), store)
    assert "Could not load the model" in user_message(CorruptCheckpointError("bad header"), store)
    assert "batch size" in user_message(RuntimeError("CUDA out of memory"), store)


@pytest.mark.usefixtures("engine_available")
def test_runs_on_a_real_slide_opened_by_the_reader(
    make_napari_viewer: Any,
    qtbot: Any,
    cmu1_path: Path,
    inverting_model: Path,
    tmp_path: Path,
    expected_ihc: Any,
) -> None:
    """A layer from the slide reader carries its Slide: the run reads it at full quality, names the
    store after the file, and places the IHC with the slide's µm/px. Cancelled after the first tiles."""
    from napari_virtual_ihc.slides import open_slide
    from napari_virtual_ihc.slides.layers import slide_layer_data

    viewer = make_napari_viewer()
    widget = dock_widget(viewer)
    slide = open_slide(cmu1_path)
    data, kwargs, _ = slide_layer_data(slide)
    he = viewer.add_image(data, **kwargs)
    configure(widget, inverting_model, tmp_path, tile=256, batch=1)
    model_boxes: list[tuple] = []
    skipped = [0]

    def cancel_after_first_model_tile(tp: Any) -> None:
        if tp.new_boxes and tp.skipped == skipped[0]:  # computed by the model, not background fill
            model_boxes.extend(tp.new_boxes)
            widget.cancel_button.click()
        skipped[0] = tp.skipped

    widget.run_started.connect(lambda run: run.progressed.connect(cancel_after_first_model_tile))
    run = run_and_wait(qtbot, widget)
    assert run.state == "cancelled", run.error
    assert run.request.slide is slide
    assert run.store == (tmp_path / "CMU-1-Small-Region.ome.zarr").resolve()
    np.testing.assert_allclose(run.layer.scale, he.scale)
    np.testing.assert_allclose(run.layer.translate, he.translate)
    assert he.scale[-1] == pytest.approx(0.499, abs=1e-3)
    assert model_boxes
    x, y, w, h = model_boxes[0]
    written = store_rgb(run.store)[y : y + h, x : x + w]
    source = slide.read_region((x, y), 0, (w, h))
    assert np.abs(written.astype(int) - expected_ihc(source)).max() <= 2


@pytest.mark.usefixtures("engine_available")
def test_closing_the_widget_mid_run_stops_the_run_cleanly(
    make_napari_viewer: Any, qtbot: Any, he_crop: np.ndarray, inverting_model: Path, tmp_path: Path
) -> None:
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-virtual-ihc", "Virtual IHC")
    add_he(viewer, he_crop)
    configure(widget, inverting_model, tmp_path, tile=64, batch=1)
    runs: list[Any] = []

    closed: list[bool] = []

    def close_on_first_tiles(tp: Any) -> None:
        if tp.new_boxes and not closed:
            closed.append(True)
            viewer.window.remove_dock_widget(dock)
            widget.deleteLater()  # what happens to the orphaned widget once nothing references it

    widget.run_started.connect(lambda run: (runs.append(run), run.progressed.connect(close_on_first_tiles)))
    widget.start_run()
    run = runs[0]
    qtbot.waitUntil(lambda: not run.running, timeout=RUN_TIMEOUT_MS)
    assert run.cancel_event.is_set() and run.state == "cancelled"
    assert run.layer in viewer.layers  # what was finished stays visible


@pytest.mark.usefixtures("engine_available")
def test_activity_spinner_is_paused_during_a_run_on_software_opengl(
    make_napari_viewer: Any, qtbot: Any, he_crop: np.ndarray, inverting_model: Path, tmp_path: Path
) -> None:
    """On software OpenGL each spinner frame composes the whole window on the CPU (~0.5 core measured),
    taken from the model: a run pauses it, and does not leave it paused."""
    from napari.utils.progress import progress
    from qtpy.QtGui import QMovie

    from napari_virtual_ihc._widgets import _activity

    viewer = make_napari_viewer(show=True)
    widget = dock_widget(viewer)
    add_he(viewer, he_crop)
    configure(widget, inverting_model, tmp_path, tile=32, batch=1)  # many batches: the run outlasts set-up
    if not _activity.software_opengl(viewer):
        pytest.skip(f"hardware OpenGL ({_activity.opengl_renderer(viewer)!r}): the spinner is left alone")
    movie = viewer.window._status_bar._activity_item._inProgressIndicator.movie()
    other = progress(total=0, desc="another job")  # napari starts the spinner for it
    qtbot.waitUntil(lambda: movie.state() == QMovie.Running, timeout=2000)
    states: list[Any] = []
    widget.run_started.connect(
        lambda run: run.progressed.connect(
            lambda tp: states.append((run.progress_bar.spinner_paused, movie.state()))
        )
    )
    run = run_and_wait(qtbot, widget)
    assert run.state == "done", run.error
    while_paused = [state for paused, state in states if paused]
    assert while_paused and all(s == QMovie.Paused for s in while_paused), states
    # not left paused: the other job's spinner turns again (or napari stopped it: it does so whenever a
    # bar closes while its activity panel is hidden)
    assert movie.state() != QMovie.Paused and not movie.property(_activity.PAUSES)
    other.close()
    qtbot.waitUntil(lambda: movie.state() == QMovie.NotRunning, timeout=2000)


def test_worker_threads_run_nicer_than_the_gui_and_pass_it_on() -> None:
    """The engine's thread lowers its own priority (not the process's); threads it starts inherit it."""
    import os
    import threading

    from napari_virtual_ihc._widgets.stain.scope import WORKER_NICENESS, _lower_thread_priority

    if not hasattr(os, "setpriority"):
        pytest.skip("no per-thread priorities on this platform")
    seen: dict[str, int] = {}

    def nice_of_this_thread() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def worker() -> None:
        before = nice_of_this_thread()
        assert _lower_thread_priority(WORKER_NICENESS)
        seen["worker"] = nice_of_this_thread() - before
        child = threading.Thread(target=lambda: seen.setdefault("child", nice_of_this_thread() - before))
        child.start()
        child.join()

    gui_before = nice_of_this_thread()
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"worker": WORKER_NICENESS, "child": WORKER_NICENESS}
    assert nice_of_this_thread() == gui_before  # the GUI thread keeps its priority


@pytest.mark.usefixtures("engine_available")
def test_widget_and_cli_write_the_same_store_for_a_name_that_needs_sanitising(
    make_napari_viewer: Any, qtbot: Any, he_crop: np.ndarray, inverting_model: Path, tmp_path: Path
) -> None:
    """``virtual-ihc stain`` stains a file first; the widget, on the same file opened by the reader, finds
    that very store (offers it, and a Run resumes every tile of it)."""
    from skimage.io import imsave

    from napari_virtual_ihc.cli import main
    from napari_virtual_ihc.slides import open_slide
    from napari_virtual_ihc.slides.layers import slide_layer_data

    png = tmp_path / "case 1 (HER2+).png"
    imsave(png, he_crop, check_contrast=False)
    out = tmp_path / "out"
    args = ["stain", str(png), "--model", str(inverting_model), "--out", str(out), "--tile", "128"]
    assert main([*args, "--quiet", "--device", "cpu"]) == 0
    from napari_virtual_ihc.ihc_store import slide_stem

    cli_store = out / f"{slide_stem(png)}.ome.zarr"  # case_1_HER2-<hash>: sanitised names keep a hash
    assert cli_store.name.startswith("case_1_HER2-") and cli_store.is_dir()

    viewer = make_napari_viewer()
    widget = dock_widget(viewer)
    with pytest.warns(UserWarning, match="pixel size"):
        data, kwargs, _ = slide_layer_data(open_slide(png))
    viewer.add_image(data, **kwargs)
    configure(widget, inverting_model, out, tile=128)
    widget._on_output_changed()  # what finishing the edit of the output folder does
    assert widget.store_for_selected() == cli_store
    qtbot.waitUntil(lambda: not widget.load_existing_button.isHidden(), timeout=10_000)
    run = run_and_wait(qtbot, widget)
    assert run.state == "done", run.error
    assert run.store == cli_store.resolve()
    assert run.report is not None and run.report.tiles_resumed == run.report.tiles_total


@pytest.mark.usefixtures("engine_available")
def test_a_result_of_another_slide_with_the_same_name_is_neither_offered_nor_resumed(
    make_napari_viewer: Any, qtbot: Any, he_crop: np.ndarray, inverting_model: Path, tmp_path: Path
) -> None:
    viewer = make_napari_viewer()
    widget = dock_widget(viewer)
    add_he(viewer, he_crop)
    configure(widget, inverting_model, tmp_path)
    first = run_and_wait(qtbot, widget)
    assert first.state == "done", first.error
    before = store_rgb(first.store)
    viewer.layers.clear()
    add_he(viewer, np.ascontiguousarray(he_crop[::-1]))  # another image, also called "H&E"
    qtbot.waitUntil(lambda: any("holds the result of another slide" in m for m in _notifications()))
    assert widget.load_existing_button.isHidden()
    run = run_and_wait(qtbot, widget)
    assert run.state == "failed" and run.layer is None
    assert any("another slide with the same name" in m for m in _notifications())
    np.testing.assert_array_equal(store_rgb(first.store), before)
