"""Issue 29 item 6: a small TIFF whose one compressed strip (or tile) decodes to gigabytes is refused at
open, before any pixel is decoded, in little memory; ordinary strips and tiles still open."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.slides._integrity import MAX_CHUNK_BYTES
from napari_virtual_ihc.slides.errors import SlideError

from .limited import run_capped


def one_strip_claiming(path: Path, side: int, tiled: bool = False) -> Path:
    """A real deflate TIFF of one 256 px strip (or tile) patched to claim one ``side``^2 strip (or tile)."""
    a = np.full((256, 256, 3), 200, np.uint8)
    layout = {"tile": (256, 256)} if tiled else {"rowsperstrip": 256}
    tifffile.imwrite(path, a, photometric="rgb", compression="zlib", **layout)
    b = bytearray(path.read_bytes())
    off = struct.unpack("<I", b[4:8])[0]
    for i in range(struct.unpack("<H", b[off : off + 2])[0]):
        e = off + 2 + 12 * i
        tag = struct.unpack("<H", b[e : e + 2])[0]
        if tag in (256, 257, 278, 322, 323):  # width, length, rows per strip, tile width, tile length
            b[e + 2 : e + 4] = struct.pack("<H", 4)  # LONG
            b[e + 8 : e + 12] = struct.pack("<I", side)
    path.write_bytes(bytes(b))
    return path


@pytest.mark.parametrize("tiled", [False, True], ids=["strip", "tile"])
def test_a_strip_that_decodes_to_gigabytes_is_refused(tmp_path: Path, tiled: bool) -> None:
    path = one_strip_claiming(tmp_path / "bomb.tif", 16000, tiled)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(SlideError, match="decodes to") as info:
        open_slide(path)
    assert str(path) in str(info.value) and "MiB" in str(info.value)


def test_the_refusal_costs_no_memory(tmp_path: Path) -> None:
    path = one_strip_claiming(tmp_path / "bomb.tif", 16000)
    res = run_capped(
        f"""
from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.slides.errors import SlideError
try:
    s = open_slide({str(path)!r})
    s.read_region((0, 0), 0, (64, 64))
    print("OPENED")
except SlideError as e:
    print("REFUSED", e)
"""
    )
    assert "REFUSED" in res.stdout, res.stdout + res.stderr[-2000:]
    assert res.peak_rss_mb is not None and res.peak_rss_mb < 1024


def test_a_big_uncompressed_strip_and_ordinary_strips_still_open(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (600, 500, 3), dtype=np.uint8)
    for kwargs in ({"rowsperstrip": 600}, {"rowsperstrip": 16}, {"tile": (256, 256)}):
        path = tmp_path / f"ok-{len(str(kwargs))}.tif"
        tifffile.imwrite(path, img, photometric="rgb", compression="zlib", **kwargs)
        with open_slide(path) as s:
            assert np.array_equal(s.read_region((0, 0), 0, (500, 600)), img)
    assert MAX_CHUNK_BYTES > 600 * 500 * 3
