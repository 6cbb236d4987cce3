"""The layer choosers all three widgets share: a choice follows the layer, not its name."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from qtpy.QtWidgets import QComboBox

from napari_virtual_ihc._widgets._layer_source import combo_layer, fill_layer_combo


def test_the_chosen_layer_survives_refills_renames_and_a_namesake(qtbot: Any) -> None:
    combo = QComboBox()
    qtbot.addWidget(combo)
    changes: list[int] = []
    combo.currentIndexChanged.connect(changes.append)
    a, b = SimpleNamespace(name="H&E"), SimpleNamespace(name="IHC")
    fill_layer_combo(combo, [a, b])
    assert combo_layer(combo) is a  # the first by default
    combo.setCurrentIndex(1)
    changes.clear()
    b.name = "H&E"  # renamed to its neighbour's name
    twin = SimpleNamespace(name="H&E")
    fill_layer_combo(combo, [twin, a, b])
    assert combo_layer(combo) is b and combo.currentText() == "H&E"
    assert changes == []  # refilling does not look like a user's choice
    fill_layer_combo(combo, [twin, a])  # the chosen layer is gone: the first one
    assert combo_layer(combo) is twin
    fill_layer_combo(combo, [a], none_label="(none)")
    assert combo_layer(combo) is None and combo.currentText() == "(none)"
    fill_layer_combo(combo, [a], keep=a, none_label="(none)")
    assert combo_layer(combo) is a
    fill_layer_combo(combo, [])
    assert combo_layer(combo) is None and combo.currentIndex() == -1
