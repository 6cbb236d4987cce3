"""Placeholder until its issue lands."""

from __future__ import annotations

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget


class VirtualIHCWidget(QWidget):
    def __init__(self, napari_viewer: object) -> None:
        super().__init__()
        self.viewer = napari_viewer
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("not available yet"))
