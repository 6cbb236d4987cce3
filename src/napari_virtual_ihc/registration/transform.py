"""The result of registration: a fixed <-> moving map for points and lazily resampled regions.

Coordinates outside are level-0 pixels ``(x, y)`` of each slide (pixel centres on integers, as ANHIR
landmarks and OpenSlide locations are). Inside, the map works in physical units (µm when both slides record
their pixel size, else pixels): ``moving = M @ (x + d(x))`` for a fixed physical point ``x``, with ``M`` a
3 x 3 affine (a mirror image allowed) and ``d`` an optional smooth displacement field sampled on a grid
over the fixed slide (the non-rigid part). Moving -> fixed inverts ``M`` exactly and ``x + d(x)`` by
fixed-point iteration (``d`` is smooth and small, so it converges in a few steps).

Saved as ``NAME.json`` (+ ``NAME.displacement.npy`` when non-rigid), both plain data: loading
runs no code. The JSON records both files' fingerprints; :meth:`SlideTransform.verify` refuses other files.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..slides.base import BACKGROUND_VALUE, Slide
from .errors import RegistrationError, TransformMismatchError
from .hashing import file_digest

FORMAT = "napari-virtual-ihc/slide-transform"
VERSION = 1
#: Fixed-point steps inverting ``x + d(x)``; the residual is reported when it is not reached.
INVERSE_STEPS = 30
UNITS = ("um", "px")
#: Nodes of the largest displacement grid accepted (registration writes grids of tens of nodes a side).
MAX_DISPLACEMENT_NODES = 4096 * 4096


@dataclass(frozen=True)
class SlideRecord:
    """Which file a side of the transform belongs to, and its geometry."""

    name: str
    digest: str | None  # None for an in-memory image (nothing to check against)
    dimensions: tuple[int, int]
    unit_per_px: tuple[float, float]

    @classmethod
    def of(cls, slide: Slide, unit_per_px: tuple[float, float]) -> SlideRecord:
        path = slide.path
        return cls(
            path.name if path else "(in memory)",
            file_digest(path) if path is not None and Path(path).exists() else None,
            tuple(int(v) for v in slide.dimensions),  # type: ignore[arg-type]
            (float(unit_per_px[0]), float(unit_per_px[1])),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "dimensions": list(self.dimensions),
            "unit_per_px": list(self.unit_per_px),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SlideRecord:
        rec = cls(
            str(d["name"]),
            None if d.get("digest") is None else str(d["digest"]),
            (int(d["dimensions"][0]), int(d["dimensions"][1])),
            (float(d["unit_per_px"][0]), float(d["unit_per_px"][1])),
        )
        if min(rec.dimensions) < 1 or not all(math.isfinite(u) and u > 0 for u in rec.unit_per_px):
            raise ValueError("dimensions must be >= 1 px and unit_per_px finite and > 0")
        return rec


@dataclass
class Displacement:
    """``d(x)`` on a regular grid over the fixed slide: ``field[i, j] = (dx, dy)`` at physical
    ``origin + (j, i) * spacing``; linear between nodes, constant beyond the edge."""

    field: np.ndarray  # (gh, gw, 2) float32
    origin: tuple[float, float]
    spacing: tuple[float, float]

    def at(self, xy: np.ndarray) -> np.ndarray:
        cols = (xy[:, 0] - self.origin[0]) / self.spacing[0]
        rows = (xy[:, 1] - self.origin[1]) / self.spacing[1]
        coords = np.stack([rows, cols])
        return np.stack(
            [ndi.map_coordinates(self.field[..., k], coords, order=1, mode="nearest") for k in (0, 1)], axis=1
        )


def _apply(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ m[:2, :2].T + m[:2, 2]


@dataclass
class SlideTransform:
    matrix: np.ndarray  # (3, 3) fixed physical -> moving physical
    fixed: SlideRecord
    moving: SlideRecord
    displacement: Displacement | None = None
    units: str = "px"  # "um" or "px"
    converged: bool = True
    quality: dict[str, float] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # --- geometry -------------------------------------------------------------------------------
    @property
    def is_linear(self) -> bool:
        return self.displacement is None

    def linear_px(self) -> np.ndarray:
        """The affine part as fixed level-0 px -> moving level-0 px (3 x 3, (x, y))."""
        uf, um = self.fixed.unit_per_px, self.moving.unit_per_px
        return np.diag([1 / um[0], 1 / um[1], 1.0]) @ self.matrix @ np.diag([uf[0], uf[1], 1.0])

    def scale(self) -> float:
        """Moving level-0 px per fixed level-0 px (area-averaged): how much finer the moving scan is."""
        return float(math.sqrt(abs(np.linalg.det(self.linear_px()[:2, :2]))))

    def fixed_to_moving(self, xy: np.ndarray) -> np.ndarray:
        """(n, 2) fixed level-0 (x, y) px -> moving level-0 px."""
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2) * self.fixed.unit_per_px
        if self.displacement is not None:
            pts = pts + self.displacement.at(pts)
        return _apply(self.matrix, pts) / self.moving.unit_per_px

    def moving_to_fixed(self, xy: np.ndarray) -> np.ndarray:
        """(n, 2) moving level-0 (x, y) px -> fixed level-0 px (the inverse of :meth:`fixed_to_moving`)."""
        pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2) * self.moving.unit_per_px
        y = _apply(np.linalg.inv(self.matrix), pts)
        x = y.copy()
        if self.displacement is not None:
            for _ in range(INVERSE_STEPS):
                x_new = y - self.displacement.at(x)
                done = float(np.abs(x_new - x).max(initial=0.0)) < 1e-3 * min(self.fixed.unit_per_px)
                x = x_new
                if done:
                    break
        return x / self.fixed.unit_per_px

    def fixed_grid(self, region: tuple[int, int, int, int], downsample: float) -> np.ndarray:
        """Level-0 fixed (x, y) of the pixel centres of ``region`` sampled every ``downsample`` px:
        (h, w, 2) with h, w = ceil(region size / downsample)."""
        x0, y0, w, h = region
        ow, oh = max(1, math.ceil(w / downsample)), max(1, math.ceil(h / downsample))
        xs = x0 + (np.arange(ow) + 0.5) * downsample - 0.5
        ys = y0 + (np.arange(oh) + 0.5) * downsample - 0.5
        gx, gy = np.meshgrid(xs, ys)
        return np.stack([gx, gy], axis=-1)

    def resample(
        self, moving: Slide, region: tuple[int, int, int, int], downsample: float = 1.0
    ) -> np.ndarray:
        """The moving slide seen through the transform: RGB uint8 over fixed ``region`` (level-0 x, y, w, h)
        at ``downsample`` fixed px per output px. Only the moving area under it is read, from the pyramid
        level matching the output resolution, so no level is ever loaded whole."""
        grid = self.fixed_grid(region, downsample)
        oh, ow = grid.shape[:2]
        src = self.fixed_to_moving(grid.reshape(-1, 2))
        finite = np.isfinite(src).all(axis=1)
        out = np.full((oh * ow, 3), BACKGROUND_VALUE, dtype=np.uint8)
        W, H = moving.dimensions
        inside = finite & (src[:, 0] > -1) & (src[:, 1] > -1) & (src[:, 0] < W) & (src[:, 1] < H)
        if inside.any():
            pts = src[inside]
            level = moving.best_level_for_downsample(max(downsample * self.scale(), 1.0))
            lds = float(moving.level_downsamples[level])
            lx = (pts[:, 0] + 0.5) / lds - 0.5
            ly = (pts[:, 1] + 0.5) / lds - 0.5
            bx0, by0 = math.floor(lx.min()) - 2, math.floor(ly.min()) - 2
            bx1, by1 = math.ceil(lx.max()) + 3, math.ceil(ly.max()) + 3
            patch = moving.read_region(
                (round(bx0 * lds), round(by0 * lds)), level, (bx1 - bx0, by1 - by0)
            ).astype(np.float32)
            ratio = downsample * self.scale() / lds  # source px per output px: blur before sampling
            if ratio > 1.5:
                patch = ndi.gaussian_filter(patch, (0.5 * (ratio - 1), 0.5 * (ratio - 1), 0))
            coords = np.stack([ly - by0, lx - bx0])
            for c in range(3):
                vals = ndi.map_coordinates(patch[..., c], coords, order=1, mode="nearest")
                out[inside, c] = np.clip(np.rint(vals), 0, 255).astype(np.uint8)
        return out.reshape(oh, ow, 3)

    # --- files ------------------------------------------------------------------------------------
    def verify(
        self, fixed_path: str | os.PathLike[str] | None, moving_path: str | os.PathLike[str] | None
    ) -> None:
        """Raise :class:`TransformMismatchError` unless both files are the ones this transform was made for."""
        for side, rec, path in (("fixed", self.fixed, fixed_path), ("moving", self.moving, moving_path)):
            if rec.digest is None or path is None:
                continue
            got = file_digest(path)
            if got != rec.digest:
                raise TransformMismatchError(
                    f"{path}: this is not the {side} file the transform was made for ({rec.name}, "
                    f"{rec.digest[:23]}..., this file {got[:23]}...): the file changed or is another "
                    "slide; register again"
                )

    def as_dict(self, displacement_file: str = "transform.displacement.npy") -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "direction": "fixed physical -> moving physical: moving = M @ (x + d(x))",
            "units": self.units,
            "matrix": np.asarray(self.matrix, float).tolist(),
            "fixed": self.fixed.as_dict(),
            "moving": self.moving.as_dict(),
            "converged": bool(self.converged),
            "quality": {k: float(v) for k, v in self.quality.items()},
            "stages": list(self.stages),
            "notes": list(self.notes),
            "displacement": None,
        }
        if self.displacement is not None:
            d["displacement"] = {
                "file": displacement_file,
                "shape": list(self.displacement.field.shape),
                "origin": list(self.displacement.origin),
                "spacing": list(self.displacement.spacing),
            }
        return d

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (the JSON) and, when non-rigid, the displacement array beside it."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        disp_file = p.with_suffix(".displacement.npy").name
        if self.displacement is not None:
            np.save(p.parent / disp_file, self.displacement.field.astype(np.float32), allow_pickle=False)
        p.write_text(json.dumps(self.as_dict(disp_file), indent=2))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SlideTransform:
        """Read a saved transform (plain JSON + a NumPy array without pickles; no code runs). Every field
        is checked, so a damaged or hand-edited file is a message naming the field, not a KeyError."""
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise RegistrationError(f"{p}: not a readable transform file ({e})") from e
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise RegistrationError(f"{p}: not a napari-virtual-ihc slide transform")
        field_name = "version"
        try:
            if int(d.get("version", 0)) > VERSION:
                raise RegistrationError(
                    f"{p}: transform format version {d['version']} is newer than this plugin"
                )
            field_name = "matrix"
            matrix = np.asarray(d["matrix"], dtype=np.float64)
            if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
                raise RegistrationError(f"{p}: the matrix is not a finite 3 x 3 array")
            if not np.allclose(matrix[2], (0.0, 0.0, 1.0), rtol=0, atol=1e-9):
                raise RegistrationError(
                    f"{p}: the matrix's last row is {matrix[2].tolist()}, not [0, 0, 1]: an affine map is "
                    "expected, not a projective one"
                )
            field_name = "units"
            units = d.get("units", "px")
            if units not in UNITS:
                raise RegistrationError(f"{p}: units must be one of {', '.join(UNITS)}, not {units!r}")
            field_name = "converged"
            converged = d.get("converged", False)
            if not isinstance(converged, bool):
                raise RegistrationError(f"{p}: converged must be true or false, not {converged!r}")
            field_name = "quality"
            quality = {str(k): float(v) for k, v in dict(d.get("quality", {})).items()}
            field_name = "fixed"
            fixed = SlideRecord.from_dict(d["fixed"])
            field_name = "moving"
            moving = SlideRecord.from_dict(d["moving"])
            field_name = "displacement"
            disp = _load_displacement(p, d["displacement"]) if d.get("displacement") else None
            field_name = "stages"
            stages = [str(v) for v in d.get("stages", [])]
            field_name = "notes"
            notes = [str(v) for v in d.get("notes", [])]
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            if isinstance(e, RegistrationError):
                raise
            raise RegistrationError(f"{p}: the field {field_name!r} is missing or malformed ({e!r})") from e
        return cls(
            matrix=matrix,
            fixed=fixed,
            moving=moving,
            displacement=disp,
            units=units,
            converged=converged,
            quality=quality,
            stages=stages,
            notes=notes,
        )


def _load_displacement(p: Path, dd: dict[str, Any]) -> Displacement:
    """The displacement grid beside ``p``, its .npy header checked against the JSON, a cap and the file's
    size before any array is allocated (a 200 B file may claim 149 GiB)."""
    name = str(dd["file"])
    if Path(name).name != name:
        raise RegistrationError(f"{p}: the displacement file must sit beside the JSON, not {name!r}")
    shape = tuple(int(v) for v in dd["shape"])
    if len(shape) != 3 or shape[2] != 2 or min(shape) < 1:
        raise RegistrationError(f"{p}: the displacement shape must be (rows, columns, 2), not {list(shape)}")
    if shape[0] * shape[1] > MAX_DISPLACEMENT_NODES:
        raise RegistrationError(
            f"{p}: the displacement grid of {shape[0]} x {shape[1]} nodes is larger than the "
            f"{MAX_DISPLACEMENT_NODES} nodes a registration writes: a damaged or foreign file"
        )
    origin = (float(dd["origin"][0]), float(dd["origin"][1]))
    spacing = (float(dd["spacing"][0]), float(dd["spacing"][1]))
    if not all(math.isfinite(v) for v in origin) or not all(math.isfinite(v) and v > 0 for v in spacing):
        raise RegistrationError(f"{p}: the displacement origin and spacing must be finite (spacing > 0)")
    npy = p.parent / name
    try:
        with npy.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                header = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                header = np.lib.format.read_array_header_2_0(fh)
            else:
                raise ValueError(f".npy format version {version} is not one np.save writes for this")
            data_bytes = npy.stat().st_size - fh.tell()
    except (OSError, ValueError) as e:
        raise RegistrationError(f"{p}: the displacement file {name} is unreadable ({e})") from e
    file_shape, fortran, dtype = header
    if tuple(file_shape) != shape or fortran or dtype not in (np.float32, np.float64):
        raise RegistrationError(
            f"{p}: the displacement array in {name} ({list(file_shape)}, {dtype}) does not match its "
            f"description ({list(shape)}, float)"
        )
    if data_bytes < math.prod(shape) * dtype.itemsize:
        raise RegistrationError(f"{p}: the displacement file {name} is truncated")
    try:
        field = np.load(npy, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RegistrationError(f"{p}: the displacement file {name} is unreadable ({e})") from e
    if not np.isfinite(field).all():
        raise RegistrationError(f"{p}: the displacement file {name} holds NaN or infinity")
    return Displacement(field.astype(np.float32, copy=False), origin, spacing)


def load_transform(
    path: str | os.PathLike[str],
    fixed_path: str | os.PathLike[str] | None,
    moving_path: str | os.PathLike[str] | None,
) -> SlideTransform:
    """:meth:`SlideTransform.load` then :meth:`SlideTransform.verify`: refused for other files."""
    t = SlideTransform.load(path)
    t.verify(fixed_path, moving_path)
    return t


def transform_path_for(fixed: str | os.PathLike[str], moving: str | os.PathLike[str]) -> Path:
    """Where the napari action keeps a pair's transform: a folder next to the moving slide."""
    m, f = Path(moving), Path(fixed)
    return m.parent / f"{m.stem}.registered-to.{f.stem}" / "transform.json"
