"""Turn a ``Slide`` into napari layer data: lazy dask levels read tile by tile (no napari import here)."""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import dask.array as da
import numpy as np

from ..ihc_store.naming import display_stem
from .base import Slide

DEFAULT_CHUNK = 512


class MissingMppWarning(UserWarning):
    """The slide does not record its pixel size; the layer is shown in pixels (scale 1)."""


class _LevelReader:
    """Array-like view of one pyramid level, (y, x, 3) uint8, whose slices call ``slide.read_region``.

    dask asks for one chunk at a time, so only the tiles under the requested chunks are decoded.
    """

    def __init__(self, slide: Slide, level: int) -> None:
        self.slide = slide
        self.level = level
        w, h = slide.level_dimensions[level]
        self.shape = (h, w, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self._ds = slide.level_downsamples[level]

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        ys, xs = key[0], key[1]
        y0, y1, _ = ys.indices(self.shape[0])
        x0, x1, _ = xs.indices(self.shape[1])
        loc = (round(x0 * self._ds), round(y0 * self._ds))
        region = self.slide.read_region(loc, self.level, (max(x1 - x0, 0), max(y1 - y0, 0)))
        return region[(slice(None), slice(None), *key[2:])] if len(key) > 2 else region


def chunk_size_for(slide: Slide) -> int:
    """The native tile size when it is a sensible dask chunk (256..2048 px), else 512."""
    tile = getattr(slide, "tile_size", None)
    if tile:
        t = int(max(tile))
        if 256 <= t <= 2048:
            return t
    return DEFAULT_CHUNK


def slide_levels(slide: Slide, chunk: int | None = None) -> list[da.Array]:
    """One lazy dask array (y, x, 3) uint8 per level; nothing is read until a chunk is computed."""
    c = chunk or chunk_size_for(slide)
    # unique per call: napari's opportunistic dask cache is keyed by task name, and id() is reused
    token = uuid.uuid4().hex
    levels = []
    for lvl in range(slide.level_count):
        reader = _LevelReader(slide, lvl)
        levels.append(
            da.from_array(
                reader,
                chunks=(c, c, 3),
                name=f"slide-{token}-level{lvl}",
                asarray=False,
                fancy=False,
                lock=False,
                meta=np.empty((0, 0, 0), dtype=np.uint8),
            )
        )
    return levels


def slide_layer_data(slide: Slide, name: str | None = None) -> tuple[Any, dict[str, Any], str]:
    """``(data, kwargs, "image")`` for napari: a multiscale RGB image in micrometres.

    ``data`` is the list of dask levels (always a list, ``multiscale=True``: napari then reads only the
    tiles in view, even for a one-level slide). ``metadata`` holds ``slide.metadata()`` plus the Slide
    itself under ``"slide"`` so widgets can read regions at full quality and the reader can close it.
    A slide without a pixel size gets scale 1 (pixels) and a ``MissingMppWarning`` napari shows.
    """
    levels = slide_levels(slide)
    md = dict(slide.metadata())
    mpp = slide.mpp
    if mpp is None:
        where = slide.path.name if slide.path else "this image"
        warnings.warn(
            f"{where}: the file does not record its pixel size (µm/px); showing it in pixels (scale 1). "
            "Measurements and model resolution matching need a known pixel size.",
            MissingMppWarning,
            stacklevel=2,
        )
        scale = (1.0, 1.0)
        units: tuple[str, str] = ("pixel", "pixel")
    else:
        scale = (float(mpp[1]), float(mpp[0]))
        units = ("um", "um")
    md["mpp_known"] = mpp is not None
    md["slide"] = slide
    if name is None:
        name = _layer_name(slide)
    kwargs: dict[str, Any] = {
        "name": name,
        "multiscale": True,
        "rgb": True,
        "scale": scale,
        "units": units,
        "contrast_limits": (0, 255),
        "metadata": md,
    }
    return levels, kwargs, "image"


def _layer_name(slide: Slide) -> str:
    return display_stem(slide.path) if slide.path is not None else "slide"
