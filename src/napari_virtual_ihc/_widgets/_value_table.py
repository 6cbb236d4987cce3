"""The two-column (name, value) table the overlay and registration widgets show their figures in."""

from __future__ import annotations

from qtpy.QtWidgets import QTableWidget, QTableWidgetItem, QWidget


class ValueTable(QTableWidget):
    """Rows of (name, value) text; no row numbers, the value column fills the width."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(0, 2, parent)
        self.setHorizontalHeaderLabels(["", "value"])
        header, rows = self.horizontalHeader(), self.verticalHeader()
        assert header is not None and rows is not None
        header.setStretchLastSection(True)
        rows.setVisible(False)

    def show_rows(self, rows: list[tuple[str, str]]) -> None:
        self.setRowCount(len(rows))
        for i, (name, value) in enumerate(rows):
            self.setItem(i, 0, QTableWidgetItem(name))
            self.setItem(i, 1, QTableWidgetItem(value))
