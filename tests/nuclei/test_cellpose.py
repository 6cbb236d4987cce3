"""The real Cellpose path: a small CPnet trained with cellpose.train.train_seg, saved, loaded by path."""

from __future__ import annotations

import time

import numpy as np
import pytest

from napari_virtual_ihc.nuclei import load_cellpose, make_segmenter
from napari_virtual_ihc.stain import AnalysisSettings, analyze_image, deconvolve

from ._synthetic import f1_score, synthetic_nuclei


@pytest.fixture(scope="module")
def small_cellpose(tmp_path_factory) -> str:
    torch = pytest.importorskip("torch")
    from cellpose import train
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    np.random.seed(0)
    imgs, labs = [], []
    for s in range(8):
        rgb, lab = synthetic_nuclei((96, 96), n=9, seed=s)
        imgs.append(deconvolve(rgb)["hematoxylin"])
        labs.append(lab)
    net = CPnet([2, 16, 32, 64], 3, sz=3, max_pool=True, diam_mean=17.0)
    out = tmp_path_factory.mktemp("cp")
    t0 = time.perf_counter()
    path, losses, _ = train.train_seg(
        net,
        train_data=imgs,
        train_labels=labs,
        channels=[0, 0],
        n_epochs=60,
        learning_rate=0.05,
        batch_size=8,
        save_path=str(out),
        model_name="small_nuclei",
        min_train_masks=1,
        bsize=96,
        nimg_per_epoch=8,
    )
    print(f"cellpose train_seg: {time.perf_counter() - t0:.1f} s, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return str(path)


def test_small_cellpose_by_path_finds_synthetic_nuclei(small_cellpose):
    model = load_cellpose(small_cellpose)
    assert model.method.startswith("cellpose:")
    rgb, truth = synthetic_nuclei((256, 256), n=40, seed=99)
    pred = model.segment(deconvolve(rgb)["hematoxylin"], diameter_px=13)
    f1 = f1_score(truth, pred)
    print(f"small Cellpose F1 = {f1:.3f} ({pred.max()} found, {truth.max()} true)")
    assert f1 >= 0.8


def test_cellpose_tiles_count_border_nuclei_once(small_cellpose):
    rgb, truth = synthetic_nuclei((256, 256), n=45, seed=7)
    seg = make_segmenter("cellpose", small_cellpose)
    s = AnalysisSettings(mode="he", tile=96, mpp=0.5, diameter_um=6.5)
    r = analyze_image(rgb, s, segmenter=seg)
    assert r.nuclei_method == seg.method != "classical"
    print(f"tiled Cellpose: {r.n_nuclei} nuclei of {truth.max()}")
    assert abs(r.n_nuclei - int(truth.max())) <= 2
    assert f1_score(truth, r.labels) >= 0.8
