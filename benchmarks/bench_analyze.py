"""Benchmark the full ``analyze`` (white point, probe of where the DAB sits, nuclei, rings, DAB bins, TDKstain
mask, density, the marker's figures) with the offline nuclei path against the classical path that
``analyze`` ran before issue 32, on real IHC tiled to a larger field, in one process.

- "classical": ``AnalysisSettings(nuclei_method="classical")`` (today's classical path, with the marker's
  DAB compartment);
- "offline": ``nuclei_method="offline"``, what ``auto`` runs without Cellpose weights (the blob detector
  where DAB is nuclear, the classical path on membrane DAB and H&E).

Prints wall-clock and CPU seconds per megapixel (medians of ``--repeats``; on a shared machine the CPU
seconds of this process are the steadier figure) and peak memory (tracemalloc: numpy and Python
allocations during one more run) of each, their ratio to "classical", the nuclei found, the marker read
and the CPU. Nuclear DAB reads a DeepLIIF Ki-67 tile (0.32 µm/px), membrane DAB scikit-image's IHC
(0.5 µm/px). Not a timed test.

With ``--mil``, also the tumour map of ``--region-mil`` on the same field taken as the H&E: a full-width
ResNet-34 (random weights, the trainer's default width 64, 224 px tiles, read at the field's µm/px).

With ``--workers N`` (N > 1), also the offline path with its 1024 px tiles read by N threads, against one thread
(the rows above): pass ``--size`` of several tiles (e.g. 3072).

Run:  python benchmarks/bench_analyze.py [--size 1024] [--repeats 1] [--compartment nuclear|membrane|both] [--mil]
      [--workers N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np
from skimage import data
from skimage.io import imread

from napari_virtual_ihc.stain import AnalysisSettings, analyze_image

DEEPLIIF = Path(__file__).resolve().parents[1] / "tests/data/nuclei-any-stain/deepliif-ki67-Bladder1.jpg"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def field_of(compartment: str, size: int) -> tuple[np.ndarray, float]:
    """The real image mirrored to ``size`` x ``size`` px (mirroring keeps the tissue continuous)."""
    rgb, mpp = (
        (imread(DEEPLIIF)[..., :3], 0.32) if compartment == "nuclear" else (data.immunohistochemistry(), 0.5)
    )
    row = np.concatenate([rgb, rgb[:, ::-1]] * (-(-size // (2 * rgb.shape[1]))), axis=1)
    tile = np.concatenate([row, row[::-1]] * (-(-size // (2 * rgb.shape[0]))), axis=0)
    return np.ascontiguousarray(tile[:size, :size]), mpp


def measure(
    rgb: np.ndarray, mpp: float, method: str, repeats: int, workers: int = 1
) -> tuple[float, float, float, int, str]:
    """(median wall seconds, median CPU seconds, peak MiB, nuclei, marker) of the whole analysis, its tiles read
    by ``workers`` threads."""
    settings = AnalysisSettings(nuclei_method=method, mpp=mpp, marker="auto", workers=workers)
    times, cpu, n, marker = [], [], 0, ""
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = analyze_image(rgb, settings)
        res.summary()  # the marker's figures are part of the reading
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        n, marker = res.n_nuclei, res.marker
    tracemalloc.start()
    analyze_image(rgb, settings).summary()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return statistics.median(times), statistics.median(cpu), peak, n, marker


def measure_mil(rgb: np.ndarray, mpp: float) -> tuple[float, float]:
    """(wall, CPU seconds) of the tumour map over the whole field."""
    import tempfile

    import torch

    from napari_virtual_ihc.models.classifier import ResNet34, save_classifier
    from napari_virtual_ihc.slides.base import ArraySlide
    from napari_virtual_ihc.stain.tumour_map import tumour_map

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        clf = save_classifier(Path(d) / "clf.safetensors", ResNet34(2, 64).eval(), {"tile": 224, "mpp": mpp})
        t0, c0 = time.perf_counter(), time.process_time()
        tumour_map(ArraySlide(rgb, mpp=mpp), clf)
        return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--size", type=int, default=1024, help="field side in pixels (the image is mirrored to it)"
    )
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--compartment", default="both", choices=("membrane", "nuclear", "both"))
    ap.add_argument("--mil", action="store_true", help="also time the MIL tumour map (--region-mil)")
    ap.add_argument(
        "--workers", type=int, default=1, help="also time the offline path with this many threads"
    )
    a = ap.parse_args()
    mpx = a.size * a.size / 1e6
    print(f"CPU: {cpu_name()}; field {a.size} x {a.size} px ({mpx:.2f} Mpx), full analyze, marker auto")
    for compartment in ("nuclear", "membrane") if a.compartment == "both" else (a.compartment,):
        rgb, mpp = field_of(compartment, a.size)
        res = {m: measure(rgb, mpp, m, a.repeats) for m in ("classical", "offline")}
        t0, c0, p0, _, _ = res["classical"]
        for m, (t, c, peak, n, marker) in res.items():
            print(
                f"{compartment:8s} DAB  {m:9s} wall {t / mpx:6.2f} s/Mpx  CPU {c / mpx:6.2f} s/Mpx  "
                f"peak {peak:6.1f} MiB  {n:5d} nuclei  read as {marker:5s}  vs classical: wall {t / t0:.2f}x, "
                f"CPU {c / c0:.2f}x, memory {peak / p0:.2f}x",
                flush=True,
            )
        if a.workers > 1:
            t1, _c1, p1, n1, _ = res["offline"]
            t, c, peak, n, _marker = measure(rgb, mpp, "offline", a.repeats, a.workers)
            print(
                f"{compartment:8s} DAB  offline, {a.workers} threads: wall {t / mpx:6.2f} s/Mpx  CPU {c / mpx:6.2f} "
                f"s/Mpx  peak {peak:6.1f} MiB  {n:5d} nuclei (1 thread: {n1})  vs 1 thread: {t1 / t:.2f}x faster, "
                f"memory {peak / p1:.2f}x",
                flush=True,
            )
        if a.mil:
            t, c = measure_mil(rgb, mpp)
            print(
                f"{compartment:8s} H&E  MIL map   wall {t / mpx:6.2f} s/Mpx  CPU {c / mpx:6.2f} s/Mpx",
                flush=True,
            )


if __name__ == "__main__":
    main()
