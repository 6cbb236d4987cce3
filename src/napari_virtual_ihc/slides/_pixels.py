"""Turn whatever pixels a file holds into the RGB uint8 every consumer expects (or refuse, clearly).

Policy (documented in docs/slides.md):
- grayscale and palette images are converted to RGB, with a warning;
- RGBA is composited on white (the colour of blank glass);
- 16-bit (or float) images are rescaled to 8-bit over a range fixed once per slide, with a warning;
- more than 4 channels, or 2 channels, cannot be H&E/IHC brightfield: ``UnsupportedImageError``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import BACKGROUND_VALUE
from .errors import CorruptSlideError, UnsupportedImageError


class SlideConversionWarning(UserWarning):
    """The slide's pixels were converted to RGB uint8 (grayscale, palette, alpha or high bit depth)."""


@dataclass(frozen=True)
class PixelPolicy:
    """How one slide's raw samples map to RGB uint8; fixed at open time so every tile agrees."""

    channels: int  # 1 (gray), 3 (RGB) or 4 (RGBA) samples per pixel in the raw data
    low: float = 0.0  # raw value mapped to 0
    high: float = 255.0  # raw value mapped to 255
    palette: np.ndarray | None = None  # (n, 3) uint8 lookup table for palette images

    @property
    def is_identity(self) -> bool:
        return self.channels == 3 and self.palette is None and self.low == 0.0 and self.high == 255.0

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """(h, w[, c]) raw samples -> (h, w, 3) uint8."""
        if self.palette is not None:
            idx = raw if raw.ndim == 2 else raw[..., 0]
            return self.palette[np.clip(idx, 0, len(self.palette) - 1).astype(np.intp)]
        a = raw
        if self.low != 0.0 or self.high != 255.0 or a.dtype != np.uint8:
            span = max(self.high - self.low, 1e-12)
            a = np.clip((a.astype(np.float32) - self.low) * (255.0 / span), 0, 255)
            a = np.rint(a).astype(np.uint8)
        if a.ndim == 2:
            a = a[..., None]
        if a.shape[-1] == 1:
            return np.repeat(a, 3, axis=-1)
        if a.shape[-1] == 2:  # gray + alpha
            gray, alpha = a[..., :1].astype(np.float32), a[..., 1:2].astype(np.float32) / 255.0
            rgb = gray * alpha + 255.0 * (1.0 - alpha)
            return np.repeat(np.rint(rgb).astype(np.uint8), 3, axis=-1)
        if a.shape[-1] == 4:
            rgb, alpha = a[..., :3].astype(np.float32), a[..., 3:4].astype(np.float32) / 255.0
            return np.rint(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        return np.ascontiguousarray(a[..., :3])


def make_policy(
    path: object,
    dtype: np.dtype,
    channels: int,
    sample: np.ndarray | None = None,
    palette: np.ndarray | None = None,
    has_alpha: bool | None = None,
) -> PixelPolicy:
    """Decide the conversion for a slide; ``sample`` (a small level or the whole image) fixes 16-bit ranges.

    ``channels`` counts samples per pixel including alpha. Warns once for every lossy or colour conversion.
    """
    dtype = np.dtype(dtype)
    if channels > 4 or channels < 1:
        raise UnsupportedImageError(
            f"{path}: {channels} channels per pixel; only grayscale, RGB or RGBA brightfield images "
            "can be shown as H&E/IHC (fluorescence or multiplexed images are not supported)"
        )
    if has_alpha is None:
        has_alpha = channels in (2, 4)
    notes: list[str] = []
    if palette is not None:
        notes.append("palette (indexed colour) image converted to RGB")
        pal = np.asarray(palette)
        if pal.dtype != np.uint8:
            pal = (pal.astype(np.float64) * (255.0 / max(float(pal.max()), 1.0))).round().astype(np.uint8)
        return _warned(path, notes, PixelPolicy(channels=1, palette=pal[:, :3]))
    if channels in (1, 2):
        notes.append("grayscale image converted to RGB")
    if has_alpha:
        notes.append("alpha channel composited on white")
    low, high = 0.0, 255.0
    if dtype != np.uint8:
        if dtype.kind in "ui" and sample is None:
            low, high = 0.0, float(np.iinfo(dtype).max)
        elif sample is not None and sample.size:
            colour = sample[..., : (channels - 1 if has_alpha else channels)] if sample.ndim == 3 else sample
            low, high = float(np.min(colour)), float(np.max(colour))
            if high <= low:
                high = low + 1.0
        else:
            low, high = 0.0, 1.0
        notes.append(f"{dtype} samples rescaled to 8-bit (range {low:g}..{high:g} -> 0..255)")
    return _warned(path, notes, PixelPolicy(channels=channels, low=low, high=high))


def _warned(path: object, notes: list[str], policy: PixelPolicy) -> PixelPolicy:
    if notes:
        warnings.warn(f"{path}: " + "; ".join(notes), SlideConversionWarning, stacklevel=3)
    return policy


def paste(out: np.ndarray, tile: np.ndarray, x0: int, y0: int) -> None:
    """Copy ``tile`` (whose top-left is ``(x0, y0)`` in ``out``'s frame) into ``out``, clipped."""
    h, w = out.shape[:2]
    th, tw = tile.shape[:2]
    xs, ys = max(x0, 0), max(y0, 0)
    xe, ye = min(x0 + tw, w), min(y0 + th, h)
    if xe > xs and ye > ys:
        out[ys:ye, xs:xe] = tile[ys - y0 : ye - y0, xs - x0 : xe - x0]


def level_window(
    location: tuple[int, int], downsample: float, size: tuple[int, int], level_wh: tuple[int, int]
) -> tuple[int, int, int, int, int, int] | None:
    """Level-pixel window for a region: ``(x0, y0, xs, ys, xe, ye)`` or None when it misses the level.

    ``(x0, y0)`` is the region's top-left in level pixels; ``xs..xe, ys..ye`` the part inside the level.
    """
    x0 = int(np.floor(location[0] / downsample))
    y0 = int(np.floor(location[1] / downsample))
    w, h = size
    lw, lh = level_wh
    xs, ys = max(x0, 0), max(y0, 0)
    xe, ye = min(x0 + w, lw), min(y0 + h, lh)
    if xe <= xs or ye <= ys:
        return None
    return x0, y0, xs, ys, xe, ye


def read_window(
    location: tuple[int, int],
    downsample: float,
    size: tuple[int, int],
    level_wh: tuple[int, int],
    read_raw: Callable[[int, int, int, int], np.ndarray],
    policy: PixelPolicy,
) -> np.ndarray:
    """A region of one level as RGB uint8, white outside the level: shared by the raw-sample backends.

    ``read_raw(x, y, w, h)`` returns the raw samples of a window inside the level; ``policy`` makes them RGB.
    """
    w, h = int(size[0]), int(size[1])
    out = np.full((h, w, 3), BACKGROUND_VALUE, dtype=np.uint8)
    win = level_window(location, downsample, (w, h), level_wh)
    if win is None:
        return out
    x0, y0, xs, ys, xe, ye = win
    out[ys - y0 : ye - y0, xs - x0 : xe - x0] = policy.apply(read_raw(xs, ys, xe - xs, ye - ys))
    return out


def read_labelled_window(
    array: Any, axes: Sequence[str], channel_axis: str | None, x: int, y: int, w: int, h: int, where: str
) -> np.ndarray:
    """(h, w[, c]) samples of a window of an array whose axes are named (``"TCZYX"``, ``"YXS"``, any case):
    Y/X cropped, the channel axis kept whole, every other axis at index 0 (only the window's chunks are read).
    Read failures become CorruptSlideError naming ``where``."""
    names = [ax.upper() for ax in axes]
    channel = channel_axis.upper() if channel_axis else None
    index: list[Any] = []
    kept: list[str] = []
    for ax in names:
        if ax == "Y":
            index.append(slice(y, y + h))
        elif ax == "X":
            index.append(slice(x, x + w))
        elif ax == channel:
            index.append(slice(None))
        else:
            index.append(0)
            continue
        kept.append(ax)
    try:
        raw = np.asarray(array[tuple(index)])
    except Exception as e:
        raise CorruptSlideError(f"{where} at ({x}, {y}) failed ({type(e).__name__}: {e})") from e
    order = [kept.index("Y"), kept.index("X")] + ([kept.index(channel)] if channel in kept else [])
    return np.transpose(raw, order) if order != list(range(raw.ndim)) else raw
