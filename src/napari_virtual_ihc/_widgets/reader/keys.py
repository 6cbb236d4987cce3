"""Keyboard map of the reader widget (kept apart so the help text and the handler cannot disagree)."""

from __future__ import annotations

from qtpy.QtCore import Qt

from napari_virtual_ihc.study.scores import NOT_ASSESSABLE, ONE, THREE, TWO, ULTRALOW, ZERO

# Keyed by int: ``QKeyEvent.key()`` returns an int, which equals and hashes like its ``Qt.Key``.
SCORE_KEYS: dict[int, str] = {
    Qt.Key.Key_0: ZERO,
    Qt.Key.Key_1: ONE,
    Qt.Key.Key_2: TWO,
    Qt.Key.Key_3: THREE,
    Qt.Key.Key_U: ULTRALOW,
    Qt.Key.Key_N: NOT_ASSESSABLE,
}
SCORE_KEY_NAMES = {ZERO: "0", ONE: "1", TWO: "2", THREE: "3", ULTRALOW: "U", NOT_ASSESSABLE: "N"}

CONFIDENCE_FKEYS: dict[int, int] = {
    Qt.Key.Key_F1: 1,
    Qt.Key.Key_F2: 2,
    Qt.Key.Key_F3: 3,
    Qt.Key.Key_F4: 4,
    Qt.Key.Key_F5: 5,
}
CONFIDENCE_CTRL_DIGITS: dict[int, int] = {
    Qt.Key.Key_1: 1,
    Qt.Key.Key_2: 2,
    Qt.Key.Key_3: 3,
    Qt.Key.Key_4: 4,
    Qt.Key.Key_5: 5,
}

SAVE_KEYS: tuple[int, ...] = (Qt.Key.Key_Return, Qt.Key.Key_Enter)
BACK_KEYS: tuple[int, ...] = (Qt.Key.Key_Left, Qt.Key.Key_PageUp)
FORWARD_KEYS: tuple[int, ...] = (Qt.Key.Key_Right, Qt.Key.Key_PageDown)

HELP = (
    "Keys: 0 1 2 3 (U ultralow, N not assessable) score · F1–F5 or Ctrl+1–5 confidence · "
    "Enter save and next · ←/→ previous/next case"
)
