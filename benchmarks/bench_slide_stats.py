"""Quality of sampled slide statistics against the whole-image reference (issue 34 item 5).

The reference: the frozen model with the statistics of one whole-image forward (what the engine's exact
pooled pass saves; the engine's store equals the frozen model to <= 1 grey level, tests/inference). The
candidate: the frozen model with statistics from the windows the engine's rule samples (``plan_windows``),
pooled in one lock-step forward over each window's core only, or over each layer's exact interior. Both
outputs are whole-image forwards, so only the statistics differ. Errors in grey levels (uint8 RGB).

    python benchmarks/bench_slide_stats.py --model random --ngf 64 --size 1536
    python benchmarks/bench_slide_stats.py --model demo --size 0      # the whole TCGA slide, native 0.5 um/px
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import torch
from torch import nn

from napari_virtual_ihc.inference.grid import GridTile, TileGrid, sample_windows
from napari_virtual_ihc.inference.normalization import Box, estimate_instance_stats, freeze_normalization
from napari_virtual_ihc.inference.resample import WorkingPlane
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.inference.slide_stats import StatsRequest, plan_windows, window_interiors
from napari_virtual_ihc.models.checkpoint import load_generator
from napari_virtual_ihc.models.demo_model import demo_model_path
from napari_virtual_ihc.models.resnet import ResnetGenerator
from napari_virtual_ihc.slides.base import ArraySlide

SLIDE = Path(__file__).resolve().parents[1] / "tests" / "data" / "tcga-cr-7395-01a-01-ts1.svs"


def errors(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    d = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    mse = float((d.astype(np.float64) ** 2).mean())
    return {
        "psnr": 10 * np.log10(255**2 / max(mse, 1e-10)),
        "mean": float(d.mean()),
        "p99": float(np.percentile(d, 99)),
        "p99.9": float(np.percentile(d, 99.9)),
        "max": float(d.max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["random", "demo"], default="random")
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=9)
    ap.add_argument("--norm", choices=["instance", "batch"], default="instance")
    ap.add_argument("--size", type=int, default=1536, help="crop side at (x, y); 0: the whole slide")
    ap.add_argument("--x", type=int, default=1000)
    ap.add_argument("--y", type=int, default=1000)
    ap.add_argument("--tile", type=int, default=2048, help="the job's tile (what the budget is a share of)")
    ap.add_argument("--share", type=float, default=0.06)
    ap.add_argument("--stats-windows", default="16", help="comma-separated: one engine-rule candidate each")
    ap.add_argument("--samples", default="", help="extra fixed samples, e.g. 16x128,64x64 (windows x core)")
    ap.add_argument("--placements", type=int, default=1, help="samples at random places: this many each")
    args = ap.parse_args()
    torch.set_num_threads(1)
    slide = openslide.OpenSlide(str(SLIDE))
    if args.size:
        img = np.asarray(slide.read_region((args.x, args.y), 0, (args.size, args.size)).convert("RGB"))
    else:
        img = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    h, w = img.shape[:2]
    module: nn.Module
    if args.model == "demo":
        module = load_generator(demo_model_path()).module
    else:
        torch.manual_seed(0)
        module = ResnetGenerator(ngf=args.ngf, n_blocks=args.blocks, norm=args.norm)
    module.eval()
    bn = args.norm == "batch"
    what = "the demo model" if args.model == "demo" else f"random ResNet ngf {args.ngf}, {args.blocks} blocks"
    print(f"image {w}x{h}, {what}, norm {args.norm}", flush=True)
    x = to_input(img[None].copy(), "minus_one_one")
    t0 = time.perf_counter()
    outputs: list[torch.Tensor] = []
    estimate_instance_stats(module, [x], outputs=outputs, batch_norms=bn)
    ref = to_uint8(outputs[0], "minus_one_one")[0]
    whole_s = time.perf_counter() - t0
    print(f"reference: one whole-image forward {whole_s:.1f} s", flush=True)
    del outputs

    plane = WorkingPlane(ArraySlide(img, 0.5))  # reads windows as the engine does (mirrored past the edge)

    def core_box(t: GridTile) -> Box:
        cx, cy, cw, ch = t.core_in_window
        return (cx / t.window[2], cy / t.window[3], (cx + cw) / t.window[2], (cy + ch) / t.window[3])

    def run(name: str, wins: list[GridTile]) -> None:
        batch = to_input(np.stack([plane.read(t.window) for t in wins]), "minus_one_one")
        win_mp = sum(t.window[2] * t.window[3] for t in wins) / 1e6
        for how in ("cores", "interiors"):
            t1 = time.perf_counter()
            boxes: Any = [core_box(t) for t in wins] if how == "cores" else window_interiors(wins, (w, h))
            stats = estimate_instance_stats(module, [batch], [boxes], batch_norms=bn)
            s_time = time.perf_counter() - t1
            with torch.inference_mode():
                out = to_uint8(freeze_normalization(module, stats)(x), "minus_one_one")[0]
            e = errors(out, ref)
            print(
                f"{name:34s} {how:9s} {len(wins):3d} windows {win_mp:6.2f} MP ({100 * win_mp / (w * h / 1e6):5.1f} %"
                f" of the image) stats {s_time:6.1f} s | PSNR {e['psnr']:5.1f} dB mean {e['mean']:.2f}"
                f" p99 {e['p99']:.0f} p99.9 {e['p99.9']:.0f} max {e['max']:.0f}",
                flush=True,
            )

    grid = TileGrid((w, h), (0, 0, w, h), args.tile, 88, 4)
    tiles = {i: grid.tile_at(i) for i in range(len(grid))}
    for n_stats in (int(v) for v in filter(None, args.stats_windows.split(","))):
        req = _request(module, plane, tiles, grid, n_stats, args.share, bn)
        kind, wins = plan_windows(req)
        run(f"engine rule ({kind}, tile {args.tile}, {n_stats}, {args.share:.0%})", wins)
    whole_tile = TileGrid((w, h), (0, 0, w, h), max(w, h), 88, 4).tile_at(0)
    for spec in filter(None, args.samples.split(",")):
        n, core = (int(v) for v in spec.split("x"))
        if args.placements == 1:  # evenly spread, as the engine samples
            picks = sample_windows((w, h), [whole_tile], n, core, 88, 4)
            run(f"{len(picks)} windows of {core} px cores", picks)
            continue
        for seed in range(args.placements):
            run(f"{n} x {core} px cores, random places {seed}", _random_windows((w, h), n, core, 88, seed))


def _random_windows(size: tuple[int, int], n: int, core: int, halo: int, seed: int) -> list[GridTile]:
    """``n`` windows at random places (aligned to 4 px; they may overlap), each core centred in its window."""
    rng = np.random.default_rng(100 + seed)
    side = core + 2 * halo
    out = []
    for i in range(n):
        wx = int(rng.integers(0, (size[0] - side) // 4 + 1)) * 4
        wy = int(rng.integers(0, (size[1] - side) // 4 + 1)) * 4
        out.append(GridTile(i, 0, i, (wx + halo, wy + halo, core, core), (wx, wy, side, side)))
    return out


def _request(
    module: nn.Module,
    plane: WorkingPlane,
    tiles: dict[int, GridTile],
    grid: TileGrid,
    stats_windows: int,
    share: float,
    bn: bool,
) -> StatsRequest:
    return StatsRequest(
        module=module,
        plane=plane,
        tiles=tiles,
        tissue=list(tiles),
        todo=len(tiles),
        finished=set(),
        saved=None,
        window_size=grid.window_size,
        halo=88,
        align=4,
        stats_windows=stats_windows,
        stats_tile=None,
        stats_share=share,
        pooled_limit_mp=0.0,
        memory_mp=6.0,
        device=torch.device("cpu"),
        winograd=False,
        legacy_winograd=False,
        precision="fp32",
        batch_norms=bn,
        input_norm="minus_one_one",
        output_norm="minus_one_one",
    )


if __name__ == "__main__":
    main()
