"""The tile pass's pipeline against its bound: decode threads ahead of the model, a writer behind it.

A slide whose every read sleeps ``--decode`` seconds (as a JPEG 2000 tile decode would, GIL released) and a
model whose every batch sleeps ``--compute`` seconds (as a GPU would, the CPU free) run through the real engine
into a real store. With ``W`` decode threads the pipeline should reach min(W / decode, 1 / compute) tiles/s;
one decode thread reading one batch ahead (the engine before the pipeline) reaches at best
1 / max(decode, compute), and a fully serial loop 1 / (decode + compute). Printed: each case's tiles/s, the
bound and their ratio (the issue's goal: within 10 %), in one run.

    python benchmarks/bench_pipeline.py                       # default cases, ~1 minute
    python benchmarks/bench_pipeline.py --decode 0.05 --compute 0.02 --workers 4 --tiles 120
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_virtual_ihc.inference import EngineSettings, TileProgress, iter_stain_slide
from napari_virtual_ihc.models import ModelSpec
from napari_virtual_ihc.models.spec import LoadedGenerator
from napari_virtual_ihc.slides.base import ArraySlide

TILE = 64


class SlowSlide(ArraySlide):
    """Every read sleeps ``decode_s`` (time.sleep releases the GIL, as OpenSlide's and tifffile's decoders do)."""

    def __init__(self, rgb: np.ndarray, decode_s: float) -> None:
        super().__init__(rgb, mpp=0.5)
        self.decode_s = decode_s

    def read_region(self, location, level, size):  # type: ignore[no-untyped-def]
        time.sleep(self.decode_s)
        return super().read_region(location, level, size)


class SlowIdentity(nn.Module):
    """The identity after ``compute_s`` of sleep per batch: a GPU's compute, during which the CPU is free."""

    def __init__(self, compute_s: float) -> None:
        super().__init__()
        self.compute_s = compute_s
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.compute_s)
        return x * self.scale


def tiles_per_second(decode_s: float, compute_s: float, tiles: int, workers: int, read_ahead: int) -> float:
    side = int(np.ceil(np.sqrt(tiles))) * TILE
    rgb = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    spec = ModelSpec("resnet", {"ngf": 4, "n_blocks": 1, "norm": "none"}, mpp=0.5, name="slow-identity")
    model = LoadedGenerator(module=SlowIdentity(compute_s), spec=spec, source="bench", sha256="slow-identity")
    settings = EngineSettings(
        tile=TILE,
        halo=0,
        batch=1,
        device="cpu",
        precision="fp32",
        winograd=False,
        skip_background=False,
        calibration_min_mp=1e9,
        workers=workers,
        read_ahead=read_ahead,
    )
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        run = iter_stain_slide(SlowSlide(rgb, decode_s), model, Path(tmp) / "s.ome.zarr", settings)
        t0 = None
        while True:
            try:
                event = next(run)
            except StopIteration:
                break
            if isinstance(event, TileProgress):
                if t0 is None:
                    t0 = time.perf_counter()  # the compute choice made: the tile pass starts
                stamps.append(time.perf_counter())
    assert t0 is not None
    n = len(stamps) - 1  # the first event is the empty one before the tile pass
    return n / (stamps[-1] - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--decode", type=float, nargs="*", default=[0.06, 0.1], help="s per tile decode")
    ap.add_argument("--compute", type=float, nargs="*", default=[0.03, 0.02], help="s per batch compute")
    ap.add_argument("--workers", type=int, nargs="*", default=[4, 2], help="decode threads")
    ap.add_argument("--tiles", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(
        f"{'decode s':>8} {'compute s':>9} {'W':>2} | {'1 ahead':>8} {'pipeline':>8} {'bound':>7} {'ratio':>6}"
    )
    for decode_s, compute_s, workers in zip(args.decode, args.compute, args.workers, strict=True):
        old = tiles_per_second(decode_s, compute_s, args.tiles, workers=1, read_ahead=1)
        new = tiles_per_second(decode_s, compute_s, args.tiles, workers=workers, read_ahead=2 * workers)
        bound = min(workers / decode_s, 1 / compute_s)
        print(
            f"{decode_s:>8.3f} {compute_s:>9.3f} {workers:>2} | {old:>8.2f} {new:>8.2f} {bound:>7.2f} "
            f"{new / bound:>6.2f}   (tiles/s; serial would be {1 / (decode_s + compute_s):.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
