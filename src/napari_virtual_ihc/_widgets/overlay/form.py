"""The overlay widget's form: layer, stain, marker, area, nuclei, pixel size, DAB cut-offs, white point,
stain vectors, tumour region, calibration; the buttons, status line, legend and figures table.

Plain Qt, no behaviour (``widget.py`` connects it and turns it into ``AnalysisSettings``).
"""

from __future__ import annotations

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

from ...stain.calibration import StainCalibration
from ...stain.deconvolution import QUPATH_DAB, QUPATH_HEMATOXYLIN
from ...stain.markers import MARKER_CHOICES
from ...stain.tumour_map import MIL_THRESHOLD
from .._value_table import ValueTable
from .layers import DAB_LEGEND, HER2_LEGEND

MODES = {"IHC (virtual or real): DAB, nuclei, marker": "ihc", "H&E: nuclei only": "he"}
MARKER_LABELS = {
    "auto": "auto (from where the DAB sits)",
    "her2": "HER2 (membrane)",
    "ki67": "Ki-67 (nuclear)",
    "er": "ER (nuclear)",
    "pr": "PR (nuclear)",
}
NO_REGION_LABEL = "(all cells: no tumour region)"
MIL_REGION = "mil"  # the Tumour region combo's item data for the MIL tumour map (layers are the others)
MIL_LABEL = "MIL tumour map…"
MIL_HE_OWN_SOURCE = "(a virtual IHC: its own source slide)"
BACKGROUNDS = {"estimated from the slide": "auto", "255 (no estimate)": "default"}
VECTORS = {
    "QuPath H-DAB defaults": "default",
    "estimated from the slide": "estimate",
    "as typed below": "user",
}
KEYS = {"d": "nuclei", "c": "density", "m": "membrane"}


class OverlayForm(QWidget):
    """The controls; ``_typed_vector`` / ``show_calibration`` read and fill the stain-vector fields."""

    def __init__(self) -> None:
        super().__init__()
        form = QFormLayout()
        self.source = QComboBox()
        self.mode = QComboBox()
        self.mode.addItems(list(MODES))
        self.scope = QComboBox()
        self.scope.addItems(["visible region", "whole image"])
        self.nuclei = QComboBox()
        self.nuclei.addItems(["auto", "cellpose", "blobs", "classical"])
        self.model = QLineEdit("nuclei")
        self.model.setToolTip("Cellpose built-in model name or a local model file")
        self.gpu = QCheckBox("GPU")
        self.diameter = _spin(7.0, 1, 50, " µm")
        self.large_nuclei = QCheckBox("larger where nuclei are large")
        self.large_nuclei.setChecked(True)
        self.large_nuclei.setToolTip(
            "H&E: a field of large nuclei is read at 12/7 of the diameter (the report says when)"
        )
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
        self.region_shapes.setToolTip(
            "a Shapes or Labels layer outlining the tumour: estimates count its cells"
        )
        self._mil_controls()
        self.marker = QComboBox()
        for m in MARKER_CHOICES:
            self.marker.addItem(MARKER_LABELS[m], m)
        self.calibration_label = QLabel("none (cut-offs and vectors as set here)")
        self.calibration_label.setWordWrap(True)
        self.load_calibration_button = QPushButton("Load…")
        self.save_calibration_button = QPushButton("Save…")
        self.save_calibration_button.setEnabled(False)
        form.addRow("Layer", self.source)
        form.addRow("Stain", self.mode)
        form.addRow("Marker", self.marker)
        form.addRow("Area", self.scope)
        row = QHBoxLayout()
        row.addWidget(self.nuclei)
        row.addWidget(self.gpu)
        form.addRow("Nuclei", row)
        form.addRow("Cellpose model", self.model)
        size = QHBoxLayout()
        size.addWidget(self.diameter)
        size.addWidget(self.large_nuclei)
        form.addRow("Nucleus diameter", size)
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
        form.addRow("Tumour region", self.region_shapes)
        form.addRow(self.mil_box)
        cal_row = QHBoxLayout()
        cal_row.addWidget(self.calibration_label, 1)
        cal_row.addWidget(self.load_calibration_button)
        cal_row.addWidget(self.save_calibration_button)
        form.addRow("Calibration", cal_row)
        self.run_button = QPushButton("Analyze")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.export_cells_button = QPushButton("Export cells (GeoJSON)…")
        self.export_cells_button.setToolTip(
            "the last run's cells as QuPath detections with the marker's call"
        )
        self.export_cells_button.setEnabled(False)
        self.import_region_button = QPushButton("Import region (GeoJSON)…")
        self.import_region_button.setToolTip(
            "a QuPath annotation GeoJSON (level-0 pixels of this image) as a Shapes layer: the tumour region"
        )
        qupath = QHBoxLayout()
        qupath.addWidget(self.export_cells_button)
        qupath.addWidget(self.import_region_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        legend = " ".join(f"<span style='color:{c}'>■</span> {n}" for n, c in DAB_LEGEND)
        her2 = " ".join(f"<span style='color:{c}'>■</span> {n}" for n, c in HER2_LEGEND)
        self.legend = QLabel(
            f"DAB bins: {legend}<br>Marker tiles: {her2} (HER2; Ki-67/ER/PR: < 1, 1-10, 10-30, > 30 % positive)<br>*uncalibrated defaults unless a calibration is "
            "loaded; estimate, not a diagnosis. "
            "Keys: D nuclei, C density, M membrane"
        )
        self.legend.setWordWrap(True)
        self.table = ValueTable()
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addLayout(qupath)
        lay.addWidget(self.status)
        lay.addWidget(self.legend)
        lay.addWidget(self.table)

    def _mil_controls(self) -> None:
        """The MIL tumour map's inputs, shown while "MIL tumour map…" is the Tumour region."""
        self.mil_box = QWidget()
        self.mil_classifier = QLineEdit()
        self.mil_classifier.setPlaceholderText("tumour classifier (.safetensors from virtual-ihc-train mil)")
        self.mil_classifier_button = QPushButton("…")
        self.mil_threshold = _spin(MIL_THRESHOLD, 0, 1, "", decimals=2)
        self.mil_threshold.setToolTip("P(tumour) from which a classifier tile is tumour")
        self.mil_he = QComboBox()
        self.mil_he.setToolTip(
            "the H&E a real IHC was cut next to (a layer opened from a file, or a file); "
            "a virtual IHC finds its source slide in its store"
        )
        self.mil_he_button = QPushButton("File…")
        self.mil_transform = QLineEdit()
        self.mil_transform.setPlaceholderText("default: the Register action's transform of this pair")
        self.mil_transform.setToolTip(
            "the registration transform (H&E fixed, IHC moving); empty: the one next to the IHC if there, "
            "else the H&E and the IHC are taken as the same pixels"
        )
        self.mil_transform_button = QPushButton("…")
        lay = QFormLayout(self.mil_box)
        lay.setContentsMargins(0, 0, 0, 0)
        for label, field_, button in (
            ("  MIL classifier", self.mil_classifier, self.mil_classifier_button),
            ("  H&E", self.mil_he, self.mil_he_button),
            ("  transform", self.mil_transform, self.mil_transform_button),
        ):
            row = QHBoxLayout()
            row.addWidget(field_, 1)
            row.addWidget(button)
            lay.addRow(label, row)
            if label == "  MIL classifier":
                lay.addRow("  threshold", self.mil_threshold)
        self.mil_box.setVisible(False)

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


def _spin(value: float, lo: float, hi: float, suffix: str, decimals: int = 1) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setDecimals(decimals)
    s.setSingleStep(10**-decimals if decimals > 1 else 1)
    s.setValue(value)
    s.setSuffix(suffix)
    return s
