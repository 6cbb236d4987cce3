"""The slide-statistics pass: a budget, one lock-step forward for all layers, sampled tiles reused as tiles."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import torch
from engine_helpers import small_generator
from test_engine_quality import level0

from napari_virtual_ihc.inference import EngineSettings, stain_slide
from napari_virtual_ihc.inference.grid import TileGrid
from napari_virtual_ihc.inference.normalization import fold_frozen_norms, freeze_normalization
from napari_virtual_ihc.inference.quality import psnr
from napari_virtual_ihc.inference.runner import to_input, to_uint8
from napari_virtual_ihc.inference.slide_stats import StatsRequest, plan_windows, pooled_pass_fits
from napari_virtual_ihc.slides.base import ArraySlide


def _request(side: int, tile: int, memory_mp: float, **kw: Any) -> StatsRequest:
    grid = TileGrid((side, side), (0, 0, side, side), tile, 88, 4)
    tiles = {i: grid.tile_at(i) for i in range(len(grid))}
    fields: dict[str, Any] = dict(
        module=torch.nn.Identity(),
        plane=cast(Any, SimpleNamespace(size=(side, side))),  # plan_windows reads only its size
        tiles=tiles,
        tissue=list(tiles),
        todo=len(tiles),
        finished=set(),
        saved=None,
        window_size=grid.window_size,
        halo=88,
        align=4,
        stats_windows=16,
        stats_tile=None,
        stats_share=0.06,
        pooled_limit_mp=0.0,
        memory_mp=memory_mp,
        device=torch.device("cpu"),
        winograd=False,
        legacy_winograd=False,
        precision="fp32",
        batch_norms=False,
        input_norm="minus_one_one",
        output_norm="minus_one_one",
    )
    fields.update(kw)
    return StatsRequest(**fields)


def test_the_pass_stays_within_its_share_of_a_large_job_and_spreads_its_windows():
    # a 16k px slide of 2048 px tiles (64 windows of 2224 px) with memory for one such window per batch
    req = _request(16384, 2048, memory_mp=6.1)
    kind, wins = plan_windows(req)
    window_mp = sum(w.window[2] * w.window[3] for w in wins) / 1e6
    job_mp = 64 * 2224 * 2224 / 1e6
    assert kind == "windows" and len(wins) >= 8
    assert window_mp <= req.stats_share * job_mp and window_mp <= req.memory_mp  # one lock-step batch
    rows = {w.core[1] // 2048 for w in wins}
    cols = {w.core[0] // 2048 for w in wins}
    assert len(rows) >= 4 and len(cols) >= 4  # from all over the slide, not one corner
    # the same slide in 512 px tiles: tile windows fit one batch, so tiles are sampled (and reused)
    kind, wins = plan_windows(_request(16384, 512, memory_mp=8.0))
    assert kind == "tiles" and len(wins) == 16
    # few large tiles (a 4096 px job): the one tile window that fits would be a quarter of the job at one
    # place; as many small windows as the share allows are spread over it instead
    kind, wins = plan_windows(_request(4096, 2048, memory_mp=6.1))
    window_mp = sum(w.window[2] * w.window[3] for w in wins) / 1e6
    assert kind == "windows" and len(wins) >= 8 and window_mp <= 0.06 * 4 * 2224 * 2224 / 1e6
    assert len({(w.core[0] // 2048, w.core[1] // 2048) for w in wins}) == 4  # from every tile


def test_a_job_of_many_tiles_is_one_pooled_pass_when_its_union_fits_and_is_not_mostly_glass():
    # 8 x 8 tiles of 512 px (windows of 688 px): a union of 16.8 MP against 30.3 MP of windows
    assert pooled_pass_fits(_request(4096, 512, memory_mp=8.0, pooled_limit_mp=17.0))
    assert not pooled_pass_fits(_request(4096, 512, memory_mp=8.0, pooled_limit_mp=16.0))  # does not fit
    # two tissue tiles at opposite corners: the union is the whole slide, 36x their windows' pixels
    corners = _request(
        4096, 512, memory_mp=8.0, pooled_limit_mp=100.0, stats_windows=1, tissue=[0, 63], todo=2
    )
    assert not pooled_pass_fits(corners)
    assert pooled_pass_fits(_request(4096, 512, memory_mp=8.0, pooled_limit_mp=100.0, tissue=[0, 63], todo=2))
    # a resumed job whose statistics were sampled keeps them
    sampled = {"pooled_pass": np.array(False)}
    assert not pooled_pass_fits(_request(4096, 512, memory_mp=8.0, pooled_limit_mp=17.0, saved=sampled))


def test_one_lockstep_forward_gives_statistics_whose_sampled_tiles_are_the_frozen_models_output(
    he_1024, tmp_path
):
    model = small_generator("instance", ngf=4, n_blocks=3)
    img = he_1024[:384, :384]
    settings = EngineSettings(tile=64, skip_background=False, pooled_pass_mp=0.0, stats_windows=6)
    rep = stain_slide(ArraySlide(img, 0.5), model, tmp_path / "s.ome.zarr", settings)
    stats = rep.settings["stats"]
    assert stats["source"] == "tiles" and stats["forwards"] == 1 and stats["windows"] == 6
    assert stats["reused_tiles"] == 6 and rep.tiles_done == 36 and stats["seconds"] > 0
    assert rep.settings["stats_seconds"] == stats["seconds"]
    # every tile, reused or run afterwards, is the frozen model's output with the saved statistics
    from napari_virtual_ihc.ihc_store.layout import NORM_STATS_FILE
    from napari_virtual_ihc.inference.normalization import stats_from_arrays

    with np.load(tmp_path / "s.ome.zarr" / NORM_STATS_FILE) as z:
        saved = stats_from_arrays({k: z[k] for k in z.files})
    frozen = freeze_normalization(model.module, saved)
    fold_frozen_norms(frozen)
    with torch.inference_mode():
        whole = to_uint8(frozen(to_input(img[None], "minus_one_one")), "minus_one_one")[0]
    out = level0(tmp_path / "s.ome.zarr")
    assert psnr(out, whole) >= 60.0 and int(np.abs(out.astype(int) - whole).max()) <= 1


def test_statistics_in_bf16_agree_with_fp32(he_1024):
    """The pass runs in the tile pass's bf16 where that was measured best; its moments are still summed in
    fp32/fp64, so the statistics stay those of the fp32 model to bf16's rounding (any CPU: emulated here)."""
    from napari_virtual_ihc.inference.normalization import estimate_instance_stats

    model = small_generator("instance", ngf=8, n_blocks=3)
    x = to_input(np.stack([he_1024[:96, :96], he_1024[200:296, 300:396]]), "minus_one_one")
    fp32 = estimate_instance_stats(model.module, [x])
    bf16 = estimate_instance_stats(model.module, [x], precision="bf16")
    for name, (mean, var) in fp32.items():
        m16, v16 = bf16[name]
        assert np.abs(m16 - mean).max() <= 0.05 * np.sqrt(var).max() + 1e-3, name
        assert np.abs(v16 - var).max() <= 0.05 * var.max() + 1e-4, name


def _pooled_stats(module, img, wins, interiors):
    from napari_virtual_ihc.inference.normalization import estimate_instance_stats

    batch = to_input(
        np.stack([img[y : y + h, x : x + w] for x, y, w, h in (t.window for t in wins)]), "minus_one_one"
    )
    return estimate_instance_stats(module, [batch], [interiors], batch_norms=True)


def test_each_layers_interior_is_exactly_the_whole_image_pass(he_1024):
    """A layer's values within its margin of a window's edge are shaped by the padding there; beyond it they
    are the whole image's: what lets each layer pool its own interior (early layers nearly the window)."""
    from napari_virtual_ihc.inference.normalization import (
        WindowInterior,
        estimate_instance_stats,
        interior_margins,
    )

    module = small_generator("instance", ngf=4, n_blocks=2).module
    img = to_input(he_1024[:256, :256][None], "minus_one_one")
    frozen = freeze_normalization(module, estimate_instance_stats(module, [img]))
    margins = interior_margins(module)
    assert list(margins.values()) == sorted(margins.values()) and 0 < min(margins.values()) < 8
    grab: dict[str, torch.Tensor] = {}
    for name in margins:
        frozen.get_submodule(name).register_forward_pre_hook(
            lambda m, a, name=name: grab.__setitem__(name, a[0])
        )
    with torch.inference_mode():
        frozen(img)
        whole = dict(grab)
        frozen(img[:, :, 64:192, 64:192])  # a window with the image going on beyond all its sides
    window = WindowInterior(
        size=(128, 128), core=(60, 60, 68, 68), reach=(0, 0, 128, 128), context=(True,) * 4
    )
    for name, margin in margins.items():
        act, ref = grab[name][0], whole[name][0]
        scale = act.shape[-1] / 128  # feature px per input px
        x0, _, x1, _ = window.box(margin)  # square: the same on both axes
        a0, a1 = int(x0 * act.shape[-1]), round(x1 * act.shape[-1])  # as the collectors round
        assert a1 - a0 >= 2
        off = round(64 * scale)
        inner, truth = act[:, a0:a1, a0:a1], ref[:, off + a0 : off + a1, off + a0 : off + a1]
        assert torch.allclose(inner, truth, atol=1e-4), name
        edge = act[:, : a1 - a0, : a1 - a0]  # the same size at the window's corner: padding shows there
        assert not torch.allclose(edge, ref[:, off : off + a1 - a0, off : off + a1 - a0], atol=1e-4), name


def test_windows_covering_an_image_pool_whole_image_statistics_for_instance_and_slide_batch_norm(he_1024):
    """Overlapping windows that cover the image split their overlaps, so each pixel is pooled once at every
    layer: the pooled statistics are the whole image's (InstanceNorm, and BatchNorm in slide mode)."""
    from napari_virtual_ihc.inference.normalization import estimate_instance_stats
    from napari_virtual_ihc.inference.slide_stats import window_interiors

    img = he_1024[:192, :192]
    for norm in ("instance", "batch"):
        module = small_generator(norm, ngf=4, n_blocks=2).module
        whole = estimate_instance_stats(module, [to_input(img[None], "minus_one_one")], batch_norms=True)
        wins = list(TileGrid((192, 192), (0, 0, 192, 192), 48, 40, 4))
        sampled = _pooled_stats(module, img, wins, window_interiors(wins, (192, 192)))
        assert set(sampled) == set(whole) and len(whole) >= 7
        for name, (mean, var) in whole.items():
            m, v = sampled[name]
            assert np.abs(m - mean).max() <= 1e-4 * np.sqrt(var).max() + 1e-6, (norm, name)
            assert np.abs(v - var).max() <= 1e-4 * var.max() + 1e-8, (norm, name)


def test_sampled_windows_interiors_never_overlap_and_stay_in_tissue():
    from napari_virtual_ihc.inference.slide_stats import window_interiors

    grid = TileGrid((1024, 1024), (0, 0, 1024, 1024), 256, 88, 4)
    tiles = list(grid)
    tissue = [t for t in tiles if t.col < 2]  # the right half is glass
    req = _request(1024, 256, memory_mp=8.0, stats_tile=64, stats_windows=16, stats_share=1.0)
    req.tissue = [t.index for t in tissue]
    kind, wins = plan_windows(req)
    assert kind == "windows" and len(wins) >= 8
    boxes = []
    for t, i in zip(wins, window_interiors(wins, (1024, 1024), tissue), strict=True):
        x0, y0, x1, y1 = (a + o for a, o in zip(i.reach, (t.window[0], t.window[1]) * 2, strict=True))
        assert x1 <= 512  # not into the glass
        assert x0 <= t.core[0] and x1 >= t.core[0] + t.core[2]
        boxes.append((x0, y0, x1, y1))
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            p, q = boxes[a], boxes[b]
            assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1]


def test_sampled_places_spread_evenly_in_2d_not_at_tile_corners():
    """16 places over one 1024 px tile: every quadrant and the centre get some (first/middle/last windows of
    a tile in row order put them at its corners, where a slide's glass is)."""
    from napari_virtual_ihc.inference.grid import sample_windows

    tile = TileGrid((1024, 1024), (0, 0, 1024, 1024), 1024, 88, 4).tile_at(0)
    wins = sample_windows((1024, 1024), [tile], 16, 64, 88, 4)
    centres = np.array([(w.core[0] + 32, w.core[1] + 32) for w in wins])
    assert len({w.core for w in wins}) == 16
    quadrants = np.bincount((centres[:, 0] >= 512) * 2 + (centres[:, 1] >= 512), minlength=4)
    assert quadrants.min() >= 2
    assert (np.abs(centres - 512).max(1) < 256).sum() >= 3  # the middle is sampled too
