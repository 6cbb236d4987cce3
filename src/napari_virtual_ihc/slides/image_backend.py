"""PNG and JPEG files: decoded once into memory (they are small), no physical pixel size (mpp None)."""

from __future__ import annotations

from pathlib import Path

import imagecodecs
import numpy as np

from ._pixels import make_policy
from .base import ArraySlide
from .errors import CorruptSlideError, UnsupportedImageError

#: Above this many pixels a PNG/JPEG is refused rather than decoded into memory (use a pyramidal TIFF).
MAX_IN_MEMORY_PIXELS = 400_000_000


class ImageSlide(ArraySlide):
    """A plain PNG/JPEG image as a one-level slide (converted to RGB uint8 by the shared policy)."""

    def __init__(self, path: Path, kind: str) -> None:
        data = path.read_bytes()
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
