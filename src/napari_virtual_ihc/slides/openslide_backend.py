"""Vendor whole-slide formats (Aperio, Hamamatsu, MIRAX, Leica, Ventana, ...) through OpenSlide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import openslide

from .base import BACKGROUND_VALUE, Slide
from .errors import CorruptSlideError, SlideError


def _rgba_to_rgb_on_white(rgba: np.ndarray) -> np.ndarray:
    """OpenSlide returns premultiplied-then-unpremultiplied RGBA with alpha 0 outside the slide."""
    rgb = rgba[..., :3].astype(np.float32)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.rint(rgb * alpha + BACKGROUND_VALUE * (1.0 - alpha)).astype(np.uint8)


class OpenSlideSlide(Slide):
    """An OpenSlide handle behind the Slide contract; OpenSlide errors become ``CorruptSlideError``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._osr: openslide.OpenSlide | None = openslide.OpenSlide(str(path))
        except openslide.OpenSlideUnsupportedFormatError as e:
            raise CorruptSlideError(f"{path}: OpenSlide does not recognise this file as a slide ({e})") from e
        except openslide.OpenSlideError as e:
            raise CorruptSlideError(f"{path}: OpenSlide could not open the slide: {e}") from e
        props = self._osr.properties
        self._props: dict[str, Any] = dict(props)
        self._dims = [(int(w), int(h)) for (w, h) in self._osr.level_dimensions]
        self._downsamples = [float(d) for d in self._osr.level_downsamples]
        self._assoc = list(self._osr.associated_images.keys())
        try:
            tw = int(props["openslide.level[0].tile-width"])
            th = int(props["openslide.level[0].tile-height"])
            self.tile_size: tuple[int, int] | None = (tw, th)
        except (KeyError, ValueError):
            self.tile_size = None

    @property
    def _handle(self) -> openslide.OpenSlide:
        if self._osr is None:
            raise SlideError(f"{self.path}: slide is closed")
        return self._osr

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return self._dims

    @property
    def level_downsamples(self) -> list[float]:
        return self._downsamples

    @property
    def mpp(self) -> tuple[float, float] | None:
        try:
            mx = float(self._props[openslide.PROPERTY_NAME_MPP_X])
            my = float(self._props[openslide.PROPERTY_NAME_MPP_Y])
        except (KeyError, ValueError):
            return None
        if mx <= 0 or my <= 0:
            return None
        return (mx, my)

    @property
    def vendor(self) -> str:
        return str(self._props.get(openslide.PROPERTY_NAME_VENDOR, "unknown"))

    @property
    def objective_power(self) -> float | None:
        try:
            return float(self._props[openslide.PROPERTY_NAME_OBJECTIVE_POWER])
        except (KeyError, ValueError):
            return None

    @property
    def associated_names(self) -> list[str]:
        return list(self._assoc)

    def associated_image(self, name: str) -> np.ndarray:
        if name not in self._assoc:
            raise KeyError(f"{name!r}: {self.path} has associated images {self._assoc}")
        img = self._handle.associated_images[name]
        return np.asarray(img.convert("RGB"), dtype=np.uint8)

    def properties(self) -> dict[str, Any]:
        return dict(self._props)

    def metadata(self) -> dict[str, Any]:
        md = super().metadata()
        md["tile_size"] = list(self.tile_size) if self.tile_size else None
        return md

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        w, h = int(size[0]), int(size[1])
        if w <= 0 or h <= 0:
            return np.full((max(h, 0), max(w, 0), 3), BACKGROUND_VALUE, dtype=np.uint8)
        try:
            img = self._handle.read_region((int(location[0]), int(location[1])), int(level), (w, h))
        except openslide.OpenSlideError as e:
            raise CorruptSlideError(f"{self.path}: reading level {level} at {location} failed: {e}") from e
        return _rgba_to_rgb_on_white(np.asarray(img, dtype=np.uint8))

    def close(self) -> None:
        if self._osr is not None:
            self._osr.close()
            self._osr = None

    @property
    def closed(self) -> bool:
        return self._osr is None
