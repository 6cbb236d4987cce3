"""The whole-slide tile engine: halo'd, batched, prefetched, resumable inference into an OME-Zarr store.

One call, :func:`stain_slide`, does the whole job; the steps live in small modules beside it: ``grid``
(geometry), ``resample`` (the model's µm/px), ``tissue`` (background), ``normalization`` (slide-level
statistics), ``runner`` (device, precision, batching) and ``store`` (OME-Zarr + finished-tile record).
"""

from __future__ import annotations

import json
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..models.describe import receptive_field, size_multiple
from ..models.norms import norm_kind
from ..models.spec import LoadedGenerator
from ..slides.base import Slide
from .api import Box, EngineSettings, PriorityProvider, ProgressCallback, RunReport, TileProgress
from .calibration import ModelVariants, calibration_window, decide_compute
from .confidence import ConfidenceWriter
from .device import (
    is_out_of_memory,
    release_device_memory,
    resolve_batch,
    resolve_device,
    resolve_precision,
)
from .dropout import set_positions, with_positional_dropout
from .errors import RegionError
from .grid import GridTile, TileGrid, round_up, sample_windows
from .normalization import (
    estimate_instance_stats,
    fold_frozen_norms,
    freeze_normalization,
    stats_from_arrays,
    stats_to_arrays,
)
from .resample import WorkingPlane, low_resolution_view, model_downsample
from .run_mode import RunMode, resolution_warning, resolve_run_mode
from .runner import to_input, to_uint8
from .store import TileStore, check_writable_folder
from .tiling import choose_tile
from .tissue import rect_has_tissue, tissue_mask
from .workspace import release_workspace

MAX_HALO = 256  # px at the model's resolution: beyond this the halo costs more than any seam it could fix
BACKGROUND_GROUP = 64  # background tiles written between two progress reports


def run_json_path(store: str | Path) -> Path:
    """``DIR/<name>.run.json`` beside ``DIR/<name>.ome.zarr``."""
    p = Path(store)
    name = p.name[: -len(".ome.zarr")] if p.name.endswith(".ome.zarr") else p.stem
    return p.with_name(f"{name}.run.json")


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


def _region_to_plane(region: Box | None, slide: Slide, d: float, plane: tuple[int, int]) -> Box:
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


def _to_level0(rect: tuple[int, int, int, int], d: float) -> Box:
    x, y, w, h = rect
    return (round(x * d), round(y * d), round(w * d), round(h * d))


def _tissue_flags(slide: Slide, tiles: list[GridTile], d: float) -> dict[int, bool]:
    view, view_ds = low_resolution_view(slide)
    mask = tissue_mask(view)
    scale = view_ds / d  # plane px per mask px
    return {t.index: rect_has_tissue(mask, scale, t.core) for t in tiles}


def _fill(pattern: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """Tile the periodic ``pattern`` over (x, y, w, h), phase-locked to the plane's origin."""
    ph, pw = pattern.shape[:2]
    reps = (-(-(h + ph) // ph), -(-(w + pw) // pw), 1)
    big = np.tile(pattern, reps)
    return big[y % ph : y % ph + h, x % pw : x % pw + w]


def _union(rects: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    x0, y0 = min(r[0] for r in rects), min(r[1] for r in rects)
    x1, y1 = max(r[0] + r[2] for r in rects), max(r[1] + r[3] for r in rects)
    return (x0, y0, x1 - x0, y1 - y0)


def _stats_batches(
    plane: WorkingPlane, picks: list[GridTile], window_size: tuple[int, int], batch: int, input_norm: str
) -> tuple[list[Any], list[list[tuple[float, float, float, float]]]]:
    """The sampled windows in batches, each with its core as fractions of the window (for the statistics)."""
    ww, wh = window_size
    fractions = []
    for t in picks:
        cx, cy, cw, ch = t.core_in_window
        fractions.append((cx / ww, cy / wh, (cx + cw) / ww, (cy + ch) / wh))
    batches, cores = [], []
    for k in range(0, len(picks), batch):
        batches.append(to_input(np.stack([plane.read(t.window) for t in picks[k : k + batch]]), input_norm))
        cores.append(fractions[k : k + batch])
    return batches, cores


def _crop(out: np.ndarray, tile: GridTile) -> np.ndarray:
    x, y, w, h = tile.core_in_window
    return out[y : y + h, x : x + w]


def stain_slide(
    slide: Slide,
    model: LoadedGenerator,
    store: str | Path,
    settings: EngineSettings | None = None,
    *,
    region: Box | None = None,
    priority: PriorityProvider | None = None,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> RunReport:
    """Stain ``slide`` (or ``region`` of it, level-0 box) into the OME-Zarr ``store``; resumable.

    Re-running with the same store, model and settings skips tiles already finished. Returns a RunReport
    (also written as ``<name>.run.json`` beside the store). Raises OutputNotWritableError before any work if
    the folder cannot be written, RegionError for a region outside the slide, StoreWriteError (e.g. a full
    disk) mid-run with the failing tile not marked done.
    """
    settings = settings or EngineSettings()
    t_start = time.perf_counter()
    store_path = Path(store)
    check_writable_folder(store_path.parent)
    device = resolve_device(settings.device)
    asked_precision = (settings.precision or "auto").strip().lower()
    precision = resolve_precision(asked_precision, device)  # validated; "auto" -> the default until measured
    batch = resolve_batch(settings.batch, device)
    winograd = settings.winograd is not False and device.type == "cpu"  # statistics pass: always fp32

    module = model.module
    spec = model.spec
    norm = norm_kind(module)
    mode = resolve_run_mode(module, spec, settings, norm)  # batch norm / dropout as the checkpoint intends
    warnings = [*mode.warnings, *filter(None, [resolution_warning(spec, settings)])]
    align = size_multiple(module)
    halo, rf = plan_halo(module, settings, align)
    model_mpp = settings.model_mpp if settings.model_mpp is not None else spec.mpp
    d = model_downsample(slide.mpp, model_mpp)
    plane = WorkingPlane(slide, d)
    wanted_tile = settings.tile or choose_tile(module, device, halo, batch, priority is not None, plane.size)
    tile = round_up(max(int(wanted_tile), align), align)
    grid = TileGrid(plane.size, (0, 0, *plane.size), tile, halo, align)
    work_rect = _region_to_plane(region, slide, d, plane.size)
    wanted = grid.tiles_intersecting(work_rect)
    tiles = {i: grid.tile_at(i) for i in wanted}
    factors = pyramid_factors(slide, d, tile, plane.size)
    smpp = slide.mpp
    store_mpp = (smpp[0] * d, smpp[1] * d) if smpp is not None else None

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
    }
    provenance: dict[str, Any] = {
        "model": {"name": spec.name, "sha256": model.sha256, "source": model.source, "arch": spec.arch},
        "target_stain": spec.target_stain,
        "settings": {
            **settings.__dict__,
            "tile": tile,
            "halo": halo,
            "precision": asked_precision,  # the choice made is recorded as "compute"
            "batch": batch,
        },
        "source": {
            "path": str(slide.path) if slide.path else None,
            "level0_size": list(slide.dimensions),
            "mpp": list(smpp) if smpp else None,
        },
        "mpp": list(store_mpp) if store_mpp else None,
        "model_mpp": model_mpp,
        "level0_downsample": d,
        "receptive_field": rf,
        "norm": norm,
        "run_mode": mode.to_dict(),
        "warnings": warnings,
    }
    tstore = TileStore.open(store_path, plane.size, tile, factors, store_mpp, run_key, provenance)
    confidence = None
    if mode.samples > 1:  # mean:N: the samples' spread goes to a second store (best effort)
        confidence = ConfidenceWriter.open(
            store_path, plane.size, tile, factors, store_mpp, run_key, provenance, warnings
        )
    mask_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vihc-tissue")
    try:
        return _run(
            slide,
            model,
            tstore,
            settings,
            grid=grid,
            plane=plane,
            tiles=tiles,
            device=device,
            precision=precision,
            norm=norm,
            d=d,
            region=region,
            priority=priority,
            progress=progress,
            cancel=cancel,
            t_start=t_start,
            batch=batch,
            winograd=winograd,
            info={"halo": halo, "tile": tile, "align": align, "receptive_field": rf, "model_mpp": model_mpp},
            mask_pool=mask_pool,
            mode=mode,
            confidence=confidence,
            warnings=warnings,
        )
    finally:
        mask_pool.shutdown(wait=True, cancel_futures=True)
        tstore.close()
        if confidence is not None:
            confidence.close()
        release_workspace()


def _run(
    slide: Slide,
    model: LoadedGenerator,
    tstore: TileStore,
    settings: EngineSettings,
    *,
    grid: TileGrid,
    plane: WorkingPlane,
    tiles: dict[int, GridTile],
    device: Any,
    precision: str,
    norm: str,
    d: float,
    region: Box | None,
    priority: PriorityProvider | None,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    t_start: float,
    batch: int,
    winograd: bool,
    info: dict[str, Any],
    mask_pool: ThreadPoolExecutor,
    mode: RunMode,
    confidence: ConfidenceWriter | None,
    warnings: list[str],
) -> RunReport:
    spec = model.spec
    finished = tstore.finished()
    resumed = [i for i in tiles if i in finished]
    todo = [i for i in tiles if i not in finished]
    # Which tiles are blank glass. In interactive runs (a priority region is given) the tissue mask is
    # computed on a helper thread while the first field-of-view batch runs: it takes a thumbnail read plus
    # ~0.05-0.3 s, which would otherwise delay the first tile. Slide statistics need it first.
    flags: dict[int, bool] | None = dict.fromkeys(tiles, True)
    flags_future: Future[dict[int, bool]] | None = None
    if settings.skip_background and todo:
        slide_stats = norm == "instance" or mode.slide_batch_norm
        stats_pending = slide_stats and not tstore.has_norm_stats()
        if priority is not None and not stats_pending:
            flags_future = mask_pool.submit(_tissue_flags, slide, list(tiles.values()), d)
            flags = None
        else:
            flags = _tissue_flags(slide, list(tiles.values()), d)
    if flags is not None:
        background = [i for i in todo if not flags[i]]
        tissue = [i for i in todo if flags[i]]
    else:  # decided once the mask is ready, after the first batch
        background, tissue = [], list(todo)

    # Dropout as a function of slide position (inference.dropout): a copy of the model with positional masks.
    base, dropout_ctx = with_positional_dropout(model.module, mode.dropout, mode.seed)
    # Slide-level statistics (InstanceNorm; BatchNorm in "slide" mode): sampled once, saved in the store so a
    # resumed run reuses them.
    stats = None
    pooled: tuple[list[int], list[np.ndarray]] | None = None
    t_stats = time.perf_counter()
    if norm == "instance" or mode.slide_batch_norm:
        saved = tstore.load_norm_stats()
        if saved is not None:
            stats = stats_from_arrays(saved)
        else:
            ww0, wh0 = grid.window_size
            ux = uy = 0
            assert flags is not None  # computed before the statistics
            candidates = [i for i in tiles if flags[i]] or list(tiles)
            exact = (
                0 < len(tissue) == len(candidates) <= settings.stats_windows
                and len(tissue) * ww0 * wh0 / 1e6 <= settings.pooled_pass_mp
            )
            count = max(1, settings.stats_windows)
            if exact:  # every tile in one pooled pass: whole-image statistics, and the output itself
                picks = list(tissue)
            else:
                n_picks = min(count, len(candidates))
                picks = sorted({candidates[round(j)] for j in np.linspace(0, len(candidates) - 1, n_picks)})

            def sampled(picks: list[int] = picks) -> tuple[Any, list[Any]]:
                wins = [tiles[i] for i in picks]
                if (
                    settings.stats_tile and settings.stats_tile < grid.tile
                ):  # smaller windows spread over tiles
                    wins = sample_windows(plane.size, wins, count, settings.stats_tile, grid.halo, grid.align)
                batches, cores = _stats_batches(plane, wins, wins[0].window[2:], batch, spec.input_norm)
                origins = [[t.window[:2] for t in wins[k : k + batch]] for k in range(0, len(wins), batch)]
                return _positioned(base, batches, origins), cores

            if exact:
                # One window over all of them: the windows' union costs at most their sum, usually much less
                # (no overlapping halos), and its output is the same.
                union = _union([tiles[i].window for i in picks])
                ux, uy, uw, uh = union
                cx0, cy0, cw0, ch0 = _union([tiles[i].core for i in picks])
                core_box = ((cx0 - ux) / uw, (cy0 - uy) / uh, (cx0 + cw0 - ux) / uw, (cy0 + ch0 - uy) / uh)
                whole_in = [to_input(plane.read(union)[None], spec.input_norm)]
                batches, cores = _positioned(base, whole_in, [[(ux, uy)]]), [[core_box]]
            else:
                batches, cores = sampled()
            # The pooled pass's output is one dropout sample: with mean:N the tiles are run afterwards.
            outputs: list[Any] | None = [] if exact and mode.samples == 1 else None
            slide_bn = mode.slide_batch_norm
            try:
                stats = estimate_instance_stats(
                    base,
                    batches,
                    cores,
                    outputs=outputs,
                    winograd=winograd,
                    device=device,
                    batch_norms=slide_bn,
                )
            except (RuntimeError, MemoryError) as e:
                if not (exact and is_out_of_memory(e)):
                    raise
                outputs = None  # too big for one pass here: sample in batches, run tiles afterwards
                del batches
                release_device_memory(device)
                stats = estimate_instance_stats(
                    base, *sampled(), winograd=winograd, device=device, batch_norms=slide_bn
                )
            if outputs:
                whole = to_uint8(outputs[0], spec.output_norm)[0]
                crops = []
                for i in picks:
                    x, y, w, h = tiles[i].core
                    crops.append(whole[y - uy : y - uy + h, x - ux : x - ux + w])
                pooled = (picks, crops)
            del outputs
            tstore.save_norm_stats(stats_to_arrays(stats))
    stats_seconds = time.perf_counter() - t_stats
    frozen = freeze_normalization(base, stats)
    folded = fold_frozen_norms(frozen)
    # Precision and kernels for the tile pass (after folding: Winograd transforms the folded weights):
    # measured on the first tissue window when the job is large enough to repay it (inference.calibration).
    variants = ModelVariants(frozen, device, spec.input_norm, spec.output_norm)
    to_run = [i for i in tissue if pooled is None or i not in set(pooled[0])]
    worth = (
        bool(to_run)
        and len(to_run) * grid.window_size[0] * grid.window_size[1] / 1e6 >= settings.calibration_min_mp
    )
    choice = decide_compute(
        device,
        (settings.precision or "auto").strip().lower(),
        settings.winograd,
        variants.winograd_convs,
        model.sha256,
        variants.prepare,
        (lambda: calibration_window(plane.read(tiles[to_run[0]].window), grid.align)) if worth else None,
        resumed=tstore.provenance().get("compute"),
    )
    precision = choice.precision
    runner = variants.runner(choice.candidate, batch, dropout=dropout_ctx, samples=mode.samples)
    winograd_convs = variants.converted if choice.winograd else 0
    tstore.update_provenance(compute=choice.to_dict())

    ww, wh = grid.window_size

    def blank_glass_pattern() -> np.ndarray:
        """What the model makes of blank glass, away from the window's borders: constant up to the model's
        own period (its total stride), so one period tiles any background core seamlessly."""
        white = np.full((1, wh, ww, 3), 255, np.uint8)
        outs, spreads = runner.run(white, [(0, 0)])
        out = outs[0]
        period = grid.align
        cy = (wh // 2 // period) * period
        cx = (ww // 2 // period) * period
        pattern = out[cy : cy + period, cx : cx + period].copy()
        if spreads is not None:  # with mean:N dropout: the glass's spread, tiled like its colour
            blank_spread[0] = spreads[0][cy : cy + period, cx : cx + period].copy()
        tstore.update_provenance(
            background_rgb=np.median(pattern.reshape(-1, 3), axis=0).round().astype(int).tolist()
        )
        return pattern

    total = len(tiles)
    done_count = len(resumed)
    skipped_now = 0
    model_done = 0
    pixels_now = 0
    cancelled = False
    t_work = time.perf_counter()

    def report(new: list[int]) -> None:
        if progress is None:
            return
        elapsed = max(1e-9, time.perf_counter() - t_work)
        progress(
            TileProgress(
                done=done_count,
                total=total,
                skipped=skipped_now + sum(1 for i in resumed if finished[i] == "s"),
                new_boxes=[_to_level0(tiles[i].core, d) for i in new],
                mp_per_s=pixels_now / 1e6 / elapsed,
                device=str(device),
                compute=choice.describe(),
            )
        )

    pending = list(tissue)
    batch_n = batch

    def next_batch() -> list[int]:
        nonlocal pending
        if priority is not None and pending:
            box = priority()
            if box is not None:
                try:
                    first = set(grid.tiles_intersecting(_region_to_plane(box, slide, d, plane.size)))
                except RegionError:
                    first = set()
                if first:
                    pending = [i for i in pending if i in first] + [i for i in pending if i not in first]
        chosen, pending = pending[:batch_n], pending[batch_n:]
        return chosen

    def read_batch(indices: list[int]) -> np.ndarray:
        return np.stack([plane.read(tiles[i].window) for i in indices])

    def run_batch(indices: list[int], windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return runner.run(windows, [tiles[i].window[:2] for i in indices])

    def write_model_tiles(indices: list[int], outs: Any, spreads: Any = None) -> None:
        nonlocal done_count, model_done, pixels_now
        for k, (i, out) in enumerate(zip(indices, outs, strict=True)):
            tstore.write_tile(tiles[i].core, _crop(out, tiles[i]))
            if confidence is not None and spreads is not None:
                confidence.write(tiles[i].core, _crop(spreads[k], tiles[i]))
        tstore.mark_done(indices, "d")
        done_count += len(indices)
        model_done += len(indices)
        pixels_now += sum(tiles[i].core[2] * tiles[i].core[3] for i in indices)
        report(indices)

    report([])
    if flags_future is not None:
        # The first field-of-view batch runs while the tissue mask is computed; its tiles that turn out to
        # be blank glass are filled like every other background tile (the model's output is dropped), so the
        # store does not depend on which came first.
        first: list[int] = []
        outs: Any = None
        first_spreads: Any = None
        if not (cancel is not None and cancel.is_set()):
            first = next_batch()
            if first:
                outs, first_spreads = run_batch(first, read_batch(first))
        flags = flags_future.result()
        background = [i for i in todo if not flags[i]]
        keep = [k for k, i in enumerate(first) if flags[i]]
        if keep:
            write_model_tiles(
                [first[k] for k in keep],
                [outs[k] for k in keep],
                [first_spreads[k] for k in keep] if first_spreads is not None else None,
            )
        pending = [i for i in pending if flags[i]]  # ``first`` already left it
        del outs

    blank_spread: list[np.ndarray | None] = [None]
    blank_pattern = blank_glass_pattern() if background else None
    # Background next: cheap, and it makes the whole slide visible at once.
    for k in range(0, len(background), BACKGROUND_GROUP):
        if cancel is not None and cancel.is_set():
            cancelled = True
            break
        group = background[k : k + BACKGROUND_GROUP]
        assert blank_pattern is not None
        for i in group:
            cx, cy, cw, ch = tiles[i].core
            tstore.write_tile(tiles[i].core, _fill(blank_pattern, cx, cy, cw, ch))
            if confidence is not None and blank_spread[0] is not None:
                confidence.write(tiles[i].core, _fill(blank_spread[0][..., None], cx, cy, cw, ch)[..., 0])
            pixels_now += cw * ch
        tstore.mark_done(group, "s")
        done_count += len(group)
        skipped_now += len(group)
        report(group)

    if pooled is not None and not cancelled:
        for i, core_pixels in zip(pooled[0], pooled[1], strict=True):
            tstore.write_tile(tiles[i].core, core_pixels)
        tstore.mark_done(pooled[0], "d")
        done_count += len(pooled[0])
        model_done += len(pooled[0])
        pixels_now += sum(tiles[i].core[2] * tiles[i].core[3] for i in pooled[0])
        report(pooled[0])
        pooled_set = set(pooled[0])
        pending = [i for i in pending if i not in pooled_set]
    pooled = None

    with ThreadPoolExecutor(max_workers=max(1, settings.workers), thread_name_prefix="vihc-reader") as pool:
        current = next_batch() if not cancelled else []
        fut: Future[np.ndarray] | None = pool.submit(read_batch, current) if current else None
        while fut is not None:
            windows = fut.result()
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            upcoming = next_batch()
            nxt = pool.submit(read_batch, upcoming) if upcoming else None  # read while the model runs
            write_model_tiles(current, *run_batch(current, windows))
            current, fut = upcoming, nxt
        if cancelled and fut is not None:
            fut.cancel()

    seconds = time.perf_counter() - t_start
    complete = not cancelled and done_count == total
    whole = len(tiles) == len(grid)
    finished_now = tstore.finished()
    tstore.update_provenance(
        complete=bool(complete and (whole or len(finished_now) == len(grid))),
        region=list(region) if region is not None else None,
        tiles_total=len(grid),
        tiles_finished=len(finished_now),
    )
    rep = RunReport(
        store=str(tstore.path),
        device=str(device),
        precision=precision,
        tiles_total=total,
        tiles_done=model_done,
        tiles_skipped=skipped_now,
        tiles_resumed=len(resumed),
        seconds=seconds,
        mp_per_s=pixels_now / 1e6 / max(1e-9, seconds),
        cancelled=cancelled,
        settings={
            **settings.__dict__,
            **info,
            "batch": batch,
            "batch_final": runner.batch,
            "winograd_convs": winograd_convs,
            "compute": choice.to_dict(),
            "run_mode": mode.to_dict(),
            "confidence_store": confidence.path if confidence is not None else None,
            "level0_downsample": d,
            "norms_folded": folded,
            "stats_seconds": round(stats_seconds, 3),
            "region": list(region) if region is not None else None,
            "complete": complete,
        },
        model={
            "name": spec.name,
            "arch": spec.arch,
            "sha256": model.sha256,
            "source": model.source,
            "norm": norm,
            "mpp": spec.mpp,
        },
        warnings=list(dict.fromkeys(warnings)),
    )
    write_run_json(rep)
    return rep


def _positioned(module: Any, batches: list[Any], origins: list[list[tuple[int, int]]]) -> Any:
    """Yield ``batches``, telling the model's positional dropouts where each lies on the plane first."""
    for b, where in zip(batches, origins, strict=True):
        set_positions(module, where, (b.shape[2], b.shape[3]))
        yield b


def write_run_json(rep: RunReport) -> Path:
    path = run_json_path(rep.store)
    path.write_text(json.dumps(rep.__dict__, indent=2, default=str))
    return path
