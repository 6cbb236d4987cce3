"""The slide-statistics pass: slide-level normalisation statistics at a cost bounded by a share of the job.

InstanceNorm models (and BatchNorm ones in ``slide`` mode) need per-layer statistics of the whole slide
(``normalization``). They are estimated from sampled windows, and four rules keep that cheap and close:

- **One forward for all layers, all windows in lock-step.** The sampled windows run as one batch: every
  layer normalises with the statistics pooled over all the windows, so each layer sees inputs made
  with the same statistics the frozen model will use (running windows one by one makes each window's later
  layers see its *own* earlier statistics, a bias that grew to 30 dB on small windows).
- **Each layer pools its own exact interior** (``window_interiors``): a layer's values are shaped by a
  window's edge only within that layer's receptive-field margin, so early layers pool nearly the whole
  window, the last ones about its core; overlaps are split, so windows covering an image give its
  whole-image statistics exactly. What is left is sampling error (docs/inference.md: 30-47 dB against the
  whole-image reference at the budgets measured, not the <= 1 grey level of the exact paths).
- **A budget.** The windows' pixels are at most ``stats_share`` of the job's window pixels: a job of few
  large tiles samples many small windows spread over its tissue instead of whole tiles (that was a whole
  second pass, 56 % of a 4096 px job); a job of many small tiles samples tile windows.
- **Reuse.** When the sampled windows are tile windows run in one batch, their outputs are exactly the frozen
  model's: they are returned as finished tiles, not computed again.

A job whose windows' union fits memory runs as one exact pass over that union instead (whole-image
statistics, its output is the tiles), in the tile pass's precision and kernels: the statistics then cost
only their moments and the unfolded affines (3 % of an ngf-64 ResNet-9 forward, ``moment_kernels``), and the
job is as fast as its tile pass. That is every job that fits memory and is small (at most ``stats_windows``
tiles) or whose union is no more pixels than its tiles' windows. ``slide_statistics`` is a pure function of its request: it reads the
plane and runs the model, and returns the statistics, the finished tiles and its counters; the engine saves
and writes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .devices.rules import is_out_of_memory, release_device_memory
from .dropout import set_positions
from .grid import GridTile, sample_windows
from .moment_kernels import COMPILED_MIN_VALUES
from .normalization import NormStats, WindowInterior, estimate_instance_stats, stats_from_arrays
from .report import StatsReport
from .resample import WorkingPlane
from .runner import to_input, to_uint8
from .streamed_pass import streamed_pass, streamed_peak_bytes
from .tiling import full_resolution_width

POOLED_MARK = "pooled_pass"  # in the saved statistics: whether they came from the one exact pooled pass
POOLED_PRECISION_MARK = "pooled_pass_precision"  # and its precision (stores without it ran it in fp32)
LEGACY_POOLED_MP = 8.0  # the fixed pooled-pass limit (sum of window megapixels) of stores without the mark
STATS_CORES = (
    512,
    384,
    256,
    192,
    128,
)  # core sides tried for sampled windows smaller than tiles, largest first

Rect = tuple[int, int, int, int]


@dataclass
class StatsCounters:
    """What the statistics pass did and cost (``run.json``'s ``settings.stats``)."""

    source: str = "none"  # none | saved | pooled, streamed (exact) | tiles (tile windows) | windows (smaller)
    seconds: float = 0.0
    windows: int = 0  # windows run
    forwards: int = 0  # forward passes (batches); 1 = every layer's statistics from one lock-step pass
    window_mp: float = 0.0  # input megapixels run
    core_mp: float = 0.0  # megapixels of the windows' cores (the last layers pool about these; earlier more)
    job_mp: float = 0.0  # window megapixels of the job's tissue tiles (what the budget is a share of)
    budget_mp: float = 0.0  # the share of ``job_mp`` the pass may run (0: no sampling needed)
    reused_tiles: int = 0  # tiles whose output is this pass's output (written, not run again)

    def to_report(self) -> StatsReport:
        return StatsReport(
            source=self.source,
            seconds=round(self.seconds, 3),
            windows=self.windows,
            forwards=self.forwards,
            window_mp=round(self.window_mp, 3),
            core_mp=round(self.core_mp, 3),
            job_mp=round(self.job_mp, 3),
            budget_mp=round(self.budget_mp, 3),
            reused_tiles=self.reused_tiles,
        )


@dataclass
class StatsRequest:
    """Everything the pass needs; nothing here is changed by it."""

    module: nn.Module  # the model as the run uses it (positional dropout already applied)
    plane: WorkingPlane
    tiles: dict[int, GridTile]  # the run's tiles
    tissue: list[int]  # tiles with tissue, in order (all tiles when unknown or none has tissue)
    todo: int  # tissue tiles still to run in this job
    finished: set[int]  # tiles finished by an earlier run
    saved: dict[str, np.ndarray] | None  # the store's statistics (a resumed run)
    window_size: tuple[int, int]  # the tiles' window (w, h)
    halo: int
    align: int
    stats_windows: int
    stats_tile: int | None
    stats_share: float
    pooled_limit_mp: float  # the largest window union (megapixels) the one exact pass may run
    memory_mp: float  # the largest batch of windows (sum of megapixels) memory allows
    device: torch.device
    # fp32 | bf16 and Winograd or not: the tile pass's choice (windows reused as tiles cost what tiles cost,
    # and a pooled pass whose output is the job runs at the tile pass's speed)
    winograd: bool
    precision: str
    legacy_winograd: bool  # the pooled pass of a store written before its precision was saved: fp32, this
    batch_norms: bool
    input_norm: str
    output_norm: str
    dropout_samples: int = 1
    batch_job: bool = False  # not an interactive run: a large pooled pass may compile its kernels
    stop: Callable[[], bool] | None = None  # asked between the streamed pass's bands (a cancelled run)
    streamed_bytes: float = 0.0  # memory the exact layer-by-layer pass may hold (0: never)


@dataclass
class SlideStatistics:
    """The pass's result: the statistics, tiles it finished (index -> core pixels) and its counters."""

    stats: NormStats
    tiles: dict[int, np.ndarray] = field(default_factory=dict)
    exact: bool = False  # from one pass over every tissue tile (whole-image statistics)
    precision: str = "fp32"  # what that pass ran in
    counters: StatsCounters = field(default_factory=StatsCounters)


def _union(rects: list[Rect]) -> Rect:
    x0, y0 = min(r[0] for r in rects), min(r[1] for r in rects)
    x1, y1 = max(r[0] + r[2] for r in rects), max(r[1] + r[3] for r in rects)
    return (x0, y0, x1 - x0, y1 - y0)


def _spread(items: list[int], n: int) -> list[int]:
    """``n`` of ``items`` evenly spread over the list (slide order: rows of tiles)."""
    if n >= len(items):
        return list(items)
    return sorted({items[round(j)] for j in np.linspace(0, len(items) - 1, n)})


def _positioned(
    module: nn.Module, batches: list[torch.Tensor], origins: list[list[tuple[int, int]]]
) -> Iterator[torch.Tensor]:
    """Yield ``batches``, telling the model's positional dropouts where each window lies first."""
    for b, where in zip(batches, origins, strict=True):
        set_positions(module, where, (b.shape[2], b.shape[3]))
        yield b


def _exact_union(req: StatsRequest) -> Rect | None:
    """The union of the tissue tiles' windows when this job may run as one exact pass over it, whatever its
    memory: the job is small (at most ``stats_windows`` tiles: sampling would run all of them anyway) or the
    union is no more pixels than its tiles' windows (the halos the tile pass would compute make up for the
    glass inside the union). A resumed job does what it started with."""
    saved, tissue = req.saved, req.tissue
    if req.todo <= 0 or (saved is not None and not bool(saved.get(POOLED_MARK, True))):
        return None
    union = _union([req.tiles[i].window for i in tissue])
    windows_mp = len(tissue) * req.window_size[0] * req.window_size[1] / 1e6
    small = len(tissue) <= req.stats_windows
    return union if small or union[2] * union[3] / 1e6 <= windows_mp else None


def pooled_pass_fits(req: StatsRequest) -> bool:
    """Whether this job runs as one exact whole-image forward (``_pooled_pass``): ``_exact_union`` allows it
    and the union fits ``pooled_limit_mp``."""
    saved, tissue = req.saved, req.tissue
    if req.todo > 0 and saved is not None and POOLED_MARK not in saved:  # written before the mark existed
        small = len(tissue) <= req.stats_windows
        return small and len(tissue) * req.window_size[0] * req.window_size[1] / 1e6 <= LEGACY_POOLED_MP
    union = _exact_union(req)
    return union is not None and union[2] * union[3] / 1e6 <= req.pooled_limit_mp


def streamed_pass_fits(req: StatsRequest) -> bool:
    """Whether this job runs as the exact layer-by-layer pass (``streamed_pass``): too large for one forward,
    allowed (``_exact_union``), a model the pass can band, and its measured peak within ``streamed_bytes``."""
    if req.streamed_bytes <= 0 or (req.saved is not None and POOLED_MARK not in req.saved):
        return False
    union = _exact_union(req)
    if union is None:
        return False
    peak = streamed_peak_bytes(req.module, (union[2], union[3]), req.precision, req.batch_norms)
    return peak is not None and peak <= req.streamed_bytes


def exact_pass_fits(req: StatsRequest) -> bool:
    """Whether this job gets the whole image's statistics (one of the two exact passes)."""
    return pooled_pass_fits(req) or streamed_pass_fits(req)


def plan_windows(req: StatsRequest) -> tuple[str, list[GridTile]]:
    """Which windows the sampled pass runs: ``("tiles", tile windows)`` (their outputs are reused: pixels
    pooled at no extra cost) or ``("windows", smaller windows)`` spread over the tissue, their pixels within
    ``stats_share`` of the job. Tile windows are taken when as many as wanted (or 8) fit one batch in
    memory; else as many small windows as the budget allows (up to ``stats_windows``, the largest core that
    gives them all): the sampling error falls with the number of places sampled, and each layer pools a
    window's whole exact interior (``window_interiors``), so a small window's halo counts too. One or two
    tile windows of a job of few large tiles would cost a quarter or more of the job for one place."""
    tiles, tissue = req.tiles, req.tissue
    want = max(1, min(req.stats_windows, len(tissue)))
    ww, wh = req.window_size
    win_mp = ww * wh / 1e6
    fit = min(want, int(req.memory_mp // win_mp))  # tile windows one lock-step batch may hold
    if req.stats_tile is not None or fit < min(want, 8):
        budget = min(req.stats_share * len(tissue) * win_mp, req.memory_mp)
        tile_side = max(tiles[tissue[0]].core[2], tiles[tissue[0]].core[3])
        best: tuple[int, int] | None = None  # (core, windows)
        for core in (req.stats_tile,) if req.stats_tile else STATS_CORES:
            side = core + 2 * req.halo
            n = min(req.stats_windows, int(budget // (side * side / 1e6)))
            if core < tile_side and n >= (1 if req.stats_tile else min(req.stats_windows, 4)):
                if best is None or n > best[1]:
                    best = (core, n)
                if n >= req.stats_windows:
                    break
        if best is not None:
            core, n = best
            spread_over = [tiles[i] for i in tissue]
            return "windows", sample_windows(req.plane.size, spread_over, n, core, req.halo, req.align)
    return "tiles", [tiles[i] for i in _spread(tissue, max(1, fit))]


def window_interiors(
    wins: list[GridTile], plane: tuple[int, int], tissue: list[GridTile] | None = None
) -> list[WindowInterior]:
    """Each window's :class:`WindowInterior` (each layer pools its exact interior, not only the core).

    A pixel is pooled by one window at most (two windows whose reach overlaps split it at the midline
    between their cores, so windows that cover an image pool each pixel once: whole-image statistics), never
    outside the plane, and not into a neighbouring tile that is not ``tissue`` (all tiles when None).
    """
    pw, ph = plane
    reach = [
        [
            max(0, t.window[0]),
            max(0, t.window[1]),
            min(pw, t.window[0] + t.window[2]),
            min(ph, t.window[1] + t.window[3]),
        ]
        for t in wins
    ]
    cores = [(t.core[0], t.core[1], t.core[0] + t.core[2], t.core[1] + t.core[3]) for t in wins]
    if tissue:
        _clip_to_tissue(reach, cores, tissue)
    for a in range(len(wins)):
        for b in range(a + 1, len(wins)):
            ra, rb = reach[a], reach[b]
            if ra[0] >= rb[2] or rb[0] >= ra[2] or ra[1] >= rb[3] or rb[1] >= ra[3]:
                continue  # their reaches do not overlap
            ca, cb = cores[a], cores[b]
            gap_x = max(cb[0] - ca[2], ca[0] - cb[2])
            gap_y = max(cb[1] - ca[3], ca[1] - cb[3])
            axis = 0 if gap_x >= gap_y else 1
            lo, hi = (a, b) if ca[axis] < cb[axis] else (b, a)
            mid = (cores[lo][axis + 2] + cores[hi][axis]) // 2
            reach[lo][axis + 2] = min(reach[lo][axis + 2], mid)
            reach[hi][axis] = max(reach[hi][axis], mid)
    out = []
    for t, r, c in zip(wins, reach, cores, strict=True):
        wx, wy, ww, wh = t.window
        out.append(
            WindowInterior(
                size=(ww, wh),
                core=(c[0] - wx, c[1] - wy, c[2] - wx, c[3] - wy),
                reach=(r[0] - wx, r[1] - wy, r[2] - wx, r[3] - wy),
                context=(wx > 0, wy > 0, wx + ww < pw, wy + wh < ph),
            )
        )
    return out


def _clip_to_tissue(
    reach: list[list[int]], cores: list[tuple[int, int, int, int]], tissue: list[GridTile]
) -> None:
    """Stop each reach, on each side, where the run of tissue tiles through its core ends (tiles: one grid)."""
    side = max(max(t.core[2], t.core[3]) for t in tissue)
    bx, by = min(t.core[0] for t in tissue), min(t.core[1] for t in tissue)
    cells = {((t.core[1] - by) // side, (t.core[0] - bx) // side) for t in tissue}

    def tissue_until(row: int, col: int, step: int, horizontal: bool) -> int:
        """The last tissue cell from (row, col) on, stepping by ``step`` along one axis."""
        while ((row, col + step) if horizontal else (row + step, col)) in cells:
            row, col = (row, col + step) if horizontal else (row + step, col)
        return col if horizontal else row

    for r, (x0, y0, x1, y1) in zip(reach, cores, strict=True):
        row = int(((y0 + y1) / 2 - by) // side)
        col = int(((x0 + x1) / 2 - bx) // side)
        r[0] = max(r[0], bx + tissue_until(row, col, -1, True) * side)
        r[2] = min(r[2], bx + (tissue_until(row, col, 1, True) + 1) * side)
        r[1] = max(r[1], by + tissue_until(row, col, -1, False) * side)
        r[3] = min(r[3], by + (tissue_until(row, col, 1, False) + 1) * side)


def _lockstep_groups(wins: list[GridTile], limit_mp: float) -> list[list[GridTile]]:
    """The windows in as few batches as memory allows (one batch: every layer's statistics consistent)."""
    win_mp = wins[0].window[2] * wins[0].window[3] / 1e6
    per = max(1, int(limit_mp // win_mp)) if win_mp > 0 else len(wins)
    return [wins[k : k + per] for k in range(0, len(wins), per)]


def _run_windows(
    req: StatsRequest, groups: list[list[GridTile]], outputs: list[torch.Tensor] | None
) -> NormStats:
    batches = [
        to_input(np.stack([req.plane.read(t.window) for t in g]), req.input_norm, req.device) for g in groups
    ]
    # interiors of all windows at once: a pixel is pooled once even when its windows run in two batches
    every = iter(
        window_interiors([t for g in groups for t in g], req.plane.size, [req.tiles[i] for i in req.tissue])
    )
    cores = [[next(every) for _ in g] for g in groups]
    origins = [[(t.window[0], t.window[1]) for t in g] for g in groups]
    return estimate_instance_stats(
        req.module,
        _positioned(req.module, batches, origins),
        cores,
        outputs=outputs,
        winograd=req.winograd,
        device=req.device,
        batch_norms=req.batch_norms,
        precision=req.precision,
    )


def slide_statistics(req: StatsRequest) -> SlideStatistics:
    """The slide's normalisation statistics and the tiles computed on the way (see the module docstring).

    In order: the one exact pooled pass when the job is small and fits memory; the statistics saved in the
    store (a resumed run keeps them); else sampled windows (``plan_windows``) in lock-step.
    """
    t0 = time.perf_counter()
    counters = StatsCounters()
    tissue = req.tissue
    ww, wh = req.window_size
    counters.job_mp = len(tissue) * ww * wh / 1e6
    result: SlideStatistics | None = None
    if pooled_pass_fits(req):
        result = _pooled_pass(req, counters)
    elif streamed_pass_fits(req):
        result = _streamed_pass(req, counters)
    if result is None and req.saved is not None:
        counters.source = "saved"
        result = SlideStatistics(stats_from_arrays(req.saved), counters=counters)
    if result is None:
        result = _sampled_pass(req, counters)
    counters.seconds = time.perf_counter() - t0
    return result


def _pooled_pass(req: StatsRequest, counters: StatsCounters) -> SlideStatistics | None:
    """One pass over the union of every tissue tile's window; None when it runs out of memory."""
    tiles, picks = req.tiles, list(req.tissue)
    ux, uy, uw, uh = union = _union([tiles[i].window for i in picks])
    cx0, cy0, cw0, ch0 = _union([tiles[i].core for i in picks])
    core_box = ((cx0 - ux) / uw, (cy0 - uy) / uh, (cx0 + cw0 - ux) / uw, (cy0 + ch0 - uy) / uh)
    # The pooled pass's output is one dropout sample: with mean:N the tiles are run afterwards.
    outputs: list[torch.Tensor] | None = [] if req.dropout_samples == 1 else None
    # In the tile pass's precision and kernels (the pass is the job); a resumed job reruns it as it first ran.
    precision, winograd = req.precision, req.winograd
    if req.saved is not None and POOLED_PRECISION_MARK in req.saved:
        precision = str(req.saved[POOLED_PRECISION_MARK])
    elif req.saved is not None:
        precision, winograd = "fp32", req.legacy_winograd
    try:
        batch = to_input(req.plane.read(union)[None], req.input_norm)
        stats = estimate_instance_stats(
            req.module,
            _positioned(req.module, [batch], [[(ux, uy)]]),
            [[core_box]],
            outputs=outputs,
            winograd=winograd,
            device=req.device,
            batch_norms=req.batch_norms,
            precision=precision,
            compiled=req.batch_job and uw * uh * full_resolution_width(req.module) >= COMPILED_MIN_VALUES,
        )
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        release_device_memory(req.device)
        return None  # too big for one pass here: sampled windows, tiles run afterwards
    whole = to_uint8(outputs[0], req.output_norm)[0] if outputs else None
    return _exact_statistics(req, counters, "pooled", union, stats, whole, precision)


def _streamed_pass(req: StatsRequest, counters: StatsCounters) -> SlideStatistics | None:
    """The exact layer-by-layer pass over the union of every tissue tile's window (``streamed_pass``): the
    whole-image statistics and the job's output with a fraction of one forward's memory; None when it runs
    out of memory all the same."""
    tiles, picks = req.tiles, list(req.tissue)
    ux, uy, uw, uh = union = _union([tiles[i].window for i in picks])
    precision = req.precision if req.saved is None else str(req.saved.get(POOLED_PRECISION_MARK, "fp32"))
    try:
        stats, whole = streamed_pass(
            req.module,
            to_input(req.plane.read(union)[None], req.input_norm),
            req.output_norm,
            origin=(ux, uy),
            winograd=req.winograd,
            device=req.device,
            batch_norms=req.batch_norms,
            precision=precision,
            compiled=req.batch_job and uw * uh * full_resolution_width(req.module) >= COMPILED_MIN_VALUES,
            stop=req.stop,
        )
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        release_device_memory(req.device)
        return None
    # with mean:N dropout the output is one sample: the tiles are run afterwards
    kept = whole if req.dropout_samples == 1 else None
    return _exact_statistics(req, counters, "streamed", union, stats, kept, precision)


def _exact_statistics(
    req: StatsRequest,
    counters: StatsCounters,
    source: str,
    union: tuple[int, int, int, int],
    stats: NormStats,
    whole: np.ndarray | None,
    precision: str,
) -> SlideStatistics:
    """A one-pass result (pooled or streamed) over ``union``: exact statistics, and ``whole`` (the uint8 output
    over the union, None when the tiles are run afterwards) cut into the unfinished tissue tiles."""
    tiles, picks = req.tiles, list(req.tissue)
    ux, uy, uw, uh = union
    counters.source, counters.windows, counters.forwards = source, 1, 1
    counters.window_mp = uw * uh / 1e6
    counters.core_mp = sum(tiles[i].core[2] * tiles[i].core[3] for i in picks) / 1e6
    done: dict[int, np.ndarray] = {}
    if whole is not None:
        for i in picks:
            if i not in req.finished:
                x, y, w, h = tiles[i].core
                done[i] = whole[y - uy : y - uy + h, x - ux : x - ux + w]
    counters.reused_tiles = len(done)
    return SlideStatistics(stats, done, exact=True, precision=precision, counters=counters)


def _sampled_pass(req: StatsRequest, counters: StatsCounters) -> SlideStatistics:
    kind, wins = plan_windows(req)
    groups = _lockstep_groups(wins, req.memory_mp)
    # Tile windows in one batch come out exactly as the frozen model makes them: keep them as tiles.
    reuse = kind == "tiles" and len(groups) == 1 and req.dropout_samples == 1
    outputs: list[torch.Tensor] | None = [] if reuse else None
    try:
        stats = _run_windows(req, groups, outputs)
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e) or len(groups[0]) == 1:
            raise
        release_device_memory(req.device)  # smaller batches: statistics chained per batch, no reuse
        groups, outputs, reuse = [[t] for t in wins], None, False
        stats = _run_windows(req, groups, None)
    counters.source = kind
    counters.windows, counters.forwards = len(wins), len(groups)
    counters.window_mp = sum(t.window[2] * t.window[3] for t in wins) / 1e6
    counters.core_mp = sum(t.core[2] * t.core[3] for t in wins) / 1e6
    counters.budget_mp = req.stats_share * counters.job_mp
    done: dict[int, np.ndarray] = {}
    if reuse and outputs:
        out = to_uint8(outputs[0], req.output_norm)
        for k, t in enumerate(wins):
            if t.index not in req.finished:
                x, y, w, h = t.core_in_window
                done[t.index] = out[k, y : y + h, x : x + w]
    counters.reused_tiles = len(done)
    return SlideStatistics(stats, done, exact=False, counters=counters)
