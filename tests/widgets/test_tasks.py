"""One worker helper (``WidgetTask``) and one progress type (``TaskProgress``) for every widget.

A run of each widget (stain, overlay, registration, reader study) is a ``WidgetTask`` whose progress shows
in a ``TaskProgress`` bar, and the bar's own Cancel button stops it: the run ends "cancelled", the bar is
closed and nothing of a result is added.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_virtual_ihc._widgets._tasks import TaskProgress, WidgetTask

pytestmark = pytest.mark.gui


def _counting(n: int, pause_s: float, cancel: threading.Event) -> Generator[tuple[int, int], None, str]:
    for k in range(n):
        if cancel.is_set():
            break
        time.sleep(pause_s)
        yield k + 1, n
    return "finished"


def _broken() -> None:
    raise ValueError("bad input")


def test_a_task_reports_progress_returns_and_fails_through_the_one_type(make_napari_viewer, qtbot) -> None:
    viewer = make_napari_viewer()
    ended: list[WidgetTask] = []
    cancel = threading.Event()
    task = WidgetTask(
        viewer, _counting, 3, 0.01, cancel, desc="count", total=3, cancel_event=cancel, on_end=ended.append
    ).start()
    assert isinstance(task.progress, TaskProgress) and task.progress.shown and task.running
    qtbot.waitUntil(lambda: bool(ended), timeout=5000)
    assert task.state == "done" and task.result == "finished"
    assert (task.progress.done, task.progress.total, task.progress.updates) == (3, 3, 3)
    assert not task.progress.shown  # closed at the end

    failed = WidgetTask(viewer, _broken, desc="broken", on_end=ended.append).start()
    qtbot.waitUntil(lambda: len(ended) == 2, timeout=5000)
    assert failed.state == "failed" and isinstance(failed.error, ValueError) and not failed.progress.shown


def _out_of_memory() -> Generator[tuple[int, int], None, None]:
    yield 1, 2
    raise RuntimeError("CUDA out of memory")  # what torch raises


def test_a_runtime_error_in_a_generator_ends_the_task_as_failed(make_napari_viewer, qtbot) -> None:
    """superqt ends a generator worker that raised a RuntimeError without its ``finished`` signal (it takes
    it for a deleted Qt object): a run whose model ran out of memory stayed "running" for ever."""
    viewer = make_napari_viewer()
    ended: list[WidgetTask] = []
    task = WidgetTask(viewer, _out_of_memory, desc="oom", total=2, on_end=ended.append).start()
    qtbot.waitUntil(lambda: bool(ended), timeout=5000)
    assert task.state == "failed" and "out of memory" in str(task.error) and not task.progress.shown


def _cancel_from_the_bar(qtbot: Any, task: WidgetTask, after_updates: int = 0) -> None:
    """Press the progress bar's Cancel (the button napari shows), once the task has reported enough."""
    qtbot.waitUntil(lambda: task.progress.shown and task.progress.updates >= after_updates, timeout=20_000)
    assert task.running, "the task ended before it could be cancelled"
    bar = task.progress.bar
    assert bar is not None
    bar.cancel()
    qtbot.waitUntil(lambda: not task.running, timeout=60_000)
    assert task.state == "cancelled" and not task.progress.shown


def test_the_overlay_widget_runs_as_a_task_and_its_bar_cancels_it(make_napari_viewer, qtbot) -> None:
    from skimage import data

    from napari_virtual_ihc._widgets.overlay import StainOverlayWidget

    viewer = make_napari_viewer()
    wide = np.tile(data.immunohistochemistry()[:256], (1, 3, 1))  # 1536 x 256: two 1024-px tiles
    viewer.add_image(wide, rgb=True, name="ihc")
    w = StainOverlayWidget(viewer)
    w.source.setCurrentText("ihc")
    w.scope.setCurrentText("whole image")
    w.nuclei.setCurrentText("classical")
    w.start()
    task = w.task
    assert isinstance(task, WidgetTask) and task.progress.total == 2
    _cancel_from_the_bar(qtbot, task)
    assert w.task is None and w.result is None and w.status.text() == "cancelled"
    assert [layer.name for layer in viewer.layers] == ["ihc"]


def test_the_registration_widget_runs_as_a_task_and_its_bar_cancels_it(
    make_napari_viewer, qtbot, he_crop: np.ndarray
) -> None:
    from napari_virtual_ihc._widgets.registration import RegistrationWidget

    viewer = make_napari_viewer()
    viewer.add_image(he_crop, rgb=True, name="he")
    viewer.add_image(np.ascontiguousarray(he_crop[:, ::-1]), rgb=True, name="ihc")
    w = RegistrationWidget(viewer)
    w.fixed.setCurrentText("he")
    w.moving.setCurrentText("ihc")
    w.start()
    task = w.task
    assert isinstance(task, WidgetTask)
    _cancel_from_the_bar(qtbot, task)
    assert w.task is None and w.registered_layer is None and "cancelled" in w.status.text(), (
        task.state,
        task.error,
        task.returned,
    )
    assert [layer.name for layer in viewer.layers] == ["he", "ihc"]


def test_the_reader_analysis_runs_as_a_task_and_its_bar_cancels_it(
    make_napari_viewer, qtbot, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from napari_virtual_ihc._widgets.reader import ReaderStudyWidget
    from napari_virtual_ihc.study import AnswerStore, BuildOptions, build_study, load_key

    spec = importlib.util.spec_from_file_location(
        "_study_sources", Path(__file__).parents[1] / "study" / "_sources.py"
    )
    assert spec is not None and spec.loader is not None
    sources = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sources)
    table = sources.make_sources(data_dir, tmp_path / "sources", n_pairs=4)
    _bundle, key_path = build_study(
        table, tmp_path / "bundle", BuildOptions(readers=("p1",), seed=5, min_gap=3)
    )
    key = load_key(key_path)
    with AnswerStore(tmp_path / "answers" / "p1.sqlite", key["study_id"], "p1") as store:
        for image_id in key["images"]:
            store.record_answer(image_id=image_id, score="2+", confidence=3)

    # hold the analysis until the bar's Cancel has been pressed (on a fast machine it would otherwise finish
    # first); the real analysis then runs, and the cancel takes effect at the next stage
    from napari_virtual_ihc.study import analysis

    real_analyze, started, release = analysis.analyze, threading.Event(), threading.Event()

    def held_analyze(*args: Any, **kwargs: Any) -> Any:
        started.set()
        release.wait(60)
        return real_analyze(*args, **kwargs)

    monkeypatch.setattr(analysis, "analyze", held_analyze)
    viewer = make_napari_viewer()
    widget = ReaderStudyWidget(viewer)
    task = widget.run_analysis(key_path, tmp_path / "answers", tmp_path / "report", n_boot=200)
    assert isinstance(task, WidgetTask) and task.progress.total == 4
    qtbot.waitUntil(lambda: started.is_set() and task.progress.shown, timeout=20_000)
    assert task.running and task.progress.bar is not None
    task.progress.bar.cancel()
    release.set()
    qtbot.waitUntil(lambda: not task.running, timeout=60_000)
    assert task.state == "cancelled" and not task.progress.shown
    assert widget.task is None and widget.last_report is None and widget.last_error is None
    assert not (tmp_path / "report" / "report.html").exists()
    assert "cancelled" in widget.report_output.toPlainText()
    widget.close()


def test_a_stain_run_is_a_task_and_its_bar_cancels_it(
    make_napari_viewer,
    qtbot,
    he_crop: np.ndarray,
    inverting_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from napari_virtual_ihc.inference import engine

    # The worker computes while the bar's Cancel crosses to it: on a loaded machine every batch was done first
    # (CI saw it once). So a batch after the first waits until the run is cancelled (at most 30 s).
    run_batch = engine._StainJob.run_batch

    def run_batch_after_the_cancel(job: Any, indices: list[int], windows: np.ndarray) -> Any:
        if job.count.done > 0 and job.cancel is not None:
            job.cancel.wait(30)
        return run_batch(job, indices, windows)

    monkeypatch.setattr(engine._StainJob, "run_batch", run_batch_after_the_cancel)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-virtual-ihc", "Virtual IHC")
    viewer.add_image(he_crop, rgb=True, name="H&E")
    widget.set_model_path(inverting_model)
    widget.output_edit.setText(str(tmp_path))
    widget.tile_spin.setValue(32)  # many batches: time to cancel
    widget.batch_spin.setValue(1)
    widget.set_device("cpu")
    run = widget.start_run()
    assert run is not None and isinstance(run.task, WidgetTask) and run.progress_bar is run.task.progress
    _cancel_from_the_bar(qtbot, run.task, after_updates=1)  # the bar shows once the first tile is on screen
    qtbot.waitUntil(lambda: not run.running, timeout=5000)
    assert run.state == "cancelled" and run.cancel_event.is_set()
    assert run.report is not None and run.report.cancelled  # the engine stopped after a batch and said so
