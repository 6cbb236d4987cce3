"""The real Cellpose path: a small CPnet trained with cellpose.train.train_seg, saved, loaded by path."""

from __future__ import annotations

import pytest

from napari_virtual_ihc.nuclei import load_cellpose, make_segmenter
from napari_virtual_ihc.stain import AnalysisSettings, analyze_image, deconvolve

from ._synthetic import f1_score, synthetic_nuclei


@pytest.fixture(scope="module")
def small_cellpose(small_cellpose_path) -> str:
    return small_cellpose_path


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
