"""Where an analysis calibrates its nucleus cuts: pixels that resolve nuclei.

The overview (``overview.read_overview``, <= ~2048 px a side) resolves nuclei on a region, but on a whole slide
it is a coarse pyramid level: a 7 µm nucleus is under a pixel at 16 µm/px, so the blob detector's contrast cut,
nuclear-class level and size probe, and the DAB compartment probe, would read blur. There, the nuclei are read on
a mosaic of level-0 windows (the pixels the tiles are read at), each the most tissue-filled in its quarter of the
tissue, so one analysis cuts a whole slide the way it cuts a region of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..nuclei.blobs import RESOLVED_DIAMETER_PX
from ..slides.base import Slide
from .overview import Overview

SAMPLE_WINDOW_PX = 1024  # side of each level-0 window; four make a 2048 px mosaic, the overview's size cap
FULL_SHARE = 0.98  # windows within this share of the best tissue fill count as equally full (then: central)


@dataclass(frozen=True)
class NucleiSample:
    """RGB on which nuclei are calibrated, its µm/px, the level-0 windows it came from (empty: the overview)."""

    rgb: np.ndarray
    mpp: float
    windows: tuple[tuple[int, int, int, int], ...] = ()
    note: str = ""


def resolves_nuclei(diameter_um: float, mpp: float) -> bool:
    """Whether pixels of ``mpp`` µm resolve nuclei of ``diameter_um`` (as the blob calibration needs)."""
    return diameter_um / mpp >= RESOLVED_DIAMETER_PX


def nuclei_sample(
    slide: Slide,
    bounds: tuple[int, int, int, int],
    overview: Overview,
    mpp: float,
    diameter_um: float,
) -> NucleiSample:
    """The overview when it resolves nuclei, else a 2 x 2 mosaic of level-0 windows from the area's tissue
    (:func:`tissue_windows`). ``mpp``: level 0's µm/px; ``bounds``: the analysed area (level-0 x, y, w, h)."""
    bx, by, bw, bh = bounds
    ov_mpp = overview.mpp(mpp)
    tissue = None if resolves_nuclei(diameter_um, ov_mpp) else overview.tissue
    if tissue is None or not resolves_nuclei(diameter_um, mpp):
        # the overview resolves nuclei; or it is a crop; or level 0 does not resolve them either
        return NucleiSample(overview.rgb, ov_mpp)
    side_x, side_y = min(SAMPLE_WINDOW_PX, bw), min(SAMPLE_WINDOW_PX, bh)
    corners = tissue_windows(tissue, overview.downsample, (side_x, side_y), (bw, bh))
    windows = tuple((bx + x, by + y, side_x, side_y) for x, y in corners)
    tiles = [slide.read_region((x, y), 0, (w, h))[..., :3] for x, y, w, h in windows]
    mosaic = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    note = (
        f"nuclei calibrated on {len(windows)} level-0 windows of {side_x} x {side_y} px (the overview at "
        f"{ov_mpp:.1f} µm/px does not resolve {diameter_um:g} µm nuclei)"
    )
    return NucleiSample(np.ascontiguousarray(mosaic), mpp, windows, note)


def tissue_windows(
    mask: np.ndarray, scale: float, side: tuple[int, int], area: tuple[int, int]
) -> list[tuple[int, int]]:
    """Top-left corners (level-0 px from the area's origin) of four ``side`` (w, h) windows inside ``area``
    (w, h): in each quarter of the tissue's bounding box, the window fullest of tissue, the one nearest that
    quarter's tissue centre among those within ``FULL_SHARE`` of the fullest. ``mask``: tissue at ``scale``
    level-0 px per mask px (no tissue: the whole mask counts)."""
    if not mask.any():
        mask = np.ones_like(mask, bool)
    mh, mw = mask.shape
    kw = int(np.clip(round(side[0] / scale), 1, mw))
    kh = int(np.clip(round(side[1] / scale), 1, mh))
    integral = np.pad(mask.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    fill = (integral[kh:, kw:] - integral[:-kh, kw:] - integral[kh:, :-kw] + integral[:-kh, :-kw]) / (
        kh * kw
    )  # fill[y, x]: tissue share of the window whose top-left mask pixel is (y, x)
    ys, xs = np.nonzero(mask)
    mid_y, mid_x = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    cy, cx = np.mgrid[0 : fill.shape[0], 0 : fill.shape[1]]
    cy, cx = cy + kh / 2, cx + kw / 2  # window centres, mask px
    corners = []
    for top in (True, False):
        for left in (True, False):
            quarter = ((cy < mid_y) == top) & ((cx < mid_x) == left)
            inside = ((ys + 0.5 < mid_y) == top) & ((xs + 0.5 < mid_x) == left)
            if not quarter.any():  # a window wider than half the tissue: its centre is on one side only
                quarter = np.ones_like(quarter)
            if not inside.any():
                inside = np.ones_like(inside)
            best = fill[quarter].max()
            full = quarter & (fill >= FULL_SHARE * best)
            dist = (cy - ys[inside].mean()) ** 2 + (cx - xs[inside].mean()) ** 2
            y, x = np.unravel_index(np.argmin(np.where(full, dist, np.inf)), fill.shape)
            corners.append(
                (
                    int(np.clip(round(x * scale), 0, area[0] - side[0])),
                    int(np.clip(round(y * scale), 0, area[1] - side[1])),
                )
            )
    return corners
