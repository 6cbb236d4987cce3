"""The reader widget in a real napari viewer (Xvfb), driven by key presses like a pathologist would."""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractButton, QGroupBox, QLabel, QLineEdit, QMenu, QTextEdit, QWidget

from napari_virtual_ihc._widgets.reader import ReaderStudyWidget
from napari_virtual_ihc.study import AnswerStore, BuildOptions, build_study, load_key
from napari_virtual_ihc.study.errors import StudyError

pytestmark = pytest.mark.gui

_spec = importlib.util.spec_from_file_location(
    "_study_sources", Path(__file__).parents[1] / "study" / "_sources.py"
)
assert _spec is not None and _spec.loader is not None
_sources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sources)

N_PAIRS = 4
# letters may not touch the word ("unreal" is fine), but digits, "_" and "-" may ("case00_real_x" is caught)
MODALITY = re.compile(r"(?<![a-z])(real|virtual|generated|synthetic|fake)(?![a-z])", re.IGNORECASE)


@pytest.fixture
def small_study(data_dir: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    table = _sources.make_sources(data_dir, tmp_path / "sources", n_pairs=N_PAIRS)
    bundle, key = build_study(table, tmp_path / "bundle", BuildOptions(readers=("alice",), seed=5, min_gap=3))
    return bundle, key, table


def ui_strings(viewer) -> list[str]:
    """Every string the reader can see: visible widgets' texts, titles, tooltips; layers; window title."""
    window = viewer.window._qt_window
    out = [window.windowTitle(), viewer.title]
    if window.menuBar().isVisible():  # menus are one click away: count all their entries
        for menu in window.menuBar().findChildren(QMenu):
            out += [menu.title()] + [a.text() for a in menu.actions()]
    for w in [window, *window.findChildren(QWidget)]:
        if not w.isVisible():
            continue
        out += [w.windowTitle(), w.toolTip(), w.statusTip(), w.accessibleName()]
        if isinstance(w, (QAbstractButton, QLabel, QLineEdit)):
            out.append(w.text())
        if isinstance(w, QLineEdit):
            out.append(w.placeholderText())
        if isinstance(w, QTextEdit):
            out.append(w.toPlainText())
        if isinstance(w, QGroupBox):
            out.append(w.title())
    for layer in viewer.layers:
        out += [layer.name, repr(layer.metadata), repr(layer.source), str(layer.source.path)]
    out.append(str(viewer.status))
    return [s for s in out if s]


def test_reader_scores_by_keys_without_any_leak(make_napari_viewer, qtbot, small_study) -> None:
    bundle, key_path, _table = small_study
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), name="case00_real_Rat-Kidney_PanCytokeratin", rgb=True)
    widget = ReaderStudyWidget(viewer, idle_seconds=0.2)
    viewer.window.add_dock_widget(widget, name="Reader study")
    assert widget.open_bundle(bundle, reader_id="alice")
    canvas = viewer.window._qt_viewer.canvas.native
    n = 2 * N_PAIRS
    assert [layer.name for layer in viewer.layers] == [f"Case 1 of {n}"]  # the old layer is gone
    assert widget.position_label.text() == f"Case 1 of {n}"

    # score every case with keys only: score key, confidence key, Enter
    keys = [Qt.Key_0, Qt.Key_1, Qt.Key_2, Qt.Key_3, Qt.Key_N]
    expected = {}
    for k in range(n):
        assert viewer.layers[0].name == f"Case {k + 1} of {n}"
        assert viewer.layers[0].metadata == {} and viewer.layers[0].source.path is None
        assert not viewer.layers[0].editable
        image = widget.session.current.image
        canvas.setFocus()
        qtbot.keyClick(canvas, keys[k % 5])
        qtbot.keyClick(canvas, Qt.Key(Qt.Key_F1 + (k % 5)))  # PyQt6: enum + int is an int
        if k == 1:
            time.sleep(1.2)  # idle much longer than the 0.2 s threshold
        qtbot.keyClick(canvas, Qt.Key_Return)
        expected[image] = (["0", "1+", "2+", "3+", "not_assessable"][k % 5], 1 + k % 5)
        assert widget.progress.value() == k + 1
    store = widget.session.store
    got = {i: (a.score, a.confidence) for i, a in store.current_answers().items()}
    assert got == expected
    assert widget.session.is_complete()

    # go back two cases with the arrow key and change the answer with Ctrl+digit confidence
    canvas.setFocus()
    pos = widget.session.position
    qtbot.keyClick(canvas, Qt.Key_Left)
    qtbot.keyClick(canvas, Qt.Key_Left)
    assert widget.session.position == pos - 2
    changed = widget.session.current.image
    assert widget.score_buttons[expected[changed][0]].isChecked()  # previous answer shown
    qtbot.keyClick(canvas, Qt.Key_3)
    qtbot.keyClick(canvas, Qt.Key_5, Qt.ControlModifier)
    qtbot.keyClick(canvas, Qt.Key_Return)
    history = [a for a in store.answer_history() if a.image_id == changed]
    assert [(a.score, a.confidence) for a in history] == [expected[changed], ("3+", 5)]

    # typing digits in the comment box is a comment, not a score
    widget.comment_edit.setFocus()
    qtbot.keyClicks(widget.comment_edit, "2 foci")
    assert widget.comment_edit.text() == "2 foci"

    # active time: case 2 sat idle 1.2 s; with idle excluded at most 3 gaps x 0.2 s count
    seconds = store.active_seconds()
    assert all(v >= 0 for v in seconds.values()) and len(seconds) >= n
    order = [it.image for it in widget.session.items]
    assert 0.2 <= seconds[order[1]] < 1.0

    # layer controls are locked
    assert not viewer.window._qt_viewer.dockLayerList.isEnabled()
    assert not viewer.window._qt_viewer.dockLayerControls.isEnabled()

    # nothing the reader sees names a source or a modality
    key = load_key(key_path)
    words = {Path(v["source"]).stem for v in key["images"].values()} | {
        v["case_id"] for v in key["images"].values()
    }
    words |= {"Rat-Kidney", "PanCytokeratin", "proSPC", bundle.name}
    strings = ui_strings(viewer)
    assert any(s == f"Case {widget.session.position + 1} of {n}" for s in strings)
    assert len(strings) > 30
    for s in strings:
        assert not MODALITY.search(s), s
        assert not any(w.lower() in s.lower() for w in words), s
    assert not viewer.window._qt_window.menuBar().isVisible()
    widget.close_study()
    assert viewer.window._qt_viewer.dockLayerList.isEnabled()
    assert viewer.window._qt_window.menuBar().isVisible()
    # the check is not vacuous: a layer named after a source is caught
    viewer.add_image(np.zeros((8, 8, 3), np.uint8), name="case00_virtual_generated_pix2pix", rgb=True)
    assert any(MODALITY.search(s) for s in ui_strings(viewer))


def test_reopening_resumes_and_unknown_reader_is_refused(make_napari_viewer, qtbot, small_study) -> None:
    bundle, _, _ = small_study
    viewer = make_napari_viewer()
    widget = ReaderStudyWidget(viewer)
    assert not widget.open_bundle(bundle, reader_id="mallory")
    assert "not part of this study" in widget.status_label.text()
    assert widget.open_bundle(bundle, reader_id="alice")
    widget.set_score("2+")
    widget.set_confidence(4)
    assert widget.save_and_next()
    widget.save_and_next()  # nothing chosen: refused, nothing saved
    assert "Choose a score" in widget.status_label.text()
    widget.close_study()
    again = ReaderStudyWidget(viewer)
    assert again.open_bundle(bundle, reader_id="alice")
    assert again.position_label.text() == f"Case 2 of {2 * N_PAIRS}"
    assert again.progress.value() == 1
    again.close_study()


def test_coordinator_button_writes_the_report(make_napari_viewer, qtbot, small_study, tmp_path) -> None:
    _bundle, key_path, _ = small_study
    viewer = make_napari_viewer()
    widget = ReaderStudyWidget(viewer)
    with AnswerStore(tmp_path / "answers" / "p1.sqlite", load_key(key_path)["study_id"], "p1") as store:
        for image_id, info in load_key(key_path)["images"].items():
            store.record_answer(
                image_id=image_id, score="2+" if info["modality"] == "real" else "1+", confidence=3
            )
    worker = widget.run_analysis(key_path, tmp_path / "answers", tmp_path / "report", n_boot=50)
    assert worker is not None
    qtbot.waitUntil(lambda: widget.last_report is not None or widget.last_error is not None, timeout=60_000)
    assert widget.last_error is None, widget.last_error
    assert widget.last_report.is_file()
    assert "Report written" in widget.report_output.toPlainText()


def test_he_context_is_shown_beside_the_case(make_napari_viewer, qtbot, data_dir, tmp_path) -> None:
    ihc, he = data_dir / "Rat-Kidney_PanCytokeratin.jpg", data_dir / "Rat-Kidney_HE.jpg"
    lines = ["case_id,real,virtual,he,x,y,w,h"] + [
        f"k{i},{ihc},{ihc},{he},{50 * i},20,40,30" for i in range(3)
    ]
    (tmp_path / "cases.csv").write_text("\n".join(lines))
    bundle, _ = build_study(tmp_path / "cases.csv", tmp_path / "b", BuildOptions(readers=("r",), min_gap=2))
    viewer = make_napari_viewer()
    widget = ReaderStudyWidget(viewer)
    assert widget.open_bundle(bundle, reader_id="r")
    assert [layer.name for layer in viewer.layers] == ["Case 1 of 6 · H&E", "Case 1 of 6"]
    context, case = viewer.layers
    assert case.data.shape == context.data.shape == (30, 40, 3)
    assert case.translate[1] > 40  # side by side, not on top of each other
    widget.go_forward()
    assert [layer.name for layer in viewer.layers] == ["Case 2 of 6 · H&E", "Case 2 of 6"]
    widget.close_button.click()
    assert len(viewer.layers) == 0 and widget.session is None


def test_issue20_6_image_vanishing_mid_study_is_never_scored(make_napari_viewer, qtbot, small_study) -> None:
    """The case's image disappears while the reader is on the previous case: a clear message, no layer,
    the label shows the new case, score keys and Enter store nothing; the reader can go on."""
    bundle, _, _ = small_study
    viewer = make_napari_viewer()
    widget = ReaderStudyWidget(viewer)
    assert widget.open_bundle(bundle, reader_id="alice")
    s = widget.session
    second = s.items[1].image
    (bundle / s.bundle.images[second]["file"]).unlink()
    widget.set_score("1+")
    widget.set_confidence(2)
    assert widget.save_and_next()  # case 1 saved; case 2 cannot be shown
    assert widget.position_label.text() == f"Case 2 of {2 * N_PAIRS}"
    assert len(viewer.layers) == 0
    assert "cannot be shown" in widget.status_label.text() and "missing" in widget.status_label.text()
    widget.set_score("3+")
    widget.set_confidence(5)
    assert not widget.save_button.isEnabled()
    assert not widget.save_and_next()
    assert "not on screen" in widget.status_label.text()
    assert second not in s.store.current_answers()
    widget.go_forward()
    assert [layer.name for layer in viewer.layers] == [f"Case 3 of {2 * N_PAIRS}"]
    widget.set_score("0")
    widget.set_confidence(4)
    assert widget.save_and_next()
    assert set(s.store.current_answers()) == {s.items[0].image, s.items[2].image}
    widget.close_study()


def test_issue20_6_answers_folder_can_be_chosen(make_napari_viewer, qtbot, small_study, tmp_path) -> None:
    bundle, _, _ = small_study
    viewer = make_napari_viewer()
    widget = ReaderStudyWidget(viewer)
    (bundle / "answers").write_text("not a folder")  # the bundle's own answers folder cannot be made
    assert not widget.open_bundle(bundle, reader_id="alice")
    assert "choose another answers folder" in widget.status_label.text()
    widget.answers_dir_edit.setText(str(tmp_path / "mine"))
    assert widget.open_bundle(bundle, reader_id="alice")
    assert widget.session.store.path == tmp_path / "mine" / "alice.sqlite"
    assert not widget.answers_row.isVisible()
    widget.close_study()


def test_issue29_5_disk_full_at_save_is_not_reported_saved_and_the_answer_stays(
    make_napari_viewer, qtbot, small_study
) -> None:
    """The reader's real SQLite store cannot grow (SQLite's own page limit gives the SQLITE_FULL of a full
    disk): Save says "Not saved" with the reason, stores nothing and keeps the answer in the form, Next
    says why it cannot move; once there is room again the same Save stores the answer."""
    bundle, _, _ = small_study
    viewer = make_napari_viewer()
    widget = ReaderStudyWidget(viewer)
    assert widget.open_bundle(bundle, reader_id="alice")
    s = widget.session
    widget.set_score("1+")
    widget.set_confidence(2)
    assert widget.save_and_next()
    assert widget.status_label.text() == f"Saved Case 1 of {2 * N_PAIRS}."
    db = s.store._db
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")  # "disk full"
    comment = "membrane " * 800  # needs new pages
    widget.set_score("3+")
    widget.set_confidence(4)
    widget.comment_edit.setText(comment)
    assert not widget.save_and_next()
    status = widget.status_label.text()
    assert status.startswith(f"Not saved: Case 2 of {2 * N_PAIRS}") and "full" in status, status
    assert "Saved" not in status
    assert s.items[1].image not in s.store.current_answers()
    assert widget.position_label.text() == f"Case 2 of {2 * N_PAIRS}"
    assert (widget._score, widget._confidence, widget.comment_edit.text()) == ("3+", 4, comment)
    for size in (200, 0):  # fill what is left of the last page: no event fits any more
        with pytest.raises(StudyError):
            for _ in range(1000):
                s.store.append("filler", payload={"x": "y" * size})
    widget.go_forward()
    assert widget.status_label.text().startswith("Cannot move:") and "full" in widget.status_label.text()
    db.execute("PRAGMA max_page_count = 1073741823")  # room again: the same Save goes through
    assert widget.position_label.text() == f"Case 2 of {2 * N_PAIRS}"
    assert widget.save_and_next()
    assert widget.status_label.text() == f"Saved Case 2 of {2 * N_PAIRS}."
    answer = s.store.current_answers()[s.items[1].image]
    assert (answer.score, answer.confidence, answer.comment) == ("3+", 4, comment)
    widget.close_study()
