"""The registration widget's form: layer choices, options, buttons, status line and figures table.

Plain Qt, no behaviour (``widget.py`` connects it); the options become ``RegistrationSettings`` there.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...registration.register import RegistrationSettings
from .._value_table import ValueTable

VIEWS = ("overlay", "side by side")


class RegistrationForm(QWidget):
    """H&E (fixed), real IHC (moving) and virtual IHC layers; view; options; run/cancel/check/compare."""

    def __init__(self) -> None:
        super().__init__()
        form = QFormLayout()
        self.fixed = QComboBox()
        self.moving = QComboBox()
        self.virtual = QComboBox()
        self.view = QComboBox()
        self.view.addItems(list(VIEWS))
        self.nonrigid = QCheckBox("non-rigid (optical flow) refinement")
        self.nonrigid.setChecked(RegistrationSettings().nonrigid)  # on, as in the core and the CLI
        self.flip = QCheckBox("try the mirror image")
        self.flip.setChecked(True)
        self.reuse = QCheckBox("reuse a saved transform of these files")
        self.reuse.setChecked(True)
        self.accept_poor = QCheckBox("show a poor (not converged) alignment anyway")
        form.addRow("H&E (fixed)", self.fixed)
        form.addRow("Real IHC (moving)", self.moving)
        form.addRow("Virtual IHC", self.virtual)
        form.addRow("View", self.view)
        for box in (self.nonrigid, self.flip, self.reuse, self.accept_poor):
            form.addRow(box)
        self.run_button = QPushButton("Register real IHC to H&E")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.landmark_button = QPushButton("Landmark check")
        self.compare_button = QPushButton("Compare virtual vs real")
        row = QHBoxLayout()
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        row2 = QHBoxLayout()
        row2.addWidget(self.landmark_button)
        row2.addWidget(self.compare_button)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.table = ValueTable()
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(row)
        lay.addLayout(row2)
        lay.addWidget(self.status)
        lay.addWidget(self.table)

    def side_by_side(self) -> bool:
        return self.view.currentText() == "side by side"

    def set_busy(self, busy: bool, text: str = "") -> None:
        """While a task runs only Cancel is offered."""
        self.run_button.setEnabled(not busy)
        self.compare_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        if text:
            self.status.setText(text)
