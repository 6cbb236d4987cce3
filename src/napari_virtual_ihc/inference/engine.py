"""The whole-slide tile engine: halo'd, batched, prefetched, resumable inference into an OME-Zarr store.

``iter_stain_slide`` (and ``stain_slide``, which drains it) runs one job as named steps: ``plan_run``
(``plan``: geometry, compute, run key), the store opened (``ihc_store``), then ``_StainJob``: tissue or
glass, slide statistics, the compute choice, the field of view first, background, the pooled pass, the
model's tiles, the report. The steps' tools live in small modules beside it: ``grid``, ``resample``,
``tissue``, ``normalization``, ``slide_stats`` (the statistics pass), ``devices.calibration``, ``crop``,
``runner``, ``dropout``, ``confidence`` and ``report`` (the typed run settings).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from torch import nn

from ..geometry import Box
from ..ihc_store import TileStore, check_output_outside, check_writable_folder, replace_text, run_json_path
from ..models.spec import LoadedGenerator
from ..slides.base import Slide
from .allocator import keep_freed_memory
from .api import (
    EngineSettings,
    PriorityProvider,
    ProgressCallback,
    RunEvent,
    RunPlan,
    RunReport,
    TileProgress,
)
from .confidence import ConfidenceWriter
from .crop import NO_SIDES, CropContext, Sides, spare_sides
from .devices.calibration import Candidate, Runner, calibration_window, decide_compute, record_fp16_overflow
from .devices.probes import describe_device
from .dropout import with_positional_dropout
from .errors import RegionError, TileReadError
from .grid import GridTile
from .normalization import NormStats, fold_frozen_norms, freeze_normalization, stats_to_arrays
from .plan import StainPlan, plan_halo, plan_run, pyramid_factors, region_to_plane
from .report import RunSettings
from .runner import BatchRunner
from .slide_stats import (
    POOLED_MARK,
    POOLED_PRECISION_MARK,
    SlideStatistics,
    StatsCounters,
    StatsRequest,
    exact_pass_fits,
    slide_statistics,
)
from .streamed_pass import PassCancelled
from .tiling import MEMORY_SHARE, available_memory, pipeline_defaults, pooled_pass_limit_mp
from .tissue import plane_tissue_mask, tile_tissue_flags
from .variants import ModelVariants, winograd_candidates
from .workspace import release_workspace

__all__ = ["iter_stain_slide", "plan_halo", "pyramid_factors", "stain_slide", "write_run_json"]

BACKGROUND_GROUP = 64  # background tiles written between two progress reports


@dataclass
class JobCounters:
    """What a run has done so far, for its progress reports and its ``run.json``."""

    done: int = 0  # tiles finished, resumed ones included
    skipped: int = 0  # blank glass filled by this run
    model: int = 0  # tiles the model ran on in this run
    pixels: int = 0  # core pixels written by this run


def _to_level0(rect: tuple[int, int, int, int], d: float) -> Box:
    x, y, w, h = rect
    return (round(x * d), round(y * d), round(w * d), round(h * d))


def _tissue_flags(
    slide: Slide, tiles: list[GridTile], d: float, tissue: tuple[np.ndarray, float] | None = None
) -> dict[int, bool]:
    """Tissue or glass per tile, on the plan's tissue mask when it read one (``tissue``), else a fresh one."""
    mask, scale = tissue if tissue is not None else plane_tissue_mask(slide, d)
    return tile_tissue_flags(mask, scale, ((t.index, t.core) for t in tiles))


def _fill(pattern: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """Tile the periodic ``pattern`` over (x, y, w, h), phase-locked to the plane's origin."""
    ph, pw = pattern.shape[:2]
    reps = (-(-(h + ph) // ph), -(-(w + pw) // pw), 1)
    big = np.tile(pattern, reps)
    return big[y % ph : y % ph + h, x % pw : x % pw + w]


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
    the folder cannot be written, RegionError for a region outside the slide, StoreMismatchError for a
    store of other settings or another slide, StoreLockedError while another run writes it, StoreWriteError
    (e.g. a full disk) mid-run with the failing tile not marked done.
    """
    run = iter_stain_slide(slide, model, store, settings, region=region, priority=priority, cancel=cancel)
    while True:
        try:
            event = next(run)
        except StopIteration as done:
            report: RunReport = done.value
            return report
        if progress is not None and isinstance(event, TileProgress):
            progress(event)


def iter_stain_slide(
    slide: Slide,
    model: LoadedGenerator,
    store: str | Path,
    settings: EngineSettings | None = None,
    *,
    region: Box | None = None,
    priority: PriorityProvider | None = None,
    cancel: threading.Event | None = None,
) -> Generator[RunEvent, None, RunReport]:
    """``stain_slide`` as a generator: yields the RunPlan (the store is open), then a TileProgress after
    every batch, and returns the RunReport. For callers that show the run as it goes (the widget runs it
    in a napari ``thread_worker``); ``cancel`` stops it after the current batch."""
    t_start = time.perf_counter()
    store_path = Path(store)
    if slide.path is not None:  # a store inside an input OME-Zarr would write into the input (issue 29)
        check_output_outside(store_path.parent, [Path(slide.path)])
    check_writable_folder(store_path.parent)
    plan = plan_run(slide, model, settings or EngineSettings(), region, interactive=priority is not None)
    tstore = TileStore.open(
        store_path,
        plan.plane.size,
        plan.tile,
        plan.factors,
        plan.store_mpp,
        plan.run_key,
        plan.provenance,
        source=slide.path,
    )
    job = None
    try:
        with keep_freed_memory():
            job = _StainJob(slide, model, plan, tstore, priority, cancel, t_start)
            yield job.run_plan()
            report = yield from job.run()
            return report
    finally:
        if job is not None:
            job.close()
        tstore.close()
        release_workspace()


class _StainJob:
    """One run over an open store, step by step (``run``); each step that writes tiles yields progress."""

    def __init__(
        self,
        slide: Slide,
        model: LoadedGenerator,
        plan: StainPlan,
        tstore: TileStore,
        priority: PriorityProvider | None,
        cancel: threading.Event | None,
        t_start: float,
    ) -> None:
        self.slide, self.model, self.plan, self.tstore = slide, model, plan, tstore
        self.priority, self.cancel, self.t_start = priority, cancel, t_start
        self.tiles, self.grid, self.d = plan.tiles, plan.grid, plan.downsample
        self.confidence: ConfidenceWriter | None = None
        if plan.mode.samples > 1:  # mean:N: the samples' spread goes to a second store (best effort)
            self.confidence = ConfidenceWriter.open(
                tstore.path,
                plan.plane.size,
                plan.tile,
                plan.factors,
                plan.store_mpp,
                plan.run_key,
                plan.provenance,
                plan.warnings,
            )
        self.mask_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vihc-tissue")
        self.finished = tstore.finished()
        self.resumed = [i for i in self.tiles if i in self.finished]
        self.todo = [i for i in self.tiles if i not in self.finished]
        self.count = JobCounters(done=len(self.resumed))
        self.pipeline: dict[str, int] = {}  # the tile pass's decode threads and batches read ahead
        self.runner: BatchRunner | None = None  # the tile pass's model (None: cancelled before it was built)
        self.folded = self.winograd_convs = self.cropped_blocks = 0
        self.cancelled = False
        self.t_work = time.perf_counter()
        self.blank_spread: np.ndarray | None = None

    def close(self) -> None:
        self.mask_pool.shutdown(wait=True, cancel_futures=True)
        if self.confidence is not None:
            self.confidence.close()

    def run_plan(self) -> RunPlan:
        """What the caller may show before the first tile."""
        return RunPlan(
            store=self.tstore.path,
            plane=self.plan.plane.size,
            level_shapes=[(int(a.shape[1]), int(a.shape[2])) for a in self.tstore.arrays],
            level0_downsample=self.d,
            tile=self.plan.tile,
            halo=self.plan.halo,
            tiles_total=len(self.tiles),
            tiles_resumed=len(self.resumed),
            device=str(self.plan.device),
            provenance=self.tstore.provenance(),
            notes=list(self.model.notes),
        )

    def run(self) -> Generator[TileProgress, None, RunReport]:
        self.classify_tissue()
        self.choose_compute()
        try:
            self.slide_statistics()
        except PassCancelled:  # nothing of the pass is kept: a re-run streams again
            self.cancelled = True
            return self.report()
        self.build_runner()
        yield self.progress([])
        yield from self.field_of_view_first()
        yield from self.fill_background()
        yield from self.write_pooled_pass()
        yield from self.model_tiles()
        return self.report()

    def stop_requested(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    # --- step 1: tissue or blank glass --------------------------------------------------------------
    def classify_tissue(self) -> None:
        """Which tiles are blank glass. In interactive runs (a priority region is given) the tissue mask is
        computed on a helper thread while the first field-of-view batch runs: it takes a thumbnail read plus
        ~0.05-0.3 s, which would otherwise delay the first tile. Slide statistics need it first."""
        plan, tiles = self.plan, self.tiles
        self.flags: dict[int, bool] | None = dict.fromkeys(tiles, True)
        self.flags_future: Future[dict[int, bool]] | None = None
        if plan.settings.skip_background and self.todo:
            slide_stats = plan.norm == "instance" or plan.mode.slide_batch_norm
            # A small job may resume into the one pooled pass (below): it needs the mask first as well.
            small_job = len(tiles) <= plan.settings.stats_windows
            stats_pending = slide_stats and (small_job or not self.tstore.has_norm_stats())
            if self.priority is not None and not stats_pending:
                self.flags_future = self.mask_pool.submit(
                    _tissue_flags, self.slide, list(tiles.values()), self.d, plan.tissue
                )
                self.flags = None
            else:
                self.flags = _tissue_flags(self.slide, list(tiles.values()), self.d, plan.tissue)
        if self.flags is not None:
            self.background = [i for i in self.todo if not self.flags[i]]
            self.tissue = [i for i in self.todo if self.flags[i]]
        else:  # decided once the mask is ready, after the first batch
            self.background, self.tissue = [], list(self.todo)
        self.pending = list(self.tissue)

    # --- step 2: precision and kernels ------------------------------------------------------------------
    def choose_compute(self) -> None:
        """Pick precision and kernels (inference.devices.calibration) before the slide statistics are final:
        an exact pooled pass writes its output as the job's tiles, so it runs in them. When the choice is
        measured (on the first tissue window, for a job large enough to repay it), the model is normalised
        for it by the bounded sampled statistics pass (``provisional_statistics``), as the tile pass would be
        without a pooled pass: the quality gate then judges the model the job runs."""
        plan, grid, mode = self.plan, self.grid, self.plan.mode
        # Dropout as a function of slide position (inference.dropout): a copy of the model with positional masks.
        self.base, self.dropout_ctx = with_positional_dropout(self.model.module, mode.dropout, mode.seed)
        self.provisional: SlideStatistics | None = None
        # read once: the calibration's provisional pass and the statistics step both start from it
        self.saved_stats = self.tstore.load_norm_stats() if self.needs_slide_statistics() else None
        worth = (
            bool(self.tissue)
            and len(self.tissue) * grid.window_size[0] * grid.window_size[1] / 1e6
            >= plan.settings.calibration_min_mp
        )
        measured: list[ModelVariants] = []

        def window() -> np.ndarray:
            return calibration_window(plan.plane.read(self.tiles[self.tissue[0]].window), grid.align)

        def prepare(c: Candidate) -> Runner:
            if not measured:
                stats = self.provisional_statistics() if self.needs_slide_statistics() else None
                measured.append(self.variants(freeze_normalization(self.base, stats)))
            return measured[0].prepare(c)

        self.choice = decide_compute(
            plan.device,
            plan.asked_precision,
            plan.settings.winograd,
            winograd_candidates(self.base, plan.device),
            self.model.sha256,
            prepare,
            window if worth else None,
            resumed=self.tstore.provenance().get("compute"),
        )
        # recorded before any pixel: a run killed in the statistics pass resumes with the same arithmetic
        self.tstore.update_provenance(compute=self.choice.to_dict())

    def variants(self, frozen: nn.Module) -> ModelVariants:
        plan = self.plan
        asked = plan.settings.crop_activations
        crop = asked is True or (asked is None and plan.device.type == "cpu")
        self.crop_ctx = CropContext() if crop and self.dropout_ctx is None else None
        return ModelVariants(
            frozen,
            plan.device,
            self.model.spec.input_norm,
            self.model.spec.output_norm,
            crop=(self.crop_ctx, plan.halo) if self.crop_ctx is not None else None,
        )

    # --- step 3: slide-level statistics ---------------------------------------------------------------
    def needs_slide_statistics(self) -> bool:
        return self.plan.norm == "instance" or self.plan.mode.slide_batch_norm

    def stats_request(
        self, precision: str, winograd: bool, pooled_limit_mp: float, streamed_bytes: float = 0.0
    ) -> StatsRequest:
        plan, tiles, grid, spec, settings = (
            self.plan,
            self.tiles,
            self.grid,
            self.model.spec,
            self.plan.settings,
        )
        saved = self.saved_stats
        flags = self.flags
        assert flags is not None or saved is not None  # computed before the statistics
        tissue_all = [i for i in tiles if flags[i]] if flags is not None else []
        return StatsRequest(
            module=self.base,
            plane=plan.plane,
            tiles=tiles,
            tissue=tissue_all or list(tiles),
            todo=len(self.tissue) if tissue_all else 0,
            finished=set(self.finished),
            saved=saved,
            window_size=grid.window_size,
            halo=grid.halo,
            align=grid.align,
            stats_windows=settings.stats_windows,
            stats_tile=settings.stats_tile,
            stats_share=settings.stats_share,
            pooled_limit_mp=pooled_limit_mp,
            streamed_bytes=streamed_bytes,
            memory_mp=pooled_pass_limit_mp(self.base, plan.device, interactive=False, precision=precision),
            device=plan.device,
            winograd=winograd,
            legacy_winograd=plan.winograd,
            precision=precision,
            batch_norms=plan.mode.slide_batch_norm,
            input_norm=spec.input_norm,
            output_norm=spec.output_norm,
            dropout_samples=plan.mode.samples,
            batch_job=self.priority is None,
            stop=self.stop_requested,
        )

    def provisional_statistics(self) -> NormStats:
        """The store's statistics, or the sampled pass's (fp32), for the calibration: what the tile pass would
        use when the job turns out too large for one pooled pass (then they are kept, with their tiles)."""
        self.provisional = slide_statistics(
            self.stats_request("fp32", self.plan.winograd, pooled_limit_mp=0.0)
        )
        return self.provisional.stats

    def slide_statistics(self) -> None:
        """InstanceNorm (and BatchNorm in "slide" mode): ``slide_stats.slide_statistics`` (one exact pooled
        pass when the job's windows fit memory, else a bounded sampled pass), saved in the store so a resumed
        run reuses them; the tiles it computed on the way are written as they are. The pooled pass runs in
        the tile pass's precision and kernels (``choose_compute``)."""
        plan, settings = self.plan, self.plan.settings
        self.stats: NormStats | None = None
        self.pooled: tuple[list[int], list[np.ndarray]] | None = None
        self.from_pooled_pass = False  # the statistics (and tiles) came from one exact pooled pass
        self.stats_counters = StatsCounters()
        if not self.needs_slide_statistics():
            return
        # bf16 where the tile pass runs bf16 (a CUDA fp16 choice: the statistics in fp32)
        precision = "bf16" if self.choice.precision == "bf16" and plan.device.type == "cpu" else "fp32"
        limit = settings.pooled_pass_mp
        streamed = 0.0  # a batch job with the limit by memory may also take the layer-by-layer exact pass
        if limit is None:
            interactive = self.priority is not None
            limit = pooled_pass_limit_mp(self.base, plan.device, interactive=interactive, precision=precision)
            streamed = 0.0 if interactive else available_memory(plan.device) * MEMORY_SHARE
        req = self.stats_request(precision, plan.winograd and self.choice.winograd, limit, streamed)
        provisional, self.provisional = self.provisional, None
        if provisional is not None and not exact_pass_fits(req):
            result = provisional  # the calibration's sampled statistics are the job's
        else:
            result = slide_statistics(req)
            if provisional is not None:  # a pooled pass replaced them: their pass counts as its cost
                result.counters.seconds += provisional.counters.seconds
        self.stats, self.stats_counters, self.from_pooled_pass = result.stats, result.counters, result.exact
        if result.tiles:
            self.pooled = (list(result.tiles), list(result.tiles.values()))
        if req.saved is None:
            arrays = stats_to_arrays(result.stats)
            arrays[POOLED_MARK] = np.array(result.exact)
            arrays[POOLED_PRECISION_MARK] = np.array(result.precision)
            self.tstore.save_norm_stats(arrays)

    # --- step 4: the tile pass's model ----------------------------------------------------------------
    def build_runner(self) -> None:
        """Fold the frozen norms and build the tile pass's runner in the chosen precision and kernels (after
        folding: Winograd transforms the folded weights)."""
        plan = self.plan
        frozen = freeze_normalization(self.base, self.stats)
        self.folded = fold_frozen_norms(frozen)
        variants = self.variants(frozen)
        self.runner = variants.runner(
            self.choice.candidate, plan.batch, dropout=self.dropout_ctx, samples=plan.mode.samples
        )
        self.winograd_convs = variants.converted if self.choice.winograd else 0
        self.cropped_blocks = variants.cropped_blocks

    # --- writing tiles ------------------------------------------------------------------------------------
    def progress(self, new: list[int]) -> TileProgress:
        elapsed = max(1e-9, time.perf_counter() - self.t_work)
        return TileProgress(
            done=self.count.done,
            total=len(self.tiles),
            skipped=self.count.skipped + sum(1 for i in self.resumed if self.finished[i] == "s"),
            new_boxes=[_to_level0(self.tiles[i].core, self.d) for i in new],
            mp_per_s=self.count.pixels / 1e6 / elapsed,
            device=str(self.plan.device),
            compute=self.choice.describe(),
        )

    def next_batch(self) -> list[int]:
        """The next tiles for the model: those in the viewer's field of view first."""
        if self.priority is not None and self.pending:
            box = self.priority()
            if box is not None:
                plane = self.plan.plane
                try:
                    first = set(
                        self.grid.tiles_intersecting(region_to_plane(box, self.slide, self.d, plane.size))
                    )
                except RegionError:
                    first = set()
                if first:
                    self.pending = [i for i in self.pending if i in first] + [
                        i for i in self.pending if i not in first
                    ]
        chosen, self.pending = self.pending[: self.plan.batch], self.pending[self.plan.batch :]
        return chosen

    def read_batch(self, indices: list[int]) -> np.ndarray:
        return np.stack([self.read_window(i) for i in indices])

    def read_window(self, i: int) -> np.ndarray:
        """Tile ``i``'s input window; a read or decode failure names the tile and where it lies."""
        try:
            return self.plan.plane.read(self.tiles[i].window)
        except MemoryError:
            raise
        except Exception as e:
            x, y, w, h = _to_level0(self.tiles[i].core, self.d)
            detail = " ".join(str(e).split()) or type(e).__name__
            raise TileReadError(
                f"cannot read tile {i} (level-0 x={x}, y={y}, {w} x {h} px) of {self.slide.path}: {detail}"
            ) from e

    def run_batch(self, indices: list[int], windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.crop_ctx is not None:  # the sides every window of the batch has context to spare on
            sides = [
                spare_sides(self.tiles[i].core_in_window, self.grid.window_size, self.plan.halo)
                for i in indices
            ]
            self.crop_ctx.sides = cast(Sides, tuple(all(s[k] for s in sides) for k in range(4)))
        assert self.runner is not None  # built before any tile runs
        try:
            return self.runner.run(windows, [self.tiles[i].window[:2] for i in indices])
        finally:
            if self.crop_ctx is not None:
                self.crop_ctx.sides = NO_SIDES

    def write_model_tiles(self, indices: list[int], outs: Any, spreads: Any = None) -> None:
        tiles = self.tiles
        for k, (i, out) in enumerate(zip(indices, outs, strict=True)):
            self.tstore.write_tile(tiles[i].core, _crop(out, tiles[i]))
            if self.confidence is not None and spreads is not None:
                self.confidence.write(tiles[i].core, _crop(spreads[k], tiles[i]))
        self.tstore.mark_done(indices, "d")
        self.count.done += len(indices)
        self.count.model += len(indices)
        self.count.pixels += sum(tiles[i].core[2] * tiles[i].core[3] for i in indices)

    # --- step 4: the field of view, while the tissue mask is computed -------------------------------------
    def field_of_view_first(self) -> Generator[TileProgress, None, None]:
        """The first field-of-view batch runs while the tissue mask is computed; its tiles that turn out to be
        blank glass are filled like every other background tile (the model's output is dropped), so the store
        does not depend on which came first (but for float rounding: a batch's windows share one trunk crop, and
        some CPUs' kernels round by extent, so a tile run beside another partner may differ by one grey level in
        a value or two per million)."""
        if self.flags_future is None:
            return
        first: list[int] = []
        outs: Any = None
        spreads: Any = None
        if not self.stop_requested():
            first = self.next_batch()
            if first:
                outs, spreads = self.run_batch(first, self.read_batch(first))
        flags = self.flags = self.flags_future.result()
        self.background = [i for i in self.todo if not flags[i]]
        keep = [k for k, i in enumerate(first) if flags[i]]
        if keep:
            self.write_model_tiles(
                [first[k] for k in keep],
                [outs[k] for k in keep],
                [spreads[k] for k in keep] if spreads is not None else None,
            )
            yield self.progress([first[k] for k in keep])
        self.pending = [i for i in self.pending if flags[i]]  # ``first`` already left it

    # --- step 5: blank glass ---------------------------------------------------------------------------
    def blank_glass_pattern(self) -> np.ndarray:
        """What the model makes of blank glass, away from the window's borders: constant up to the model's
        own period (its total stride), so one period tiles any background core seamlessly."""
        ww, wh = self.grid.window_size
        white = np.full((1, wh, ww, 3), 255, np.uint8)
        assert self.runner is not None
        outs, spreads = self.runner.run(white, [(0, 0)])
        period = self.grid.align
        cy = (wh // 2 // period) * period
        cx = (ww // 2 // period) * period
        pattern = outs[0][cy : cy + period, cx : cx + period].copy()
        if spreads is not None:  # with mean:N dropout: the glass's spread, tiled like its colour
            self.blank_spread = spreads[0][cy : cy + period, cx : cx + period].copy()
        self.tstore.update_provenance(
            background_rgb=np.median(pattern.reshape(-1, 3), axis=0).round().astype(int).tolist()
        )
        return pattern

    def fill_background(self) -> Generator[TileProgress, None, None]:
        """Background next: cheap, and it makes the whole slide visible at once."""
        if not self.background:
            return
        pattern = self.blank_glass_pattern()
        for k in range(0, len(self.background), BACKGROUND_GROUP):
            if self.stop_requested():
                self.cancelled = True
                return
            group = self.background[k : k + BACKGROUND_GROUP]
            for i in group:
                cx, cy, cw, ch = self.tiles[i].core
                self.tstore.write_tile(self.tiles[i].core, _fill(pattern, cx, cy, cw, ch))
                if self.confidence is not None and self.blank_spread is not None:
                    spread = _fill(self.blank_spread[..., None], cx, cy, cw, ch)[..., 0]
                    self.confidence.write(self.tiles[i].core, spread)
                self.count.pixels += cw * ch
            self.tstore.mark_done(group, "s")
            self.count.done += len(group)
            self.count.skipped += len(group)
            yield self.progress(group)

    # --- step 6: the pooled pass's tiles -----------------------------------------------------------------
    def write_pooled_pass(self) -> Generator[TileProgress, None, None]:
        pooled, self.pooled = self.pooled, None
        if pooled is None or self.cancelled:
            return
        indices, crops = pooled
        for i, core_pixels in zip(indices, crops, strict=True):
            self.tstore.write_tile(self.tiles[i].core, core_pixels)
        self.tstore.mark_done(indices, "d")
        self.count.done += len(indices)
        self.count.model += len(indices)
        self.count.pixels += sum(self.tiles[i].core[2] * self.tiles[i].core[3] for i in indices)
        yield self.progress(indices)
        done = set(indices)
        self.pending = [i for i in self.pending if i not in done]

    # --- step 7: the model's tiles: decode threads ahead of the model, a writer thread behind it ----------
    def model_tiles(self) -> Generator[TileProgress, None, None]:
        """``workers`` threads decode up to ``read_ahead`` batches ahead (OpenSlide and tifffile release the
        GIL); the model runs on the next batch while one writer thread writes the previous one's tiles and
        pyramid levels; its progress is yielded once written. Interactive runs read one batch ahead, so a
        moved field of view is picked up at the next batch."""
        workers, ahead = pipeline_defaults(
            self.plan.settings.workers, self.plan.settings.read_ahead, self.plan.device.type
        )
        if self.priority is not None:
            ahead = 1
        self.pipeline = {"workers": workers, "read_ahead": ahead}
        queue: deque[tuple[list[int], Future[np.ndarray]]] = deque()
        readers = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vihc-reader")
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vihc-writer")

        def refill() -> None:
            while len(queue) < ahead:
                batch = self.next_batch()
                if not batch:
                    return
                queue.append((batch, readers.submit(self.read_batch, batch)))

        writing: tuple[list[int], Future[None]] | None = None
        try:
            if not self.cancelled:
                refill()
            while queue:
                indices, read = queue.popleft()
                windows = read.result()
                if self.stop_requested():
                    self.cancelled = True
                    break
                refill()
                outs, spreads = self.run_batch(indices, windows)
                if writing is not None:
                    writing[1].result()
                    yield self.progress(writing[0])
                writing = (indices, writer.submit(self.write_model_tiles, indices, outs, spreads))
                if self.priority is not None:  # the viewer shows each batch as soon as it is written
                    writing[1].result()
                    yield self.progress(indices)
                    writing = None
            if writing is not None:
                done, writing = writing, None
                done[1].result()
                yield self.progress(done[0])
        finally:
            for _, read in queue:
                read.cancel()
            readers.shutdown(wait=True, cancel_futures=True)
            writer.shutdown(wait=True)  # a tile handed to the writer is written and marked done

    # --- step 8: the report ---------------------------------------------------------------------------------
    def report(self) -> RunReport:
        plan, spec, tiles = self.plan, self.model.spec, self.tiles
        runner = self.runner
        self.fp16_dropped = runner is not None and record_fp16_overflow(
            plan.device, self.model.sha256, runner.batches, runner.fallbacks
        )
        if self.fp16_dropped and runner is not None:
            plan.warnings.append(
                f"fp16 overflowed in {runner.fallbacks} of {runner.batches} batches (each re-run at "
                f"{runner.fallback_precision}); the next run of this model here calibrates without fp16"
            )
        seconds = time.perf_counter() - self.t_start
        complete = not self.cancelled and self.count.done == len(tiles)
        whole = len(tiles) == len(self.grid)
        finished_now = self.tstore.finished()
        store_complete = bool(complete and (whole or len(finished_now) == len(self.grid)))
        region = list(plan.region) if plan.region is not None else None
        self.tstore.update_provenance(
            complete=store_complete,
            region=region,
            tiles_total=len(self.grid),
            tiles_finished=len(finished_now),
        )
        rep = RunReport(
            store=str(self.tstore.path),
            device=str(plan.device),
            precision=self.choice.precision,
            tiles_total=len(tiles),
            tiles_done=self.count.model,
            tiles_skipped=self.count.skipped,
            tiles_resumed=len(self.resumed),
            seconds=seconds,
            mp_per_s=self.count.pixels / 1e6 / max(1e-9, seconds),
            cancelled=self.cancelled,
            store_complete=store_complete,
            settings=self.run_settings(region, complete),
            model={
                "name": spec.name,
                "arch": spec.arch,
                "sha256": self.model.sha256,
                "source": self.model.source,
                "norm": plan.norm,
                "mpp": spec.mpp,
            },
            warnings=list(dict.fromkeys(plan.warnings)),
        )
        write_run_json(rep)
        return rep

    def run_settings(self, region: list[int] | None, complete: bool) -> RunSettings:
        plan, asked = self.plan, self.plan.settings
        stats = self.stats_counters.to_report()
        return RunSettings(
            device=asked.device,
            precision=asked.precision,
            model_mpp=plan.model_mpp,
            skip_background=asked.skip_background,
            workers=asked.workers,
            read_ahead=asked.read_ahead,
            stats_windows=asked.stats_windows,
            stats_tile=asked.stats_tile,
            stats_share=asked.stats_share,
            pooled_pass_mp=asked.pooled_pass_mp,
            winograd=asked.winograd,
            crop_activations=asked.crop_activations,
            calibration_min_mp=asked.calibration_min_mp,
            bn_stats=asked.bn_stats,
            dropout=asked.dropout,
            dropout_seed=asked.dropout_seed,
            tile=plan.tile,
            halo=plan.halo,
            align=plan.align,
            receptive_field=plan.receptive_field,
            level0_downsample=self.d,
            region=region,
            batch=plan.batch,
            batch_final=self.runner.batch if self.runner is not None else plan.batch,
            batches=self.runner.batches if self.runner is not None else 0,
            device_described=describe_device(str(plan.device)),
            pipeline=self.pipeline,
            fp16_fallbacks=self.runner.fallbacks if self.runner is not None else 0,
            fp16_dropped=self.fp16_dropped,
            winograd_convs=self.winograd_convs,
            cropped_blocks=self.cropped_blocks,
            compute=self.choice.to_dict(),
            run_mode=plan.mode.to_dict(),
            confidence_store=self.confidence.path if self.confidence is not None else None,
            norms_folded=self.folded,
            stats=stats,
            stats_seconds=stats["seconds"],
            pooled_pass=self.from_pooled_pass,
            complete=complete,
        )


def write_run_json(rep: RunReport) -> Path:
    path = run_json_path(rep.store)
    replace_text(path, json.dumps(rep.__dict__, indent=2, default=str))
    return path
