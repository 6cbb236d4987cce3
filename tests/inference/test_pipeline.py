"""The tile pass's pipeline: decode threads ahead, a writer behind; same store whatever the threads."""

from __future__ import annotations

import time

import numpy as np
import torch
import zarr
from engine_helpers import small_generator
from torch import nn

from napari_virtual_ihc.inference import EngineSettings, TileProgress, iter_stain_slide, stain_slide
from napari_virtual_ihc.inference.tiling import pipeline_defaults
from napari_virtual_ihc.models import ModelSpec
from napari_virtual_ihc.models.spec import LoadedGenerator
from napari_virtual_ihc.slides.base import ArraySlide


class SlowSlide(ArraySlide):
    def __init__(self, rgb: np.ndarray, decode_s: float) -> None:
        super().__init__(rgb, mpp=0.5)
        self.decode_s = decode_s

    def read_region(self, location, level, size):
        time.sleep(self.decode_s)  # a decoder that releases the GIL
        return super().read_region(location, level, size)


class SlowIdentity(nn.Module):
    def __init__(self, compute_s: float) -> None:
        super().__init__()
        self.compute_s = compute_s
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.compute_s)  # a GPU's compute: the CPU is free meanwhile
        return x * self.scale


def _settings(**kw) -> EngineSettings:
    base = dict(
        tile=64, halo=0, batch=1, device="cpu", precision="fp32", winograd=False, skip_background=False
    )
    return EngineSettings(**(base | kw))


def test_decode_threads_feed_the_model_at_the_bound(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (256, 384, 3), dtype=np.uint8)  # 24 tiles
    spec = ModelSpec("resnet", {"ngf": 4, "n_blocks": 1, "norm": "none"}, mpp=0.5, name="slow")
    model = LoadedGenerator(module=SlowIdentity(0.04), spec=spec, source="test", sha256="slow")
    settings = _settings(workers=4, read_ahead=8, calibration_min_mp=1e9)
    run = iter_stain_slide(SlowSlide(rgb, 0.16), model, tmp_path / "s.ome.zarr", settings)
    stamps = []
    while True:
        try:
            event = next(run)
        except StopIteration as done:
            rep = done.value
            break
        if isinstance(event, TileProgress):
            stamps.append(time.perf_counter())  # the first: before the tile pass
    assert rep.settings["pipeline"] == {"workers": 4, "read_ahead": 8}
    # Bound: min(4 / 0.16, 1 / 0.04) = 25 tiles/s; one reader one batch ahead: 6.25; serial: 5.
    tile_pass = stamps[-1] - stamps[0]
    assert rep.tiles_done == 24 and 24 / tile_pass > 12.5, tile_pass
    out = np.asarray(zarr.open_group(str(tmp_path / "s.ome.zarr"), mode="r")["0"][:]).transpose(1, 2, 0)
    assert np.array_equal(out, rgb)  # the identity, every tile in its place


def test_the_store_does_not_depend_on_the_threads(tmp_path, he_1024):
    rgb = np.ascontiguousarray(he_1024[:192, :256])  # 12 tiles
    model = small_generator("batch", ngf=4, n_blocks=1, mpp=0.5)
    stores = []
    for k, (workers, ahead) in enumerate([(1, 1), (3, 5)]):
        path = tmp_path / f"s{k}.ome.zarr"
        rep = stain_slide(
            ArraySlide(rgb, mpp=0.5), model, path, _settings(halo=8, workers=workers, read_ahead=ahead)
        )
        assert rep.settings["pipeline"] == {"workers": workers, "read_ahead": ahead}
        g = zarr.open_group(str(path), mode="r")
        stores.append([np.asarray(g[name][:]) for name in sorted(g.array_keys())])
    for a, b in zip(*stores, strict=True):
        assert np.array_equal(a, b)


def test_pipeline_defaults_follow_the_device():
    assert pipeline_defaults(None, None, "cpu") == (1, 2)
    workers, ahead = pipeline_defaults(None, None, "cuda")
    assert 2 <= workers <= 8 and ahead == 2 * workers
    assert pipeline_defaults(3, 7, "cuda") == (3, 7)


def test_batch_tile_is_the_largest_that_fits_up_to_2048_and_interactive_runs_512():
    """Batch tiles are as large as memory allows up to 2048 px (bf16 CPUs too, now that their pads stay in
    bf16: docs/inference.md); interactive runs 512; never a tile larger than the job."""
    from napari_virtual_ihc.inference.tiling import choose_tile
    from napari_virtual_ihc.models import build_generator

    module = build_generator("resnet", n_blocks=2, ngf=8, norm="batch")
    cpu = torch.device("cpu")
    assert choose_tile(module, cpu, 88, 1, False, (8192, 8192)) == 2048  # ngf 8: fits
    assert choose_tile(module, cpu, 88, 1, True, (8192, 8192)) == 512
    assert choose_tile(module, cpu, 88, 1, False, (600, 400)) == 512  # no tile larger than the job


def test_a_slide_with_glass_gets_the_tile_that_computes_the_fewest_window_pixels(tcga_path):
    """Larger tiles carry less halo per pixel but take in more glass: the plan weighs both. On the TCGA slide
    (tissue with glass around it) 512 px tiles compute the fewest window pixels (23.7 MP against 25.9 at 1024 and
    29.7 at 2048; measured there: 164, 195 and 232 s, docs/inference.md); on an all-tissue image 2048 does."""
    import numpy as np

    from napari_virtual_ihc.inference.plan import tile_for_tissue
    from napari_virtual_ihc.inference.tissue import plane_tissue_mask
    from napari_virtual_ihc.slides import open_slide

    tiles = [2048, 1024, 512]

    with open_slide(tcga_path) as slide:
        # no µm/px in this file: read at level 0, as bench_stats_cost stains it (4443 x 3567 px)
        whole = (0, 0, *slide.dimensions)
        assert tile_for_tissue(plane_tissue_mask(slide, 1.0), slide.dimensions, tiles, 88, 4, whole) == 512
    pink = np.empty((4096, 4096, 3), np.uint8)
    pink[...] = (200, 120, 170)  # eosin and hematoxylin everywhere: all tissue
    tissue = plane_tissue_mask(ArraySlide(pink, 0.5), 1.0)
    assert tile_for_tissue(tissue, (4096, 4096), tiles, 88, 4, (0, 0, 4096, 4096)) == 2048
