"""The worker-thread side of a staining run: what it needs (captured on the GUI thread), and what it does."""

from __future__ import annotations

import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...geometry import Box
from ...ihc_store import StoreView, layer_provenance, open_store
from ...inference.api import EngineSettings, RunEvent, RunPlan, RunReport, TileProgress
from ...slides.base import Slide
from .messages import ModelLoadError
from .preload import ModelPreloader
from .scope import gui_friendly_run


@dataclass
class RunRequest:
    """Everything a run needs, captured on the GUI thread when Run is pressed."""

    source_layer: Any
    slide: Slide
    store: Path
    model_path: str
    settings: EngineSettings
    models: ModelPreloader  # the widget's: the chosen model, loaded (or loading) since it was chosen
    opacity: float = 0.6
    tumour_class: str = "auto"  # models with a tumour-class channel: auto (classifier) | tumour | non-tumour


# napari builds a run's layer once the engine reports it has planned (store, kernels: ~150 ms of Python with
# a preloaded model), or after PLANNING_WAIT_S if planning takes longer. Planning and building the layer
# (~250 ms of long GIL-holding Qt/vispy calls) slowed each other down when they overlapped; one after the
# other, the layer is built beside the first batch, whose convolutions release the GIL (docs/widget.md,
# sessions 15 and 17). A timer, not a wait: the window stays live at the click.
PLANNING_WAIT_S = 0.6


class LiveStoreView:
    """The store the layer shows, as the worker thread sees it. The worker opens it with the plan and, after
    every batch, reads the chunks under the new tiles into its cache (``StoreView.reload_boxes``) before
    reporting, so the GUI thread's refresh reads only memory: on a 2-core machine a refresh that waited for
    zarr reads beside the model stalled the event loop past 100 ms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._view: StoreView | None = None
        self.opened: StoreView | None = None  # opened by the worker with the plan (zarr metadata reads)

    def open(self, plan: RunPlan) -> None:
        view = open_store(plan.store)
        with self._lock:  # reloads go to it from the first batch on, before the GUI has bound its layer
            self.opened = self._view = view

    def detach(self) -> None:
        """The run has ended: the worker reloads nothing more."""
        with self._lock:
            self._view = None

    def after_write(self, boxes: list[Box]) -> None:
        with self._lock:
            if self._view is not None:
                self._view.reload_boxes(boxes)


def _with_live_view(
    events: Generator[RunEvent, None, Any], live: LiveStoreView
) -> Generator[RunEvent, None, Any]:
    """``events`` unchanged; before passing one on, the store is opened (the plan) or the viewer's cached
    chunks under the new tiles re-read (a batch's report), on this thread."""
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                return stop.value
            if isinstance(event, RunPlan):
                live.open(event)
            elif isinstance(event, TileProgress) and event.new_boxes:
                live.after_write(event.new_boxes)
            yield event
    finally:
        events.close()


def run_events(
    request: RunRequest, cancel: threading.Event, priority: Any, live: LiveStoreView
) -> Generator[RunEvent, None, Any]:
    """Worker thread: load the model, then the engine's own generator (plan, progress..., report)."""
    from ... import inference, models

    with gui_friendly_run():
        try:
            model = models.supply_class_channel(request.models.get(request.model_path), request.tumour_class)
        except models.CheckpointError:
            raise
        except Exception as exc:  # any failure reading the file is a model problem for the user
            raise ModelLoadError(f"{request.model_path}: {type(exc).__name__}: {exc}") from exc
        if cancel.is_set():
            return None
        events = inference.iter_stain_slide(
            request.slide, model, request.store, request.settings, priority=priority, cancel=cancel
        )
        return (yield from _with_live_view(events, live))


def run_provenance(request: RunRequest, plan: RunPlan | None, report: RunReport | None) -> dict[str, Any]:
    """``layer.metadata["virtual_ihc"]``: the store's provenance and what this run adds to it."""
    stored = plan.provenance if plan is not None else {}
    device = report.device if report else plan.device if plan else request.settings.device
    return layer_provenance(
        {**stored, "complete": bool(report and report.store_complete)},
        Path(request.store).resolve(),
        source_layer=request.source_layer.name,
        slide_path=str(request.slide.path) if request.slide.path else None,
        device=device,
        report=report.__dict__ if report else None,
        settings={**stored.get("settings", {}), **(report.settings if report else {})},
    )
