"""The "Virtual IHC" dock widget: pick an H&E layer and a model, press Run, watch the IHC fill in.

No logic of its own: it collects parameters, starts a ``StainRun`` (the core tile engine in a napari
``thread_worker``) and shows the engine's OME-Zarr store as a multiscale layer aligned with the H&E.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ..ihc_store import (
    PROVENANCE_KEY,
    StoreNotReadyError,
    layer_provenance,
    model_name,
    open_store,
    read_store_provenance,
    same_source,
    source_identity,
)
from ..inference.api import EngineSettings
from ..inference.dropout import DropoutMode, DropoutModeError
from ._layer_source import (
    SourceLayerError,
    combo_layer,
    fill_layer_combo,
    is_source_candidate,
    slide_for_layer,
    store_for_layer,
)
from ._model_preload import ModelPreloader
from ._napari_private import unwrap_viewer
from ._run_worker import RunRequest
from ._settings import StainWidgetSettings
from ._stain_devices import DeviceError, available_devices, describe_device, resolve_device
from ._stain_layer import find_ihc_layer, ihc_layer_kwargs, layer_name_for
from ._stain_run import StainRun
from ._stain_view import show_side_by_side

log = logging.getLogger(__name__)

MODEL_FILTER = "Generator checkpoints (*.safetensors *.pth *.pt *.ckpt);;All files (*)"


def _demo_model_path() -> str | None:
    """The embedded demo model (None when a broken install lacks it: the widget still works)."""
    from .. import models

    try:
        return str(models.demo_model_path())
    except models.CheckpointError:
        return None


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


class VirtualIHCWidget(QWidget):
    """Dock widget; ``run_started``/``run_ended`` carry the ``StainRun``."""

    run_started = Signal(object)
    run_ended = Signal(object)

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        # npe2 hands plugins a public-only proxy; runs compare layers by identity (see unwrap_viewer).
        self.viewer = unwrap_viewer(napari_viewer)
        self.settings = StainWidgetSettings.load()
        self._run_box: list[StainRun | None] = [None]  # shared with the clean-up that runs on destruction
        self.preloader = ModelPreloader()  # the chosen model, loaded before Run is pressed
        self.last_run: StainRun | None = None
        self._notified_stores: set[str] = set()
        self._existing_store: Path | None = None
        self._build_ui()
        self._load_settings_into_ui()
        self._connect()
        self._refresh_sources()
        self._update_device_label()
        self._update_buttons()

    # --- UI -------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        layout.addLayout(form)

        self.source_combo = QComboBox()
        self.source_combo.setToolTip("The H&E image to stain (RGB image layers)")
        form.addRow("H&&E layer", self.source_combo)

        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        line = self.model_combo.lineEdit()
        assert line is not None  # the combo is editable
        line.setPlaceholderText("choose a generator checkpoint...")
        self.model_combo.setToolTip("A .safetensors checkpoint or a reference .pth state dict")
        self.browse_model_button = QPushButton("Browse...")
        row = QHBoxLayout()
        row.addWidget(self.model_combo, 1)
        row.addWidget(self.browse_model_button)
        form.addRow("Model", row)

        self.device_combo = QComboBox()
        for value, label in available_devices():
            self.device_combo.addItem(label, value)
        form.addRow("Device", self.device_combo)
        self.device_label = QLabel()
        self.device_label.setWordWrap(True)
        form.addRow("", self.device_label)

        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("beside the slide (installed or read-only: your data folder)")
        self.browse_output_button = QPushButton("Browse...")
        row = QHBoxLayout()
        row.addWidget(self.output_edit, 1)
        row.addWidget(self.browse_output_button)
        form.addRow("Output folder", row)

        self.advanced_button = QToolButton()
        self.advanced_button.setText("Advanced")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.ArrowType.RightArrow)
        layout.addWidget(self.advanced_button)
        self.advanced_panel = QWidget()
        adv = QFormLayout(self.advanced_panel)
        adv.setContentsMargins(12, 0, 0, 0)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(64, 4096)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setToolTip("Written core of each tile, in pixels at the model's resolution")
        adv.addRow("Tile", self.tile_spin)
        self.halo_spin = QSpinBox()
        self.halo_spin.setRange(0, 1024)
        self.halo_spin.setSpecialValueText("auto")
        self.halo_spin.setSuffix(" px")
        self.halo_spin.setToolTip("Context read around each tile; auto = half the receptive field or more")
        adv.addRow("Halo", self.halo_spin)
        self.batch_spin = QSpinBox()
        self.batch_spin.setRange(0, 256)
        self.batch_spin.setSpecialValueText("auto")
        self.batch_spin.setToolTip(
            "Tiles per forward pass; auto = 1 on the CPU, 4 on a GPU. Lower it if the GPU runs out of memory"
        )
        adv.addRow("Batch", self.batch_spin)
        self.tumour_class_combo = QComboBox()
        for label, value in (
            ("auto (tumour classifier)", "auto"),
            ("tumour", "tumour"),
            ("non-tumour", "non-tumour"),
        ):
            self.tumour_class_combo.addItem(label, value)
        self.tumour_class_combo.setToolTip(
            "Only for models with a tumour-class channel (CycleGAN + MIL): one class for the whole slide, "
            "or the model's tumour classifier run tile-wise"
        )
        adv.addRow("Tumour class", self.tumour_class_combo)
        self.bn_stats_combo = QComboBox()
        for value, label in (
            ("", "as the checkpoint says"),
            ("running", "running (eval mode)"),
            ("slide", "slide (the slide's own statistics, as test.py)"),
        ):
            self.bn_stats_combo.addItem(label, value)
        self.bn_stats_combo.setToolTip(
            "BatchNorm models: running statistics (eval mode) or statistics of this slide, frozen (what the "
            "papers' test.py does without --eval)"
        )
        adv.addRow("BatchNorm", self.bn_stats_combo)
        self.dropout_edit = QLineEdit()
        self.dropout_edit.setPlaceholderText("as the checkpoint says")
        self.dropout_edit.setToolTip(
            "off | sample (one dropout sample, as test.py) | mean:N (mean of N samples, plus a confidence "
            "layer showing where they disagree)"
        )
        adv.addRow("Dropout", self.dropout_edit)
        layout.addWidget(self.advanced_panel)

        self.load_existing_button = QPushButton("Load existing result")
        self.load_existing_button.setVisible(False)
        layout.addWidget(self.load_existing_button)

        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.status_label = QLabel("Ready.")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.notes_label = QLabel()  # what the running model assumes (also notified when the run ends)
        self.notes_label.setWordWrap(True)
        self.notes_label.setVisible(False)
        layout.addWidget(self.notes_label)

        row = QHBoxLayout()
        self.overlay_button = QPushButton("Overlay")
        self.side_by_side_button = QPushButton("Side by side")
        self.display_group = QButtonGroup(self)
        for button in (self.overlay_button, self.side_by_side_button):
            button.setCheckable(True)
            self.display_group.addButton(button)
            row.addWidget(button)
        self.overlay_button.setChecked(True)
        layout.addLayout(row)
        row = QHBoxLayout()
        row.addWidget(QLabel("Opacity"))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        row.addWidget(self.opacity_slider, 1)
        layout.addLayout(row)
        layout.addStretch(1)

    def _load_settings_into_ui(self) -> None:
        s = self.settings
        self._fill_model_combo()
        self.model_combo.setCurrentText(s.model_path)
        if not s.model_path and _demo_model_path():  # a first start: the demo model is the default
            self.model_combo.setCurrentIndex(0)
        index = self.device_combo.findData(s.device)
        if index < 0:  # saved on another machine (e.g. a CUDA device absent here): keep it, say so
            self.device_combo.addItem(f"{s.device} (not available here)", s.device)
            index = self.device_combo.count() - 1
        self.device_combo.setCurrentIndex(index)
        self.tile_spin.setValue(s.tile)
        self.halo_spin.setValue(s.halo)
        self.batch_spin.setValue(s.batch)
        self.output_edit.setText(s.output_dir)
        self.opacity_slider.setValue(round(s.overlay_opacity * 100))
        self.advanced_button.setChecked(s.advanced_open)
        self._toggle_advanced(s.advanced_open)

    def _fill_model_combo(self) -> None:
        text = self.model_combo.currentText()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        demo = _demo_model_path()
        if demo:
            from ..models import DEMO_MODEL_LABEL

            self.model_combo.addItem(f"{DEMO_MODEL_LABEL} (embedded): {Path(demo).name}", demo)
        for path in self.settings.recent_models:
            self.model_combo.addItem(path, path)
        self.model_combo.setCurrentText(text)
        self.model_combo.blockSignals(False)

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
    def model_path(self) -> str:
        index = self.model_combo.currentIndex()
        text = self.model_combo.currentText().strip()
        if index >= 0 and self.model_combo.itemText(index) == text:
            data = self.model_combo.itemData(index)
            if data:
                return str(data)
        return text

    def _preload_model(self, *_: Any) -> None:
        path = self.model_path()
        if path:
            self.preloader.prefetch(path)

    def set_model_path(self, path: str | Path) -> None:
        index = self.model_combo.findData(str(path))  # a listed model (the demo) shows its label
        if index >= 0:
            self.model_combo.setCurrentIndex(index)
        else:
            self.model_combo.setCurrentText(str(path))

    def device(self) -> str:
        return str(self.device_combo.currentData() or "auto")

    def set_device(self, value: str) -> None:
        index = self.device_combo.findData(value)
        if index < 0:
            self.device_combo.addItem(f"{value} (not available here)", value)
            index = self.device_combo.count() - 1
        self.device_combo.setCurrentIndex(index)

    def engine_settings(self) -> EngineSettings:
        return EngineSettings(
            tile=self.tile_spin.value(),
            halo=self.halo_spin.value() or None,
            batch=self.batch_spin.value() or None,
            device=self.device(),
            bn_stats=str(self.bn_stats_combo.currentData() or "") or None,
            dropout=self.dropout_edit.text().strip() or None,
        )

    def _on_settings_changed(self, *_: Any) -> None:
        s = self.settings
        s.model_path = self.model_path()
        s.device = self.device()
        s.tile, s.halo, s.batch = self.tile_spin.value(), self.halo_spin.value(), self.batch_spin.value()
        s.output_dir = self.output_edit.text().strip()
        s.overlay_opacity = self.opacity_slider.value() / 100.0
        s.advanced_open = self.advanced_button.isChecked()
        s.save()

    def _on_output_changed(self) -> None:
        self._on_settings_changed()
        self._check_existing_result()

    def _toggle_advanced(self, open_: bool) -> None:
        self.advanced_panel.setVisible(open_)
        self.advanced_button.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)

    def _update_device_label(self, *_: Any) -> None:
        try:
            text = f"running on {describe_device(resolve_device(self.device()))}"
        except DeviceError as exc:
            text = f"not available: {exc}"
        self.device_label.setText(text)

    def _browse_model(self) -> None:
        start = str(Path(self.model_path()).parent) if self.model_path() else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose a generator checkpoint", start, MODEL_FILTER)
        if path:
            self.set_model_path(path)

    def _browse_output(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder", self.output_edit.text())
        if path:
            self.output_edit.setText(path)
            self._on_output_changed()

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

    def _check_existing_result(self) -> None:
        """Offer to load a store found for the selected slide, instead of recomputing it."""
        store = self.store_for_selected()
        prov = read_store_provenance(store) if store is not None else None
        shown = store is not None and find_ihc_layer(self.viewer.layers, store) is not None
        running_here = (
            self.run is not None
            and self.run.running
            and store is not None
            and self.run.store == store.resolve()
        )
        if store is None or prov is None or shown or running_here:
            self._existing_store = None
            self.load_existing_button.setVisible(False)
            return
        if not self._store_holds_selected_slide(prov):
            self._existing_store = None
            self.load_existing_button.setVisible(False)
            key = f"other:{store.resolve()}"
            if key not in self._notified_stores:
                self._notified_stores.add(key)
                show_info(
                    f"{store} holds the result of another slide with the same name; Run would refuse to "
                    "write there: choose another output folder for this slide."
                )
            return
        self._existing_store = store
        state = "complete" if prov.get("complete") else "partial (Run resumes it)"
        self.load_existing_button.setText(f"Load existing result ({model_name(prov)}, {state})")
        self.load_existing_button.setVisible(True)
        key = str(store.resolve())
        if key not in self._notified_stores:
            self._notified_stores.add(key)
            show_info(
                f"A virtual IHC result exists for this slide ({store.name}): click 'Load existing result'."
            )

    def _store_holds_selected_slide(self, prov: dict[str, Any]) -> bool:
        """The store's recorded source is the selected layer's slide (same size and content hash)."""
        layer = self.selected_source_layer()
        run_key = prov.get("run_key")
        if layer is None or not isinstance(run_key, dict):
            return False
        try:
            identity = source_identity(slide_for_layer(layer))
        except (SourceLayerError, OSError) as exc:
            log.debug("no identity for %s: %s", layer.name, exc)
            return False
        return same_source(run_key.get("source"), identity)

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
            resolve_device(self.device())
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
