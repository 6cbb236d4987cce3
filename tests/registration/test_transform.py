"""SlideTransform without an optimiser: exact maps, lazy resampling, saving, refusing other files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from skimage import data

from napari_virtual_ihc.registration import (
    RegistrationError,
    SlideTransform,
    TransformMismatchError,
    load_transform,
    read_points,
    write_points,
)
from napari_virtual_ihc.registration.lazy import resampled_levels
from napari_virtual_ihc.registration.transform import Displacement, SlideRecord
from napari_virtual_ihc.slides import ArraySlide, open_slide


def _rec(dims, unit=(1.0, 1.0), digest=None):
    return SlideRecord("x", digest, dims, unit)


def _shift(dx: float, dy: float, dims=(320, 256)) -> SlideTransform:
    m = np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], float)
    return SlideTransform(m, _rec(dims), _rec(dims))


def test_resample_a_shift_is_the_shifted_crop_at_every_downsample():
    rgb = np.ascontiguousarray(data.immunohistochemistry()[:256, :320])
    moving = ArraySlide([rgb, np.ascontiguousarray(rgb[::2, ::2]), np.ascontiguousarray(rgb[::4, ::4])])
    t = _shift(30, 20)
    out = t.resample(moving, (10, 12, 100, 80), 1.0)
    np.testing.assert_array_equal(out, rgb[32:112, 40:140])
    # beyond the moving slide: glass (white)
    edge = t.resample(moving, (280, 0, 40, 16), 1.0)
    assert (edge[:, -10:] == 255).all()
    # a coarser read comes from a coarser level and matches a block mean closely
    low = t.resample(moving, (0, 0, 256, 224), 4.0).astype(float)
    ref = rgb[20:244, 30:286].reshape(56, 4, 64, 4, 3).mean(axis=(1, 3))
    assert np.abs(low - ref).mean() < 12  # level sampling + blur, not a bit-exact block mean


def test_lazy_levels_read_only_what_is_asked_and_equal_resample():
    rgb = np.ascontiguousarray(data.immunohistochemistry()[:256, :320])
    moving = ArraySlide(rgb)
    t = _shift(-5.5, 7.25)
    levels = resampled_levels(t, moving, chunk=64, min_side=64)
    assert [lv.shape[:2] for lv in levels] == [(256, 320), (128, 160), (64, 80)]
    np.testing.assert_array_equal(
        levels[0][64:128, 64:128].compute(), t.resample(moving, (64, 64, 64, 64), 1.0)
    )


def test_inverse_undoes_forward_with_a_displacement():
    rng = np.random.default_rng(0)
    field = (rng.normal(size=(9, 11, 2)) * 3).astype(np.float32)
    from scipy import ndimage as ndi

    field = ndi.gaussian_filter(field, (1, 1, 0))
    a = np.radians(33)
    m = np.array(
        [[-np.cos(a), -np.sin(a), 40], [-np.sin(a), np.cos(a), -12], [0, 0, 1]]
    )  # mirrored + rotated
    t = SlideTransform(
        m,
        _rec((1000, 800), (0.5, 0.5)),
        _rec((900, 900), (0.25, 0.25)),
        Displacement(field, (0, 0), (50, 50)),
    )
    pts = rng.uniform(0, 800, size=(50, 2))
    back = t.moving_to_fixed(t.fixed_to_moving(pts))
    np.testing.assert_allclose(back, pts, atol=1e-2)
    assert t.scale() == pytest.approx(2.0)


def test_save_load_roundtrip_and_refuse_other_files(tmp_path, data_dir):
    fixed = tmp_path / "he.jpg"
    moving = tmp_path / "ihc.jpg"
    shutil.copy(data_dir / "Rat-Kidney_HE.jpg", fixed)
    shutil.copy(data_dir / "Rat-Kidney_PanCytokeratin.jpg", moving)
    f, m = open_slide(fixed), open_slide(moving)
    field = np.ones((4, 5, 2), np.float32)
    t = SlideTransform(
        np.array([[1, 0.1, 3], [0, 1, 4], [0, 0, 1]]),
        SlideRecord.of(f, (1.0, 1.0)),
        SlideRecord.of(m, (1.0, 1.0)),
        Displacement(field, (0.0, 0.0), (100.0, 100.0)),
        quality={"correlation": 0.7},
    )
    path = t.save(tmp_path / "out" / "transform.json")
    assert (tmp_path / "out" / "transform.displacement.npy").is_file()
    back = load_transform(path, fixed, moving)
    np.testing.assert_allclose(back.fixed_to_moving([[10, 20]]), t.fixed_to_moving([[10, 20]]))
    assert back.quality == {"correlation": 0.7}
    # swapped files, then an edited file: refused, with the reason
    with pytest.raises(TransformMismatchError, match="not the fixed file"):
        load_transform(path, moving, fixed)
    raw = bytearray(moving.read_bytes())
    raw[-100] ^= 0xFF
    moving.write_bytes(bytes(raw))
    with pytest.raises(TransformMismatchError, match="changed"):
        load_transform(path, fixed, moving)
    # not a transform / broken JSON
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(RegistrationError, match="not a napari-virtual-ihc"):
        SlideTransform.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(RegistrationError, match="not a readable"):
        SlideTransform.load(tmp_path / "broken.json")


def test_points_csv_roundtrip_and_bad_files(tmp_path, data_dir):
    pts, labels = read_points(data_dir / "Rat-Kidney_HE.landmarks.csv")
    assert pts.shape == (71, 2) and labels[:2] == ["1", "2"]
    out = write_points(tmp_path / "p.csv", pts, labels)
    again, labels2 = read_points(out)
    np.testing.assert_allclose(again, pts)
    assert labels2 == labels
    (tmp_path / "no_xy.csv").write_text("a,b\n1,2\n")
    with pytest.raises(RegistrationError, match="'X' and 'Y'"):
        read_points(tmp_path / "no_xy.csv")
    (tmp_path / "text.csv").write_text(",X,Y\n1,abc,2\n")
    with pytest.raises(RegistrationError, match="line 2"):
        read_points(tmp_path / "text.csv")
