"""The one box type every layer of the package shares, and the one central crop that probes read."""

from __future__ import annotations

# A box in level-0 pixels of the source slide: (x, y, width, height).
Box = tuple[int, int, int, int]


def central_crop(shape: tuple[int, ...], side: int) -> tuple[slice, slice]:
    """Row and column slices of the central ``side`` x ``side`` square of an array of ``shape`` (all of an axis
    shorter than ``side``): what a probe reads to bound its cost."""
    h, w = shape[:2]
    y0, x0 = max((h - side) // 2, 0), max((w - side) // 2, 0)
    return slice(y0, y0 + side), slice(x0, x0 + side)
