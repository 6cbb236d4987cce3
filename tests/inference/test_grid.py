"""Tile geometry: cores tile the area exactly, windows stay inside the image and are stride-aligned."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_virtual_ihc.inference.grid import TileGrid


@settings(max_examples=150, deadline=None)
@given(
    w=st.integers(1, 2500),
    h=st.integers(1, 2500),
    tile=st.sampled_from([64, 100, 256, 512]),
    halo=st.sampled_from([0, 3, 40, 88]),
    align=st.sampled_from([1, 4, 8]),
    data=st.data(),
)
def test_cores_partition_bounds_and_windows_are_clamped(w, h, tile, halo, align, data):
    bx = data.draw(st.integers(0, w - 1))
    by = data.draw(st.integers(0, h - 1))
    bw = data.draw(st.integers(1, w - bx))
    bh = data.draw(st.integers(1, h - by))
    grid = TileGrid((w, h), (bx, by, bw, bh), tile, halo, align)
    cover = np.zeros((bh, bw), np.int32) if bw * bh <= 1_000_000 else None
    pw, ph = grid.padded_plane
    assert pw - w < align and ph - h < align
    for t in grid:
        cx, cy, cw, ch = t.core
        wx, wy, ww, wh = t.window
        assert (ww, wh) == grid.window_size  # one window shape: batches stack without padding
        assert wx >= 0 and wy >= 0 and wx + ww <= pw and wy + wh <= ph  # clamped, never beyond the image
        assert wx % align == 0 and wy % align == 0
        assert wx <= cx and wy <= cy and cx + cw <= wx + ww and cy + ch <= wy + wh
        if cover is not None:
            cover[cy - by : cy - by + ch, cx - bx : cx - bx + cw] += 1
    if cover is not None:
        assert (cover == 1).all()


def test_interior_core_is_centred_with_full_halo():
    grid = TileGrid((4000, 3000), (0, 0, 4000, 3000), 512, 88, 4)
    t = grid.tile_at(grid.cols + 1)
    cx, cy, _, _ = t.core_in_window
    assert (cx, cy) == (88, 88)
    # Border tiles: the window is shifted inward instead of padded outward.
    first = grid.tile_at(0)
    assert first.window[:2] == (0, 0) and first.core_in_window[:2] == (0, 0)
    last = grid.tile_at(len(grid) - 1)
    assert last.window[0] + last.window[2] == 4000 and last.window[1] + last.window[3] == 3000


def test_image_smaller_than_one_tile_is_one_window_of_the_image():
    grid = TileGrid((300, 200), (0, 0, 300, 200), 512, 88, 4)
    assert len(grid) == 1
    t = grid.tile_at(0)
    assert t.core == (0, 0, 300, 200) and t.window == (0, 0, 300, 200)


def test_tiles_intersecting_region():
    grid = TileGrid((1000, 1000), (0, 0, 1000, 1000), 256, 16, 1)
    assert grid.tiles_intersecting((0, 0, 10, 10)) == [0]
    assert grid.tiles_intersecting((250, 250, 10, 10)) == [0, 1, 4, 5]
    assert grid.tiles_intersecting((2000, 0, 5, 5)) == []


def test_invalid_bounds_raise():
    with pytest.raises(ValueError):
        TileGrid((100, 100), (90, 90, 20, 20), 64, 8)
