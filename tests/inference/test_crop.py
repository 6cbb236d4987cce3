"""The residual trunk cropped to what each tile's core needs: the cores are what they were, the work smaller."""

from __future__ import annotations

import numpy as np
import torch
from engine_helpers import small_generator
from test_engine_quality import level0

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.crop import CropContext, spare_sides, trunk_plan, use_cropping
from napari_virtual_ihc.inference.normalization import fold_frozen_norms, freeze_normalization
from napari_virtual_ihc.inference.winograd import use_winograd
from napari_virtual_ihc.slides.base import ArraySlide


def _frozen(ngf: int = 8, n_blocks: int = 9, winograd: bool = False) -> torch.nn.Module:
    model = small_generator("batch", ngf=ngf, n_blocks=n_blocks)
    frozen = freeze_normalization(model.module)
    fold_frozen_norms(frozen)
    if winograd:
        use_winograd(frozen, min_channels=0)
    return frozen


def test_cropped_trunk_gives_the_same_core_and_runs_smaller_maps(he_1024):
    window, halo = 240, 88  # a 64 px core with the ResNet-9's halo
    x = torch.from_numpy(he_1024[:window, :window]).permute(2, 0, 1)[None].float() / 127.5 - 1
    for winograd in (False, True):
        frozen = _frozen(winograd=winograd)
        assert trunk_plan(frozen, halo) == (9, 72)  # 22 trunk px of context, 3 kept for the decoder
        with torch.inference_mode():
            ref = frozen(x)
        ctx = CropContext()
        cropped, blocks = use_cropping(frozen, halo, ctx)
        assert blocks == 9
        shapes: list[tuple[int, ...]] = []
        hook = cropped.inner.model[18].register_forward_hook(
            lambda m, i, o, s=shapes: s.append(tuple(o.shape))
        )
        for sides in [(True, True, True, True), (False, True, True, False), (True, False, False, False)]:
            ctx.sides = sides
            with torch.inference_mode():
                out = cropped(x)
            assert out.shape == ref.shape
            core = (slice(None), slice(None), slice(halo, window - halo), slice(halo, window - halo))
            assert torch.allclose(out[core], ref[core], atol=2e-5), (winograd, sides)
            # where a side may not shed (the slide's edge), the output reaches the window's edge as before
            if not sides[0]:
                assert (
                    torch.allclose(out[..., :, :halo], ref[..., :, :halo], atol=2e-5) or sides[1] or sides[3]
                )
        # the last block's map: 60 trunk px uncropped, 2 x 18 fewer on both shedding sides
        assert shapes[0][2:] == (60 - 36, 60 - 36)
        hook.remove()
        ctx.sides = (False, False, False, False)
        with torch.inference_mode():
            assert torch.equal(cropped(x), ref)  # no sides: the model as it was


def test_spare_sides_follow_the_context_around_the_core():
    assert spare_sides((88, 88, 64, 64), (240, 240), 88) == (True, True, True, True)
    assert spare_sides((0, 88, 64, 64), (240, 240), 88) == (False, True, True, True)  # the slide's left edge
    assert spare_sides((176, 0, 64, 64), (240, 240), 88) == (True, False, False, True)


def test_engine_with_cropping_writes_the_store_it_writes_without(he_1024, tmp_path):
    model = small_generator("batch", ngf=8, n_blocks=9)
    img = he_1024[:320, :384]  # 5 x 6 tiles of 64 px: corners, edges and interior windows
    stores = {}
    for crop in (False, True):
        settings = EngineSettings(tile=64, skip_background=False, crop_activations=crop, precision="fp32")
        rep = stain_slide(ArraySlide(img, 0.5), model, tmp_path / f"c{crop}.ome.zarr", settings)
        assert rep.settings["cropped_blocks"] == (9 if crop else 0)
        stores[crop] = level0(tmp_path / f"c{crop}.ome.zarr").astype(int)
    diff = np.abs(stores[True] - stores[False])
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # the same arithmetic, up to kernel rounding
