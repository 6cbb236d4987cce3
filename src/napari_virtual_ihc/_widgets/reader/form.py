"""The reader-study widget's form: reader ID and study, the case panel (score and confidence buttons,
comment, navigation) and the coordinator's section. Plain Qt, no behaviour (``widget.py`` connects it)."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QButtonGroup,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from ...study.scores import DISPLAY, NOT_ASSESSABLE, ULTRALOW
from .keys import HELP, SCORE_KEY_NAMES


class ReaderForm(QWidget):
    """The controls; ``_set_reading`` switches between the reader's case panel and the start/coordinator
    sections."""

    def __init__(self) -> None:
        super().__init__()
        self._build_ui()
        self._set_reading(False)

    def _build_ui(self) -> None:
        layout = QVBoxLayout(self)
        start = QGroupBox("Reader")
        s = QHBoxLayout(start)
        self.reader_edit = QLineEdit()
        self.reader_edit.setPlaceholderText("your reader ID")
        self.open_button = QPushButton("Open study…")
        s.addWidget(self.reader_edit)
        s.addWidget(self.open_button)
        layout.addWidget(start)
        # where answers go (default: <study>/answers); needed when the study folder is read-only
        self.answers_row = QWidget()
        a = QHBoxLayout(self.answers_row)
        a.setContentsMargins(0, 0, 0, 0)
        self.answers_dir_edit = QLineEdit()
        self.answers_dir_edit.setPlaceholderText("answers folder (default: inside the study folder)")
        answers_browse = QPushButton("…")
        answers_browse.clicked.connect(lambda _=False: self._browse(self.answers_dir_edit, "dir"))
        a.addWidget(self.answers_dir_edit)
        a.addWidget(answers_browse)
        layout.addWidget(self.answers_row)

        self.case_box = QGroupBox("Case")
        c = QVBoxLayout(self.case_box)
        self.position_label = QLabel("")
        self.position_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = self.position_label.font()
        font.setPointSize(font.pointSize() + 3)
        font.setBold(True)
        self.position_label.setFont(font)
        c.addWidget(self.position_label)
        self.progress = QProgressBar()
        self.progress.setFormat("%v of %m answered")
        c.addWidget(self.progress)

        c.addWidget(QLabel("HER2 score"))
        self.score_group = QButtonGroup(self)
        self.score_buttons: dict[str, QPushButton] = {}
        grid = QGridLayout()
        # ordinal scores on the first row; "not assessable" then (optional) ultralow on the second,
        # so hiding ultralow leaves no hole
        for i, score in enumerate(("0", "1+", "2+", "3+", NOT_ASSESSABLE, ULTRALOW)):
            b = QPushButton(DISPLAY[score])
            b.setCheckable(True)
            b.setToolTip(f"key {SCORE_KEY_NAMES[score]}")
            self.score_group.addButton(b)
            self.score_buttons[score] = b
            if i < 4:
                grid.addWidget(b, 0, i)
            else:
                grid.addWidget(b, 1, 2 * (i - 4), 1, 2)
        c.addLayout(grid)

        c.addWidget(QLabel("Confidence (1 = guess, 5 = certain)"))
        self.conf_group = QButtonGroup(self)
        self.conf_buttons: dict[int, QPushButton] = {}
        row = QHBoxLayout()
        for k in range(1, 6):
            b = QPushButton(str(k))
            b.setCheckable(True)
            b.setToolTip(f"F{k} or Ctrl+{k}")
            self.conf_group.addButton(b)
            self.conf_buttons[k] = b
            row.addWidget(b)
        c.addLayout(row)

        self.comment_edit = QLineEdit()
        self.comment_edit.setPlaceholderText("comment (optional)")
        c.addWidget(self.comment_edit)

        nav = QHBoxLayout()
        self.back_button = QPushButton("◀ Previous")
        self.save_button = QPushButton("Save and next")
        self.forward_button = QPushButton("Next ▶")
        for b in (self.back_button, self.save_button, self.forward_button):
            nav.addWidget(b)
        c.addLayout(nav)
        self.close_button = QPushButton("Close study (answers are saved)")
        c.addWidget(self.close_button)
        self.help_label = QLabel(HELP)
        self.help_label.setWordWrap(True)
        c.addWidget(self.help_label)
        layout.addWidget(self.case_box)

        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)

        self.coordinator_box = QGroupBox("Coordinator: analyse answers")
        coordinator_grid = QGridLayout(self.coordinator_box)
        self.key_edit = QLineEdit()
        self.key_edit.setPlaceholderText("study key (.json)")
        self.answers_edit = QLineEdit()
        self.answers_edit.setPlaceholderText("answers folder")
        self.report_edit = QLineEdit()
        self.report_edit.setPlaceholderText("report folder")
        for r, (edit, pick) in enumerate(
            ((self.key_edit, "file"), (self.answers_edit, "dir"), (self.report_edit, "dir"))
        ):
            browse = QPushButton("…")
            browse.clicked.connect(lambda _=False, e=edit, p=pick: self._browse(e, p))
            coordinator_grid.addWidget(edit, r, 0)
            coordinator_grid.addWidget(browse, r, 1)
        self.analyze_button = QPushButton("Analyse and write report")
        coordinator_grid.addWidget(self.analyze_button, 3, 0, 1, 2)
        self.report_output = QTextEdit()
        self.report_output.setReadOnly(True)
        self.report_output.setMaximumHeight(120)
        coordinator_grid.addWidget(self.report_output, 4, 0, 1, 2)
        layout.addWidget(self.coordinator_box)
        layout.addStretch(1)

    def _set_reading(self, reading: bool) -> None:
        self.case_box.setVisible(reading)
        self.coordinator_box.setVisible(not reading)
        self.reader_edit.setEnabled(not reading)
        self.open_button.setEnabled(not reading)
        self.answers_row.setVisible(not reading)

    def _browse(self, edit: QLineEdit, kind: str) -> None:
        if kind == "file":
            path, _ = QFileDialog.getOpenFileName(self, "Study key", "", "JSON (*.json)")
        else:
            path = QFileDialog.getExistingDirectory(self, "Folder")
        if path:
            edit.setText(path)
