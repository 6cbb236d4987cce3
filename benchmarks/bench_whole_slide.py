"""Benchmark a whole-slide analysis: real tissue in a field of glass, read with one thread and with ``--workers``.

The slide is ``tests/slides/big_pyramid.py``'s JPEG pyramid (four real CMU-1 H&E tiles, or scikit-image's IHC
with ``--ihc``, repeated over an 8192 px block in the middle of ``--size`` px of glass, 0.25 µm/px), so its
overview (2048 px) does not resolve nuclei: the run calibrates them on level-0 windows of the tissue and skips the
glass tiles (``stain.nuclei_sample``, ``stain.overview``). Prints wall seconds of each run, their ratio, the
nuclei (the same whatever the threads), the glass tiles skipped and the calibration windows, and the CPU. Not a
timed test.

Run:  python benchmarks/bench_whole_slide.py [--size 16384] [--workers 2] [--ihc]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage import data

from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.stain import AnalysisSettings, analyze_slide
from napari_virtual_ihc.stain.analysis import tile_count

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from slides.big_pyramid import he_tiles, write_big_pyramid  # noqa: E402


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=16384, help="slide side in px (>= 16384: a coarse overview)")
    ap.add_argument("--workers", type=int, default=2, help="threads of the second run")
    ap.add_argument("--ihc", action="store_true", help="scikit-image's IHC instead of CMU-1 H&E")
    a = ap.parse_args()
    tiles = (
        [np.ascontiguousarray(data.immunohistochemistry()[:512, :512])]
        if a.ihc
        else he_tiles(ROOT / "tests/data/CMU-1-Small-Region.svs")
    )
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "slide.tif"
        write_big_pyramid(path, tiles, size=a.size)
        print(
            f"CPU: {cpu_name()}; {a.size} x {a.size} px slide, {'IHC' if a.ihc else 'H&E'}, map downsample 8"
        )
        runs = {}
        for workers in (1, a.workers):
            settings = AnalysisSettings(mode="ihc" if a.ihc else "he", map_downsample=8, workers=workers)
            with open_slide(path) as slide:
                t0 = time.perf_counter()
                runs[workers] = (analyze_slide(slide, settings), time.perf_counter() - t0)
                total = tile_count(slide, settings, None)
        for workers, (res, seconds) in runs.items():
            print(
                f"{workers} thread(s): {seconds:6.1f} s  {res.n_nuclei} nuclei  {res.glass_tiles} of {total} tiles glass  "
                f"vs 1 thread: {runs[1][1] / seconds:.2f}x faster",
                flush=True,
            )
        res = runs[1][0]
        print(f"calibration: {res.nuclei_calibration_note}; windows {list(res.nuclei_calibration_windows)}")
        print(
            f"tissue {res.summary()['tissue_mm2']:.2f} mm², nuclei per mm² of tissue "
            f"{res.summary()['nuclei_per_mm2_tissue']:.0f}"
        )


if __name__ == "__main__":
    main()
