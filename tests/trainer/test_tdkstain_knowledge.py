"""TDKstain's knowledge maps against direct computations, the fixed metrics, and the map cache."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from virtual_ihc_train.evaluation import tdkstain_errors
from virtual_ihc_train.methods.tdkstain.knowledge_maps import (
    KnowledgeCacheError,
    KnowledgeParams,
    centroids,
    compute_maps,
    dab_target,
    density_target,
    hematoxylin_seed,
    load_segmenters,
    membrane_mask,
    prepare_knowledge,
)

# scikit-image's rgb_from_hed (Ruifrok & Johnston), written out so the expected values do not come from skimage
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
LOG_ADJUST = np.log(1e-6)
CLASSICAL = KnowledgeParams(nuclei_method="classical")


def direct_dab_rendering(rgb: np.ndarray) -> np.ndarray:
    """rgb2hed's DAB concentration, then that stain alone back to RGB, from the formulas."""
    p = np.maximum(rgb.astype(np.float64) / 255.0, 1e-6)
    conc = np.maximum((np.log(p) / LOG_ADJUST) @ np.linalg.inv(RGB_FROM_HED), 0)
    return np.clip(np.exp(LOG_ADJUST * conc[..., 2:3] * RGB_FROM_HED[2]), 0, 1)


def direct_saturation(x: np.ndarray) -> np.ndarray:
    mx, mn = x.max(axis=-1), x.min(axis=-1)
    return np.where(mx > 0, (mx - mn) / np.where(mx > 0, mx, 1), 0)


KNOWN = {  # pixel -> has DAB above the 0.15 saturation threshold
    (255, 255, 255): False,  # glass
    (240, 235, 235): False,  # near-white: 0.04 (the old trainer code said 0.23)
    (150, 100, 60): True,  # DAB brown
    (80, 90, 160): False,  # hematoxylin blue
    (120, 70, 40): True,  # dark brown
}


def test_dab_target_and_mask_on_pixels_with_known_stain():
    rgb = np.array([list(KNOWN)], np.uint8).repeat(9, 0)  # 9 rows so the 9x9 blur sees uniform columns
    rendering = direct_dab_rendering(rgb)
    np.testing.assert_array_equal(dab_target(rgb), (rendering * 255).astype(np.uint8))
    s = direct_saturation(rendering)[0]
    assert s[1] == pytest.approx(0.0418, abs=1e-3)
    assert [bool(v > 0.15) for v in s] == list(KNOWN.values())
    unblurred = membrane_mask(rgb, KnowledgeParams(mask_blur_ksize=1))
    np.testing.assert_array_equal(unblurred[0], np.where(s > 0.15, 255, 0))


def test_membrane_mask_blur_is_the_9x9_sigma3_gaussian():
    rgb = np.full((21, 21, 3), 255, np.uint8)
    rgb[10, 10] = (150, 100, 60)  # one brown pixel on glass
    m = membrane_mask(rgb)
    g = np.exp(-(np.arange(-4, 5) ** 2) / (2 * 3.0**2))
    g /= g.sum()
    expected = np.zeros((21, 21))
    expected[6:15, 6:15] = 255 * np.outer(g, g)
    assert np.abs(m.astype(float) - expected).max() <= 1.0  # uint8 rounding
    assert m[10, 10] == round(255 * g[4] ** 2)


def test_density_from_known_centroids_peaks_and_sum():
    sigma = 11.0
    pts = np.array([[60, 60], [60, 200], [180, 130]])
    k = density_target(pts, (256, 256), sigma)
    assert k.dtype == np.uint8
    assert [int(k[r, c]) for r, c in pts] == [255, 255, 255]  # isolated equal peaks, min-max normalised
    taps = np.exp(-(np.arange(-44, 45) ** 2) / (2 * sigma**2))  # skimage/scipy truncate at 4 sigma
    kernel = np.outer(taps, taps) / taps.sum() ** 2
    blurred = np.zeros((256 + 88, 256 + 88))
    for r, c in pts:  # every point is > 4 sigma from the border: no border handling needed
        blurred[r : r + 89, c : c + 89] += kernel
    direct = (blurred[44:-44, 44:-44] / kernel.max() * 255).astype(np.uint8)  # min is 0 far from the points
    assert np.abs(k.astype(int) - direct).max() <= 1
    assert k.astype(float).sum() / 255 == pytest.approx(len(pts) / kernel.max(), rel=0.02)  # mass per nucleus
    two = density_target(np.array([[100, 100], [100, 100]]), (200, 200), sigma)
    assert two.max() == 255 and np.array_equal(two, density_target(np.array([[100, 100]]), (200, 200), sigma))


def test_centroids_truncate_like_the_reference():
    labels = np.zeros((20, 20), np.int32)
    labels[2:5, 3:7] = 1  # centroid (3, 4.5)
    labels[10:14, 10:13] = 7  # centroid (11.5, 11)
    assert centroids(labels).tolist() == [[3, 4], [11, 11]]


@pytest.mark.parametrize("colour", [(255, 255, 255), (40, 60, 200)], ids=["all-white", "all-blue"])
def test_no_dab_no_nuclei_gives_empty_maps(colour):
    rgb = np.zeros((64, 64, 3), np.uint8) + np.array(colour, np.uint8)
    with np.errstate(all="raise"):
        maps = compute_maps(rgb, CLASSICAL, load_segmenters(CLASSICAL))
    assert not maps.mask.any() and not maps.density.any() and maps.n_nuclei == 0
    assert not hematoxylin_seed(rgb).any()


@pytest.fixture(scope="module")
def ihc_crops(data_dir) -> list[np.ndarray]:
    out = []
    for name in ("Rat-Kidney_PanCytokeratin.jpg", "Izd2-29-041-w35_proSPC.jpg"):
        rgb = np.asarray(Image.open(data_dir / name).convert("RGB"))
        out += [rgb[200:296, 300:396], rgb[400:496, 500:596]]
    return out


def test_real_ihc_maps_find_brown_membranes_and_nuclei(ihc_crops):
    segs = load_segmenters(CLASSICAL)
    for rgb in ihc_crops:
        m = compute_maps(rgb, CLASSICAL, segs)
        r, g, b = (rgb[..., i].astype(int) for i in range(3))
        brown = (r > b + 40) & (g > b + 10) & (r < 200)
        if brown.sum() > 50:
            assert (m.mask[brown] > 127).mean() > 0.7
        assert m.dab.shape == rgb.shape and m.density.shape == rgb.shape[:2]
    assert sum(compute_maps(rgb, CLASSICAL, segs).n_nuclei for rgb in ihc_crops) > 10


def _write_targets(folder: Path, crops: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, c in enumerate(crops):
        p = folder / f"{i}.png"
        Image.fromarray(c).save(p)
        paths.append(p)
    return paths


def test_cache_second_run_computes_nothing_and_a_parameter_change_recomputes_all(tmp_path, ihc_crops):
    targets = _write_targets(tmp_path / "ihc", ihc_crops)
    segs = load_segmenters(CLASSICAL)
    _, c1 = prepare_knowledge(targets, tmp_path / "cache", CLASSICAL, segs, progress=False)
    assert (c1.computed, c1.loaded) == (4, 0)
    _, c2 = prepare_knowledge(targets, tmp_path / "cache", CLASSICAL, segs, progress=False)
    assert (c2.computed, c2.loaded, c2.rejected) == (0, 4, 0)
    changed = KnowledgeParams(nuclei_method="classical", nuclei_sigma=5.0)
    _, c3 = prepare_knowledge(targets, tmp_path / "cache", changed, segs, progress=False)
    assert (c3.computed, c3.loaded) == (4, 0)
    meta = json.loads((tmp_path / "cache" / "knowledge.json").read_text())
    assert meta["methods"] == "classical + classical" and meta["params"]["nuclei_sigma"] == 5.0
    # same pixels under another name: the key is the content, not the name
    (tmp_path / "ihc" / "0.png").rename(tmp_path / "ihc" / "renamed.png")
    targets[0] = tmp_path / "ihc" / "renamed.png"
    _, c4 = prepare_knowledge(targets, tmp_path / "cache", CLASSICAL, segs, progress=False)
    assert c4.computed == 0


def test_cache_corrupt_and_stale_entries_are_recomputed(tmp_path, ihc_crops):
    targets = _write_targets(tmp_path / "ihc", ihc_crops[:2])
    segs = load_segmenters(CLASSICAL)
    entries, _ = prepare_knowledge(targets, tmp_path / "cache", CLASSICAL, segs, progress=False)
    good = [e.read_bytes() for e in entries]
    entries[0].write_bytes(good[0][: len(good[0]) // 2])  # truncated
    entries[1].write_bytes(good[0])  # another image's maps under this key
    again, c = prepare_knowledge(targets, tmp_path / "cache", CLASSICAL, segs, progress=False)
    assert (c.rejected, c.computed, c.loaded) == (2, 2, 0)
    assert [e.read_bytes() for e in again] == good


def test_unwritable_cache_is_a_clear_error(tmp_path, ihc_crops):
    targets = _write_targets(tmp_path / "ihc", ihc_crops[:1])
    with pytest.raises(KnowledgeCacheError, match=r"tdkstain\.cache_dir"):
        prepare_knowledge(targets, Path("/proc/no-such-cache"), CLASSICAL, progress=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_cache_with_valid_entries_is_used(tmp_path, ihc_crops):
    targets = _write_targets(tmp_path / "ihc", ihc_crops[:2])
    prepare_knowledge(targets, tmp_path / "cache", CLASSICAL, progress=False)
    os.chmod(tmp_path / "cache", 0o555)
    try:
        _, c = prepare_knowledge(targets, tmp_path / "cache", CLASSICAL, progress=False)
        assert (c.computed, c.loaded) == (0, 2)
    finally:
        os.chmod(tmp_path / "cache", 0o755)


@pytest.mark.slow  # cellpose's CellposeModel() takes ~25-35 s to build here (the inference itself ~5 s)
def test_cellpose_model_path_runs_through_the_core_adapter_and_is_recorded(tmp_path, ihc_crops):
    torch = pytest.importorskip("torch")
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    net = CPnet([2, 8, 16, 32], 3, sz=3, max_pool=True, diam_mean=17.0)
    model = tmp_path / "tiny_cellpose"
    net.save_model(str(model))
    params = KnowledgeParams(
        nuclei_method="cellpose", nuclei_model=str(model), membrane_nuclei=False, cellpose_diameter=17.0
    )
    segs = load_segmenters(params)
    assert segs.label == f"cellpose:{model}" and not segs.fallback_reasons
    targets = _write_targets(tmp_path / "ihc", [ihc_crops[0][:48, :48]])
    entries, cache = prepare_knowledge(targets, tmp_path / "cache", params, segs, progress=False)
    meta = json.loads((tmp_path / "cache" / "knowledge.json").read_text())
    assert meta["methods"] == f"cellpose:{model}" and cache.computed == 1
    with np.load(entries[0]) as z:
        assert json.loads(str(z["meta"]))["methods"] == f"cellpose:{model}"


def test_missing_cellpose_weights_fall_back_with_a_label(tmp_path):
    params = KnowledgeParams(nuclei_method="auto", nuclei_model=str(tmp_path / "missing.pth"))
    segs = load_segmenters(
        KnowledgeParams(nuclei_method="auto", nuclei_model=str(tmp_path / "x"), membrane_nuclei=False)
    )
    assert segs.label == "offline" and segs.fallback_reasons  # the offline detector stands in for Cellpose
    with pytest.raises(Exception, match="not a built-in model"):
        load_segmenters(KnowledgeParams(nuclei_method="cellpose", nuclei_model=params.nuclei_model))


# ---------------------------------------------------------------- the fixed metrics (issue 13, point 4)
def test_metric_dab_saturation_uses_one_convention():
    """The old code fed log10 ODs (6x scikit-image's scale) to hed2rgb: (240, 235, 235) read 0.23."""
    px = np.array([[[240, 235, 235], [150, 100, 60]]], np.uint8)
    s = tdkstain_errors.dab_saturation(px)
    np.testing.assert_allclose(s, direct_saturation(direct_dab_rendering(px)), rtol=1e-6)
    assert s[0, 0] < 0.05


def test_metric_nuclei_counter_is_the_cores_segmenter(tmp_path, data_dir):
    """The old code probed for a ``nuclei.count_nuclei`` that does not exist and never used the core."""
    from napari_virtual_ihc.nuclei import make_segmenter
    from napari_virtual_ihc.stain import deconvolve

    rgb = np.asarray(Image.open(data_dir / "Izd2-29-041-w35_proSPC.jpg").convert("RGB"))[:200, :200]
    count, label = tdkstain_errors.default_nuclei_counter("classical")
    assert label == "classical"
    labels = make_segmenter("classical")(
        deconvolve(rgb)["hematoxylin"], tdkstain_errors.CELLPOSE_DEFAULT_DIAMETER_PX
    )
    assert count(rgb) == len(np.unique(labels)) - 1 > 0
    _, auto_label = tdkstain_errors.default_nuclei_counter("auto", tmp_path / "absent-model")
    assert auto_label.startswith("offline (fallback:")


def test_flips_apply_to_he_ihc_and_every_map_alike(tmp_path, ihc_crops):
    import torch
    from virtual_ihc_train.data import Augment, Pair, to_tensor
    from virtual_ihc_train.methods.tdkstain.knowledge_maps import KnowledgePairDataset, load_entry

    targets = _write_targets(tmp_path / "ihc", ihc_crops[:1])
    sources = _write_targets(tmp_path / "he", [np.ascontiguousarray(ihc_crops[1][:, ::-1])])
    entries, _ = prepare_knowledge(targets, tmp_path / "cache", CLASSICAL, progress=False)
    ds = KnowledgePairDataset(
        [Pair(sources[0], targets[0], "0")], Augment("none", flip=True, rot90=False), 0, entries, 8, 8
    )
    maps, b = load_entry(entries[0]), ihc_crops[0]
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        item = ds[0]
        flipped = torch.equal(item["B"], to_tensor(b[:, ::-1]))
        assert flipped or torch.equal(item["B"], to_tensor(b))
        o = (lambda x: x[:, ::-1]) if flipped else (lambda x: x)
        assert torch.equal(item["A"], to_tensor(o(ihc_crops[1][:, ::-1])))
        assert torch.equal(item["dab"], to_tensor(o(maps.dab)))
        assert torch.equal(item["mask"][0], torch.from_numpy(o(maps.mask).copy()).float() / 255)
        assert torch.equal(item["density"][0], torch.from_numpy(o(maps.density).copy()).float() / 255)
        seen.add(flipped)
    assert seen == {True, False}
