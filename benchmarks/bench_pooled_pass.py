"""The exact pooled pass against the sampled statistics pass, on one job, in one run (issue 34 item 5).

Two engine runs of the same seeded InstanceNorm (or slide-mode BatchNorm) ResNet-9 on a real H&E region of
the TCGA slide in tests/data (``bench_stats_cost.region``; or the whole slide's tissue with ``--slide``):

- **pooled**: the engine's defaults. A job whose windows' union fits memory runs as one exact pass (the
  whole-image statistics, its output is the tiles), in the precision and kernels the calibration chose.
- **sampled**: ``pooled_pass_mp=0``, the path of a slide too large for one pass: a bounded statistics pass,
  then the tile pass. Its tile pass alone (seconds per tile x tiles) is what the job costs with no
  statistics at all, so the pooled run's statistics cost is its time minus that (``net``).

With ``--reference`` both stores are compared with the whole-image reference: the frozen model with the
statistics of one whole-image forward, run whole in fp32 (``--reference-precision``: or bf16; fp32 needs
~14 bytes per pixel and first-layer channel). Errors in grey levels of the uint8 RGB output.

    python benchmarks/bench_pooled_pass.py --size 2048 --tile 1024 --reference
    python benchmarks/bench_pooled_pass.py --size 4096 --tile 2048
    python benchmarks/bench_pooled_pass.py --slide tests/data/tcga-cr-7395-01a-01-ts1.svs --tile 0
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from bench_slide_stats import errors
from bench_stats_cost import region

from napari_virtual_ihc.ihc_store import run_json_path
from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.dropout import DropoutMode, set_positions, with_positional_dropout
from napari_virtual_ihc.inference.normalization import estimate_instance_stats
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.models.checkpoint import LoadedGenerator, load_generator
from napari_virtual_ihc.models.demo_model import demo_model_path
from napari_virtual_ihc.models.registry import build_generator
from napari_virtual_ihc.models.spec import ModelSpec
from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.slides.base import ArraySlide, Slide


def run(source: Slide, model: LoadedGenerator, settings: EngineSettings, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    rep = stain_slide(source, model, out, settings)
    wall = time.perf_counter() - t0
    rj = json.loads(run_json_path(out).read_text())
    stats = rj["settings"]["stats"]
    seconds, stats_s = float(rj["seconds"]), float(rj["settings"]["stats_seconds"])
    reused = int(stats["reused_tiles"])
    ran = rep.tiles_done - reused
    per_tile = (seconds - stats_s) / ran if ran else float("nan")
    return {
        "seconds": seconds,
        "wall": wall,
        "stats_seconds": stats_s,
        "source": stats["source"],
        "tiles": rep.tiles_done,
        "reused": reused,
        "per_tile": per_tile,
        "compute": rj["settings"]["compute"],
        "pooled_pass": rj["settings"].get("pooled_pass"),
    }


def level0(store: Path) -> np.ndarray:
    """The store's full-resolution level as (h, w, 3) (stored as CYX)."""
    return np.moveaxis(np.asarray(zarr.open_group(str(store), mode="r")["0"][:]), 0, -1)


def reference(image: np.ndarray, model: LoadedGenerator, precision: str, dropout: str) -> np.ndarray:
    """The model run whole on ``image``, normalised by that one forward's statistics (the frozen model's output);
    with ``dropout`` "sample" its dropouts draw the engine's positional masks (seed 0, the image at the plane's
    origin)."""
    outs: list[torch.Tensor] = []
    module, _ = with_positional_dropout(model.module, DropoutMode.parse(dropout), 0)
    set_positions(module, [(0, 0)], (image.shape[0], image.shape[1]))
    estimate_instance_stats(
        module,
        [to_input(image[None], model.spec.input_norm)],
        [[(0.0, 0.0, 1.0, 1.0)]],
        outputs=outs,
        winograd=True,
        precision=precision,
        batch_norms=any(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules()),
    )
    return to_uint8(outs[0], model.spec.output_norm)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--tile", type=int, default=1024, help="0: the engine's choice by memory")
    ap.add_argument("--slide", type=Path, default=None, help="stain this whole slide (its tissue) instead")
    ap.add_argument(
        "--model", choices=["random", "demo"], default="random", help="demo: the trained demo model"
    )
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--norm", choices=["instance", "batch"], default="instance")
    ap.add_argument("--precision", default="auto")
    ap.add_argument(
        "--dropout",
        choices=["off", "sample"],
        default="off",
        help="sample: dropout layers, one sample (BCI's test.py)",
    )
    ap.add_argument("--reference", action="store_true", help="compare both stores with the whole-image pass")
    ap.add_argument("--reference-precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--order", default="pooled,sampled,pooled,sampled")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.model == "demo":
        model = load_generator(demo_model_path())
    else:
        drop = args.dropout == "sample"
        module = build_generator("resnet", ngf=args.ngf, n_blocks=9, norm=args.norm, use_dropout=drop).eval()
        arch = {"ngf": args.ngf, "n_blocks": 9, "norm": args.norm, "use_dropout": drop}
        spec = ModelSpec("resnet", arch, mpp=0.5, name="bench")
        sha = f"bench-pooled-{args.norm}-{args.ngf}" + ("-dropout" if drop else "")
        model = LoadedGenerator(module=module, spec=spec, source="bench", sha256=sha)
    common: dict[str, Any] = {
        "tile": args.tile or None,
        "skip_background": args.slide is not None,
        "precision": args.precision,
        "bn_stats": "slide" if args.norm == "batch" else None,
        "dropout": args.dropout,
    }
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        image = None if args.slide is not None else region(args.size)
        source = stack.enter_context(open_slide(args.slide)) if image is None else ArraySlide(image, 0.5)
        stores = {}
        for k, name in enumerate(args.order.split(",")):  # a name given twice: the later (warm) run counts
            settings = EngineSettings(**common, pooled_pass_mp=None if name == "pooled" else 0.0)
            stores[name] = Path(tmp) / f"{name}{k}.ome.zarr"
            results[name] = run(source, model, settings, stores[name])
            print(name, json.dumps(results[name]), flush=True)
        if "pooled" in stores and "sampled" in stores:  # what sampling changes against the exact statistics
            e = errors(level0(stores["sampled"]), level0(stores["pooled"]))
            results["sampled"]["vs_pooled"] = e
            print(
                f"sampled vs pooled store: {e['psnr']:.1f} dB, mean {e['mean']:.3f}, p99 {e['p99']:.0f}, "
                f"p99.9 {e['p99.9']:.0f}, max {e['max']:.0f}"
            )
        if args.reference and image is not None:
            t0 = time.perf_counter()
            ref = reference(image, model, args.reference_precision, args.dropout)
            print(f"reference ({args.reference_precision}, whole image) {time.perf_counter() - t0:.1f} s")
            for name, store in stores.items():
                e = errors(level0(store)[: ref.shape[0], : ref.shape[1]], ref)
                results[name]["vs_reference"] = e
                print(
                    f"{name} vs whole-image reference: {e['psnr']:.1f} dB, mean {e['mean']:.3f}, "
                    f"p99 {e['p99']:.0f}, p99.9 {e['p99.9']:.0f}, max {e['max']:.0f}"
                )
    label = args.slide.name if args.slide else f"{args.size} px job"
    label += ", the demo model" if args.model == "demo" else f", random ResNet-9 {args.norm} ngf {args.ngf}"
    label += ", dropout sample" if args.dropout == "sample" else ""
    if "pooled" in results and "sampled" in results:
        p, s = results["pooled"], results["sampled"]
        tile_pass = s["per_tile"] * s["tiles"]  # the job with no statistics, at the tile pass's rate
        net = p["seconds"] - tile_pass
        print(
            f"{label}: pooled {p['seconds']:.1f} s ({p['source']}, {p['tiles']} tiles, "
            f"{p['compute']}); sampled {s['seconds']:.1f} s (statistics {s['stats_seconds']:.1f} s = "
            f"{100 * s['stats_seconds'] / s['seconds']:.1f} % gross, {s['source']}); tile pass alone "
            f"{tile_pass:.1f} s: the pooled pass's statistics cost {net:.1f} s = {100 * net / p['seconds']:.1f} % "
            f"of its job; pooled / sampled job time {p['seconds'] / s['seconds']:.2f}x"
        )


if __name__ == "__main__":
    main()
