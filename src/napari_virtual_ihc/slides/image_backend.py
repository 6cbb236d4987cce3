"""PNG and JPEG files: decoded once into memory (they are small), no physical pixel size (mpp None)."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np

from ._pixels import make_policy
from .base import ArraySlide
from .errors import CorruptSlideError, UnsupportedImageError

#: Above this many pixels a PNG/JPEG is refused before it is decoded into memory (use a pyramidal TIFF):
#: 100 MP is 300 MB of RGB, so a small but highly compressible file cannot take gigabytes.
MAX_IN_MEMORY_PIXELS = 100_000_000


class ImageSlide(ArraySlide):
    """A plain PNG/JPEG image as a one-level slide (converted to RGB uint8 by the shared policy)."""

    def __init__(self, path: Path, kind: str) -> None:
        data = path.read_bytes()
        width, height = header_size(data, kind, path)  # before decoding: a header may claim 10^12 px
        if width * height > MAX_IN_MEMORY_PIXELS:
            raise UnsupportedImageError(
                f"{path}: {width} x {height} px is too large for a plain {kind.upper()} (limit "
                f"{MAX_IN_MEMORY_PIXELS / 1e6:.0f} MP); convert it to a tiled pyramidal TIFF"
            )
        palette = kind == "png" and len(data) > 25 and data[25] == 3  # IHDR colour type 3 = indexed
        try:
            raw = imagecodecs.png_decode(data) if kind == "png" else imagecodecs.jpeg8_decode(data)
        except Exception as e:
            raise CorruptSlideError(
                f"{path}: cannot decode this {kind.upper()} file, it is truncated or corrupt "
                f"({type(e).__name__}: {e})"
            ) from e
        raw = np.asarray(raw)
        if raw.size == 0 or raw.ndim not in (2, 3):
            raise CorruptSlideError(f"{path}: the {kind.upper()} holds no image (shape {raw.shape})")
        if raw.shape[0] * raw.shape[1] > MAX_IN_MEMORY_PIXELS:
            raise UnsupportedImageError(
                f"{path}: {raw.shape[1]} x {raw.shape[0]} px is too large for a plain {kind.upper()}; "
                "convert it to a tiled pyramidal TIFF"
            )
        if kind == "jpeg" and raw.ndim == 3 and raw.shape[2] == 4:  # CMYK JPEG: let Pillow convert it
            raw = _cmyk_jpeg_to_rgb(path)
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        policy = make_policy(path, raw.dtype, channels, sample=raw)
        if palette:
            import warnings

            from ._pixels import SlideConversionWarning

            warnings.warn(
                f"{path}: palette (indexed colour) image converted to RGB",
                SlideConversionWarning,
                stacklevel=2,
            )
        rgb = policy.apply(raw)
        super().__init__(rgb, mpp=None, path=path, vendor=kind)

    @property
    def closed(self) -> bool:
        return False


def _cmyk_jpeg_to_rgb(path: Path) -> np.ndarray:
    import warnings

    from PIL import Image

    from ._pixels import SlideConversionWarning

    warnings.warn(f"{path}: CMYK JPEG converted to RGB", SlideConversionWarning, stacklevel=3)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): they carry the image size.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def header_size(data: bytes, kind: str, path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR or a JPEG's SOF segment, read without decoding any pixel."""
    if kind == "png":
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise CorruptSlideError(f"{path}: PNG without an IHDR header (truncated or corrupt)")
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    else:
        width, height = _jpeg_sof_size(data, path)
    if width <= 0 or height <= 0:
        raise CorruptSlideError(f"{path}: the {kind.upper()} header claims {width} x {height} px")
    return width, height


def _jpeg_sof_size(data: bytes, path: Path) -> tuple[int, int]:
    pos = 2  # after SOI
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise CorruptSlideError(f"{path}: corrupt JPEG (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _SOF_MARKERS:
            if pos + 9 > len(data):
                break
            height = int.from_bytes(data[pos + 5 : pos + 7], "big")
            width = int.from_bytes(data[pos + 7 : pos + 9], "big")
            return width, height
        if length < 2:
            break
        pos += 2 + length
    raise CorruptSlideError(f"{path}: JPEG without a frame header (truncated or corrupt)")
