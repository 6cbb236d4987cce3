"""Memory stays flat exporting a big store to OME-TIFF: peak RSS exporting a 20k x 20k store vs a 2k x 2k one.

Each store is a real virtual IHC store (``TileStore``, zarr, every pyramid level, 0.5 µm/px) whose
1024-px tiles are random crops of the ANHIR kidney pan-cytokeratin image (tests/data, mirrored out to 4096 px), written in 2048-px blocks. Each export runs in a fresh Python process (the figure is that process's own peak RSS:
``VmHWM``), through ``open_slide`` and ``write_ome_tiff`` as ``virtual-ihc export`` does. Not part of the
test suite (a few minutes for the 20k store on 2 cores).

    python benchmarks/bench_export.py [--sizes 2000,20000] [--compression jpeg|deflate]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from napari_virtual_ihc.ihc_store.writer import TileStore

TILE = 1024  # the store's chunk
BLOCK = 2048  # what one write_tile call writes while building (as the engine's batches of tiles)
IMAGE = Path(__file__).resolve().parents[1] / "tests" / "data" / "Rat-Kidney_PanCytokeratin.jpg"


def build_store(path: Path, size: int) -> float:
    """A ``size`` x ``size`` store written tile by tile as the engine writes it; returns seconds."""
    t0 = time.perf_counter()
    rgb = cv2.cvtColor(cv2.imread(str(IMAGE), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    rgb = np.pad(
        rgb,
        ((0, max(0, 2 * BLOCK - rgb.shape[0])), (0, max(0, 2 * BLOCK - rgb.shape[1])), (0, 0)),
        "symmetric",
    )
    h, w = rgb.shape[:2]
    factors = [2**k for k in range(max(1, math.ceil(math.log2(size / 512)) + 1))]
    store = TileStore.open(
        path, plane=(size, size), tile=TILE, factors=factors, mpp=(0.5, 0.5), run_key={"bench": size},
        provenance={"model": {"name": "bench"}, "target_stain": "HER2", "level0_downsample": 1.0},
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for y in range(0, size, BLOCK):
        for x in range(0, size, BLOCK):
            tw, th = min(BLOCK, size - x), min(BLOCK, size - y)
            oy, ox = int(rng.integers(0, h - th + 1)), int(rng.integers(0, w - tw + 1))
            store.write_tile((x, y, tw, th), np.ascontiguousarray(rgb[oy : oy + th, ox : ox + tw]))
    store.close()
    return time.perf_counter() - t0


def _vm_hwm_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries that over an exec, so
    a child would report its parent's peak (here the store builder's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def export_child(store: str, out: str, compression: str) -> None:
    """In a fresh process: open the store, export it, print peak RSS before and after (MB) as JSON."""
    from napari_virtual_ihc.export import write_ome_tiff
    from napari_virtual_ihc.slides import open_slide

    with open_slide(store) as slide:
        slide.read_region((0, 0), 0, (512, 512))  # imports and codecs warm before the baseline
        before = _vm_hwm_mb()
        t0 = time.perf_counter()
        write_ome_tiff(slide, out, compression=compression)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t0
        levels = slide.level_count
    peak = _vm_hwm_mb()
    print(
        json.dumps({"rss_before_mb": before, "peak_rss_mb": peak, "seconds": seconds, "store_levels": levels})
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="2000,20000")
    ap.add_argument("--compression", choices=("jpeg", "deflate"), default="jpeg")
    ap.add_argument("--export-child", nargs=2, metavar=("STORE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export_child:
        export_child(*args.export_child, args.compression)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            store, out = Path(tmp) / f"s{size}.ome.zarr", Path(tmp) / f"s{size}.ome.tif"
            build_s = build_store(store, size)
            child = subprocess.run(
                [sys.executable, __file__, "--compression", args.compression, "--export-child", str(store), str(out)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            r = json.loads(child.stdout.strip().splitlines()[-1])
            results.append(
                {
                    "size": size,
                    "raw_rgb_mb": round(size * size * 3 / 2**20, 1),
                    "file_mb": round(out.stat().st_size / 2**20, 1),
                    "build_store_s": round(build_s, 1),
                    "export_s": round(r["seconds"], 1),
                    "rss_before_export_mb": round(r["rss_before_mb"], 1),
                    "peak_rss_mb": round(r["peak_rss_mb"], 1),
                }
            )
            print(json.dumps(results[-1]), flush=True)
    if len(results) >= 2:
        small, big = results[0], results[-1]
        print(
            f"peak RSS {big['size']}^2 / {small['size']}^2 = {big['peak_rss_mb'] / small['peak_rss_mb']:.2f} "
            f"for {big['raw_rgb_mb'] / small['raw_rgb_mb']:.0f}x the pixels ({args.compression})"
        )


if __name__ == "__main__":
    main()
