"""Blinded reader study in napari: one case at a time, scored with buttons or keys, saved durably.

All state lives in ``study.ReaderSession`` (core); this widget only shows pixels as an anonymous layer
("Case k of n": no path, no metadata, no source), collects the score, confidence and comment, measures
active time (input events; idle pauses excluded) and locks the layer controls while a study is open.
A coordinator section (hidden while reading) runs the analysis as a ``WidgetTask``.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, cast

from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtGui import QKeyEvent
from qtpy.QtWidgets import QApplication, QDockWidget, QFileDialog, QLineEdit, QTextEdit, QWidget

from ...study import ActiveTimer, ReaderSession, StudyError
from ...study.coordinator import iter_answers_report
from ...study.reading import accepts_score, case_after_answer, saved_message
from ...study.scores import ULTRALOW
from ...study.timing import DEFAULT_IDLE_SECONDS
from .._napari_private import layer_chrome, main_menubar, main_window
from .._tasks import WidgetTask
from .form import ReaderForm
from .keys import (
    BACK_KEYS,
    CONFIDENCE_CTRL_DIGITS,
    CONFIDENCE_FKEYS,
    FORWARD_KEYS,
    SAVE_KEYS,
    SCORE_KEYS,
)

WINDOW_TITLE = "Reader study"
_ACTIVITY_EVENTS = {
    QEvent.Type.MouseMove,
    QEvent.Type.MouseButtonPress,
    QEvent.Type.MouseButtonRelease,
    QEvent.Type.Wheel,
    QEvent.Type.KeyPress,
}


class ReaderStudyWidget(ReaderForm):
    """Reader mode: enter an ID, open a bundle, score every case."""

    def __init__(self, napari_viewer: Any, idle_seconds: float = DEFAULT_IDLE_SECONDS) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: ReaderSession | None = None
        self.timer = ActiveTimer(idle_seconds)
        self._score: str | None = None
        self._confidence: int | None = None
        self._case_layers: list[Any] = []
        self._locked: list[QWidget] = []
        self._hidden_menubar: QWidget | None = None
        self.task: WidgetTask | None = None
        self.last_report: Path | None = None
        self.last_error: BaseException | None = None
        self._connect()
        app = QApplication.instance()
        if app is not None:
            app.installEventFilter(self)

    def _connect(self) -> None:
        self.open_button.clicked.connect(self._choose_bundle)
        for score, button in self.score_buttons.items():
            button.clicked.connect(lambda _=False, sc=score: self.set_score(sc))
        for k, button in self.conf_buttons.items():
            button.clicked.connect(lambda _=False, kk=k: self.set_confidence(kk))
        self.back_button.clicked.connect(self.go_back)
        self.save_button.clicked.connect(self._save_clicked)
        self.forward_button.clicked.connect(self.go_forward)
        self.close_button.clicked.connect(self.close_study)
        self.analyze_button.clicked.connect(self._analyze_clicked)

    def _choose_bundle(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open study folder")
        if path:
            self.open_bundle(path)

    # --- opening ---    # --- opening ------------------------------------------------------------------------------------
    def open_bundle(
        self, path: str | Path, reader_id: str | None = None, answers_dir: str | Path | None = None
    ) -> bool:
        """Open a bundle for a reader; returns False (with the reason shown) when it cannot be opened."""
        if reader_id is not None:
            self.reader_edit.setText(reader_id)
        if answers_dir is None and self.answers_dir_edit.text().strip():
            answers_dir = self.answers_dir_edit.text().strip()
        try:
            session = ReaderSession(path, self.reader_edit.text(), answers_dir=answers_dir)
        except StudyError as exc:
            self.status_label.setText(str(exc))
            return False
        self.session = session
        for layer in list(self.viewer.layers):  # nothing from before may sit beside the blinded cases
            self.viewer.layers.remove(layer)
        self.viewer.title = WINDOW_TITLE
        self._lock_viewer(True)
        self._set_reading(True)
        self.score_buttons[ULTRALOW].setVisible(session.bundle.ultralow)
        self.progress.setMaximum(session.n)
        self.status_label.setText(
            f"Session {session.session_number} of {session.n_sessions}" if session.n_sessions > 1 else ""
        )
        self._show_case()
        return True

    def _lock_viewer(self, lock: bool) -> None:
        """Disable layer list, layer controls and layer buttons (no renaming, editing or adding)."""
        if lock:
            self._locked = []
            for w in layer_chrome(self.viewer):
                if isinstance(w, QWidget):
                    w.setEnabled(False)
                    self._locked.append(w)
            # the menus (plugin names, File > Open...) are not for readers: hide the menu bar meanwhile
            menubar = self._menubar()
            if menubar is not None and menubar.isVisible():
                menubar.setVisible(False)
                self._hidden_menubar = menubar
            dock = self.parent()
            while dock is not None and not isinstance(dock, QDockWidget):
                dock = dock.parent()
            if dock is not None:
                dock.setWindowTitle(WINDOW_TITLE)
        else:
            for w in self._locked:
                w.setEnabled(True)
            self._locked = []
            if self._hidden_menubar is not None:
                self._hidden_menubar.setVisible(True)
                self._hidden_menubar = None

    def _menubar(self) -> QWidget | None:
        return main_menubar(self.viewer)

    # --- showing a case -----------------------------------------------------------------------------
    def _show_case(self) -> None:
        """Show the current case (lazily read pyramid levels for whole slides) or, when its image cannot
        be read, say so and keep the case unscorable: a score is only ever stored for an image on screen."""
        assert self.session is not None
        s = self.session
        for layer in self._case_layers:
            with contextlib.suppress(ValueError, KeyError):
                self.viewer.layers.remove(layer)
        self._case_layers = []
        label = s.label()
        self.position_label.setText(label)
        self.progress.setValue(s.answered_count())
        self.back_button.setEnabled(s.position > 0)
        self.forward_button.setEnabled(s.position + 1 < s.n)
        try:
            context = s.context_levels()
            levels = s.levels()  # marks the case as on screen
        except StudyError as exc:
            s.hide()
            self._score = self._confidence = None
            self.comment_edit.setText("")
            self._sync_buttons()
            self.status_label.setText(
                f"{label} cannot be shown: {exc}. It cannot be scored; go on with Next and tell the study "
                "coordinator. Your other answers are safe."
            )
            self.timer.start()
            return
        if context is not None:
            self._case_layers.append(self._add_anonymous(context, f"{label} · H&E", (0, 0)))
            offset = (0.0, float(context[0].shape[1]) * 1.05)
        else:
            offset = (0.0, 0.0)
        self._case_layers.append(self._add_anonymous(levels, label, offset))
        self.viewer.reset_view()
        answer = s.answer_at(s.position)
        self._score = answer.score if answer else None
        self._confidence = answer.confidence if answer else None
        self.comment_edit.setText(answer.comment if answer else "")
        self._sync_buttons()
        self.timer.start()

    def _add_anonymous(self, levels: list[Any], name: str, translate: tuple[float, float]) -> Any:
        """An image layer with nothing but a neutral name: no path, source or metadata; multiscale (lazy
        pyramid levels, pan and zoom) for whole slides."""
        data = levels if len(levels) > 1 else levels[0]
        layer = self.viewer.add_image(
            data, name=name, rgb=True, metadata={}, translate=translate, multiscale=len(levels) > 1
        )
        layer.metadata = {}
        layer.editable = False
        return layer

    def _sync_buttons(self) -> None:
        for group, buttons, value in (
            (self.score_group, self.score_buttons, self._score),
            (self.conf_group, self.conf_buttons, self._confidence),
        ):
            group.setExclusive(False)
            for key, b in buttons.items():
                b.setChecked(key == value)
            group.setExclusive(True)
        on_screen = self.session is not None and self.session.shown_image is not None
        self.save_button.setEnabled(on_screen and self._score is not None and self._confidence is not None)
        for b in [*self.score_buttons.values(), *self.conf_buttons.values()]:
            b.setEnabled(on_screen)

    # --- answering ----------------------------------------------------------------------------------
    def set_score(self, score: str) -> None:
        if self.session is None or self.session.shown_image is None:
            return
        if not accepts_score(score, self.session.bundle.ultralow):
            return
        self._score = score
        self._sync_buttons()

    def set_confidence(self, confidence: int) -> None:
        if self.session is None or self.session.shown_image is None:
            return
        self._confidence = int(confidence)
        self._sync_buttons()

    def save_and_next(self) -> bool:
        """Commit the answer (durably) and move to the next case; False when score/confidence missing."""
        s = self.session
        if s is None:
            return False
        if s.shown_image is None:
            self.status_label.setText(f"{s.label()} is not on screen; nothing was stored.")
            return False
        if self._score is None or self._confidence is None:
            self.status_label.setText("Choose a score and a confidence first.")
            return False
        try:
            s.add_active_time(self.timer.take())
            s.answer(self._score, self._confidence, self.comment_edit.text())
        except StudyError as exc:  # e.g. disk full: the answer stays in the form, to Save again
            self.status_label.setText(f"Not saved: {s.label()} — {exc}. Your answer is still in the form.")
            return False
        self.status_label.setText(saved_message(s))
        try:
            nxt = case_after_answer(s)
            if nxt is not None:
                s.go_to(nxt)
        except StudyError as exc:  # the answer is stored; only the log of opening the next case is not
            self.status_label.setText(f"{self.status_label.text()} The next case was not logged: {exc}.")
        self._show_case()
        return True

    def _save_clicked(self) -> None:
        """Button slot: a Qt slot returns nothing; the outcome is shown in the status line."""
        self.save_and_next()

    def go_back(self) -> None:
        self._move(-1)

    def go_forward(self) -> None:
        self._move(+1)

    def _move(self, step: int) -> None:
        s = self.session
        if s is None or not 0 <= s.position + step < s.n:
            return
        try:
            s.add_active_time(self.timer.take())
            s.go_to(s.position + step)
        except StudyError as exc:
            self.status_label.setText(f"Cannot move: {exc}.")
            return
        self._show_case()

    # --- keys and activity --------------------------------------------------------------------------
    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:
        if event is None or self.session is None:
            return False
        etype = event.type()
        if etype not in _ACTIVITY_EVENTS:
            return False
        if not self._in_viewer_window(obj):
            return False
        self.timer.touch()
        typing = isinstance(obj, (QLineEdit, QTextEdit)) or isinstance(
            QApplication.focusWidget(), (QLineEdit, QTextEdit)
        )
        if etype == QEvent.Type.KeyPress and not typing:
            key_event = cast(QKeyEvent, event)
            return self._handle_key(key_event.key(), key_event.modifiers())
        return False

    def _in_viewer_window(self, obj: QObject | None) -> bool:
        window = main_window(self.viewer)
        if not isinstance(obj, QWidget):
            return False
        return window is None or obj.window() is window or obj.window() is self.window()

    def _handle_key(self, key: int, modifiers: Any) -> bool:
        if modifiers & Qt.KeyboardModifier.ControlModifier and key in CONFIDENCE_CTRL_DIGITS:
            self.set_confidence(CONFIDENCE_CTRL_DIGITS[key])
        elif key in CONFIDENCE_FKEYS:
            self.set_confidence(CONFIDENCE_FKEYS[key])
        elif key in SCORE_KEYS and not modifiers & (
            Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.AltModifier
        ):
            self.set_score(SCORE_KEYS[key])
        elif key in SAVE_KEYS:
            self.save_and_next()
        elif key in BACK_KEYS:
            self.go_back()
        elif key in FORWARD_KEYS:
            self.go_forward()
        else:
            return False
        return True

    # --- coordinator ----------------------------------------------------------------------------------
    def _analyze_clicked(self) -> None:
        self.run_analysis(self.key_edit.text(), self.answers_edit.text(), self.report_edit.text())

    def run_analysis(
        self, key: str | Path, answers: str | Path, out: str | Path, n_boot: int = 2000
    ) -> WidgetTask | None:
        """Analyse as a ``WidgetTask`` (progress by stage, cancel before the report is written); the report
        path appears in the text box when done."""
        if not str(answers) or not str(out):
            self.report_output.setPlainText("Choose the answers folder and a report folder.")
            return None
        self.analyze_button.setEnabled(False)
        self.report_output.setPlainText("Analysing…")
        cancel = threading.Event()
        self.task = WidgetTask(
            self.viewer,
            iter_answers_report,
            key,
            answers,
            out,
            n_boot,
            cancel,
            desc="Reader study: analysing answers",
            total=4,
            cancel_event=cancel,
            on_end=self._analysis_ended,
        )
        return self.task.start()

    def _analysis_ended(self, task: WidgetTask) -> None:
        if task is self.task:
            self.task = None
        self.analyze_button.setEnabled(True)
        if task.state == "done" and task.result is not None:
            self.last_report = task.result
            self.report_output.setPlainText(f"Report written: {task.result}")
        elif task.state == "failed":
            self.last_error = task.error
            self.report_output.setPlainText(f"Analysis failed: {task.error}")
        else:
            self.report_output.setPlainText("Analysis cancelled: no report written.")

    # --- closing ----------------------------------------------------------------------------------------
    def close_study(self) -> None:
        """Log the last active time, close the store and unlock the viewer."""
        if self.session is not None:
            try:
                self.session.add_active_time(self.timer.take())
            except StudyError as exc:  # only the last seconds of reading time are lost; answers are kept
                self.status_label.setText(f"Closed; the last reading time was not stored: {exc}.")
            self.session.close()
            self.session = None
        for layer in self._case_layers:  # blinded images do not outlive the study
            with contextlib.suppress(ValueError, KeyError):
                self.viewer.layers.remove(layer)
        self._case_layers = []
        self._lock_viewer(False)
        self._set_reading(False)

    def closeEvent(self, event: Any) -> None:
        self.close_study()
        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)
        super().closeEvent(event)
