"""Memory stays flat exporting a big slide to OME-TIFF: peak RSS while writing a 20k x 20k (default) image.

The source is a procedural slide (tissue-like texture computed per region, every pyramid level), so the
figure is the exporter's own memory, not the source's. Not part of the test suite (about a minute).

    python benchmarks/bench_export.py [--size 20000] [--compression jpeg|deflate]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_virtual_ihc.export import write_ome_tiff
from napari_virtual_ihc.slides.base import Slide


class ProceduralSlide(Slide):
    """A ``size`` x ``size`` RGB slide whose pixels are a function of their level-0 coordinates."""

    def __init__(self, size: int) -> None:
        self._size = size

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        dims, s = [], self._size
        while True:
            dims.append((s, s))
            if s <= 512:
                return dims
            s = (s + 1) // 2

    @property
    def mpp(self) -> tuple[float, float] | None:
        return (0.5, 0.5)

    @property
    def vendor(self) -> str:
        return "procedural"

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        ds = self.level_downsamples[level]
        w, h = size
        ys = (location[1] + np.arange(h)[:, None] * ds) / 40.0
        xs = (location[0] + np.arange(w)[None, :] * ds) / 40.0
        wave = np.sin(xs) * np.cos(ys * 1.3) + 0.3 * np.sin(xs * 3.1 + ys * 2.7)
        base = (200 + 50 * wave).clip(0, 255)
        return np.stack([base, base * 0.8, base * 0.9], axis=-1).astype(np.uint8)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=20_000)
    ap.add_argument("--compression", choices=("jpeg", "deflate"), default="jpeg")
    args = ap.parse_args()
    slide = ProceduralSlide(args.size)
    slide.read_region((0, 0), 0, (512, 512))  # warm numpy/tifffile imports before the baseline
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "big.ome.tif"
        before = peak_rss_mb()
        t0 = time.perf_counter()
        write_ome_tiff(slide, out, compression=args.compression)
        seconds = time.perf_counter() - t0
        after = peak_rss_mb()
        result = {
            "size": [args.size, args.size],
            "compression": args.compression,
            "raw_rgb_mb": args.size * args.size * 3 / 2**20,
            "file_mb": round(out.stat().st_size / 2**20, 1),
            "levels": len(slide.level_dimensions),
            "peak_rss_before_mb": round(before, 1),
            "peak_rss_after_mb": round(after, 1),
            "peak_rss_delta_mb": round(after - before, 1),
            "seconds": round(seconds, 1),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
