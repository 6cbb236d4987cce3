"""'Register real IHC to H&E' in a real viewer: threaded run, the IHC placed over the H&E by napari's affine,
landmark residuals measured on screen, a saved transform reused, cancel leaving nothing behind."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from napari_virtual_ihc._widgets.registration import RegistrationWidget
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
    qtbot.waitUntil(lambda: w.task is None, timeout=10_000)
    assert w.error is None, w.error
    layer = w.registered_layer
    assert layer.name == f"{MOVING} (registered)" and layer in viewer.layers
    if w.transform.displacement is None:  # affine alone: the layer is placed by its affine
        assert not np.allclose(layer.affine.affine_matrix, np.eye(3))
    else:  # the flow kept: the real IHC resampled lazily into the H&E frame
        assert layer.multiscale and layer.data[0].shape[:2] == viewer.layers[FIXED].data.shape[:2]
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
    moved = layer.affine.affine_matrix[1, 2] if w.transform.is_linear else layer.translate[-1]
    assert moved > 1.0 * w.transform.fixed.dimensions[0] * 0.9
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


def test_the_form_offers_the_cores_defaults(pair_viewer):
    """The widget registers as the CLI does: the optical-flow stage is on unless the user unticks it."""
    _, w, _ = pair_viewer
    assert w.nonrigid.isChecked() is RegistrationSettings().nonrigid is True
    assert "optical flow" in w.nonrigid.text()


def test_cancel_leaves_no_layer(pair_viewer, qtbot):
    viewer, w, _ = pair_viewer
    before = [layer.name for layer in viewer.layers]
    w.reuse.setChecked(False)
    w.start()
    w.cancel()
    qtbot.waitUntil(lambda: w.task is None, timeout=120_000)
    assert [layer.name for layer in viewer.layers] == before
    assert w.registered_layer is None and w.transform is None
    assert "cancel" in w.status.text()
    assert viewer.layers[before[1]].visible


def test_nonrigid_result_is_a_lazy_layer_and_compare_adds_a_map(pair_viewer, qtbot):
    """A non-rigid transform (shift + smooth displacement) shows as a lazily resampled layer in the H&E
    frame; comparing a virtual IHC that equals the resampled real one gives Dice 1 and a per-tile map."""
    from napari_virtual_ihc.registration import SlideTransform
    from napari_virtual_ihc.registration.transform import Displacement, SlideRecord

    viewer, w, _ = pair_viewer
    he, ihc = viewer.layers[FIXED], viewer.layers[MOVING]
    fixed_slide, moving_slide = he.metadata["slide"], ihc.metadata["slide"]
    yy, xx = np.mgrid[0:9, 0:13]
    field = np.stack([3 * np.sin(xx / 4.0), 2 * np.cos(yy / 3.0)], axis=-1).astype(np.float32)
    t = SlideTransform(
        np.array([[1.0, 0.0, -12.0], [0.0, 1.0, -30.0], [0.0, 0.0, 1.0]]),
        SlideRecord.of(fixed_slide, (1.0, 1.0)),
        SlideRecord.of(moving_slide, (1.0, 1.0)),
        Displacement(field, (0.0, 0.0), (100.0, 100.0)),
    )
    w.reuse.setChecked(False)
    w._names = (FIXED, MOVING)
    w._on_done(t)
    layer = w.registered_layer
    assert layer.multiscale and layer.data[0].shape[:2] == (787, 1164)
    np.testing.assert_array_equal(
        np.asarray(layer.data[0][100:164, 200:264]), t.resample(moving_slide, (200, 100, 64, 64), 1.0)
    )
    # the virtual IHC layer: here the real IHC resampled into the H&E frame, so it agrees everywhere
    virtual = viewer.add_image(t.resample(moving_slide, (0, 0, 1164, 787), 1.0), rgb=True, name="virtual IHC")
    w.virtual.setCurrentText(virtual.name)
    w.start_compare()
    qtbot.waitUntil(lambda: w.comparison is not None or w.error is not None, timeout=120_000)
    assert w.error is None, w.error
    assert w.comparison.dice == pytest.approx(1.0, abs=1e-9)
    assert "DAB fraction virtual - real" in viewer.layers
    assert w.table.rowCount() > 5


def test_the_status_line_gives_the_stages_and_the_gates_figures_as_the_cli(pair_viewer):
    """The status names the stages and the figures the quality gate decides on, in the CLI's words
    (``quality.describe``); here for a saved transform that is reused, and one marked poor."""
    from napari_virtual_ihc.registration.quality import describe
    from napari_virtual_ihc.registration.transform import SlideRecord, SlideTransform

    _, w, folder = pair_viewer
    fixed, moving = folder / f"{FIXED}.jpg", folder / f"{MOVING}.jpg"
    figures = {"peak_correlation": 0.61, "peak_margin": 0.04, "peak_contrast": 0.21, "tissue_dice": 0.93}
    with open_slide(fixed) as f, open_slide(moving) as m:
        t = SlideTransform(
            np.eye(3),
            SlideRecord.of(f, (1.0, 1.0)),
            SlideRecord.of(m, (1.0, 1.0)),
            quality=figures,
            stages=["coarse", "rigid", "affine"],
        )
    t.save(transform_path_for(fixed, moving))
    w.reuse.setChecked(True)
    w.start()
    assert w.error is None, w.error
    assert w.status.text().startswith(f"registered (coarse + rigid + affine): {describe(figures)}")
    assert (
        "agreement peak 0.610, +0.040 over its best perturbation, +0.210 over their median" in w.status.text()
    )
    assert "reused" in w.status.text()
    t.converged = False
    t.save(transform_path_for(fixed, moving))
    w.start()
    assert w.error is not None and w.error.startswith(
        f"poor alignment, not applied (coarse + rigid + affine): {describe(figures)}"
    )
