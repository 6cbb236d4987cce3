"""Slide reader benchmark: a 65,536 x 65,536 JPEG-tiled pyramidal TIFF (real H&E tiles).

Prints, each measured in a fresh process: open time, peak-RSS increase, tiles decoded vs tiles under
each viewport while panning, and pan time, for our reader (tifffile + zarr, through the napari layer's
dask data) and, as the baseline in the same run, OpenSlide reading the same file and viewports.

    python benchmarks/bench_slides.py [--keep /path/big.tif]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from slides.big_pyramid import he_tiles, write_big_pyramid  # noqa: E402

_OPENSLIDE_BASELINE = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from slides.big_pyramid import tiles_touched
def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
import numpy as np, openslide
base = hwm()
t0 = time.perf_counter(); osr = openslide.OpenSlide(sys.argv[1]); open_s = time.perf_counter() - t0
x, y, w, h = 32768 - 4000, 32768 - 540, 1920, 1080
t1 = time.perf_counter()
for _ in range(12):
    v = np.asarray(osr.read_region((x, y), 0, (w, h)))
    x += 700
pan_s = time.perf_counter() - t1
print(json.dumps({"open_s": round(open_s, 3), "rss_peak_delta_mb": round(hwm() - base, 1), "pan_s": round(pan_s, 3)}))
"""


def _run(args: list[str]) -> dict:
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="write the test slide here and keep it")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = a.keep or Path(tmp) / "big_pyramid.tif"
        t0 = time.perf_counter()
        sizes = write_big_pyramid(path, he_tiles(ROOT / "tests" / "data" / "CMU-1-Small-Region.svs"))
        write_s = time.perf_counter() - t0
        ours = _run([sys.executable, str(ROOT / "tests" / "slides" / "big_pyramid.py"), str(path)])
        base = _run([sys.executable, "-c", _OPENSLIDE_BASELINE, str(path), str(ROOT / "tests")])
    steps = ours["pan_steps_read_vs_touched"]
    read = sum(r for r, _ in steps)
    touched = sum(t for _, t in steps)
    level0_gb = sizes[0] ** 2 * 3 / 1e9
    print(
        f"slide: {sizes[0]} x {sizes[0]} px, {len(sizes)} levels, {ours['file_mb']} MB on disk, written in {write_s:.1f} s"
    )
    print(
        f"open (open_slide + layer data): {ours['open_s']:.3f} s   OpenSlide: {base['open_s']:.3f} s   "
        f"ratio {ours['open_s'] / max(base['open_s'], 1e-9):.2f}"
    )
    print(
        f"peak RSS added: {ours['rss_peak_delta_mb']:.1f} MB (after open {ours['rss_open_delta_mb']:.1f} MB)   "
        f"OpenSlide: {base['rss_peak_delta_mb']:.1f} MB   level 0 decoded whole would be {level0_gb:.1f} GB"
    )
    print(
        f"pan 12 x 1920x1080 viewports at level 0: {ours['pan_s']:.3f} s   OpenSlide: {base['pan_s']:.3f} s   "
        f"ratio {ours['pan_s'] / max(base['pan_s'], 1e-9):.2f}"
    )
    print(
        f"tiles decoded while panning: {read} for {touched} tiles under the viewports "
        f"(ratio {read / touched:.2f}); whole run {ours['tiles_read_total']} of {ours['tiles_in_file']} tiles "
        f"({100 * ours['tiles_read_total'] / ours['tiles_in_file']:.2f} %)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
