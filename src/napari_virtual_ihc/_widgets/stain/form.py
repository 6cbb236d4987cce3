"""The stain widget's form: its Qt controls, the values they hold, and the settings they are saved to.

No run, no layer logic: ``VirtualIHCWidget`` (``widget.py``) adds those. Plain Qt, built by hand (the
plugin has no magicgui dependency: the form needs an editable recent-models combo, a foldable advanced
panel and a device label that follows the choice, which magicgui would only wrap).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
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

from ...inference.api import EngineSettings
from ...inference.devices import DeviceError, available_devices, describe_device, device_choice
from .settings import StainWidgetSettings

MODEL_FILTER = "Generator checkpoints (*.safetensors *.pth *.pt *.ckpt);;All files (*)"


def demo_model_path() -> str | None:
    """The embedded demo model (None when a broken install lacks it: the widget still works)."""
    from ... import models

    try:
        return str(models.demo_model_path())
    except models.CheckpointError:
        return None


class StainForm(QWidget):
    """The controls, filled from and saved to ``StainWidgetSettings``; ``_on_output_changed`` is the hook
    the widget extends (a new output folder may hold a result)."""

    def __init__(self) -> None:
        super().__init__()
        self.settings = StainWidgetSettings.load()
        self._build_ui()
        self._load_settings_into_ui()

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
            "Every BatchNorm layer of the model, also those inside an instance-norm model (AMMFI's "
            "attention): running statistics (eval mode) or statistics of this slide, frozen (what the "
            "papers' test.py does without --eval); a model without BatchNorm layers ignores it"
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
        if not s.model_path and demo_model_path():  # a first start: the demo model is the default
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
        demo = demo_model_path()
        if demo:
            from ...models import DEMO_MODEL_LABEL

            self.model_combo.addItem(f"{DEMO_MODEL_LABEL} (embedded): {Path(demo).name}", demo)
        for path in self.settings.recent_models:
            self.model_combo.addItem(path, path)
        self.model_combo.setCurrentText(text)
        self.model_combo.blockSignals(False)

    def model_path(self) -> str:
        index = self.model_combo.currentIndex()
        text = self.model_combo.currentText().strip()
        if index >= 0 and self.model_combo.itemText(index) == text:
            data = self.model_combo.itemData(index)
            if data:
                return str(data)
        return text

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

    def _toggle_advanced(self, open_: bool) -> None:
        self.advanced_panel.setVisible(open_)
        self.advanced_button.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)

    def _update_device_label(self, *_: Any) -> None:
        try:
            text = f"running on {describe_device(device_choice(self.device()))}"
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

    def _on_output_changed(self) -> None:
        self._on_settings_changed()
