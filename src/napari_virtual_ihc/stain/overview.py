"""One low-resolution read of the analysed area: white point, stain vectors, tissue and (where it resolves them)
the nucleus cuts come from it, read once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..inference.tissue import rect_has_tissue, tissue_mask
from ..slides.base import Slide

OVERVIEW_PX = 2048  # the overview's longer side, at most (a pyramid level near it)
GIANT_CROP_PX = 4096  # a single-level area larger than this squared is read as a central crop this size


@dataclass(frozen=True)
class Overview:
    """RGB of an area at ``downsample`` level-0 px per pixel; ``whole``: it covers the whole area (else it is a
    central level-0 crop of a single-level giant, which says nothing of the rest)."""

    rgb: np.ndarray
    downsample: float
    whole: bool

    def mpp(self, level0_mpp: float) -> float:
        return level0_mpp * self.downsample

    @cached_property
    def tissue(self) -> np.ndarray | None:
        """Tissue (not glass) per overview pixel (``inference.tissue.tissue_mask``, computed once); None for a crop."""
        return tissue_mask(self.rgb) if self.whole else None


def read_overview(slide: Slide, bounds: tuple[int, int, int, int]) -> Overview:
    """The area (level-0 x, y, w, h) at <= ~``OVERVIEW_PX`` px a side: a pyramid level, or a central crop."""
    bx, by, bw, bh = bounds
    level = slide.best_level_for_downsample(max(bw, bh) / OVERVIEW_PX)
    f = slide.level_downsamples[level]
    w, h = max(int(bw / f), 1), max(int(bh / f), 1)
    if w * h > GIANT_CROP_PX * GIANT_CROP_PX:  # single-level giant: a central crop is representative enough
        cw, ch = min(bw, GIANT_CROP_PX), min(bh, GIANT_CROP_PX)
        rgb = slide.read_region((bx + (bw - cw) // 2, by + (bh - ch) // 2), 0, (cw, ch))
        return Overview(rgb, 1.0, whole=False)
    return Overview(slide.read_region((bx, by), level, (w, h)), bw / w, whole=True)


def glass_only(tissue: np.ndarray | None, downsample: float, rect: tuple[int, int, int, int]) -> bool:
    """Whether ``rect`` (x, y, w, h level-0 px from the area's origin) holds no tissue (False when unknown)."""
    return tissue is not None and not rect_has_tissue(tissue, downsample, rect)
