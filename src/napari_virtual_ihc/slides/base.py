"""The slide contract every backend (OpenSlide, tifffile, plain images, OME-Zarr) fulfils.

Coordinates follow OpenSlide: ``(x, y)`` locations are in level-0 pixels, sizes are ``(width, height)``
in pixels of the requested level, and pixels come back as RGB ``uint8`` arrays of shape ``(h, w, 3)``.
Areas outside the slide read as white (255), the colour of blank glass.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BACKGROUND_VALUE = 255


class Slide(abc.ABC):
    """One open slide: a pyramid of RGB levels plus metadata."""

    path: Path | None = None

    # --- geometry -------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def level_dimensions(self) -> list[tuple[int, int]]:
        """``(width, height)`` of every level, level 0 first."""

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_downsamples(self) -> list[float]:
        w0, h0 = self.level_dimensions[0]
        return [((w0 / w) + (h0 / h)) / 2.0 for (w, h) in self.level_dimensions]

    def best_level_for_downsample(self, downsample: float) -> int:
        """Deepest level whose downsample does not exceed ``downsample`` (OpenSlide's rule)."""
        best = 0
        for i, ds in enumerate(self.level_downsamples):
            if ds <= downsample * (1 + 1e-6):
                best = i
        return best

    # --- metadata -------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def mpp(self) -> tuple[float, float] | None:
        """Micrometres per pixel at level 0 as ``(x, y)``, or ``None`` when the file does not say."""

    @property
    def vendor(self) -> str:
        return "unknown"

    @property
    def objective_power(self) -> float | None:
        return None

    @property
    def associated_names(self) -> list[str]:
        return []

    def associated_image(self, name: str) -> np.ndarray:
        raise KeyError(f"{name!r}: this slide has no associated image of that name")

    def properties(self) -> dict[str, Any]:
        """Vendor properties (string keys), for provenance."""
        return {}

    def metadata(self) -> dict[str, Any]:
        mpp = self.mpp
        return {
            "path": str(self.path) if self.path else None,
            "vendor": self.vendor,
            "mpp": list(mpp) if mpp else None,
            "mpp_known": mpp is not None,
            "objective_power": self.objective_power,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": self.level_downsamples,
            "associated_images": self.associated_names,
        }

    # --- pixels ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 ``(h, w, 3)``; ``location`` in level-0 pixels; outside the slide reads white."""

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """Whole slide, longest side at most ``max_size``, read from the smallest adequate level."""
        w0, h0 = self.dimensions
        target_ds = max(w0, h0) / max_size
        level = self.best_level_for_downsample(max(target_ds, 1.0))
        lw, lh = self.level_dimensions[level]
        img = self.read_region((0, 0), level, (lw, lh))
        scale = min(1.0, max_size / max(lw, lh))
        if scale < 1.0:
            from skimage.transform import resize

            out_h, out_w = max(1, math.floor(lh * scale)), max(1, math.floor(lw * scale))
            img = (resize(img, (out_h, out_w), order=1, anti_aliasing=True, preserve_range=True)).astype(
                np.uint8
            )
        return img

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release file handles; reading afterwards is an error."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Slide:
        """A slide is a shared file handle: copies of layer metadata refer to the same open slide."""
        return self

    def __copy__(self) -> Slide:
        return self

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArraySlide(Slide):
    """An in-memory RGB image (or a list of pyramid levels) behaving as a slide."""

    def __init__(
        self,
        levels: np.ndarray | Sequence[np.ndarray],
        mpp: float | tuple[float, float] | None = None,
        path: Path | None = None,
        vendor: str = "array",
    ) -> None:
        if isinstance(levels, np.ndarray):
            levels = [levels]
        self._levels = [self._check(a) for a in levels]
        if mpp is not None and not isinstance(mpp, tuple):
            mpp = (float(mpp), float(mpp))
        self._mpp = mpp
        self.path = path
        self._vendor = vendor

    @staticmethod
    def _check(a: np.ndarray) -> np.ndarray:
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ValueError(f"ArraySlide needs RGB uint8 (h, w, 3) levels, got {a.dtype} {a.shape}")
        return a

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [(a.shape[1], a.shape[0]) for a in self._levels]

    @property
    def mpp(self) -> tuple[float, float] | None:
        return self._mpp

    @property
    def vendor(self) -> str:
        return self._vendor

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        arr = self._levels[level]
        ds = self.level_downsamples[level]
        x0 = math.floor(location[0] / ds)
        y0 = math.floor(location[1] / ds)
        w, h = size
        out = np.full((h, w, 3), BACKGROUND_VALUE, dtype=np.uint8)
        H, W = arr.shape[:2]
        xs, ys = max(x0, 0), max(y0, 0)
        xe, ye = min(x0 + w, W), min(y0 + h, H)
        if xe > xs and ye > ys:
            out[ys - y0 : ye - y0, xs - x0 : xe - x0] = arr[ys:ye, xs:xe]
        return out
