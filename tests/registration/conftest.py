"""The real ANHIR consecutive-section pairs in tests/data, their landmarks, and exact re-orientations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_virtual_ihc.registration.landmarks import read_points
from napari_virtual_ihc.slides import ArraySlide, open_slide

PAIRS = {
    "kidney": ("Rat-Kidney_HE", "Rat-Kidney_PanCytokeratin"),
    "lesion": ("Izd2-29-041-w35_HE", "Izd2-29-041-w35_proSPC"),
    # a second mouse lung lesion, H&E against two IHC stains with pale counterstain (issue 33)
    "cd31": ("lesion3_HE", "lesion3_CD31"),
    "cc10": ("lesion3_HE", "lesion3_Cc10"),
}


@dataclass
class Pair:
    name: str
    fixed_path: Path
    moving_path: Path
    fixed_points: np.ndarray
    moving_points: np.ndarray

    def fixed(self):  # type: ignore[no-untyped-def]
        return open_slide(self.fixed_path)

    def moving(self):  # type: ignore[no-untyped-def]
        return open_slide(self.moving_path)


def load_pair(data_dir: Path, name: str) -> Pair:
    f, m = PAIRS[name]
    pf, _ = read_points(data_dir / f"{f}.landmarks.csv")
    pm, _ = read_points(data_dir / f"{m}.landmarks.csv")
    n = min(len(pf), len(pm))  # index-matched: the first min(n) rows of both files
    return Pair(name, data_dir / f"{f}.jpg", data_dir / f"{m}.jpg", pf[:n], pm[:n])


@pytest.fixture(scope="session")
def kidney(data_dir: Path) -> Pair:
    return load_pair(data_dir, "kidney")


@pytest.fixture(scope="session")
def lesion(data_dir: Path) -> Pair:
    return load_pair(data_dir, "lesion")


@pytest.fixture(scope="session")
def cd31(data_dir: Path) -> Pair:
    return load_pair(data_dir, "cd31")


@pytest.fixture(scope="session")
def cc10(data_dir: Path) -> Pair:
    return load_pair(data_dir, "cc10")


def reorient(
    rgb: np.ndarray, points: np.ndarray, angle_deg: float, flip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``rgb`` mirrored (left-right, if ``flip``) then rotated by ``angle_deg`` onto a canvas that holds it
    all (white outside), and ``points`` (x, y) moved exactly the same way."""
    h, w = rgb.shape[:2]
    a = np.radians(angle_deg)
    c, s = np.cos(a), np.sin(a)
    rot = np.array([[c, -s], [s, c]])
    mirror = np.diag([-1.0, 1.0]) if flip else np.eye(2)
    lin = rot @ mirror  # input (x, y) about the centre -> output about the centre
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float) - [(w - 1) / 2, (h - 1) / 2]
    ext = np.abs(corners @ lin.T).max(axis=0)
    ow, oh = int(np.ceil(2 * ext[0])) + 1, int(np.ceil(2 * ext[1])) + 1
    cin = np.array([(w - 1) / 2, (h - 1) / 2])
    cout = np.array([(ow - 1) / 2, (oh - 1) / 2])
    inv = np.linalg.inv(lin)
    # output (row, col) -> input (row, col) for scipy
    m_rc = inv[::-1, ::-1]
    off_xy = cin - inv @ cout
    out = np.stack(
        [
            ndi.affine_transform(
                rgb[..., k].astype(np.float32),
                m_rc,
                offset=off_xy[::-1],
                output_shape=(oh, ow),
                order=1,
                cval=255.0,
            )
            for k in range(3)
        ],
        axis=-1,
    )
    pts = (np.asarray(points, float) - cin) @ lin.T + cout
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), pts


def reoriented_slide(pair: Pair, angle: float, flip: bool) -> tuple[ArraySlide, np.ndarray]:
    rgb = pair.moving().read_region((0, 0), 0, pair.moving().dimensions)
    out, pts = reorient(rgb, pair.moving_points, angle, flip)
    return ArraySlide(out), pts


_REGISTERED: dict[tuple, tuple] = {}


def registered(pair: Pair, angle: float = 0.0, flip: bool = False, **settings):  # type: ignore[no-untyped-def]
    """(transform, rTRE per landmark, seconds, peak MiB traced) of ``pair`` with its moving image
    re-oriented; computed once per session (the registrations are the slow part)."""
    import time
    import tracemalloc

    from napari_virtual_ihc.registration import RegistrationSettings, register
    from napari_virtual_ihc.registration.landmarks import rtre

    key = (pair.name, angle, flip, tuple(sorted(settings.items())))
    if key not in _REGISTERED:
        if angle or flip:
            moving, pts = reoriented_slide(pair, angle, flip)
        else:
            moving, pts = pair.moving(), pair.moving_points
        fixed = pair.fixed()
        tracemalloc.start()
        t0 = time.perf_counter()
        transform = register(fixed, moving, RegistrationSettings(**settings))
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        errors = rtre(transform.moving_to_fixed(pts), pair.fixed_points, fixed.dimensions)
        _REGISTERED[key] = (transform, errors, seconds, peak)
    return _REGISTERED[key]


#: The deliberate misalignments: shifts by 5 % of the fixed diagonal, rotations by 10 degrees.
BROKEN = [("shift_x", 0.05), ("shift_x", -0.05), ("shift_y", 0.05), ("shift_y", -0.05)]
BROKEN += [("rotate", 10.0), ("rotate", -10.0)]


def broken(t, pair: Pair, kind: str, amount: float):  # type: ignore[no-untyped-def]
    """``t`` composed, on the fixed side, with a shift (share of the diagonal) or a rotation (degrees)."""
    w, h = pair.fixed().dimensions
    d = np.eye(3)
    if kind == "shift_x":
        d[0, 2] = amount * float(np.hypot(w, h))
    elif kind == "shift_y":
        d[1, 2] = amount * float(np.hypot(w, h))
    else:
        a = np.radians(amount)
        c = np.array([(w - 1) / 2, (h - 1) / 2])
        d[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
        d[:2, 2] = c - d[:2, :2] @ c
    u = np.diag([*t.fixed.unit_per_px, 1.0])
    return dataclasses.replace(t, matrix=t.matrix @ u @ d @ np.linalg.inv(u))
