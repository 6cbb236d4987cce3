"""The AMMFI generator (global channel attention) tiles without seams: its pools are frozen per slide."""

from __future__ import annotations

import numpy as np
import torch
import zarr

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.normalization import estimate_instance_stats, freeze_normalization
from napari_virtual_ihc.inference.quality import psnr, seam_score
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.models import ModelSpec, build_generator
from napari_virtual_ihc.models.ammfi import GlobalPool2d
from napari_virtual_ihc.models.spec import LoadedGenerator
from napari_virtual_ihc.slides.base import ArraySlide


def small_ammfi(seed: int = 0) -> LoadedGenerator:
    torch.manual_seed(seed)
    module = build_generator("ammfi_resnet", ngf=8, n_blocks=2).eval()
    g = torch.Generator().manual_seed(seed + 1)
    for m in module.modules():  # BatchNorm in the AMMFI projections: non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    spec = ModelSpec("ammfi_resnet", {"ngf": 8, "n_blocks": 2}, name="test-ammfi")
    return LoadedGenerator(module=module, spec=spec, source="test", sha256=f"test-ammfi-{seed}")


def test_frozen_global_pools_reproduce_a_whole_image_pass(he_1024):
    model = small_ammfi()
    x = to_input(he_1024[None, :256, :256], "minus_one_one")
    with torch.inference_mode():
        whole = model.module(x)
    stats = estimate_instance_stats(model.module, [x])
    pools = [n for n, m in model.module.named_modules() if isinstance(m, GlobalPool2d)]
    assert len(pools) == 4 and all(n in stats for n in pools)
    with torch.inference_mode():
        frozen = freeze_normalization(model.module, stats)(x)
    assert torch.allclose(frozen, whole, atol=1e-3 * float(whole.abs().max()))


def test_ammfi_tiled_matches_whole_image_without_seams(he_1024, tmp_path):
    model = small_ammfi()
    img = np.ascontiguousarray(he_1024[:512, :512])
    with torch.inference_mode():
        whole = to_uint8(model.module(to_input(img[None], "minus_one_one")), "minus_one_one")[0]
    # exact: one pooled pass over every tile; sampled: the 4 windows (halos included, cores pooled) in one
    # batch. Several batches of sampled windows are the engine's approximation for any InstanceNorm model
    # (each batch normalised by its own statistics); a random, saturated network is too chaotic to judge it.
    for name, extra in (("exact", {"batch": 2}), ("sampled", {"batch": 16, "pooled_pass_mp": 0.0})):
        settings = EngineSettings(tile=256, skip_background=False, **extra)  # 2 x 2 tiles
        stain_slide(ArraySlide(img, 0.5), model, tmp_path / f"{name}.ome.zarr", settings)
        tiled = np.asarray(zarr.open_group(str(tmp_path / f"{name}.ome.zarr"), mode="r")["0"][:]).transpose(
            1, 2, 0
        )
        p, seams = psnr(tiled, whole), seam_score(tiled, 256)
        print(f"AMMFI tiled ({name} statistics): PSNR {p:.1f} dB vs whole image, seam score {seams:.3f}")
        assert p >= 35.0
        assert seams <= 1.1
