"""Tile engine vs the papers' naive test loop, in one run, on the same weights and the same real H&E region.

Naive reference (as pix2pix/CycleGAN ``test.py`` run on pre-cut tiles): non-overlapping 1024 px tiles,
batch 1, fp32, eager, every tile normalised by its own InstanceNorm statistics.
Engine: ``stain_slide`` with its defaults (halo >= half the receptive field, clamped border windows, slide-level
frozen statistics folded into the convolutions, batching, prefetch, channels-last).
Both are compared with one fp32 whole-image forward pass (PSNR) and scored for seams (mean absolute
gradient across tile borders / elsewhere).

    python benchmarks/bench_engine.py                      # ResNet-9, ngf 64, 2048 x 2048 from the TCGA slide
    python benchmarks/bench_engine.py --size 1024 --ngf 16 # quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

# isort: off
import napari_virtual_ihc  # noqa: F401  (before torch: it sets up torch's CPU allocator)

# isort: on
import numpy as np
import openslide
import torch
import zarr

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.quality import psnr, seam_score
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.models import ModelSpec, build_generator
from napari_virtual_ihc.models.spec import LoadedGenerator
from napari_virtual_ihc.slides.base import ArraySlide

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def read_region(path: Path, size: int) -> np.ndarray:
    s = openslide.OpenSlide(str(path))
    w, h = s.dimensions
    x, y = max(0, w // 2 - size // 2), max(0, h // 2 - size // 2)
    rgba = np.asarray(s.read_region((x, y), 0, (size, size)))
    s.close()
    rgb = rgba[..., :3].copy()
    rgb[rgba[..., 3] == 0] = 255
    return rgb


def forward(module: torch.nn.Module, img: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return to_uint8(module(to_input(img[None], "minus_one_one")), "minus_one_one")[0]


def naive_loop(module: torch.nn.Module, img: np.ndarray, tile: int = 1024) -> np.ndarray:
    out = np.zeros_like(img)
    for y in range(0, img.shape[0], tile):
        for x in range(0, img.shape[1], tile):
            out[y : y + tile, x : x + tile] = forward(module, img[y : y + tile, x : x + tile])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slide", type=Path, default=DATA / "tcga-cr-7395-01a-01-ts1.svs")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument(
        "--tile", type=int, default=512, help="engine tile core (default: EngineSettings' default)"
    )
    ap.add_argument("--batch", type=int, default=None, help="default: EngineSettings (1 on the CPU)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument(
        "--pooled-mp",
        type=float,
        default=EngineSettings.pooled_pass_mp,
        help="EngineSettings.pooled_pass_mp; 0 forces the whole-slide path (sampled statistics, then folded tiles)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--no-whole", action="store_true", help="skip the whole-image reference pass")
    ap.add_argument(
        "--abba",
        action="store_true",
        help="time naive, engine, engine, naive (cancels drifting load on a shared CPU)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    img = read_region(args.slide, args.size)
    mp = img.shape[0] * img.shape[1] / 1e6
    torch.manual_seed(0)
    module = build_generator("resnet", n_blocks=9, ngf=args.ngf, norm="instance").eval()
    model = LoadedGenerator(
        module, ModelSpec("resnet", {"n_blocks": 9, "ngf": args.ngf, "norm": "instance"}), "bench", "seed0"
    )
    print(
        f"{args.slide.name}: {args.size} x {args.size} px region, ResNet-9 ngf {args.ngf} InstanceNorm (seeded random)"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    forward(module, img[:256, :256])  # warm-up (allocator, oneDNN primitives)

    def run_naive() -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        out = naive_loop(module, img)
        dt = time.perf_counter() - t
        print(f"naive  : {dt:7.1f} s  {mp / dt:.4f} MP/s", flush=True)
        return out, dt

    def run_engine() -> tuple[np.ndarray, float, Any]:
        with tempfile.TemporaryDirectory() as d:
            settings = EngineSettings(
                tile=args.tile,
                batch=args.batch,
                precision=args.precision,
                skip_background=False,
                pooled_pass_mp=args.pooled_mp,
            )
            t = time.perf_counter()
            rep = stain_slide(ArraySlide(img, 0.5), model, Path(d) / "bench.ome.zarr", settings)
            dt = time.perf_counter() - t
            out = np.asarray(zarr.open_group(str(Path(d) / "bench.ome.zarr"), mode="r")["0"][:]).transpose(
                1, 2, 0
            )
        print(
            f"engine : {dt:7.1f} s  {mp / dt:.4f} MP/s  (tile {rep.settings['tile']}, halo {rep.settings['halo']}, "
            f"batch {rep.settings['batch_final']}, {rep.precision}, {rep.device}, {rep.settings['norms_folded']} norms "
            f"folded, {rep.settings['winograd_convs']} Winograd convs, {rep.settings['stats_seconds']:.1f} s of it "
            "in the statistics/pooled pass)",
            flush=True,
        )
        tile_pass = dt - rep.settings["stats_seconds"]
        if rep.tiles_done and tile_pass > 0.05 * dt:  # the whole-slide path: sampled statistics, then tiles
            print(
                f"         tile pass alone (frozen, folded norms): {tile_pass:7.1f} s  {mp / tile_pass:.4f} MP/s"
            )
        return out, dt, rep

    naive, t_naive = run_naive()
    engine, t_engine, rep = run_engine()
    if args.abba:
        _, t2, _ = run_engine()
        _, n2 = run_naive()
        t_engine, t_naive = t_engine + t2, t_naive + n2
    print(f"MP/s ratio engine / naive: {t_naive / t_engine:.2f}x")
    print(
        f"seam score (border / interior gradient): naive {seam_score(naive, 1024):.3f}, engine {seam_score(engine, rep.settings['tile']):.3f}"
    )
    if not args.no_whole:
        t = time.perf_counter()
        whole = forward(module, img)
        t_whole = time.perf_counter() - t
        print(f"whole  : {t_whole:7.1f} s  {mp / t_whole:.4f} MP/s (fp32 reference pass)")
        print(
            f"PSNR vs whole-image fp32 pass: naive {psnr(naive, whole):.1f} dB, engine {psnr(engine, whole):.1f} dB"
        )


if __name__ == "__main__":
    main()
