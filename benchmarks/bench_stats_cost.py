"""What the slide-statistics pass costs as a share of a whole-slide job (issue 34 item 5).

One engine run (``stain_slide``) of a seeded InstanceNorm (or slide-mode BatchNorm) ResNet-9 on a real H&E
region of the TCGA slide in tests/data, mirrored to the job's size when larger than the slide (as
``bench_engine.py`` builds its 4096 px job). The pooled pass is off (``pooled_pass_mp=0``) so the job takes
the sampled path a slide too large for one pass takes. ``run.json``'s figures are printed: the pass's
``stats_seconds`` as a share of the job's seconds ("gross"), and net of the tiles it produced (their outputs
are written, not run again: each is charged at the tile pass's measured time per tile).

    python benchmarks/bench_stats_cost.py --size 2048 --tile 1024 --stats-windows 1   # ~ the 4096 job / 4
    python benchmarks/bench_stats_cost.py --size 4096 --tile 2048                     # the issue's job
    python benchmarks/bench_stats_cost.py --slide tests/data/tcga-cr-7395-01a-01-ts1.svs --tile 0
                                          # a real slide, as the CLI stains it (its tissue only, tile by memory)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import openslide
import torch

from napari_virtual_ihc.ihc_store import run_json_path
from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.models.checkpoint import LoadedGenerator
from napari_virtual_ihc.models.registry import build_generator
from napari_virtual_ihc.models.spec import ModelSpec
from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.slides.base import ArraySlide

SLIDE = Path(__file__).resolve().parents[1] / "tests" / "data" / "tcga-cr-7395-01a-01-ts1.svs"


def region(size: int) -> np.ndarray:
    """A tissue region of the TCGA slide, ``size`` px square (mirrored 2 x 2 beyond 2048 px)."""
    slide = openslide.OpenSlide(str(SLIDE))
    side = min(size, 2048)
    img = np.asarray(slide.read_region((900, 900), 0, (side, side)).convert("RGB"))
    while img.shape[0] < size:
        img = np.concatenate([img, img[:, ::-1]], 1)
        img = np.concatenate([img, img[::-1]], 0)
    return np.ascontiguousarray(img[:size, :size])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--tile", type=int, default=1024, help="0: the engine's choice by memory")
    ap.add_argument("--slide", type=Path, default=None, help="stain this whole slide (its tissue) instead")
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--norm", choices=["instance", "batch"], default="instance")
    ap.add_argument("--stats-windows", type=int, default=16)
    ap.add_argument("--stats-share", type=float, default=0.06)
    ap.add_argument("--stats-tile", type=int, default=None, help="force small windows of this core (px)")
    args = ap.parse_args()
    torch.manual_seed(0)
    module = build_generator("resnet", ngf=args.ngf, n_blocks=9, norm=args.norm).eval()
    bn_stats = "slide" if args.norm == "batch" else None
    spec = ModelSpec("resnet", {"ngf": args.ngf, "n_blocks": 9, "norm": args.norm}, mpp=0.5, name="bench")
    model = LoadedGenerator(
        module=module, spec=spec, source="bench", sha256=f"bench-stats-{args.norm}-{args.ngf}"
    )
    settings = EngineSettings(
        tile=args.tile or None,
        skip_background=args.slide is not None,
        pooled_pass_mp=0.0,
        stats_windows=args.stats_windows,
        stats_share=args.stats_share,
        stats_tile=args.stats_tile,
        bn_stats=bn_stats,
    )
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        source = (
            stack.enter_context(open_slide(args.slide))
            if args.slide is not None
            else ArraySlide(region(args.size), 0.5)
        )
        t0 = time.perf_counter()
        rep = stain_slide(source, model, Path(tmp) / "s.ome.zarr", settings)
        wall = time.perf_counter() - t0
        run_json = json.loads(run_json_path(Path(tmp) / "s.ome.zarr").read_text())
    stats = run_json["settings"]["stats"]
    seconds, stats_s = float(run_json["seconds"]), float(run_json["settings"]["stats_seconds"])
    reused = int(stats["reused_tiles"])
    run_after = rep.tiles_done - reused
    per_tile = (seconds - stats_s) / run_after if run_after else float("nan")
    net = stats_s - reused * per_tile
    print(json.dumps({"stats": stats, "seconds": seconds, "wall": round(wall, 1), "tiles": rep.tiles_done}))
    print(
        f"{args.slide.name if args.slide else f'{args.size} px job'}, tile {run_json['settings']['tile']}, {args.norm} ngf {args.ngf}: {seconds:.1f} s in all, statistics pass "
        f"{stats_s:.1f} s = {100 * stats_s / seconds:.1f} % gross ({stats['source']}, {stats['windows']} windows, "
        f"{stats['window_mp']} MP, {reused} tiles reused); the other {run_after} tiles {per_tile:.1f} s each: "
        f"net {net:.1f} s = {100 * net / seconds:.1f} %"
    )


if __name__ == "__main__":
    main()
