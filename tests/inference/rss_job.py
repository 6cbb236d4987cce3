"""Subprocess for the memory test: stain a lazily generated square slide and print the peak RSS (KiB)."""

from __future__ import annotations

import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from engine_helpers import small_generator
from skimage.io import imread

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.slides.base import Slide

BLOCK = 1024


class SyntheticSlide(Slide):
    """A ``side`` x ``side`` slide generated on demand (level 0 and a x8 level, like a scanner's pyramid):
    glass, with real H&E in one 1024 px block of ~64."""

    def __init__(self, side: int, he: np.ndarray) -> None:
        self.side = side
        small = he.reshape(BLOCK // 8, 8, BLOCK // 8, 8, 3).mean(axis=(1, 3)).round().astype(np.uint8)
        self.he = [he, small]

    @property
    def level_dimensions(self):
        return [(self.side, self.side), (self.side // 8, self.side // 8)]

    @property
    def mpp(self):
        return (0.5, 0.5)

    def read_region(self, location, level, size):
        ds = 8 if level else 1
        block, side, he = BLOCK // ds, self.side // ds, self.he[level]
        x, y = location[0] // ds, location[1] // ds
        w, h = size
        out = np.full((h, w, 3), 255, np.uint8)
        for by in range(max(0, y // block), min(side, y + h - 1) // block + 1):
            for bx in range(max(0, x // block), min(side, x + w - 1) // block + 1):
                if (bx * 7 + by * 3) % 64 != 0:
                    continue
                x0, y0 = max(x, bx * block), max(y, by * block)
                x1 = min(x + w, (bx + 1) * block, side)
                y1 = min(y + h, (by + 1) * block, side)
                if x1 <= x0 or y1 <= y0:
                    continue
                hy, hx = (y0 - by * block), (x0 - bx * block)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = he[hy : hy + y1 - y0, hx : hx + x1 - x0]
        return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    side, data_dir = int(sys.argv[1]), Path(sys.argv[2])
    he = imread(data_dir / "tiatoolbox-target-image.png")[..., :3]
    he = np.ascontiguousarray(
        np.pad(he, ((0, BLOCK - he.shape[0]), (0, BLOCK - he.shape[1]), (0, 0)), mode="reflect")
    )
    model = small_generator("none", ngf=2, n_blocks=0)
    with tempfile.TemporaryDirectory() as d:
        rep = stain_slide(
            SyntheticSlide(side, he), model, Path(d) / "s.ome.zarr", EngineSettings(tile=1024, batch=1)
        )
    print(
        rep.tiles_total,
        rep.tiles_done,
        rep.tiles_skipped,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        flush=True,
    )
