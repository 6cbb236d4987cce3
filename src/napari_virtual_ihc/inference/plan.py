"""What a run will do, decided before anything is written: geometry, compute, run mode, the run key.

``plan_run`` is the engine's first step; everything after it (``engine``) reads the plan, never the raw
settings, so a resumed run and its store agree on every number the run key names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..geometry import Box
from ..ihc_store import build_provenance, source_identity
from ..models.class_channel import describe_choices, needs_class
from ..models.describe import min_input_side, receptive_field, size_multiple
from ..models.norms import norm_kind
from ..models.spec import LoadedGenerator
from ..slides.base import Slide
from .api import EngineSettings
from .devices.rules import resolve_batch, resolve_device, resolve_precision
from .errors import ImageTooSmallError, ModelInputError, RegionError, ResolutionError
from .grid import GridTile, TileGrid, round_up
from .resample import WorkingPlane, model_downsample
from .run_mode import RunMode, resolution_warning, resolve_run_mode
from .tiling import choose_tile, fitting_tiles
from .tissue import plane_tissue_mask, tile_tissue_flags

MAX_HALO = 256  # px at the model's resolution: beyond this the halo costs more than any seam it could fix
MAX_UPSAMPLING = 8  # working plane px per slide px along a side: beyond, the model's mpp is wrong


@dataclass(frozen=True)
class StainPlan:
    """Everything a run decided up front (the engine's steps read only this)."""

    settings: EngineSettings
    device: Any  # torch.device
    asked_precision: str  # what was asked ("auto": measured later, see calibration)
    precision: str  # validated default until measured
    batch: int
    winograd: bool  # allowed for the statistics pass (CPU)
    norm: str  # "instance" | "batch" | "none"
    mode: RunMode  # batch norm / dropout as the checkpoint intends
    warnings: list[str]
    align: int
    halo: int
    receptive_field: int
    tile: int
    model_mpp: float | None
    downsample: float  # source level-0 px per working-plane px
    plane: WorkingPlane
    grid: TileGrid
    tiles: dict[int, GridTile]  # the tiles this run covers (the region's)
    factors: list[int]  # store pyramid levels
    store_mpp: tuple[float, float] | None
    region: Box | None
    run_key: dict[str, Any]  # what a store must have been written with to be resumed
    provenance: dict[str, Any]  # what a new store starts with
    tissue: tuple[np.ndarray, float] | None = (
        None  # (mask, plane px per mask px) when the tile choice read it
    )

    def info(self) -> dict[str, Any]:
        """The geometry a report lists."""
        return {
            "halo": self.halo,
            "tile": self.tile,
            "align": self.align,
            "receptive_field": self.receptive_field,
            "model_mpp": self.model_mpp,
        }


def plan_halo(module: Any, settings: EngineSettings, align: int) -> tuple[int, int]:
    """(halo, receptive field): at least half the receptive field, aligned to the network's stride."""
    rf = receptive_field(module)
    if settings.halo is not None:
        return max(0, int(settings.halo)), rf
    return min(MAX_HALO, round_up(math.ceil(rf / 2), align)), rf


def pyramid_factors(slide: Slide, downsample: float, tile: int, plane: tuple[int, int]) -> list[int]:
    """Store levels: the source's downsamples (relative to the store's level 0), integer, dividing ``tile``."""
    factors = [1]
    for ds in slide.level_downsamples[1:]:
        f = round(ds / downsample)
        if f >= 2 and tile % f == 0 and f not in factors and max(plane) // f >= 1:
            factors.append(f)
    return sorted(factors)


def region_to_plane(region: Box | None, slide: Slide, d: float, plane: tuple[int, int]) -> Box:
    """A level-0 box as working-plane pixels (the whole plane for None); RegionError if empty or outside."""
    w0, h0 = slide.dimensions
    if region is None:
        return (0, 0, plane[0], plane[1])
    x, y, w, h = (int(v) for v in region)
    if w <= 0 or h <= 0:
        raise RegionError(f"region {region} is empty (width and height must be > 0)")
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, w0), min(y + h, h0)
    if x1 <= x0 or y1 <= y0:
        raise RegionError(f"region {region} lies outside the slide (level-0 size {w0} x {h0})")
    px0, py0 = math.floor(x0 / d), math.floor(y0 / d)
    px1, py1 = min(plane[0], math.ceil(x1 / d)), min(plane[1], math.ceil(y1 / d))
    return (px0, py0, max(1, px1 - px0), max(1, py1 - py0))


def tile_for_tissue(
    tissue: tuple[np.ndarray, float],
    plane: tuple[int, int],
    candidates: list[int],
    halo: int,
    align: int,
    rect: Box,
) -> int:
    """Of ``candidates`` (largest first), the tile whose tissue tiles' windows inside ``rect`` (plane px) add up
    to the fewest pixels; ties go to the larger tile. ``tissue``: :func:`.tissue.plane_tissue_mask`.

    Why: larger tiles carry less halo per pixel, but on a slide with glass they also take in more glass. The
    4443 x 3567 px TCGA slide in tests/data: 29.7 MP of tissue windows at 2048 px, 25.9 at 1024, 23.7 at 512,
    and the whole job took 232, 195 and 164 s (InstanceNorm ResNet-9 ngf 64, bf16, one core); an all-tissue
    4096 x 4096 job: 19.8 MP at 2048 against 23.0 at 1024, and 143 s against 152 s (docs/inference.md, "Tile
    size by mode and memory")."""
    mask, scale = tissue
    best: tuple[int, int] | None = None
    for tile in candidates:
        grid = TileGrid(plane, (0, 0, *plane), round_up(max(int(tile), align), align), halo, align)
        flags = tile_tissue_flags(
            mask, scale, ((i, grid.tile_at(i).core) for i in grid.tiles_intersecting(rect))
        )
        window_px = sum(flags.values()) * grid.window_size[0] * grid.window_size[1]
        if best is None or window_px < best[0]:
            best = (window_px, tile)
    assert best is not None
    return best[1]


def plan_run(
    slide: Slide,
    model: LoadedGenerator,
    settings: EngineSettings,
    region: Box | None = None,
    interactive: bool = False,
) -> StainPlan:
    """Decide the run; raises DeviceError, ModelInputError, ResolutionError, ImageTooSmallError or
    RegionError before any file is touched."""
    if needs_class(model):  # never run a class-channel model on a silent zero channel
        raise ModelInputError(describe_choices(model) + " (models.supply_class_channel)")
    device = resolve_device(settings.device)
    asked_precision = (settings.precision or "auto").strip().lower()
    precision = resolve_precision(asked_precision, device)  # validated; "auto" -> the default until measured
    batch = resolve_batch(settings.batch, device)
    winograd = settings.winograd is not False and device.type == "cpu"  # statistics pass: always fp32

    module, spec = model.module, model.spec
    norm = norm_kind(module)
    mode = resolve_run_mode(module, spec, settings, norm)
    warnings = [*mode.warnings, *filter(None, [resolution_warning(spec, settings)])]
    align = size_multiple(module)
    halo, rf = plan_halo(module, settings, align)
    model_mpp = settings.model_mpp if settings.model_mpp is not None else spec.mpp
    d = model_downsample(slide.mpp, model_mpp)
    if d < 1 / MAX_UPSAMPLING:  # more pixels than the scan has: slow, huge, and nothing a model learns from
        raise ResolutionError(
            f"the model's {model_mpp} µm/px would upsample this slide's {(slide.mpp or (0.0,))[0]:g} µm/px "
            f"{1 / d:.0f}x "
            f"(limit {MAX_UPSAMPLING}x); check --model-mpp / the checkpoint's mpp"
        )
    plane = WorkingPlane(slide, d)
    rect = region_to_plane(region, slide, d, plane.size)
    # interactive runs: small tiles; batch jobs: of the tiles memory allows, the largest (less halo per pixel),
    # or, when glass is skipped, the one computing the fewest window pixels over tissue (the mask goes to the engine)
    tissue = None
    if settings.tile or interactive or not settings.skip_background:
        wanted_tile = settings.tile or choose_tile(module, device, halo, batch, interactive, plane.size)
    else:
        tissue = plane_tissue_mask(slide, d)
        candidates = fitting_tiles(module, device, halo, batch, plane.size)
        wanted_tile = tile_for_tissue(tissue, plane.size, candidates, halo, align, rect)
    tile = round_up(max(int(wanted_tile), align), align)
    grid = TileGrid(plane.size, (0, 0, *plane.size), tile, halo, align)
    need = min_input_side(module)
    if min(grid.window_size) < need:  # before the store exists: nothing is created for an image this small
        raise ImageTooSmallError(
            f"the image is {plane.size[0]} x {plane.size[1]} px at the model's resolution; this model needs "
            f"at least {need - align + 1} px per side"
        )
    tiles = {i: grid.tile_at(i) for i in grid.tiles_intersecting(rect)}
    factors = pyramid_factors(slide, d, tile, plane.size)
    smpp = slide.mpp
    store_mpp = (smpp[0] * d, smpp[1] * d) if smpp is not None else None

    identity = source_identity(slide)
    run_key = {
        "plane": list(plane.size),
        "tile": tile,
        "halo": halo,
        "align": align,
        "factors": factors,
        "level0_downsample": d,
        "model_sha256": model.sha256,
        "model_arch": spec.arch,
        "model_arch_kwargs": spec.arch_kwargs,
        "precision": asked_precision,  # what was asked: a resumed run reuses the store's measured choice
        "run_mode": mode.to_dict() | {"source": None},
        "source": {k: identity[k] for k in ("size", "sha256", "scheme")},  # which slide (not its path)
    }
    provenance = build_provenance(
        model={"name": spec.name, "sha256": model.sha256, "source": model.source, "arch": spec.arch},
        target_stain=spec.target_stain,
        settings={
            **settings.__dict__,
            "tile": tile,
            "halo": halo,
            "precision": asked_precision,  # the choice made is recorded as "compute"
            "batch": batch,
        },
        source={**identity, "level0_size": list(slide.dimensions), "mpp": list(smpp) if smpp else None},
        store_mpp=store_mpp,
        model_mpp=model_mpp,
        level0_downsample=d,
        receptive_field=rf,
        norm=norm,
        run_mode=mode.to_dict(),
        warnings=warnings,
    )
    return StainPlan(
        settings=settings,
        device=device,
        asked_precision=asked_precision,
        precision=precision,
        batch=batch,
        winograd=winograd,
        norm=norm,
        mode=mode,
        warnings=warnings,
        align=align,
        halo=halo,
        receptive_field=rf,
        tile=tile,
        model_mpp=model_mpp,
        downsample=d,
        plane=plane,
        grid=grid,
        tiles=tiles,
        factors=factors,
        store_mpp=store_mpp,
        region=region,
        run_key=run_key,
        provenance=provenance,
        tissue=tissue,
    )
