"""One staining run from the widget: the engine's generator as a ``WidgetTask``, shown as it goes.

Everything a run touches is captured when it starts (``RunRequest``: source layer, slide, store path, model
path, settings), so tiles always land in the run's own store and on the run's own layer, whatever the user
selects meanwhile. The engine yields its plan first (the store is open): the layer is put up over it; then
a report after every batch, once the worker has read the chunks under the new tiles into the layer's cache
(the GUI's refresh reads only memory); its return value is the report. The run has one state:
pending -> running (-> cancelling) -> done | cancelled | failed.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_warning
from qtpy.QtCore import QObject, QTimer, Signal

from ...geometry import Box
from ...ihc_store import PROVENANCE_KEY, StoreView, bind_levels, blank_levels, model_name
from ...inference.api import RunEvent, RunPlan, RunReport, TileProgress
from .._tasks import TaskProgress, WidgetTask
from .._viewport import visible_box
from .confidence import add_confidence_layer
from .layer import apply_placement, find_ihc_layer, ihc_layer_kwargs, layer_name_for, refresh_layer
from .messages import announce_run_end, user_message
from .worker import PLANNING_WAIT_S, LiveStoreView, RunRequest, run_events, run_provenance

log = logging.getLogger(__name__)

# At most ~4 layer refreshes per second while tiles stream in: each one repaints the canvas, which costs
# tens of ms with software OpenGL, so refreshing after every batch would keep the GUI thread busy.
REFRESH_INTERVAL_S = 0.25

# napari builds its progress bar with ~150 ms of repaints (software OpenGL), so a run shows it just after the
# first tile is on screen (or PROGRESS_LATEST_MS after the plan if that tile takes longer): the first batch
# and the first refresh do not wait for it and no event-loop stall goes past 100 ms (docs/widget.md).
PROGRESS_AFTER_FIRST_TILE_MS = 150
PROGRESS_LATEST_MS = 2000


def progress_text(name: str, tp: TileProgress, cancelling: bool) -> str:
    """The progress bar's line while tiles come in."""
    verb = "cancelling" if cancelling else "staining"
    return (
        f"Virtual IHC {verb} {name}: {tp.done}/{tp.total} tiles, {tp.mp_per_s:.2f} MP/s on {tp.device or '?'}"
    )


class StainRun(QObject):
    """A single run; the widget starts it and listens to ``progressed`` and ``ended``."""

    progressed = Signal(object)  # TileProgress, after the run has shown it
    layer_ready = Signal(object)  # the IHC layer, once the plan has put it up
    noted = Signal(list)  # the plan's notes (the dock shows them; notifications come at the end)
    ended = Signal(str)  # "done" | "cancelled" | "failed"

    def __init__(self, viewer: Any, request: RunRequest, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.request = viewer, request
        self.store = Path(request.store).resolve()
        self.cancel_event = threading.Event()
        self._end_state: str | None = None  # set once the task has ended and the run is tidied
        self.plan: RunPlan | None = None
        self.view: StoreView | None = None
        self.live = LiveStoreView()  # the worker re-reads what the viewer cached under new tiles
        self.layer: Any = None
        self.report: RunReport | None = None
        self.notes: list[str] = []  # what loading the model assumed (batch-norm/dropout mode, µm/px)
        self.error: BaseException | None = None
        self.last_progress: TileProgress | None = None
        self.refresh_count = 0
        self.timeline: dict[str, float] = {}  # perf_counter stamps for tests and benchmarks (never read here)
        self._fov: Box | None = None  # written on the GUI thread, read by the engine's priority poll
        # Cancelling only sets the event: the engine stops after the current batch and still reports.
        self.task = WidgetTask(
            viewer,
            run_events,
            self.request,
            self.cancel_event,
            lambda: self._fov,
            self.live,
            desc=f"Virtual IHC: {request.source_layer.name}",
            on_yield=self._on_event,
            on_end=self._on_task_end,
            cancel_event=self.cancel_event,
            quit_on_cancel=False,
            show_progress=False,  # shown after the first tile (PROGRESS_AFTER_FIRST_TILE_MS)
        )
        self.progress_bar: TaskProgress = self.task.progress
        self._placeholder: Any = None  # the white layer this run added, until its store exists
        self._layer_put_up = False  # the layer is put up once (a user may remove it later)
        self._last_refresh = 0.0
        self._unshown_tiles = False  # tiles reported since the layer's last refresh
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.timeout.connect(self._refresh_layer)
        self._connections = [
            (viewer.scene.camera.events.center, self._update_fov),
            (viewer.scene.camera.events.zoom, self._update_fov),
            (viewer.canvas.events.size, self._update_fov),
            (viewer.layers.events.removed, self._on_layer_removed),
        ]

    @property
    def state(self) -> str:
        """pending -> running (-> cancelling) -> done | cancelled | failed."""
        return self._end_state or self.task.state

    @property
    def running(self) -> bool:
        """True from ``start`` until ``ended`` is emitted."""
        return self.state in ("running", "cancelling")

    # --- lifecycle (GUI thread) -----------------------------------------------------------------
    def start(self) -> None:
        self.timeline["started"] = time.perf_counter()
        self._update_fov()  # before the engine's first priority poll
        for emitter, slot in self._connections:
            emitter.connect(slot)
        self.task.start()
        # The layer is built in an event of its own, once the engine has planned or after PLANNING_WAIT_S:
        # building it (~250 ms of napari here) in this handler froze the window that long at the click.
        QTimer.singleShot(int(PLANNING_WAIT_S * 1000), self._show_layer_now)

    def cancel(self) -> None:
        """Stop after the current batch; finished tiles stay in the store and a new run resumes."""
        if self.state == "running":
            self.task.cancel()
            self.progress_bar.describe(f"Virtual IHC: cancelling {self.request.source_layer.name}...")

    @property
    def model_name(self) -> str:
        prov = self.plan.provenance if self.plan is not None else {}
        return model_name(prov) if prov.get("model") else Path(self.request.model_path).stem

    def provenance(self) -> dict[str, Any]:
        return run_provenance(self.request, self.plan, self.report)

    # --- what the engine yields (GUI thread) ----------------------------------------------------
    def _on_event(self, event: RunEvent) -> None:
        if isinstance(event, RunPlan):
            self._show_plan(event)
        elif self.state in ("running", "cancelling"):
            self._show_layer_now()  # planned: only batches are left, which run beside napari's build
            self._show_progress(event)
            self.progressed.emit(event)

    def _show_layer_now(self) -> None:
        """The layer already showing this store (a re-run), else a white one to bind to the store later."""
        if not self.running or self._layer_put_up:  # ended early (bad model), or already up
            return
        self._layer_put_up = True
        self.timeline["layer_building"] = time.perf_counter()
        layer = find_ihc_layer(self.viewer.layers, self.store)
        if layer is None:
            meta = {PROVENANCE_KEY: self.provenance()}
            name = layer_name_for(self.model_name)
            kwargs = ihc_layer_kwargs(1.0, self.request.source_layer, name, meta, self.request.opacity)
            layer = self._placeholder = self.viewer.add_image(
                blank_levels(self.request.slide.level_dimensions), **kwargs
            )
        self.layer = layer
        self.timeline["layer_shown"] = time.perf_counter()
        self.layer_ready.emit(layer)
        self._bind_to_store()  # if the plan came while napari built the layer

    def _show_plan(self, plan: RunPlan) -> None:
        """The store exists: point the layer at it (no data swap when the geometry matches) and place it."""
        self.plan, self.view = plan, self.live.opened  # opened by the worker before it yielded the plan
        self.notes = list(plan.notes)
        if self.notes:
            self.noted.emit(self.notes)
        self._bind_to_store()
        QTimer.singleShot(PROGRESS_LATEST_MS, self._show_progress_bar)

    def _bind_to_store(self) -> None:
        layer, plan, view = self.layer, self.plan, self.view
        if layer is None or plan is None or view is None or layer not in self.viewer.layers:
            return
        if not bind_levels(list(layer.data), view):
            layer.data = view.levels
        elif plan.tiles_resumed or layer is not self._placeholder:
            refresh_layer(layer)  # earlier tiles to show (a new store is white, like the placeholder)
        apply_placement(layer, self.request.source_layer, plan.level0_downsample)
        layer.metadata = {**layer.metadata, PROVENANCE_KEY: self.provenance()}
        layer.name = layer_name_for(self.model_name, plan.provenance.get("target_stain"))

    def _show_progress_bar(self) -> None:
        if self.running and not self.progress_bar.shown:
            if self.last_progress is None:
                self.progress_bar.describe(
                    f"Virtual IHC: {self.request.source_layer.name} with {self.model_name}"
                )
            self.progress_bar.show()

    def _show_progress(self, tp: TileProgress) -> None:
        self.last_progress = tp
        text = progress_text(self.request.source_layer.name, tp, self.state == "cancelling")
        self.progress_bar.update(tp.done, tp.total, text)
        if self.view is None or not tp.new_boxes:
            return
        self.timeline.setdefault("first_tile_received", time.perf_counter())
        self._unshown_tiles = True
        wait = REFRESH_INTERVAL_S - (time.perf_counter() - self._last_refresh)
        if wait <= 0:
            self._refresh_layer()
        elif not self._refresh_timer.isActive():
            self._refresh_timer.start(int(wait * 1000) + 1)

    def _refresh_layer(self) -> None:
        self._last_refresh = time.perf_counter()
        self._unshown_tiles = False
        if self.layer is None or self.layer not in self.viewer.layers:
            return
        refresh_layer(self.layer)
        self.refresh_count += 1
        if self.refresh_count == 1:
            self.timeline["first_tile_shown"] = time.perf_counter()
            QTimer.singleShot(PROGRESS_AFTER_FIRST_TILE_MS, self._show_progress_bar)

    # --- the viewer (GUI thread) ----------------------------------------------------------------
    def _update_fov(self, event: Any = None) -> None:
        source = self.request.source_layer
        if source not in self.viewer.layers:
            return
        try:
            self._fov = visible_box(self.viewer, source, self.request.slide.dimensions)
        except Exception as exc:  # never let a camera event break the run
            log.debug("field of view unavailable: %s", exc)
            self._fov = None

    def _on_layer_removed(self, event: Any) -> None:
        if event.value is self.layer:
            self.layer = None
        if event.value is self.request.source_layer and self.running:
            show_warning(
                f"The source layer {event.value.name!r} was removed: its virtual IHC run stops after the "
                f"current batch; finished tiles stay in {self.store}."
            )
            self.cancel()

    # --- the end (GUI thread) -------------------------------------------------------------------
    def _on_task_end(self, task: WidgetTask) -> None:
        """The task has ended (its progress bar is closed): tidy up, then the run's own end state."""
        self.report = task.result if task.returned else None
        if task.error is not None:
            self.error = task.error
            log.warning("virtual IHC run failed", exc_info=task.error)
            show_error(user_message(task.error, self.store))
        self._refresh_timer.stop()
        self.live.detach()
        for emitter, slot in self._connections:
            emitter.disconnect(slot)
        if self.plan is None and self._placeholder is not None:  # ended before its store existed
            if self._placeholder in self.viewer.layers:
                self.viewer.layers.remove(self._placeholder)
            self.layer = None
        if self.layer is not None and self.layer in self.viewer.layers:
            self.layer.metadata = {**self.layer.metadata, PROVENANCE_KEY: self.provenance()}
            if self._unshown_tiles:  # a refresh with nothing new repaints the canvas at the run's busy end
                self._refresh_layer()
        self.timeline["ended"] = time.perf_counter()
        rep = self.report
        if self.error is not None or (rep is None and not self.cancel_event.is_set()):
            self._end_state = "failed"
        else:
            cancelled = rep is None or rep.cancelled or self.cancel_event.is_set()
            self._end_state = "cancelled" if cancelled else "done"
        confidence = rep.settings.get("confidence_store") if rep is not None else None
        if confidence and self.state == "done":
            add_confidence_layer(self.viewer, confidence, self.request.source_layer, self.model_name)
        announce_run_end(self.state, rep, self.request.source_layer.name, self.notes)
        self.ended.emit(self.state)
