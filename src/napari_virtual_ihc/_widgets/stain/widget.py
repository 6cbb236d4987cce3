"""The "Virtual IHC" dock widget: pick an H&E layer and a model, press Run, watch the IHC fill in.

No logic of its own: the form (``form.py``) collects parameters, a ``StainRun`` (the core tile engine as a
``WidgetTask``) shows the engine's OME-Zarr store as a multiscale layer aligned with the H&E, and whether a
store found for the slide holds its result is the core's answer (``ihc_store.existing``), computed off the
GUI thread (it may hash a whole slide file).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Signal

from ...ihc_store import PROVENANCE_KEY, StoreNotReadyError, layer_provenance, model_name, open_store
from ...ihc_store.existing import ExistingResult, existing_result
from ...inference.devices import DeviceError, describe_device, device_choice
from ...inference.dropout import DropoutMode, DropoutModeError
from .._layer_source import (
    SourceLayerError,
    combo_layer,
    fill_layer_combo,
    is_source_candidate,
    slide_for_layer,
    store_for_layer,
)
from .._napari_private import unwrap_viewer
from .._tasks import WidgetTask
from .._viewport import show_side_by_side
from .form import StainForm
from .layer import find_ihc_layer, ihc_layer_kwargs, layer_name_for
from .preload import ModelPreloader
from .run import StainRun
from .worker import RunRequest

log = logging.getLogger(__name__)


def _widget_closed(
    run_box: list[StainRun | None],
    connections: list[tuple[Any, Any]],
    preloader: ModelPreloader,
    *_: Any,
) -> None:
    """The dock widget is gone: stop its run after the current batch (finished tiles stay), drop the
    preloaded model and let go of the viewer's events."""
    run = run_box[0]
    if run is not None and run.running:
        run.cancel()
    preloader.close()
    for emitter, slot in connections:
        with contextlib.suppress(Exception):  # the viewer may already be gone
            emitter.disconnect(slot)


class VirtualIHCWidget(StainForm):
    """Dock widget; ``run_started``/``run_ended`` carry the ``StainRun``."""

    run_started = Signal(object)
    run_ended = Signal(object)

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        # npe2 hands plugins a public-only proxy; runs compare layers by identity (see unwrap_viewer).
        self.viewer = unwrap_viewer(napari_viewer)
        self._run_box: list[StainRun | None] = [None]  # shared with the clean-up that runs on destruction
        self.preloader = ModelPreloader()  # the chosen model, loaded before Run is pressed
        self.last_run: StainRun | None = None
        self._notified_stores: set[str] = set()
        self._existing_store: Path | None = None
        self.existing_check: WidgetTask | None = None  # the latest check of a found store (worker thread)
        self._connect()
        self._refresh_sources()
        self._update_device_label()
        self._update_buttons()

    # --- UI -------------------------------------------------------------------------------------
    def _connect(self) -> None:
        self.browse_model_button.clicked.connect(self._browse_model)
        self.browse_output_button.clicked.connect(self._browse_output)
        self.model_combo.currentTextChanged.connect(self._on_settings_changed)
        self.model_combo.currentTextChanged.connect(self._preload_model)
        self.device_combo.currentIndexChanged.connect(self._update_device_label)
        self.device_combo.currentIndexChanged.connect(self._on_settings_changed)
        for spin in (self.tile_spin, self.halo_spin, self.batch_spin):
            spin.valueChanged.connect(self._on_settings_changed)
        self.output_edit.editingFinished.connect(self._on_output_changed)
        self.advanced_button.toggled.connect(self._toggle_advanced)
        self.advanced_button.toggled.connect(self._on_settings_changed)
        self.run_button.clicked.connect(self._on_run_clicked)
        self.cancel_button.clicked.connect(self.cancel_run)
        self.load_existing_button.clicked.connect(self.load_existing)
        self.source_combo.currentIndexChanged.connect(self._on_source_changed)
        self.overlay_button.toggled.connect(self._apply_display)
        self.side_by_side_button.toggled.connect(self._apply_display)
        self.opacity_slider.valueChanged.connect(self._apply_display)
        self.opacity_slider.valueChanged.connect(self._on_settings_changed)
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self.viewer.layers.events.moved.connect(self._on_layers_changed)
        # Qt does not call a dying object's own methods, so the clean-up gets what it needs up front.
        self.destroyed.connect(
            functools.partial(
                _widget_closed,
                self._run_box,
                [
                    (self.viewer.layers.events.inserted, self._on_layer_inserted),
                    (self.viewer.layers.events.removed, self._on_layers_changed),
                    (self.viewer.layers.events.moved, self._on_layers_changed),
                ],
                self.preloader,
            )
        )
        self._preload_model()

    @property
    def run(self) -> StainRun | None:
        """The run in progress (None when idle)."""
        return self._run_box[0]

    @run.setter
    def run(self, value: StainRun | None) -> None:
        self._run_box[0] = value

    # --- settings -------------------------------------------------------------------------------
    def _preload_model(self, *_: Any) -> None:
        path = self.model_path()
        if path:
            self.preloader.prefetch(path)

    def _on_output_changed(self) -> None:
        self._on_settings_changed()
        self._check_existing_result()

    # --- source layers --------------------------------------------------------------------------
    def source_layers(self) -> list[Any]:
        return [layer for layer in self.viewer.layers if is_source_candidate(layer)]

    def selected_source_layer(self) -> Any | None:
        layer = combo_layer(self.source_combo)
        return layer if layer is not None and layer in self.viewer.layers else None

    def set_source_layer(self, layer: Any) -> None:
        for i in range(self.source_combo.count()):
            if self.source_combo.itemData(i) is layer:
                self.source_combo.setCurrentIndex(i)
                return
        raise ValueError(f"{getattr(layer, 'name', layer)!r} is not an RGB image layer of this viewer")

    def _refresh_sources(self, prefer: Any = None) -> None:
        current = prefer if prefer is not None else self.selected_source_layer()
        fill_layer_combo(self.source_combo, self.source_layers(), keep=current)
        self._on_source_changed()

    def _on_layer_inserted(self, event: Any) -> None:
        layer = event.value
        if is_source_candidate(layer):
            layer.events.name.connect(self._on_layers_changed)
            self._refresh_sources(prefer=layer)  # a slide just opened: it is what the user wants
        else:
            self._refresh_sources()

    def _on_layers_changed(self, *_: Any) -> None:
        self._refresh_sources()

    def _on_source_changed(self, *_: Any) -> None:
        self._check_existing_result()
        self._update_buttons()

    # --- existing results -----------------------------------------------------------------------
    def store_for_selected(self) -> Path | None:
        layer = self.selected_source_layer()
        if layer is None:
            return None
        return store_for_layer(layer, self.output_edit.text().strip() or None)

    def _store_offerable(self, store: Path | None) -> bool:
        """A store worth checking: it exists, is not shown already and is not the one being written."""
        if store is None or not store.exists():
            return False
        if find_ihc_layer(self.viewer.layers, store) is not None:
            return False
        run = self.run
        return not (run is not None and run.running and run.store == store.resolve())

    def _hide_existing(self) -> None:
        self._existing_store = None
        self.load_existing_button.setVisible(False)

    def _check_existing_result(self) -> None:
        """Offer to load a store found for the selected slide, instead of recomputing it. Whether it holds
        this slide's result needs the slide's content hash (a whole file read the first time): that runs
        in a ``WidgetTask``, and its answer is shown if the selection is still the one it was asked for."""
        self._hide_existing()
        if self.existing_check is not None:
            self.existing_check.cancel()  # its answer is ignored; the hash itself finishes and is cached
            self.existing_check = None
        store, layer = self.store_for_selected(), self.selected_source_layer()
        if layer is None or not self._store_offerable(store):
            return
        assert store is not None
        try:
            slide = slide_for_layer(layer)
        except SourceLayerError as exc:
            log.debug("no slide for %s: %s", layer.name, exc)
            return
        self.existing_check = WidgetTask(
            self.viewer,
            existing_result,
            store,
            slide,
            desc=f"Virtual IHC: checking {store.name}",
            show_progress=False,
            on_end=functools.partial(self._on_existing_checked, store=store, layer=layer),
        ).start()

    def _on_existing_checked(self, task: WidgetTask, *, store: Path, layer: Any) -> None:
        if task is not self.existing_check or not self._alive():
            return  # a newer check (or none: the widget is gone) decides
        self.existing_check = None
        if task.state != "done" or task.result is None:
            if task.error is not None:
                log.debug("checking %s failed: %s", store, task.error)
            return
        found: ExistingResult = task.result
        if self.store_for_selected() != store or self.selected_source_layer() is not layer:
            return
        if not self._store_offerable(store):
            return
        if not found.holds_this_slide:
            key = f"other:{store.resolve()}"
            if key not in self._notified_stores:
                self._notified_stores.add(key)
                show_info(
                    f"{store} holds the result of another slide with the same name; Run would refuse to "
                    "write there: choose another output folder for this slide."
                )
            return
        self._existing_store = store
        self.load_existing_button.setText(f"Load existing result ({found.describe()})")
        self.load_existing_button.setVisible(True)
        key = str(store.resolve())
        if key not in self._notified_stores:
            self._notified_stores.add(key)
            show_info(
                f"A virtual IHC result exists for this slide ({store.name}): click 'Load existing result'."
            )

    def load_existing(self) -> Any | None:
        """Show the stored result over the selected slide; returns the layer."""
        store, source = self._existing_store, self.selected_source_layer()
        if store is None or source is None:
            return None
        try:
            view = open_store(store)
        except StoreNotReadyError as exc:
            show_error(f"Could not open the existing result: {exc}")
            return None
        prov = layer_provenance(view.provenance, store, source_layer=source.name)
        name = layer_name_for(model_name(prov), prov.get("target_stain"))
        layer = self.viewer.add_image(
            view.levels,
            **ihc_layer_kwargs(
                view.level0_downsample,
                source,
                name,
                {PROVENANCE_KEY: prov},
                self.opacity_slider.value() / 100,
            ),
        )
        self._check_existing_result()
        self._apply_display()
        return layer

    # --- running --------------------------------------------------------------------------------
    def _update_buttons(self) -> None:
        running = self.run is not None and self.run.running
        self.run_button.setEnabled(not running and self.selected_source_layer() is not None)
        self.cancel_button.setEnabled(running)

    def start_run(self) -> StainRun | None:
        """Validate the inputs (errors become notifications) and start staining the selected layer."""
        if self.run is not None and self.run.running:
            return None
        source = self.selected_source_layer()
        if source is None:
            show_error("Virtual IHC: choose an H&E image layer first (File > Open, or drag a slide in).")
            return None
        model_path = self.model_path()
        if not model_path:
            show_error("Virtual IHC: no model chosen. Pick a generator checkpoint with 'Browse...'.")
            return None
        if not Path(model_path).is_file():
            show_error(f"Virtual IHC: model file not found: {model_path}")
            return None
        try:
            device_choice(self.device())
        except DeviceError as exc:
            show_error(f"Virtual IHC: {exc}")
            return None
        try:
            DropoutMode.parse(self.dropout_edit.text().strip() or None)
        except DropoutModeError as exc:
            show_error(f"Virtual IHC: {exc}")
            return None
        store = store_for_layer(source, self.output_edit.text().strip() or None)
        try:
            slide = slide_for_layer(source)
            store.parent.mkdir(parents=True, exist_ok=True)
        except SourceLayerError as exc:
            show_error(f"Virtual IHC: {exc}")
            return None
        except OSError as exc:
            show_error(f"Virtual IHC: cannot create the output folder {store.parent}: {exc}")
            return None

        self.settings.remember_model(model_path)  # listed when the run ends: a refill now re-lays out the
        self._on_settings_changed()  # dock, a whole-window repaint just when the first tiles are computed
        request = RunRequest(
            source_layer=source,
            slide=slide,
            store=store,
            model_path=model_path,
            models=self.preloader,
            settings=self.engine_settings(),
            opacity=self.opacity_slider.value() / 100.0,
            tumour_class=str(self.tumour_class_combo.currentData()),
        )
        run = StainRun(self.viewer, request)
        run.progressed.connect(self._on_run_progress)
        run.layer_ready.connect(lambda _layer: self._apply_display() if self._alive() else None)
        run.noted.connect(self._show_notes)
        run.ended.connect(lambda _state, run=run: self._on_run_ended(run))
        self.run = run
        self.load_existing_button.setVisible(False)
        self._show_notes([])
        self.status_label.setText(f"Loading {Path(model_path).name}...")
        run.start()
        self._update_buttons()
        self.run_started.emit(run)
        return run

    def _on_run_clicked(self) -> None:
        self.start_run()

    def cancel_run(self) -> None:
        if self.run is not None and self.run.running:
            self.run.cancel()
            self.status_label.setText("Cancelling after the current batch...")

    def _alive(self) -> bool:
        """False once Qt has deleted this widget (its run may still report; the run itself carries on)."""
        try:
            self.objectName()
        except RuntimeError:
            return False
        return True

    def _show_notes(self, notes: list[str]) -> None:
        if self._alive():
            self.notes_label.setText("\n".join(f"Note: {note}" for note in notes))
            self.notes_label.setVisible(bool(notes))

    def _on_run_progress(self, tp: Any) -> None:
        run = self.run
        if run is None or not self._alive():
            return
        if tp.device:
            compute = f", {tp.compute}" if tp.compute else ""
            self.device_label.setText(f"running on {describe_device(tp.device)}{compute}")
        verb = "Cancelling" if run.state == "cancelling" else "Staining"
        self.status_label.setText(
            f"{verb} {run.request.source_layer.name}: {tp.done}/{tp.total} tiles, {tp.mp_per_s:.2f} MP/s"
        )

    def _on_run_ended(self, run: StainRun) -> None:
        if run is self.run:
            self.run = None
        self.last_run = run
        if not self._alive():
            return
        self._fill_model_combo()  # the run's model first among the recent ones (remembered at Run)
        name = run.request.source_layer.name
        if run.state == "done":
            self.status_label.setText(f"Done: {name} -> {run.store.name}")
        elif run.state == "cancelled":
            tp = run.last_progress
            done = f" ({tp.done}/{tp.total} tiles kept)" if tp else ""
            self.status_label.setText(f"Cancelled{done}. Run again to resume.")
        else:
            self.status_label.setText("Failed; see the notification. Fix the problem and Run again.")
        self._update_device_label()
        self._update_buttons()
        self._check_existing_result()
        self.run_ended.emit(run)

    # --- display --------------------------------------------------------------------------------
    def ihc_layer_for_selected(self) -> Any | None:
        store = self.store_for_selected()
        return find_ihc_layer(self.viewer.layers, store) if store is not None else None

    def _apply_display(self, *_: Any) -> None:
        """Side by side: napari grid mode (shared camera). Overlay: stacked, with the opacity slider."""
        side_by_side = self.side_by_side_button.isChecked()
        self.opacity_slider.setEnabled(not side_by_side)
        show_side_by_side(self.viewer, side_by_side)
        layer = self.ihc_layer_for_selected()
        if layer is None:
            return
        layer.visible = True
        layer.opacity = 1.0 if side_by_side else self.opacity_slider.value() / 100.0
