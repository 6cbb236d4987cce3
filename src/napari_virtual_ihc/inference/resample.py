"""Reading a slide at the model's resolution: best pyramid level, anti-aliased resampling, aligned padding.

A model trained at 0.5 µm/px must see 0.5 µm/px tissue whatever the scan: the *working plane* is the slide
resampled so one plane pixel is ``downsample`` level-0 pixels. Sampling positions are global (they do not
depend on where a window starts), so overlapping windows agree on shared pixels and tiles equal a
whole-plane read.
"""

from __future__ import annotations

import math

import numpy as np

from ..ihc_store.writer import block_mean
from ..slides.base import Slide


def model_downsample(slide_mpp: tuple[float, float] | None, model_mpp: float | None) -> float:
    """Level-0 pixels per working pixel: model µm/px over slide µm/px (1.0 if either is unknown)."""
    if model_mpp is None or slide_mpp is None:
        return 1.0
    slide = (float(slide_mpp[0]) + float(slide_mpp[1])) / 2.0
    if slide <= 0 or model_mpp <= 0:
        return 1.0
    ds = float(model_mpp) / slide
    return 1.0 if abs(ds - 1.0) < 0.02 else ds  # within 2 %: scanners round their µm/px


class WorkingPlane:
    """The slide at ``downsample`` level-0 px per pixel, read window by window."""

    def __init__(self, slide: Slide, downsample: float = 1.0) -> None:
        self.slide = slide
        self.downsample = float(downsample)
        w0, h0 = slide.dimensions
        self.size = (max(1, round(w0 / self.downsample)), max(1, round(h0 / self.downsample)))
        self.level = slide.best_level_for_downsample(self.downsample) if self.downsample > 1 else 0
        self.level_downsample = float(slide.level_downsamples[self.level])
        self.factor = self.downsample / self.level_downsample  # level px per working px
        rounded = round(self.factor)
        self.integer_factor = rounded if rounded >= 1 and abs(self.factor - rounded) < 1e-3 else 0

    def read(self, rect: tuple[int, int, int, int]) -> np.ndarray:
        """RGB uint8 (h, w, 3) of plane pixels ``rect``; parts beyond the plane are mirrored (reflect)."""
        x, y, w, h = rect
        pw, ph = self.size
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, pw), min(y + h, ph)
        inner = self._read_inside(x0, y0, x1 - x0, y1 - y0)
        pad = ((y0 - y, y + h - y1), (x0 - x, x + w - x1), (0, 0))
        if any(p for pair in pad[:2] for p in pair):
            mode = "reflect" if min(inner.shape[:2]) > 1 else "edge"
            inner = np.pad(inner, pad, mode=mode)  # type: ignore[call-overload]
        return inner

    def _read_inside(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        if self.integer_factor == 1:
            return self._level_read(x, y, w, h)
        k = self.integer_factor
        if k > 1:
            return np.clip(
                np.rint(block_mean(self._level_read(x * k, y * k, w * k, h * k), k)), 0, 255
            ).astype(np.uint8)
        return self._read_general(x, y, w, h)

    def _level_read(self, lx: int, ly: int, lw: int, lh: int) -> np.ndarray:
        """Level pixels (lx, ly, lw, lh) of ``self.level``."""
        loc = (
            math.floor(lx * self.level_downsample + 1e-6),
            math.floor(ly * self.level_downsample + 1e-6),
        )
        return np.ascontiguousarray(self.slide.read_region(loc, self.level, (lw, lh))[..., :3])

    def _read_general(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Non-integer factor: Gaussian anti-aliasing then bilinear sampling at global positions."""
        from scipy import ndimage

        f = self.factor
        sigma = max(0.0, (f - 1.0) / 2.0)
        margin = math.ceil(3 * sigma) + 2
        lx0 = math.floor(x * f) - margin
        ly0 = math.floor(y * f) - margin
        lx1 = math.ceil((x + w) * f) + margin
        ly1 = math.ceil((y + h) * f) + margin
        src = self._level_read(lx0, ly0, lx1 - lx0, ly1 - ly0).astype(np.float32)
        if sigma > 0:
            src = ndimage.gaussian_filter(src, sigma=(sigma, sigma, 0), mode="nearest")
        cols = (np.arange(x, x + w, dtype=np.float64) + 0.5) * f - 0.5 - lx0
        rows = (np.arange(y, y + h, dtype=np.float64) + 0.5) * f - 0.5 - ly0
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        out = np.empty((h, w, 3), dtype=np.float32)
        for c in range(3):
            out[..., c] = ndimage.map_coordinates(src[..., c], [rr, cc], order=1, mode="nearest")
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def view_downsample(dimensions: tuple[int, int], max_size: int) -> int:
    """The whole-number level-0 downsample ``low_resolution_view`` reads a slide of ``dimensions`` at."""
    return max(1, math.ceil(max(dimensions) / max_size))


def low_resolution_view(slide: Slide, max_size: int = 2048) -> tuple[np.ndarray, float]:
    """The whole slide with its longest side <= ``max_size``, and its level-0 px per pixel.

    Read strip by strip from the best level, so memory stays bounded even for single-level gigapixel files
    (``Slide.thumbnail`` reads a whole level at once).
    """
    target = view_downsample(slide.dimensions, max_size)
    level = slide.best_level_for_downsample(target)
    lds = float(slide.level_downsamples[level])
    k = max(1, round(target / lds))
    ds = k * lds
    lw, lh = slide.level_dimensions[level]
    out_w, out_h = max(1, lw // k), max(1, lh // k)
    out = np.empty((out_h, out_w, 3), dtype=np.uint8)
    step = max(1, 1024 // k) * k  # level px per block side: ~1024^2 px read at a time, whatever the slide
    for ly in range(0, out_h * k, step):
        bh = min(step, out_h * k - ly)
        for lx in range(0, out_w * k, step):
            bw = min(step, out_w * k - lx)
            px = slide.read_region((int(lx * lds), int(ly * lds)), level, (bw, bh))[..., :3]
            if k > 1:
                px = np.clip(np.rint(block_mean(px, k)), 0, 255).astype(np.uint8)
            out[ly // k : ly // k + px.shape[0], lx // k : lx // k + px.shape[1]] = px
    return out, ds
