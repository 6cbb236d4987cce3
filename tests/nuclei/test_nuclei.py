"""Classical nuclei, tile-border de-duplication, density maps, tiled vs single-pass, real H&E counts."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.io import imread

from napari_virtual_ihc.nuclei import density_map, integrate, make_segmenter, segment_classical
from napari_virtual_ihc.stain import AnalysisSettings, analyze_image, deconvolve

from ._synthetic import f1_score, synthetic_nuclei


def test_classical_f1_on_synthetic_disks():
    rgb, truth = synthetic_nuclei((256, 256), n=40, seed=3)
    pred = segment_classical(deconvolve(rgb)["hematoxylin"], diameter_px=13)
    f1 = f1_score(truth, pred)
    print(f"classical F1 = {f1:.3f}")
    assert f1 >= 0.9


def test_blank_glass_has_no_nuclei():
    assert segment_classical(np.zeros((64, 64), np.float32), 10).max() == 0


def test_tile_borders_count_each_nucleus_once():
    rgb, truth = synthetic_nuclei((300, 300), n=60, seed=5)
    s = AnalysisSettings(mode="he", nuclei_method="classical", tile=64, mpp=0.5, diameter_um=6.5)
    single = AnalysisSettings(mode="he", nuclei_method="classical", tile=512, mpp=0.5, diameter_um=6.5)
    tiled = analyze_image(rgb, s)
    whole = analyze_image(rgb, single)
    n_true = int(truth.max())
    print(f"true {n_true}, tiled {tiled.n_nuclei}, single {whole.n_nuclei}")
    # many nuclei straddle the 64-px borders; each must be counted exactly once
    assert abs(tiled.n_nuclei - n_true) <= 1
    assert abs(tiled.n_nuclei - whole.n_nuclei) <= 1
    assert f1_score(truth, tiled.labels) >= 0.9
    # labels are unique per nucleus: no truth disk is split into two predicted ids
    for t in range(1, n_true + 1):
        assert len(np.unique(tiled.labels[truth == t])) <= 2


def test_density_integrates_to_count():
    pts = np.array([[10.0, 10.0], [50.0, 80.0], [99.0, 0.0], [0.0, 127.0]])
    for ds in (1, 4):
        d = density_map(pts, (100, 128), mpp=0.5, sigma_um=10, downsample=ds)
        assert integrate(d, 0.5, ds) == pytest.approx(4, rel=1e-4)
    # units: one nucleus spread evenly over 1 mm² -> ~1 / mm²
    flat = density_map(np.array([[1000.0, 1000.0]]), (2000, 2000), mpp=0.5, sigma_um=1e5, downsample=20)
    assert flat.mean() == pytest.approx(1.0, rel=0.01)


def test_tiled_maps_equal_single_pass(data_dir):
    from skimage import data

    rgb = data.immunohistochemistry()[:384, :384]
    kw = dict(nuclei_method="classical", mpp=0.5, density_sigma_um=15)
    tiled = analyze_image(rgb, AnalysisSettings(tile=128, **kw))
    whole = analyze_image(rgb, AnalysisSettings(tile=1024, **kw))
    assert np.array_equal(tiled.dab_classes, whole.dab_classes)  # pixelwise: no seams
    assert np.array_equal(tiled.membrane_mask, whole.membrane_mask)
    n_t, n_w = tiled.n_nuclei, whole.n_nuclei
    print(f"tiled {n_t} vs single {n_w} nuclei")
    # the classical threshold is per window, so only nuclei near a tile border may differ
    near = np.minimum(whole.cells.y % 128, whole.cells.x % 128)
    near = np.minimum(near, 128 - np.maximum(whole.cells.y % 128, whole.cells.x % 128))
    n_border = int((near < 14).sum())
    print(f"nuclei within one diameter of a tile border: {n_border}")
    assert abs(n_t - n_w) <= max(3, n_border // 3)
    diff = np.abs(tiled.density - whole.density).sum() / whole.density.sum()
    print(f"density relative L1 difference tiled vs single: {diff:.3f}")
    assert diff < 0.1
    assert integrate(tiled.density, 0.5) == pytest.approx(n_t, rel=1e-3)
    # downsampled maps sample the same pixels
    ds = analyze_image(rgb, AnalysisSettings(tile=128, map_downsample=4, **kw))
    assert np.array_equal(ds.dab_classes, whole.dab_classes[::4, ::4])


def test_real_he_high_nuclei_denser_than_medium(data_dir):
    seg = make_segmenter("auto")  # the built-in model cannot be downloaded here -> classical, labelled so
    counts = {}
    for name in ("high", "medium"):
        rgb = imread(data_dir / f"histolab-{name}-nuclei.png")[..., :3]
        r = analyze_image(rgb, AnalysisSettings(mode="he", mpp=0.5), segmenter=seg)
        counts[name] = r.n_nuclei / (rgb.shape[0] * rgb.shape[1])
        assert integrate(r.density, 0.5) == pytest.approx(r.n_nuclei, rel=1e-3)
        assert r.nuclei_method == seg.method
    print(
        f"nuclei per Mpx: high {counts['high'] * 1e6:.0f}, medium {counts['medium'] * 1e6:.0f} ({seg.method})"
    )
    assert counts["high"] > 1.3 * counts["medium"]


def test_auto_without_weights_says_offline_and_why():
    seg = make_segmenter("auto", cellpose_model="/nonexistent/model")
    assert seg.method == "offline"  # blobs for nuclear DAB, classical otherwise (issue 32)
    assert "nonexistent" in seg.fallback_reason
    with pytest.raises(Exception, match="nonexistent"):
        make_segmenter("cellpose", cellpose_model="/nonexistent/model")
