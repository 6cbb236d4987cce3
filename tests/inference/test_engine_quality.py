"""Tiled staining agrees with one whole-image pass, without seams, at the model's resolution."""

from __future__ import annotations

import numpy as np
import torch
import zarr
from engine_helpers import small_generator

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.quality import psnr, seam_score
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.slides.base import ArraySlide


def whole_pass(model, img: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return to_uint8(model.module(to_input(img[None], "minus_one_one")), "minus_one_one")[0]


def level0(store) -> np.ndarray:
    return np.asarray(zarr.open_group(str(store), mode="r")["0"][:]).transpose(1, 2, 0)


def test_instance_norm_resnet9_tiled_matches_whole_image_without_seams(he_2048, tmp_path):
    model = small_generator("instance", ngf=4, n_blocks=9)  # ResNet-9 layout, narrow for CI
    whole = whole_pass(model, he_2048)
    settings = EngineSettings(tile=512, batch=2, skip_background=False)
    rep = stain_slide(ArraySlide(he_2048, 0.5), model, tmp_path / "t.ome.zarr", settings)
    tiled = level0(tmp_path / "t.ome.zarr")
    assert tiled.shape == whole.shape
    assert rep.settings["halo"] >= rep.settings["receptive_field"] / 2
    p, seams = psnr(tiled, whole), seam_score(tiled, 512)
    print(f"engine: PSNR {p:.1f} dB vs whole image, seam score {seams:.3f}")
    assert p >= 35.0
    assert seams <= 1.1

    # The whole-slide path: statistics sampled from windows in batches, then the tiles with frozen, folded norms.
    sampled = EngineSettings(tile=512, batch=2, skip_background=False, pooled_pass_mp=0.0)
    rep = stain_slide(ArraySlide(he_2048, 0.5), model, tmp_path / "s.ome.zarr", sampled)
    tiled = level0(tmp_path / "s.ome.zarr")
    p, seams = psnr(tiled, whole), seam_score(tiled, 512)
    print(f"engine (sampled statistics, frozen + folded): PSNR {p:.1f} dB, seam score {seams:.3f}")
    assert rep.settings["norms_folded"] == 23
    assert p >= 35.0
    assert seams <= 1.1

    # The naive loop's figures (per-tile InstanceNorm, no halo) are printed by benchmarks/bench_engine.py.


def test_batchnorm_model_runs_with_running_statistics(he_1024, tmp_path):
    model = small_generator("batch", ngf=4, n_blocks=4)
    he_1024 = he_1024[:640, :640]
    whole = whole_pass(model, he_1024)  # eval mode: running statistics
    rep = stain_slide(
        ArraySlide(he_1024, 0.5),
        model,
        tmp_path / "b.ome.zarr",
        EngineSettings(tile=192, batch=3, skip_background=False),
    )
    tiled = level0(tmp_path / "b.ome.zarr")
    assert rep.model["norm"] == "batch" and rep.settings["norms_folded"] > 0
    assert psnr(tiled, whole) >= 50.0  # exact up to float rounding: the halo covers the receptive field
    # Deterministic: a second run with the same settings writes the same bytes; another batch size may pick
    # other BLAS kernels on some CPUs (AVX512, AMX), which round differently: at most one grey level.
    for name, b in (("b2", 3), ("b3", 2)):
        stain_slide(
            ArraySlide(he_1024, 0.5),
            model,
            tmp_path / f"{name}.ome.zarr",
            EngineSettings(tile=192, batch=b, skip_background=False),
        )
    assert np.array_equal(level0(tmp_path / "b2.ome.zarr"), tiled)
    assert np.abs(level0(tmp_path / "b3.ome.zarr").astype(int) - tiled.astype(int)).max() <= 1


def test_40x_scan_is_stained_at_the_model_20x_resolution(he_1024, tmp_path):
    model = small_generator("batch", ngf=8, n_blocks=2, mpp=0.5)
    at20 = he_1024[:512, :512]
    at40 = np.repeat(np.repeat(at20, 2, axis=0), 2, axis=1)  # the same tissue scanned at 0.25 µm/px
    settings = EngineSettings(tile=128, batch=2, skip_background=False)
    rep20 = stain_slide(ArraySlide(at20, 0.5), model, tmp_path / "s20.ome.zarr", settings)
    stain_slide(ArraySlide(at40, 0.25), model, tmp_path / "s40.ome.zarr", settings)
    out20, out40 = level0(tmp_path / "s20.ome.zarr"), level0(tmp_path / "s40.ome.zarr")
    assert out40.shape == out20.shape == (512, 512, 3)  # store level 0 is at the model's 0.5 µm/px
    assert np.array_equal(out40, out20)
    attrs = dict(zarr.open_group(str(tmp_path / "s40.ome.zarr"), mode="r").attrs)
    assert attrs["virtual_ihc"]["level0_downsample"] == 2.0
    assert attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.5, 0.5]
    assert rep20.settings["level0_downsample"] == 1.0
    # Progress boxes are in the SOURCE's level-0 pixels.
    boxes = []
    stain_slide(
        ArraySlide(at40, 0.25),
        model,
        tmp_path / "p.ome.zarr",
        settings,
        progress=lambda p: boxes.extend(p.new_boxes),
    )
    assert max(x + w for x, _, w, _ in boxes) == 1024

    # A pyramid whose level 1 is already at 20x is read from that level, with the same result.
    pyramid = ArraySlide([at40, at20], 0.25)
    stain_slide(pyramid, model, tmp_path / "pyr.ome.zarr", settings)
    assert np.array_equal(level0(tmp_path / "pyr.ome.zarr"), out20)


def test_priority_region_first_and_progress_after_every_batch(he_1024, tmp_path):
    model = small_generator("batch", ngf=4, n_blocks=1)
    reports = []
    settings = EngineSettings(tile=128, batch=2, skip_background=False)
    target = (800, 800, 100, 100)  # level-0 box the "viewer" looks at
    stain_slide(
        ArraySlide(he_1024, 0.5),
        model,
        tmp_path / "pr.ome.zarr",
        settings,
        priority=lambda: target,
        progress=reports.append,
    )
    first_boxes = [b for r in reports for b in r.new_boxes][:2]
    assert all(x <= 900 and x + w >= 800 and y <= 900 and y + h >= 800 for x, y, w, h in first_boxes)
    assert reports[-1].done == reports[-1].total == 64
    assert len(reports) >= 64 // 2  # one report per batch (plus the initial one)


def test_slide_statistics_are_sampled_on_the_runs_device(tmp_path, monkeypatch):
    """On a GPU machine the statistics pass must run there too, not on the CPU the model was loaded on."""
    import napari_virtual_ihc.inference.slide_stats as slide_stats

    seen = []
    real = slide_stats.estimate_instance_stats

    def recording(*args, **kwargs):
        seen.append(kwargs.get("device"))
        return real(*args, **kwargs)

    monkeypatch.setattr(slide_stats, "estimate_instance_stats", recording)
    rgb = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    rep = stain_slide(
        ArraySlide(rgb, mpp=0.5),
        small_generator("instance", ngf=4, n_blocks=1),
        tmp_path / "s.ome.zarr",
        EngineSettings(tile=64, device="cpu", skip_background=False),
    )
    assert seen and all(d == torch.device("cpu") for d in seen), seen
    assert rep.device == "cpu"
