"""Read a case image (whole file or slide region) and re-encode it the one canonical way.

Every image of a bundle is written as an 8-bit RGB PNG with no ancillary chunks (no text, time, ICC,
gamma or physical-size chunks), stored without compression (zlib level 0) so that the file's byte size
depends only on width and height (a compressed size would tell smooth generated images from real
ones), and with a constant file time: neither the bytes' format nor the file system tells a real IHC
from a virtual one.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np

from .cases import ImageSource
from .errors import CaseTableError

#: Every bundle file gets this modification time (2000-01-01T00:00:00Z).
FIXED_MTIME = 946_684_800
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS_WITHOUT_REGION = 8192 * 8192


def read_source(source: ImageSource) -> np.ndarray:
    """RGB uint8 pixels of a source image or slide region, read through ``slides.open_slide``."""
    from napari_virtual_ihc.slides import SlideError, open_slide

    try:
        with open_slide(source.path) as slide:
            if source.region is not None:
                x, y, w, h = source.region
                return np.ascontiguousarray(slide.read_region((x, y), 0, (w, h)))
            w, h = slide.dimensions
            if w * h > MAX_PIXELS_WITHOUT_REGION:
                raise CaseTableError(
                    f"{source.path.name} is {w}x{h} px: give a region (x, y, w, h) to show in the study"
                )
            return np.ascontiguousarray(slide.read_region((0, 0), 0, (w, h)))
    except (SlideError, OSError, ValueError) as exc:
        raise CaseTableError(f"cannot read {source.path}: {exc}") from exc


def fit_to_size(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample to exactly ``size`` = (width, height); untouched when already that size."""
    w, h = size
    if rgb.shape[1] == w and rgb.shape[0] == h:
        return rgb
    from skimage.transform import resize

    out = resize(rgb, (h, w, 3), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def encode_png(rgb: np.ndarray) -> bytes:
    """Canonical PNG bytes: 8-bit RGB, IHDR + IDAT + IEND only, uncompressed (size = f(width, height))."""
    from PIL import Image

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected RGB uint8 (h, w, 3), got {rgb.dtype} {rgb.shape}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").save(buf, format="PNG", compress_level=0)
    data = buf.getvalue()
    chunks = {c for c, _ in png_chunks(data)}
    if chunks - {b"IHDR", b"IDAT", b"IEND"}:
        raise RuntimeError(f"PNG writer added chunks {sorted(chunks)}: refusing to leak metadata")
    return data


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, payload) of every chunk, to audit what a PNG carries."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    pos, out = len(PNG_SIGNATURE), []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        out.append((ctype, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def decode_png(path: Path) -> np.ndarray:
    """Pixels of a bundle image, loaded into memory (the viewer never sees the file path)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def write_fixed_time(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.utime(path, (FIXED_MTIME, FIXED_MTIME))
