"""MP/s of the stain overlays on CPU, each against a baseline measured in the same run.

- deconvolution + DAB bins + TDKstain mask vs ``skimage.color.rgb2hed`` alone (baseline)
- nuclei: classical fallback and a small Cellpose net (trained here with cellpose.train.train_seg, 20 epochs;
  speed only) vs the deconvolution rate

Run: python benchmarks/bench_stain.py [--size 1024] [--cellpose]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage import data
from skimage.color import rgb2hed

from napari_virtual_ihc.nuclei import load_cellpose, segment_classical
from napari_virtual_ihc.stain import dab_bins, deconvolve, tdkstain_membrane_mask


def rate(fn, mpx: float, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return mpx / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--cellpose", action="store_true", help="also train a tiny net and time Cellpose")
    a = ap.parse_args()
    tile = data.immunohistochemistry()
    reps = -(-a.size // tile.shape[0])
    rgb = np.tile(tile, (reps, reps, 1))[: a.size, : a.size].copy()
    mpx = rgb.shape[0] * rgb.shape[1] / 1e6
    base = rate(lambda: rgb2hed(rgb), mpx)

    def masks() -> None:
        d = deconvolve(rgb)
        dab_bins(d["dab"])
        tdkstain_membrane_mask(rgb)

    ours = rate(masks, mpx)
    h = deconvolve(rgb)["hematoxylin"]
    classical = rate(lambda: segment_classical(h, 14), mpx, repeat=1)
    print(f"image {rgb.shape[1]}x{rgb.shape[0]} ({mpx:.2f} MP), CPU")
    print(f"skimage rgb2hed (baseline)            {base:8.2f} MP/s")
    print(f"deconvolution + DAB bins + TDK mask   {ours:8.2f} MP/s  ({ours / base:.2f}x baseline)")
    print(f"nuclei, classical fallback            {classical:8.2f} MP/s  ({classical / base:.3f}x baseline)")
    if a.cellpose:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "nuclei"))
        from _synthetic import synthetic_nuclei
        from cellpose import train
        from cellpose.resnet_torch import CPnet

        imgs, labs = zip(*(synthetic_nuclei((96, 96), n=9, seed=s) for s in range(8)), strict=True)
        imgs = [deconvolve(i)["hematoxylin"] for i in imgs]
        with tempfile.TemporaryDirectory() as tmp:
            path, _, _ = train.train_seg(
                CPnet([2, 16, 32, 64], 3, sz=3, diam_mean=17.0),
                train_data=imgs,
                train_labels=list(labs),
                channels=[0, 0],
                n_epochs=20,
                learning_rate=0.05,
                save_path=tmp,
                model_name="bench",
                min_train_masks=1,
                bsize=96,
                nimg_per_epoch=8,
            )
            model = load_cellpose(path)
            crop = h[:512, :512]
            cp = rate(lambda: model.segment(crop, 14), crop.size / 1e6, repeat=2)  # first run: numba JIT
        print(f"nuclei, Cellpose small net [16,32,64] {cp:8.2f} MP/s  ({cp / base:.3f}x baseline)")


if __name__ == "__main__":
    main()
