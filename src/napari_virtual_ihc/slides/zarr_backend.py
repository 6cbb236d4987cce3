"""OME-Zarr (NGFF 0.4) image stores, e.g. the virtual-IHC stores the inference engine writes.

The engine's layout (see ``ihc_store``): arrays ``"0"``, ``"1"``, ... of shape ``(3, H, W)``
uint8 (axes c, y, x), each dataset's ``coordinateTransformations`` scale giving µm/px, and provenance in
the ``virtual_ihc`` attribute (``level0_downsample`` places the store over its source slide). Other
NGFF images with axes such as (t, c, z, y, x) are accepted when they reduce to one RGB(A)/gray plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..ihc_store.naming import PROVENANCE_KEY
from ._counting_store import CountingStore
from ._pixels import PixelPolicy, make_policy, read_labelled_window, read_window
from .base import Slide
from .errors import CorruptSlideError, SlideError, UnsupportedFormatError, UnsupportedImageError

_UNIT_TO_UM = {"nanometer": 1e-3, "micrometer": 1.0, "millimeter": 1e3, "centimeter": 1e4, "meter": 1e6}


class ZarrSlide(Slide):
    """An NGFF multiscale image read chunk by chunk; unwritten chunks read as the store's fill (white)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            root = zarr.open_group(str(path), mode="r")
            attrs: dict[str, Any] = dict(root.attrs)
        except Exception as e:
            raise CorruptSlideError(f"{path}: not a readable zarr group ({type(e).__name__}: {e})") from e
        ms: Any = attrs.get("multiscales") or (attrs.get("ome", {}) or {}).get("multiscales")
        if not ms:
            raise UnsupportedFormatError(f"{path}: zarr group without OME-NGFF 'multiscales' metadata")
        self._attrs = attrs
        try:
            first: dict[str, Any] = ms[0]
            axes = [a["name"] if isinstance(a, dict) else str(a) for a in first.get("axes", [])]
            datasets: list[dict[str, Any]] = first["datasets"]
            self._arrays: list[Any] = []
            self._stores: list[CountingStore] = []
            for d in datasets:
                store = CountingStore(zarr.storage.LocalStore(str(path / d["path"]), read_only=True))
                self._stores.append(store)
                self._arrays.append(zarr.open_array(store, mode="r"))
        except (KeyError, IndexError, TypeError) as e:
            raise CorruptSlideError(f"{path}: malformed OME-NGFF multiscales metadata ({e})") from e
        except Exception as e:
            raise CorruptSlideError(f"{path}: cannot open a pyramid level ({type(e).__name__}: {e})") from e
        if not axes:
            axes = ["c", "y", "x"][-self._arrays[0].ndim :] if self._arrays[0].ndim <= 3 else []
        if len(axes) != self._arrays[0].ndim or "y" not in axes or "x" not in axes:
            raise CorruptSlideError(f"{path}: axes {axes} do not match array shape {self._arrays[0].shape}")
        self._axes = axes
        shape0 = dict(zip(axes, self._arrays[0].shape, strict=True))
        channels = int(shape0.get("c", 1))
        if channels > 4 or channels == 2:
            raise UnsupportedImageError(
                f"{path}: {channels} channels; only RGB(A) or grayscale brightfield images can be shown"
            )
        self._dims = [
            (int(dict(zip(axes, a.shape, strict=True))["x"]), int(dict(zip(axes, a.shape, strict=True))["y"]))
            for a in self._arrays
        ]
        dtype = np.dtype(self._arrays[0].dtype)
        sample = None
        if dtype != np.uint8:
            w, h = self._dims[-1]
            sample = self._read_raw(len(self._dims) - 1, 0, 0, w, h) if w * h <= 4_000_000 else None
        self._policy: PixelPolicy = make_policy(path, dtype, channels, sample=sample)
        self._mpp = _mpp_from(first, datasets, axes)
        self._open = True
        chunks = dict(zip(axes, self._arrays[0].chunks, strict=True))
        self.tile_size: tuple[int, int] | None = (int(chunks["x"]), int(chunks["y"]))

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return self._dims

    @property
    def mpp(self) -> tuple[float, float] | None:
        return self._mpp

    @property
    def vendor(self) -> str:
        return "ome-zarr"

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self._attrs.get(PROVENANCE_KEY, {}) or {})

    @property
    def level0_downsample(self) -> float:
        """Source-slide level-0 pixels per store level-0 pixel (1.0 for native-resolution stores)."""
        try:
            return float(self.provenance.get("level0_downsample", 1.0))
        except (TypeError, ValueError):
            return 1.0

    def properties(self) -> dict[str, Any]:
        return {PROVENANCE_KEY: self.provenance} if self.provenance else {}

    def metadata(self) -> dict[str, Any]:
        md = super().metadata()
        md["level0_downsample"] = self.level0_downsample
        md[PROVENANCE_KEY] = self.provenance
        md["tile_size"] = list(self.tile_size) if self.tile_size else None
        return md

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        if not self._open:
            raise SlideError(f"{self.path}: slide is closed")
        return read_window(
            location,
            self.level_downsamples[level],
            size,
            self._dims[level],
            lambda x, y, w, h: self._read_raw(level, x, y, w, h),
            self._policy,
        )

    def _read_raw(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        channel = "c" if "c" in self._axes else None
        return read_labelled_window(
            self._arrays[level],
            self._axes,
            channel,
            x,
            y,
            w,
            h,
            f"{self.path}: reading level {level}",
        )

    @property
    def tiles_read(self) -> int:
        return sum(s.chunks_read for s in self._stores)

    def close(self) -> None:
        self._open = False

    @property
    def closed(self) -> bool:
        return not self._open


def _mpp_from(
    ms: dict[str, Any], datasets: list[dict[str, Any]], axes: list[str]
) -> tuple[float, float] | None:
    """µm/px of level 0 from its scale transform, when the y/x axes carry a length unit."""
    axes_meta = ms.get("axes", [])
    units = {a.get("name"): a.get("unit") for a in axes_meta if isinstance(a, dict)}
    fy, fx = _UNIT_TO_UM.get(units.get("y") or ""), _UNIT_TO_UM.get(units.get("x") or "")
    if fy is None or fx is None:
        return None
    scale = None
    for t in datasets[0].get("coordinateTransformations", []) or []:
        if t.get("type") == "scale":
            scale = t.get("scale")
    if not scale or len(scale) != len(axes):
        return None
    sy, sx = float(scale[axes.index("y")]), float(scale[axes.index("x")])
    if sy <= 0 or sx <= 0:
        return None
    return (sx * fx, sy * fy)
