"""The flow's affine part moved into the affine (``flow_refits``): what the affine stage missed is recovered."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_virtual_ihc.registration import RegistrationSettings, flow
from napari_virtual_ihc.registration.register import _flow_stage, _View
from napari_virtual_ihc.slides import ArraySlide, open_slide


def test_affine_part_recovers_an_affine_field_exactly_and_ignores_the_rest_outside_the_mask():
    h, w = 60, 80
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.array([[1.03, 0.02, -4.0], [-0.01, 0.98, 2.5], [0.0, 0.0, 1.0]])
    field = np.stack(
        [a[0, 0] * xs + a[0, 1] * ys + a[0, 2] - xs, a[1, 0] * xs + a[1, 1] * ys + a[1, 2] - ys], -1
    )
    mask = np.zeros((h, w), bool)
    mask[10:50, 10:70] = True
    field[~mask] = 50.0  # garbage where there is no tissue
    np.testing.assert_allclose(flow.affine_part(field, mask), a, atol=1e-9)
    with pytest.raises(ValueError, match="mask"):
        flow.affine_part(field, mask[:, :10])


def test_refit_moves_the_affine_the_linear_stages_missed_into_the_affine(data_dir):
    """The moving H&E is the fixed one rotated 30 degrees, scaled 3 % one way and -3 % the other and shifted;
    the flow starts from the rotation alone (an affine stage that missed the rest), in µm (0.5 µm/px). With
    one refit the returned affine is the true one to within a pixel over the section (composed on the right
    side and in physical units: either mistake costs pixels here), and the whole map (affine + flow) is
    sub-pixel; without, the affine stays the start."""
    rgb = open_slide(data_dir / "lesion3_HE.jpg").read_region((150, 100), 0, (360, 300))[..., :3]
    h, w = rgb.shape[:2]
    a = np.radians(30.0)
    centre = np.array([[1, 0, (w - 1) / 2], [0, 1, (h - 1) / 2], [0, 0, 1.0]])
    rot = (
        centre
        @ np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        @ np.linalg.inv(centre)
    )
    missed = centre @ np.diag([1.03, 0.97, 1.0]) @ np.linalg.inv(centre)
    missed[:2, 2] += [4.0, -3.0]
    truth = rot @ missed  # fixed px -> moving px
    # moving shows at truth @ x what fixed shows at x: moving(y) = fixed(truth^-1 y)
    inv = np.linalg.inv(truth)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    moving = np.stack([ndi.map_coordinates(rgb[..., k], [sy, sx], order=1, cval=255) for k in range(3)], -1)
    um = 0.5  # µm per px on both sides: the refit must work in physical units
    to_um = np.diag([um, um, 1.0])
    fixed_v = _View.of(ArraySlide(rgb), 384, (um, um))
    moving_v = _View.of(ArraySlide(moving.astype(np.uint8)), 384, (um, um))
    inner = ndi.binary_erosion(fixed_v.mask, iterations=30)
    inner[: h // 5], inner[-h // 5 :], inner[:, : w // 5], inner[:, -w // 5 :] = False, False, False, False
    py, px = np.nonzero(inner)
    pts = np.stack([px, py], 1)[::97].astype(np.float64) * um
    truth_um = to_um @ truth @ np.linalg.inv(to_um)
    want = pts @ truth_um[:2, :2].T + truth_um[:2, 2]
    start = to_um @ rot @ np.linalg.inv(to_um)
    for refits in (0, 1):
        linear, disp = _flow_stage(fixed_v, moving_v, start, refits)
        lin_err = np.hypot(*((pts @ linear[:2, :2].T + linear[:2, 2]) - want).T) / um
        q = pts + disp.at(pts)
        err = np.hypot(*((q @ linear[:2, :2].T + linear[:2, 2]) - want).T) / um
        print(
            f"refits {refits}: affine error median {np.median(lin_err):.2f} px, with the flow {np.median(err):.2f}"
        )
        if refits:
            assert np.percentile(lin_err, 90) < 1.0
            assert np.median(err) < 0.5
        else:
            np.testing.assert_array_equal(linear, start)
            assert np.median(lin_err) > 2.0
    assert RegistrationSettings().flow_refits == 1
    with pytest.raises(ValueError, match="flow_refits"):
        RegistrationSettings(flow_refits=-1)
