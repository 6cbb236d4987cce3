"""Stain overlays dock widget: DAB bins, membrane, nuclei, density and a HER2 estimate for one layer.

Parameters are collected here; the work is ``stain.analysis.analyze_slide`` in a napari ``thread_worker``
(progress bar with cancel). Keys D / C / M toggle the nuclei, density and membrane (DAB bins) layers.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import napari
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..stain.analysis import AnalysisResult, AnalysisSettings, iter_analysis, tile_count
from ..stain.calibration import StainCalibration
from ..stain.deconvolution import QUPATH_DAB, QUPATH_HEMATOXYLIN, hdab_matrix
from ..stain.her2 import Her2Rules
from ..stain.membrane import DabBins
from ._activity import pause_spinner, resume_spinner
from ._layer_source import combo_layer, fill_layer_combo, layer_mpp, slide_for_layer
from ._overlay_layers import DAB_LEGEND, HER2_LEGEND, result_layers, summary_rows
from ._stain_view import shapes_polygons, visible_region
from ._value_table import ValueTable

MODES = {"IHC (virtual or real): DAB, nuclei, HER2": "ihc", "H&E: nuclei only": "he"}
BACKGROUNDS = {"estimated from the slide": "auto", "255 (no estimate)": "default"}
VECTORS = {
    "QuPath H-DAB defaults": "default",
    "estimated from the slide": "estimate",
    "as typed below": "user",
}
KEYS = {"d": "nuclei", "c": "density", "m": "membrane"}


class StainOverlayWidget(QWidget):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.result: AnalysisResult | None = None
        self.summary: dict[str, Any] | None = None
        self.error: str | None = None
        self._spinner_paused = False
        self.overlay_layers: dict[str, Any] = {}
        self._worker: Any = None

        form = QFormLayout()
        self.source = QComboBox()
        self.mode = QComboBox()
        self.mode.addItems(list(MODES))
        self.scope = QComboBox()
        self.scope.addItems(["visible region", "whole image"])
        self.nuclei = QComboBox()
        self.nuclei.addItems(["auto", "cellpose", "classical"])
        self.model = QLineEdit("nuclei")
        self.model.setToolTip("Cellpose built-in model name or a local model file")
        self.gpu = QCheckBox("GPU")
        self.diameter = _spin(7.0, 1, 50, " µm")
        self.sigma = _spin(25.0, 1, 500, " µm")
        self.mpp = _spin(0.0, 0, 10, " µm/px", decimals=3)
        self.mpp.setToolTip("0 = from the layer (µm scale), else 0.5 assumed")
        self.cuts = [_spin(v, 0, 3, "", decimals=2) for v in (0.2, 0.4, 0.6)]
        # QuPath's habit: the white point and the stain vectors are the slide's own, shown and editable
        self.background = QComboBox()
        self.background.addItems(list(BACKGROUNDS))
        self.vectors = QComboBox()
        self.vectors.addItems(list(VECTORS))
        self.vector_fields = {
            name: QLineEdit(" ".join(f"{x:.3f}" for x in vec))
            for name, vec in (("hematoxylin", QUPATH_HEMATOXYLIN), ("dab", QUPATH_DAB))
        }
        for name, field_ in self.vector_fields.items():
            field_.setToolTip(f"{name} OD vector (R G B); edit and choose 'as typed below' to use it")
        self.region_shapes = QComboBox()
        form.addRow("Layer", self.source)
        form.addRow("Stain", self.mode)
        form.addRow("Area", self.scope)
        row = QHBoxLayout()
        row.addWidget(self.nuclei)
        row.addWidget(self.gpu)
        form.addRow("Nuclei", row)
        form.addRow("Cellpose model", self.model)
        form.addRow("Nucleus diameter", self.diameter)
        form.addRow("Density sigma", self.sigma)
        form.addRow("Pixel size", self.mpp)
        cuts = QHBoxLayout()
        for c in self.cuts:
            cuts.addWidget(c)
        form.addRow("DAB OD cuts*", cuts)
        form.addRow("White point", self.background)
        form.addRow("Stain vectors", self.vectors)
        form.addRow("  hematoxylin", self.vector_fields["hematoxylin"])
        form.addRow("  DAB", self.vector_fields["dab"])
        form.addRow("Restrict to shapes", self.region_shapes)
        self.run_button = QPushButton("Compute overlays")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        legend = " ".join(f"<span style='color:{c}'>■</span> {n}" for n, c in DAB_LEGEND)
        her2 = " ".join(f"<span style='color:{c}'>■</span> {n}" for n, c in HER2_LEGEND)
        self.legend = QLabel(
            f"DAB bins: {legend}<br>HER2 tiles: {her2}<br>*uncalibrated defaults; estimate, not a diagnosis. "
            "Keys: D nuclei, C density, M membrane"
        )
        self.legend.setWordWrap(True)
        self.table = ValueTable()
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        lay.addWidget(self.legend)
        lay.addWidget(self.table)

        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        for key, which in KEYS.items():
            try:  # never replace a binding the user (or another plugin) made
                self.viewer.bind_key(key, self._toggler(which))
            except ValueError:
                show_info(f"Stain overlays: key {key!r} is already bound, so it does not toggle {which} here")

    # --- layers ---------------------------------------------------------------------------------------
    def _refresh_layers(self, *_: Any) -> None:
        own = set(map(id, self.overlay_layers.values()))
        layers = list(self.viewer.layers)
        images = [x for x in layers if isinstance(x, napari.layers.Image) and x.rgb and id(x) not in own]
        fill_layer_combo(self.source, images)
        shapes = [x for x in layers if isinstance(x, napari.layers.Shapes)]
        fill_layer_combo(self.region_shapes, shapes, none_label="(all cells)")

    def _toggler(self, which: str) -> Any:
        def toggle(viewer: Any = None) -> None:
            layer = self.overlay_layers.get(which)
            if layer is not None and layer in self.viewer.layers:
                layer.visible = not layer.visible

        toggle.__name__ = f"toggle_{which}"
        return toggle

    def toggle(self, which: str) -> None:
        self._toggler(which)()

    # --- run ------------------------------------------------------------------------------------------
    def _bins(self) -> DabBins:
        weak, moderate, strong = (float(c.value()) for c in self.cuts)
        return DabBins(weak, moderate, strong)

    def settings(self, layer: Any) -> AnalysisSettings:
        bins = self._bins()
        mpp_xy = layer_mpp(layer)
        mpp = self.mpp.value() or (sum(mpp_xy) / 2 if mpp_xy else None)
        vectors = VECTORS[self.vectors.currentText()]
        stains = hdab_matrix()
        if vectors == "user":
            stains = hdab_matrix(self._typed_vector("hematoxylin"), self._typed_vector("dab"))
        return AnalysisSettings(
            stains=stains,
            background=BACKGROUNDS[self.background.currentText()],
            stain_vectors="estimate" if vectors == "estimate" else "default",
            mode=MODES[self.mode.currentText()],
            nuclei_method=self.nuclei.currentText(),
            cellpose_model=self.model.text().strip() or "nuclei",
            gpu=self.gpu.isChecked(),
            diameter_um=self.diameter.value(),
            density_sigma_um=self.sigma.value(),
            bins=bins,
            rules=Her2Rules(bins=bins),
            mpp=mpp,
            tile=1024,
        )

    def _typed_vector(self, name: str) -> tuple[float, float, float]:
        text = self.vector_fields[name].text().replace(",", " ").split()
        try:
            r, g, b = (float(v) for v in text)
        except ValueError:
            raise ValueError(
                f"the {name} vector needs three numbers (R G B OD), not {' '.join(text)!r}"
            ) from None
        return (r, g, b)

    def show_calibration(self, cal: StainCalibration) -> None:
        """Put the vectors that were used in the fields, so they can be read and edited."""
        for i, name in enumerate(cal.stains.names):
            if name in self.vector_fields:
                self.vector_fields[name].setText(" ".join(f"{x:.3f}" for x in cal.stains.matrix[i]))

    def start(self) -> None:
        self.error = None
        self.result = None
        layer = combo_layer(self.source)
        if layer is None or layer not in self.viewer.layers:
            self._fail("add an RGB image layer first")
            return
        try:
            slide = slide_for_layer(layer)
            settings = self.settings(layer)
            region = visible_region(self.viewer, layer, slide) if self.scope.currentIndex() == 0 else None
            shapes = combo_layer(self.region_shapes)
            polygons = shapes_polygons(shapes, layer) if shapes is not None else None
        except (ValueError, KeyError) as e:  # StainVectorError is a ValueError
            self._fail(str(e))
            return
        w, h = region[2:] if region else slide.dimensions
        big = w * h > 8192 * 8192
        settings.map_downsample = 4 if big else 1
        total = tile_count(slide, settings, region)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"computing {total} tile(s)…")
        meta = (polygons, layer.name, tuple(layer.scale[-2:]), tuple(layer.translate[-2:]))

        # napari's progress bar advances one step per yield; its cancel button (and ours) quit the worker
        # between tiles.
        @thread_worker(progress={"total": total, "desc": "stain overlays"})
        def work() -> Generator[tuple[int, int], None, Any]:
            result = yield from iter_analysis(slide, settings, region=region)
            return (result, *meta)

        worker = work()
        worker.returned.connect(self._on_done)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        # napari shows its progress bar (and starts the spinner) on ``started``; this slot runs after it.
        worker.started.connect(self._on_started)
        self._worker = worker
        worker.start()

    def _on_started(self) -> None:
        self._spinner_paused = pause_spinner(self.viewer)

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.quit()
        self.status.setText("cancelling after the current tile…")

    def _on_aborted(self) -> None:
        self.status.setText("cancelled")

    def _on_done(self, value: Any) -> None:
        result, polygons, name, scale, translate = value
        self._show(result, polygons, name, scale, translate)

    def _show(self, result: AnalysisResult, polygons: Any, name: str, scale: Any, translate: Any) -> None:
        for old in list(self.overlay_layers.values()):
            if old in self.viewer.layers:
                self.viewer.layers.remove(old)
        self.overlay_layers = {}
        for data, kwargs, kind in result_layers(result, name, scale, translate):
            src = self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401
            if src is not None:
                kwargs["units"] = tuple(src.units)[-2:]
            layer = getattr(self.viewer, f"add_{kind}")(data, **kwargs)
            if kind == "labels" and "nuclei" in kwargs["name"]:
                layer.contour = 1
                self.overlay_layers["nuclei"] = layer
            elif kind == "image":
                self.overlay_layers["density"] = layer
            elif "DAB" in kwargs["name"]:
                self.overlay_layers["membrane"] = layer
            else:
                self.overlay_layers["her2"] = layer
        self.summary = result.summary(polygons, Her2Rules(bins=self._bins()))
        rows = summary_rows(self.summary)
        self.table.show_rows(rows)
        self.result = result
        self.show_calibration(result.calibration)
        notes = "; ".join(result.calibration.notes)
        self.status.setText(
            f"done: {result.n_nuclei} nuclei ({result.nuclei_method})" + (f"; {notes}" if notes else "")
        )

    def _on_error(self, exc: BaseException) -> None:
        self._fail(f"{type(exc).__name__}: {exc}")

    def _on_finished(self) -> None:
        self._worker = None
        if self._spinner_paused:
            resume_spinner(self.viewer)
            self._spinner_paused = False
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _fail(self, message: str) -> None:
        self.error = message
        self.status.setText(f"error: {message}")


def _spin(value: float, lo: float, hi: float, suffix: str, decimals: int = 1) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setDecimals(decimals)
    s.setSingleStep(10**-decimals if decimals > 1 else 1)
    s.setValue(value)
    s.setSuffix(suffix)
    return s
