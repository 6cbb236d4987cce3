"""Pure tile geometry: written cores, halo'd read windows clamped inside the image.

Everything here is in pixels of one image plane (the engine uses the model's resolution). No I/O, no torch,
so the stain/nuclei overlays can reuse it for any tiled whole-slide analysis.

Why clamp instead of pad: a network pads every layer itself (reflect/zero). A window that ends at the image
border therefore sees exactly what a whole-image pass sees there, while a window padded beyond the image
sees invented pixels. Shifting border windows inward keeps tiles equal to the whole-image pass (measured
~90 dB vs ~32 dB with padding on a ResNet-9).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# (x, y, width, height) in pixels of the gridded plane.
Rect = tuple[int, int, int, int]


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return int(math.ceil(value / multiple) * multiple)


@dataclass(frozen=True)
class GridTile:
    """One tile: the core it writes and the (larger) window it reads, both in plane pixels."""

    index: int
    row: int
    col: int
    core: Rect
    window: Rect

    @property
    def core_in_window(self) -> Rect:
        """The core's position inside the window (x, y, w, h): where to crop the model's output."""
        cx, cy, cw, ch = self.core
        wx, wy, _, _ = self.window
        return (cx - wx, cy - wy, cw, ch)


@dataclass(frozen=True)
class TileGrid:
    """A grid of ``tile`` px cores covering ``bounds``, each read with ``halo`` px of context.

    ``bounds`` is the area to write (a region or the whole plane); ``plane`` is (width, height) of the
    readable image: windows may reach outside ``bounds`` for context but never outside the plane (they are
    shifted inward instead). ``align`` makes window origins and sizes multiples of the network's total
    stride so strided convolutions sample the same pixels as a whole-image pass; the plane is then treated
    as extended to a multiple of ``align`` (the reader pads those < ``align`` px by reflection).
    """

    plane: tuple[int, int]
    bounds: Rect
    tile: int
    halo: int
    align: int = 1

    def __post_init__(self) -> None:
        pw, ph = self.plane
        bx, by, bw, bh = self.bounds
        if pw <= 0 or ph <= 0:
            raise ValueError(f"empty image plane {self.plane}")
        if self.tile <= 0 or self.halo < 0 or self.align <= 0:
            raise ValueError(f"invalid tile={self.tile} halo={self.halo} align={self.align}")
        if bw <= 0 or bh <= 0 or bx < 0 or by < 0 or bx + bw > pw or by + bh > ph:
            raise ValueError(f"bounds {self.bounds} are empty or outside the image {self.plane}")

    # --- geometry -----------------------------------------------------------------------------------
    @property
    def padded_plane(self) -> tuple[int, int]:
        """The plane extended to a multiple of ``align`` (what windows are clamped into)."""
        return (round_up(self.plane[0], self.align), round_up(self.plane[1], self.align))

    @property
    def window_size(self) -> tuple[int, int]:
        """(width, height) of every window: core + 2 halo, aligned, at most the padded plane."""
        pw, ph = self.padded_plane
        aligned = self.bounds[0] % self.align == 0 and self.bounds[1] % self.align == 0
        slack = 0 if aligned and self.tile % self.align == 0 else self.align  # room for unaligned cores
        side = round_up(self.tile + 2 * self.halo + slack, self.align)
        return (min(side, pw), min(side, ph))

    @property
    def cols(self) -> int:
        return math.ceil(self.bounds[2] / self.tile)

    @property
    def rows(self) -> int:
        return math.ceil(self.bounds[3] / self.tile)

    def __len__(self) -> int:
        return self.rows * self.cols

    def _axis_window(self, core_start: int, core_len: int, win: int, plane: int) -> int:
        """Window origin on one axis: centred on the core, aligned, shifted inward at the borders."""
        centred = core_start - (win - core_len) // 2
        start = (centred // self.align) * self.align
        start = min(max(start, 0), plane - win)
        # The core must lie inside the window (true whenever win >= core_len + alignment slack).
        if core_start < start:
            start = (core_start // self.align) * self.align
        if core_start + core_len > start + win:
            start = round_up(core_start + core_len - win, self.align)
        return start

    def tile_at(self, index: int) -> GridTile:
        if not 0 <= index < len(self):
            raise IndexError(index)
        row, col = divmod(index, self.cols)
        bx, by, bw, bh = self.bounds
        cx, cy = bx + col * self.tile, by + row * self.tile
        cw, ch = min(self.tile, bx + bw - cx), min(self.tile, by + bh - cy)
        ww, wh = self.window_size
        pw, ph = self.padded_plane
        wx = self._axis_window(cx, cw, ww, pw)
        wy = self._axis_window(cy, ch, wh, ph)
        return GridTile(index, row, col, (cx, cy, cw, ch), (wx, wy, ww, wh))

    def __iter__(self) -> Iterator[GridTile]:
        for i in range(len(self)):
            yield self.tile_at(i)

    def tiles_intersecting(self, rect: Rect) -> list[int]:
        """Indices of tiles whose core intersects ``rect`` (row-major order)."""
        x, y, w, h = rect
        bx, by, bw, bh = self.bounds
        x0, y0 = max(x, bx), max(y, by)
        x1, y1 = min(x + w, bx + bw), min(y + h, by + bh)
        if x1 <= x0 or y1 <= y0:
            return []
        c0, c1 = (x0 - bx) // self.tile, (x1 - 1 - bx) // self.tile
        r0, r1 = (y0 - by) // self.tile, (y1 - 1 - by) // self.tile
        return [r * self.cols + c for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]


def sample_windows(
    plane: tuple[int, int], tiles: list[GridTile], count: int, core: int, halo: int, align: int = 1
) -> list[GridTile]:
    """``count`` windows with ``core`` px cores (plus ``halo``), spread evenly in 2D over the cores of ``tiles``.

    Slide statistics need pixels from all over the slide, not whole large tiles: with batch-sized tiles
    (2048 px) a handful of sampled tiles would cost as much as staining them. All windows have one size.
    The places follow a 2D low-discrepancy sequence (R2) over the tiles' extent, each taking the nearest
    unused window of the tiles' sub-grids: evenly spread over the tissue, never clustered at tile corners
    (taking the first, middle and last window of each tile did that, and at a slide's corners lies glass).
    """
    cands: list[GridTile] = []
    for t in tiles:
        sub = TileGrid(plane, t.core, core, halo, align)
        cands += list(sub)
    if count >= len(cands):
        return cands
    centres = np.array([(c.core[0] + c.core[2] / 2, c.core[1] + c.core[3] / 2) for c in cands])
    lo, hi = centres.min(0), centres.max(0)
    g = 1.32471795724474602596  # the plastic number: R2's generator
    used = np.zeros(len(cands), dtype=bool)
    picks: list[int] = []
    for i in range(count):
        u = np.array([(0.5 + i / g) % 1.0, (0.5 + i / g**2) % 1.0])
        d = ((centres - (lo + u * (hi - lo))) ** 2).sum(1)
        d[used] = np.inf
        k = int(np.argmin(d))
        used[k] = True
        picks.append(k)
    return [cands[k] for k in sorted(picks)]
