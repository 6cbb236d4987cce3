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
from napari_virtual_ihc.inference.slide_stats import StatsRequest, plan_windows
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
        exact_winograd=False,
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
    # few large tiles (a 4096 px job): the one tile window that fits pools more than the budget's windows
    kind, wins = plan_windows(_request(4096, 2048, memory_mp=6.1))
    assert kind == "tiles" and len(wins) == 1


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
