"""The moving slide resampled into the fixed frame as lazy dask pyramid levels (no napari here).

For a non-rigid transform no single affine places the moving slide; each chunk napari asks for is read
through :meth:`SlideTransform.resample` (only the moving area under that chunk, from the matching level).
"""

from __future__ import annotations

import math
import uuid

import dask.array as da
import numpy as np

from ..slides.base import Slide
from .transform import SlideTransform


class _ResampledLevel:
    """Array-like (h, w, 3) uint8 view of the registered moving slide at ``downsample`` fixed px per px."""

    def __init__(self, transform: SlideTransform, moving: Slide, downsample: float) -> None:
        self.transform, self.moving, self.downsample = transform, moving, float(downsample)
        w0, h0 = transform.fixed.dimensions
        self.shape = (max(1, math.ceil(h0 / downsample)), max(1, math.ceil(w0 / downsample)), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        y0, y1, _ = key[0].indices(self.shape[0])
        x0, x1, _ = key[1].indices(self.shape[1])
        ds = self.downsample
        region = (round(x0 * ds), round(y0 * ds), round((x1 - x0) * ds), round((y1 - y0) * ds))
        px = self.transform.resample(self.moving, region, ds)[: y1 - y0, : x1 - x0]
        return px[(slice(None), slice(None), *key[2:])] if len(key) > 2 else px


def resampled_levels(
    transform: SlideTransform, moving: Slide, chunk: int = 512, min_side: int = 512
) -> list[da.Array]:
    """Levels at downsample 1, 2, 4, ... (down to ``min_side`` px) over the whole fixed slide."""
    token = uuid.uuid4().hex
    w0, h0 = transform.fixed.dimensions
    levels = []
    ds = 1
    while True:
        reader = _ResampledLevel(transform, moving, ds)
        levels.append(
            da.from_array(
                reader,
                chunks=(chunk, chunk, 3),
                name=f"registered-{token}-ds{ds}",
                asarray=False,
                fancy=False,
                lock=False,
                meta=np.empty((0, 0, 0), dtype=np.uint8),
            )
        )
        if max(w0, h0) / (2 * ds) < min_side:
            return levels
        ds *= 2
