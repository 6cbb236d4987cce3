"""One staining run, from Run to done / cancelled / failed, owning its slide, store and IHC layer.

Everything a run touches is captured when it starts (source layer, slide, store path, model path,
settings), so tiles always land in the run's own store and on the run's own layer, whatever the user
selects meanwhile. The engine runs in a napari ``thread_worker``; it reports through Qt signals that are
delivered on the GUI thread, where the layer is refreshed (only the chunks under newly finished tiles are
re-read, see ``_stain_layer``).
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from napari.utils.progress import cancelable_progress
from qtpy.QtCore import QObject, QTimer, Signal

from ..inference.api import Box, EngineSettings, RunReport, TileProgress
from ..slides.base import Slide
from ._activity import pause_spinner, resume_spinner
from ._confidence_layer import add_confidence_layer
from ._stain_layer import (
    PROVENANCE_KEY,
    StoreNotReadyError,
    StoreView,
    apply_placement,
    bind_levels,
    blank_levels,
    find_ihc_layer,
    ihc_layer_kwargs,
    layer_name_for,
    open_store,
    read_store_provenance,
    refresh_layer,
)
from ._stain_view import visible_box

log = logging.getLogger(__name__)

# At most ~4 layer refreshes per second while tiles stream in: each one repaints the canvas, which costs
# tens of ms with software OpenGL, so refreshing after every batch would keep the GUI thread busy.
REFRESH_INTERVAL_S = 0.25
STORE_POLL_MS = 20
# The engine's threads (model, reader, tissue mask) run this much "nicer" than napari's GUI thread, so the
# scheduler hands the GUI (and the OpenGL rasteriser) a core whenever it has work: fewer stalls.
WORKER_NICENESS = 5
PLAN_WAIT_S = 0.15  # longest the Run click waits for the engine to plan (large slides, InstanceNorm: longer)
PROGRESS_BAR_DELAY_MS = 300  # at the latest; usually it comes sooner, with the engine's first report


@dataclass
class RunRequest:
    """Everything a run needs, captured on the GUI thread when Run is pressed."""

    source_layer: Any
    slide: Slide
    store: Path
    model_path: str
    settings: EngineSettings
    opacity: float = 0.6


def _lower_thread_priority(step: int) -> bool:
    """Add ``step`` to this thread's niceness (Linux: per thread; threads it starts inherit it)."""
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + step)
    except OSError:
        return False
    return True


class ModelLoadError(RuntimeError):
    """The chosen model file could not be loaded (whatever the loader raised)."""


class _RunProgressBar(cancelable_progress):
    """napari's cancellable progress bar; its Cancel button stops the run (not only an iterator)."""

    def cancel(self) -> None:
        super().cancel()
        if self.cancel_callback is not None:
            self.cancel_callback()


def user_message(exc: BaseException, store: Path) -> str:
    """One sentence a pathologist can act on, for any error a run may raise."""
    from ..inference.errors import (
        DeviceError,
        OutputNotWritableError,
        RegionError,
        StoreMismatchError,
        StoreWriteError,
    )
    from ..models.errors import CheckpointError
    from ..slides.errors import SlideError

    if isinstance(exc, CheckpointError | ModelLoadError):
        return f"Could not load the model: {exc}"
    if isinstance(exc, DeviceError):
        return f"Device problem: {exc}"
    if isinstance(exc, SlideError):
        return f"Could not read the slide: {exc}"
    if isinstance(exc, StoreMismatchError):
        return (
            f"{store.name} already holds a result made with another model or other settings. Choose "
            f"another output folder to keep both, or delete {store} to start over."
        )
    if isinstance(exc, StoreWriteError | OutputNotWritableError):
        return f"Could not write the result: {exc}"
    if isinstance(exc, RegionError):
        return f"Nothing to stain: {exc}"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"Disk full while writing {store}. Free some space or choose another output folder; "
            "finished tiles are kept and Run resumes from them."
        )
    if isinstance(exc, OSError):
        return f"Could not write the result to {store}: {exc}"
    if isinstance(exc, NotImplementedError):
        return "The tile engine is not available in this installation (stain_slide is not implemented)."
    if "out of memory" in str(exc).lower():
        return f"The device ran out of memory: {exc}. Lower the batch size under 'Advanced'."
    return f"Virtual IHC failed: {type(exc).__name__}: {exc}"


# Runs stay referenced here until they end, so closing the dock widget mid-run cannot delete a run whose
# worker is still reporting (the widget cancels it instead; finished tiles are kept).
_ACTIVE_RUNS: set[StainRun] = set()


class StainRun(QObject):
    """A single run; the widget starts it and listens to ``ended``."""

    # Emitted from the worker thread, delivered (queued) on the GUI thread to the run's own handlers.
    _worker_progress = Signal(object)  # TileProgress
    _worker_model = Signal(object)  # LoadedGenerator
    # GUI thread: every report, in order, after the run has handled it (so listeners connected right
    # after ``start`` returns miss none, even those the worker sent while ``start`` was running).
    progressed = Signal(object)  # TileProgress
    # GUI thread only.
    layer_ready = Signal(object)  # the IHC layer
    ended = Signal(str)  # "done" | "cancelled" | "failed"

    def __init__(self, viewer: Any, request: RunRequest, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.request = request
        self.store = Path(request.store).resolve()
        self.cancel_event = threading.Event()
        self.state = "pending"
        self.model: Any = None
        self.view: StoreView | None = None
        self.layer: Any = None
        self.report: RunReport | None = None
        self._said: set[str] = set()  # notes already shown to the user in this run
        self.error: BaseException | None = None
        self.last_progress: TileProgress | None = None
        self.device = ""
        self.timeline: dict[str, float] = {}  # perf_counter stamps, for tests and benchmarks
        self.refresh_count = 0
        self._fov: Box | None = None
        self._fresh_view = False  # attached to the store as this run's engine created/opened it
        self._placeholder = False  # the layer shows white levels: no store behind it yet
        self._layer_removed = False
        self._needs_refresh = False
        self._last_refresh = 0.0
        self._pbar: _RunProgressBar | None = None
        self._spinner_paused = False
        self._pbar_building = False
        self._planned = threading.Event()  # set by the worker at the engine's first report, or on exit
        self.worker: Any = None

        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.timeout.connect(self._refresh_layer)
        self._store_timer = QTimer(self)
        self._store_timer.setInterval(STORE_POLL_MS)
        self._store_timer.timeout.connect(self._try_attach)

        self._set_up = False  # start() has finished: worker signals are handled, not deferred
        self._deferred: list[tuple[Any, tuple[Any, ...]]] = []
        self._worker_progress.connect(self._gated(self._on_worker_progress))
        self._worker_model.connect(self._gated(self._on_model_loaded))

    # --- lifecycle (GUI thread) -----------------------------------------------------------------
    def start(self) -> None:
        _ACTIVE_RUNS.add(self)
        self.timeline["started"] = time.perf_counter()
        self.state = "running"
        # Objects alive now (napari, torch, the slide) live for the whole session; freezing them out of
        # the cyclic GC keeps its full passes, which hold the GIL, from freezing the GUI for ~0.4 s.
        gc.freeze()
        self._update_fov()  # before the engine's first priority poll
        # The worker starts first and this thread waits (briefly, GIL released) while it loads the model and
        # plans the tiles; napari then builds the layer while the first batch runs, mostly without the GIL.
        # Built meanwhile, the layer (~0.15 s of Python here) would slow loading and planning to a crawl.
        # Worker signals arriving before set-up ends (napari processes events while it adds a layer) wait
        # in ``_deferred``.
        self.worker = create_worker(self._work, _ignore_errors=True)
        self.worker.returned.connect(self._gated(self._on_returned))
        self.worker.errored.connect(self._gated(self._on_errored))
        self.worker.finished.connect(self._gated(self._on_finished))
        self.worker.start()
        self.timeline["worker_started"] = time.perf_counter()
        planned = self._planned.wait(PLAN_WAIT_S)
        self.timeline["planned_wait_over"] = time.perf_counter()
        self._show_layer_now()
        self.timeline["layer_shown"] = time.perf_counter()
        if planned and self.view is not None:
            # The engine has reported, so the store shown is the one it opened for this run.
            self._fresh_view = True
            self.timeline["store_attached"] = self.timeline["layer_shown"]
        # The progress bar comes with the engine's first report (tiles planned, first batch running), or
        # after PROGRESS_BAR_DELAY_MS if planning takes longer (slide statistics of InstanceNorm models):
        # napari builds it with repaints, which would otherwise compete with loading the model and planning.
        QTimer.singleShot(PROGRESS_BAR_DELAY_MS, self._show_progress_bar)
        self.viewer.scene.camera.events.center.connect(self._update_fov)
        self.viewer.scene.camera.events.zoom.connect(self._update_fov)
        self.viewer.canvas.events.size.connect(self._update_fov)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        # Held-back signals are handled on the next pass of the event loop, so nothing (not even ``ended``
        # of a run whose model failed to load at once) happens before the caller of ``start`` goes on.
        QTimer.singleShot(0, self._release_deferred)

    def _release_deferred(self) -> None:
        while self._deferred:  # in arrival order
            handler, args = self._deferred.pop(0)
            handler(*args)
        self._set_up = True

    def _show_progress_bar(self) -> None:
        if self._pbar is not None or self._pbar_building or "ended" in self.timeline:
            return
        self._pbar_building = True  # napari processes events while building it: no second bar meanwhile
        try:
            pbar = _RunProgressBar(
                total=0, desc=f"Virtual IHC: {self.request.source_layer.name}", cancel_callback=self.cancel
            )
        finally:
            self._pbar_building = False
        if "ended" in self.timeline:  # the run ended while the bar was being built
            pbar.close()
            return
        self._pbar = pbar
        self._spinner_paused = pause_spinner(self.viewer)
        self.timeline["progress_shown"] = time.perf_counter()
        if self.last_progress is not None:
            self._update_progress_bar(self.last_progress)

    def _gated(self, handler: Any) -> Any:
        """``handler``, held back until ``start`` has finished setting the run up."""

        def gated(*args: Any) -> None:
            if self._set_up:
                handler(*args)
            else:
                self._deferred.append((handler, args))

        return gated

    def cancel(self) -> None:
        """Stop after the current batch; finished tiles stay in the store and a new run resumes."""
        if self.running and self.state == "running":
            self.state = "cancelling"
            self.cancel_event.set()
            if self._pbar is not None:
                self._pbar.set_description(f"Virtual IHC: cancelling {self.request.source_layer.name}...")

    @property
    def running(self) -> bool:
        """True from ``start`` until ``ended`` is emitted (the worker has finished and all is tidied)."""
        return self.timeline.get("started") is not None and "ended" not in self.timeline

    # --- worker thread --------------------------------------------------------------------------
    def _priority(self) -> Box | None:
        return self._fov  # a tuple assigned atomically on the GUI thread

    def _work(self) -> RunReport | None:
        try:
            return self._work_with_threads()
        finally:
            self._planned.set()  # ended before planning (bad model, cancelled): ``start`` waits no longer

    def _work_with_threads(self) -> RunReport | None:
        import torch

        # Leave one core to the GUI thread: with every core busy in torch's intra-op pool the OS starves
        # napari's event loop (repaints wait hundreds of ms). Restored when the run ends.
        previous = torch.get_num_threads()
        torch.set_num_threads(max(1, min(previous, (os.cpu_count() or 2) - 1)))
        niced = _lower_thread_priority(WORKER_NICENESS)
        try:
            return self._stain()
        finally:
            torch.set_num_threads(previous)
            if niced:
                _lower_thread_priority(-WORKER_NICENESS)  # may be refused to unprivileged users: harmless

    def _stain(self) -> RunReport | None:
        from .. import inference, models

        try:
            model = models.load_generator(self.request.model_path, device="cpu")
        except models.CheckpointError:
            raise
        except Exception as exc:  # any failure reading the file is a model problem for the user
            raise ModelLoadError(f"{self.request.model_path}: {type(exc).__name__}: {exc}") from exc
        self.timeline["model_read"] = time.perf_counter()  # worker side (``model_loaded``: GUI side)
        self._worker_model.emit(model)
        if self.cancel_event.is_set():
            return None
        return inference.stain_slide(
            self.request.slide,
            model,
            self.store,
            self.request.settings,
            priority=self._priority,
            progress=self._report,
            cancel=self.cancel_event,
        )

    def _report(self, tp: TileProgress) -> None:
        self._planned.set()
        self.timeline.setdefault("engine_ready", time.perf_counter())  # planned; first batch next
        if tp.new_boxes and "first_tile_reported" not in self.timeline:
            self.timeline["first_tile_reported"] = time.perf_counter()  # engine side, for benchmarks
        self._worker_progress.emit(tp)

    # --- GUI-thread handlers --------------------------------------------------------------------
    def _update_fov(self, event: Any = None) -> None:
        source = self.request.source_layer
        if source not in self.viewer.layers:
            return
        try:
            self._fov = visible_box(self.viewer, source, self.request.slide.dimensions)
        except Exception as exc:  # never let a camera event break the run
            log.debug("field of view unavailable: %s", exc)
            self._fov = None

    def _on_model_loaded(self, model: Any) -> None:
        self.model = model
        self.timeline["model_loaded"] = time.perf_counter()
        for note in model.notes:  # what loading assumed (batch-norm/dropout mode, µm/px)
            self._said.add(note)
            show_warning(f"Virtual IHC: {note}")
        if self._pbar is not None:
            self._pbar.set_description(
                f"Virtual IHC: {self.request.source_layer.name} with {self.model_name}, preparing tiles"
            )
        if not self._try_attach():
            self._store_timer.start()

    def _show_layer_now(self) -> None:
        """Put the IHC layer up before any tile is computed: the earlier result, or white."""
        existing = find_ihc_layer(self.viewer.layers, self.store)
        try:
            self._attach(
                open_store(self.store, require_placement=True)
            )  # an earlier (maybe partial) result: show it as it is
            return
        except StoreNotReadyError:
            pass
        if existing is not None:
            self.layer = existing
            return
        source = self.request.source_layer
        self.layer = self.viewer.add_image(
            blank_levels(self.request.slide.level_dimensions),
            **ihc_layer_kwargs(
                1.0,
                source,
                layer_name_for(self.model_name),
                {PROVENANCE_KEY: self.provenance()},
                self.request.opacity,
            ),
        )
        self._placeholder = True
        self.timeline["layer_added"] = time.perf_counter()
        self.layer_ready.emit(self.layer)

    @property
    def model_name(self) -> str:
        if self.model is None:
            return Path(self.request.model_path).stem
        return self.model.spec.name or Path(self.model.source or self.request.model_path).stem

    def provenance(self) -> dict[str, Any]:
        """What made this layer: model, engine settings, device, time (goes into ``layer.metadata``)."""
        model = self.model
        prov: dict[str, Any] = {
            "store": str(self.store),
            "model": {
                "name": self.model_name,
                "sha256": getattr(model, "sha256", ""),
                "source": getattr(model, "source", self.request.model_path),
                "arch": getattr(getattr(model, "spec", None), "arch", ""),
                "mpp": getattr(getattr(model, "spec", None), "mpp", None),
            },
            "settings": asdict(self.request.settings),
            "device": self.device or self.request.settings.device,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source_layer": self.request.source_layer.name,
            "slide_path": str(self.request.slide.path) if self.request.slide.path else None,
            "complete": False,
        }
        if self.report is not None:
            prov["report"] = asdict(self.report)
            prov["settings"] = {**prov["settings"], **self.report.settings}  # as the engine ran them
            prov["complete"] = bool(self.report.settings.get("complete", False))
        return prov

    def _try_attach(self) -> bool:
        """Show the store as soon as this run's engine has it (white where not yet written)."""
        if self._fresh_view:
            self._store_timer.stop()
            return True
        if self._layer_removed or self.request.source_layer not in self.viewer.layers:
            self._store_timer.stop()
            return False
        try:
            view = open_store(self.store, require_placement=True)
        except StoreNotReadyError:
            return False
        self._store_timer.stop()
        self._attach(view)
        self._fresh_view = True
        self.timeline["store_attached"] = time.perf_counter()
        return True

    def _attach(self, view: StoreView) -> None:
        source = self.request.source_layer
        metadata = {PROVENANCE_KEY: self.provenance()}
        name = layer_name_for(self.model_name)
        existing = self.layer if self.layer is not None else find_ihc_layer(self.viewer.layers, self.store)
        if existing is not None and existing not in self.viewer.layers:
            existing = None
        if existing is not None:
            # Same geometry (the usual case): re-point napari's level objects, no data swap, no new
            # textures; otherwise hand napari the store's levels.
            if bind_levels(list(existing.data), view):
                # Over the white placeholder, a store this run just created holds nothing to show yet: its
                # first tiles refresh the layer. A repaint now would only slow the first batch (software
                # OpenGL rasterises on every core).
                if not self._placeholder:
                    refresh_layer(existing)
            else:
                existing.data = view.levels
            apply_placement(existing, source, view.level0_downsample)
            existing.metadata = {**existing.metadata, **metadata}
            if existing.name != name:
                existing.name = name
            layer = existing
        else:
            layer = self.viewer.add_image(
                view.levels,
                **ihc_layer_kwargs(view.level0_downsample, source, name, metadata, self.request.opacity),
            )
        first = self.layer is None
        self._placeholder = False
        self.view = view
        self.layer = layer
        if first:
            self.timeline["layer_added"] = time.perf_counter()
            self.layer_ready.emit(layer)

    def _on_worker_progress(self, tp: TileProgress) -> None:
        self._on_progress(tp)
        if "ended" not in self.timeline:
            self.progressed.emit(tp)

    def _on_progress(self, tp: TileProgress) -> None:
        if "ended" in self.timeline:
            return
        self.last_progress = tp
        if tp.device:
            self.device = tp.device
        if self._pbar is None:
            # The engine has planned the tiles (their count is known). Built on the next pass of the event
            # loop, not in this one, so no single pass holds the GUI thread much beyond ~0.1 s.
            QTimer.singleShot(0, self._show_progress_bar)
        else:
            self._update_progress_bar(tp)
        if not self._fresh_view:
            self._try_attach()
        if self.view is None or not tp.new_boxes:
            return
        self.timeline.setdefault("first_tile_received", time.perf_counter())
        self.view.invalidate_boxes(tp.new_boxes)
        self._needs_refresh = True
        wait = REFRESH_INTERVAL_S - (time.perf_counter() - self._last_refresh)
        if wait <= 0:
            self._refresh_layer()
        elif not self._refresh_timer.isActive():
            self._refresh_timer.start(int(wait * 1000) + 1)

    def _update_progress_bar(self, tp: TileProgress) -> None:
        pbar = self._pbar  # napari's progress widgets may process events (and end the run) re-entrantly
        if pbar is None:
            return
        if pbar.total != tp.total:
            pbar.total = tp.total
        delta = tp.done - pbar.n
        if delta:
            pbar.update(delta)
        verb = "cancelling" if self.state == "cancelling" else "staining"
        pbar.set_description(
            f"Virtual IHC {verb} {self.request.source_layer.name}: {tp.done}/{tp.total} tiles, "
            f"{tp.mp_per_s:.2f} MP/s on {tp.device or '?'}"
        )

    def _refresh_layer(self) -> None:
        self._last_refresh = time.perf_counter()
        if not self._needs_refresh:
            return
        self._needs_refresh = False
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            return
        refresh_layer(layer)
        self.refresh_count += 1
        self.timeline.setdefault("first_tile_shown", time.perf_counter())

    def _on_layer_removed(self, event: Any) -> None:
        removed = event.value
        if removed is self.layer:
            self.layer = None
            self._layer_removed = True
        if removed is self.request.source_layer and self.running:
            show_warning(
                f"The source layer {removed.name!r} was removed: its virtual IHC run stops after the current "
                f"batch; finished tiles stay in {self.store}."
            )
            self.cancel()

    def _on_returned(self, report: RunReport | None) -> None:
        self.report = report
        if report is not None and report.device:
            self.device = report.device
        cancelled = report is None or report.cancelled or self.cancel_event.is_set()
        self.state = "cancelled" if cancelled else "done"

    def _on_errored(self, exc: BaseException) -> None:
        self.error = exc
        self.state = "failed"
        log.warning("virtual IHC run failed", exc_info=exc)
        show_error(user_message(exc, self.store))

    def _on_finished(self) -> None:
        self._store_timer.stop()
        self._refresh_timer.stop()
        for emitter, slot in (
            (self.viewer.scene.camera.events.center, self._update_fov),
            (self.viewer.scene.camera.events.zoom, self._update_fov),
            (self.viewer.canvas.events.size, self._update_fov),
            (self.viewer.layers.events.removed, self._on_layer_removed),
        ):
            emitter.disconnect(slot)
        if self.state in ("running", "pending", "cancelling"):  # no returned/errored seen
            self.state = "cancelled" if self.cancel_event.is_set() else "failed"
        if not self._fresh_view and self.state != "failed" and self.model is not None:
            self._try_attach()
        if self._placeholder and self.layer is not None:
            # The run ended before its store existed (bad model, cancelled at once): nothing to show.
            if self.layer in self.viewer.layers:
                self.viewer.layers.remove(self.layer)
            self.layer = None
        if self.view is not None:
            stored = read_store_provenance(self.store) or {}
            self.view.provenance = stored
            d = float(stored.get("level0_downsample", self.view.level0_downsample) or 1.0)
            if d != self.view.level0_downsample and self.layer is not None:
                self.view.level0_downsample = d
                apply_placement(self.layer, self.request.source_layer, d)
            if self.layer is not None and self.layer in self.viewer.layers:
                prov = self.provenance()
                prov["complete"] = bool(stored.get("complete", prov["complete"]))
                self.layer.metadata = {**self.layer.metadata, PROVENANCE_KEY: prov}
                self._needs_refresh = True
                self._refresh_layer()
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        if self._spinner_paused:
            resume_spinner(self.viewer)
            self._spinner_paused = False
        self.timeline["ended"] = time.perf_counter()
        _ACTIVE_RUNS.discard(self)
        if self.report is not None:
            for warning in self.report.warnings:
                if warning not in self._said:  # the loader's notes were shown when the model loaded
                    show_warning(f"Virtual IHC: {warning}")
            confidence = self.report.settings.get("confidence_store")
            if confidence and self.state == "done":
                add_confidence_layer(self.viewer, confidence, self.request.source_layer, self.model_name)
        if self.state == "done" and self.report is not None:
            show_info(
                f"Virtual IHC of {self.request.source_layer.name} finished: {self.report.tiles_total} tiles "
                f"({self.report.tiles_resumed} resumed) in {self.report.seconds:.1f} s on {self.report.device}."
            )
        self.ended.emit(self.state)
