"""Subprocess for the kill -9 test: stains a real H&E image slowly (a sleep after every batch)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from engine_helpers import small_generator
from skimage.io import imread

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.slides.base import ArraySlide

# the tile pass (no pooled pass: that one writes every tile at its end), so a kill lands between tiles
SETTINGS = EngineSettings(tile=128, batch=2, skip_background=False, pooled_pass_mp=0.0)


def job_inputs(data_dir: Path):
    img = np.ascontiguousarray(imread(data_dir / "tiatoolbox-target-image.png")[:1000, :1000, :3])
    return ArraySlide([img, img[::4, ::4].copy()], 0.5), small_generator(
        "instance", ngf=4, n_blocks=2, seed=3
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    store, data_dir, delay = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    slide, model = job_inputs(data_dir)

    def slow(p):
        print(f"done {p.done}/{p.total}", flush=True)
        time.sleep(delay)

    stain_slide(slide, model, store, SETTINGS, progress=slow)
    print("finished", flush=True)
