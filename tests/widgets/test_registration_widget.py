"""'Register real IHC to H&E' in a real viewer: threaded run, the IHC placed over the H&E by napari's affine,
landmark residuals measured on screen, a saved transform reused, cancel leaving nothing behind."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from napari_virtual_ihc._widgets.registration_widget import RegistrationWidget
from napari_virtual_ihc.registration import RegistrationSettings, read_points, rtre, transform_path_for
from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.slides.layers import slide_layer_data

FIXED, MOVING = "Rat-Kidney_HE", "Rat-Kidney_PanCytokeratin"


def _add(viewer, path):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # JPEGs record no µm/px: shown in pixels
        data, kwargs, _ = slide_layer_data(open_slide(path))
    return viewer.add_image(data, **kwargs)


@pytest.fixture
def pair_viewer(make_napari_viewer, tmp_path, data_dir):  # type: ignore[no-untyped-def]
    for name in (FIXED, MOVING):
        shutil.copy(data_dir / f"{name}.jpg", tmp_path / f"{name}.jpg")
    viewer = make_napari_viewer()
    he = _add(viewer, tmp_path / f"{FIXED}.jpg")
    ihc = _add(viewer, tmp_path / f"{MOVING}.jpg")
    widget = RegistrationWidget(viewer)
    widget.settings = RegistrationSettings(candidates=2)
    widget.fixed.setCurrentText(he.name)
    widget.moving.setCurrentText(ihc.name)
    return viewer, widget, tmp_path


@pytest.mark.slow
def test_registered_ihc_overlays_the_he_within_the_landmark_figure(pair_viewer, qtbot, data_dir):
    viewer, w, folder = pair_viewer
    w.start()
    qtbot.waitUntil(lambda: w.registered_layer is not None or w.error is not None, timeout=280_000)
    qtbot.waitUntil(lambda: w._worker is None, timeout=10_000)
    assert w.error is None, w.error
    layer = w.registered_layer
    assert layer.name == f"{MOVING} (registered)" and layer in viewer.layers
    assert not np.allclose(layer.affine.affine_matrix, np.eye(3))
    assert not viewer.layers[MOVING].visible
    # on-screen landmark residuals: points placed on the registered layer (its affine), H&E points on the H&E
    w.load_landmarks(data_dir / f"{FIXED}.landmarks.csv", data_dir / f"{MOVING}.landmarks.csv")
    shown = w.update_residuals()
    pf, _ = read_points(data_dir / f"{FIXED}.landmarks.csv")
    pm, _ = read_points(data_dir / f"{MOVING}.landmarks.csv")
    n = min(len(pf), len(pm))
    core = rtre(w.transform.moving_to_fixed(pm[:n]), pf[:n], w.transform.fixed.dimensions)
    print(
        f"on-screen rTRE median {np.median(shown):.4f} (core {np.median(core):.4f}), p90 {np.percentile(shown, 90):.4f}"
    )
    assert len(shown) == n
    np.testing.assert_allclose(shown, core, rtol=1e-6, atol=1e-9)
    assert np.median(shown) <= 0.004
    assert "landmark residuals" in viewer.layers
    # side by side: the layer moves one H&E width right; the residuals stay what they are
    w.view.setCurrentText("side by side")
    assert layer.affine.affine_matrix[1, 2] > 1.0 * w.transform.fixed.dimensions[0] * 0.9
    np.testing.assert_allclose(w.update_residuals(), core, rtol=1e-6, atol=1e-9)
    # saved next to the moving slide and reused (no second registration) while the files are unchanged
    saved = transform_path_for(folder / f"{FIXED}.jpg", folder / f"{MOVING}.jpg")
    assert saved.is_file()
    w.start()
    assert "reused" in w.status.text()
    # an edited moving file: the saved transform is refused with the reason, nothing is placed
    raw = bytearray((folder / f"{MOVING}.jpg").read_bytes())
    raw[-50] ^= 0xFF
    (folder / f"{MOVING}.jpg").write_bytes(bytes(raw))
    w.start()
    assert w.error is not None and "not the moving file" in w.error


def test_cancel_leaves_no_layer(pair_viewer, qtbot):
    viewer, w, _ = pair_viewer
    before = [layer.name for layer in viewer.layers]
    w.reuse.setChecked(False)
    w.start()
    w.cancel()
    qtbot.waitUntil(lambda: w._worker is None, timeout=120_000)
    assert [layer.name for layer in viewer.layers] == before
    assert w.registered_layer is None and w.transform is None
    assert "cancel" in w.status.text()
    assert viewer.layers[before[1]].visible
