"""Benchmark the offline nuclei paths: the blob detector ("blobs", the fallback since issue 32) vs the classical
Otsu + watershed path it replaced, on one real IHC image tiled to a larger field, in one process.

Prints seconds per megapixel and peak memory (tracemalloc, numpy allocations) of each and their ratios, and
the CPU. Not a timed test.

Run:  python benchmarks/bench_nuclei.py [--size 1024] [--repeats 3] [--compartment membrane]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np
from skimage import data

from napari_virtual_ihc.nuclei import make_segmenter
from napari_virtual_ihc.stain import calibrate, deconvolve


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def measure(method: str, h: np.ndarray, dab: np.ndarray, diameter_px: float, compartment: str, repeats: int):
    """(median seconds, peak MiB, nuclei found) of one segmentation of the whole field."""
    seg = make_segmenter(method)
    seg.calibrate(h, dab, compartment)
    times, n = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = int(seg(h, diameter_px, dab, compartment).max())
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    seg(h, diameter_px, dab, compartment)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return statistics.median(times), peak, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="field side in pixels (the image is tiled to it)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compartment", default="membrane", choices=("membrane", "nuclear", "cytoplasm"))
    ap.add_argument("--mpp", type=float, default=0.5)
    a = ap.parse_args()
    rgb = data.immunohistochemistry()
    reps = -(-a.size // rgb.shape[0])
    field = np.tile(rgb, (reps, reps, 1))[: a.size, : a.size]
    stains = deconvolve(field, calibrate(field).stains)
    h, dab = stains["hematoxylin"], stains["dab"]
    mpx = a.size * a.size / 1e6
    print(
        f"CPU: {cpu_name()}; field {a.size} x {a.size} px ({mpx:.2f} Mpx), {a.compartment} DAB, {a.mpp} µm/px"
    )
    res = {m: measure(m, h, dab, 7.0 / a.mpp, a.compartment, a.repeats) for m in ("classical", "blobs")}
    for m, (t, peak, n) in res.items():
        print(f"{m:10s} {t / mpx:6.2f} s/Mpx   peak {peak:7.1f} MiB   {n} nuclei")
    (tc, pc, _), (tb, pb, _) = res["classical"], res["blobs"]
    print(f"blobs / classical: time {tb / tc:.2f}x, peak memory {pb / pc:.2f}x")


if __name__ == "__main__":
    main()
