"""Benchmark the offline nuclei paths against the path before issue 32, on one real image tiled to a larger
field, in one process: "previous" (classical Otsu + watershed, DAB treated as membrane whatever the marker),
"blobs" (the LoG blob detector) and "offline" (the fallback now: blobs on H&E and nuclear DAB, classical on
membrane DAB), each with the marker's DAB compartment.

Prints seconds per megapixel and peak memory (tracemalloc, numpy allocations) of each and their ratios to
"previous", the CPU seconds of calibrating on the field as its overview (on H&E it includes the large-nucleus
probe, blobs.LARGE_NUCLEI_FACTOR, which "offline-no-eosin" skips), and the CPU. Not a timed test. Nuclear DAB reads a DeepLIIF Ki-67 tile, membrane DAB the
scikit-image IHC, "none" (H&E) the OpenSlide OS-1 H&E crop.

Run:  python benchmarks/bench_nuclei.py [--size 1024] [--repeats 3] [--compartment nuclear|membrane|none]
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
from skimage.io import imread

from napari_virtual_ihc.nuclei import make_segmenter
from napari_virtual_ihc.stain import calibrate, deconvolve

SET = Path(__file__).resolve().parents[1] / "tests/data/nuclei-any-stain"
DEEPLIIF = SET / "deepliif-ki67-Bladder1.jpg"
HE = SET / "openslide-he-2.png"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def measure(
    method: str, h: np.ndarray, dab: np.ndarray | None, diameter_px: float, compartment: str, repeats: int
):
    """(median wall seconds, median CPU seconds, peak MiB, nuclei found) of one segmentation of the whole field
    (CPU seconds compare runs on a machine shared with other work, where wall time swings). On H&E the second
    channel is passed as eosin (as ``analyze --he`` does), except for "offline-no-eosin" (the path before the
    blob check's colour rule); "offline-learned": the blob detector with the learned check instead of the
    hand rules. The peak is Python's (tracemalloc): torch's tensors of the learned check are
    not in it (a few MiB: patches of the candidates)."""
    eosin = None
    if compartment == "none":  # H&E: no DAB; the second channel holds the eosin
        dab, eosin, compartment = None, dab, "membrane"
    check = "rules"
    if method == "offline-no-eosin":
        method, eosin = "offline", None
    if method == "offline-learned":  # the blob detector with the learned check (not the default)
        method, check = "offline", "learned"
    if method == "previous":
        method, compartment, eosin = "classical", "membrane", None
    seg = make_segmenter(method, check=check)
    c0 = time.process_time()
    seg.calibrate(h, dab, compartment, diameter_px, eosin_overview=eosin)
    calibration_cpu = time.process_time() - c0
    times, cpu, n = [], [], 0
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        n = int(seg(h, diameter_px, dab, compartment, eosin_od=eosin).max())
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    tracemalloc.start()
    seg(h, diameter_px, dab, compartment, eosin_od=eosin)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return statistics.median(times), statistics.median(cpu), peak, n, calibration_cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024, help="field side in pixels (the image is tiled to it)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compartment", default="membrane", choices=("membrane", "nuclear", "cytoplasm", "none"))
    a = ap.parse_args()
    if a.compartment == "nuclear":
        rgb, mpp = imread(DEEPLIIF)[..., :3], 0.32
    elif a.compartment == "none":
        rgb, mpp = imread(HE)[..., :3], 0.454
    else:
        rgb, mpp = data.immunohistochemistry(), 0.5
    reps = -(-a.size // rgb.shape[0])
    field = np.tile(rgb, (reps, reps, 1))[: a.size, : a.size]
    stains = deconvolve(field, calibrate(field).stains)
    h, dab = stains["hematoxylin"], stains["dab"]
    mpx = a.size * a.size / 1e6
    print(
        f"CPU: {cpu_name()}; field {a.size} x {a.size} px ({mpx:.2f} Mpx), {a.compartment} DAB, {mpp} µm/px"
    )
    methods = (
        "previous",
        "blobs",
        "offline",
        "offline-learned",
        *(("offline-no-eosin",) if a.compartment == "none" else ()),
    )
    res = {m: measure(m, h, dab, 7.0 / mpp, a.compartment, a.repeats) for m in methods}
    t0, c0, p0, _, _ = res["previous"]
    for m, (t, c, peak, n, cal) in res.items():
        print(
            f"{m:16s} {t / mpx:6.2f} s/Mpx (CPU {c / mpx:5.2f})  peak {peak:6.1f} MiB  {n:5d} nuclei   "
            f"vs previous: time {t / t0:.2f}x (CPU {c / c0:.2f}x), memory {peak / p0:.2f}x; "
            f"calibration on the field {cal:.2f} CPU s"
        )


if __name__ == "__main__":
    main()
