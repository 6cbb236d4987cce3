"""The contract between the tile engine and its callers (the widget, the CLI, the trainer's evaluation).

Kept in one small module so callers can be written against it while the engine grows behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ..geometry import Box
from .report import RunSettings


@dataclass
class EngineSettings:
    """Knobs a user may turn; defaults are what a pathologist on a laptop should get."""

    # Written core of a tile, px at the model's resolution. None: by mode and memory (inference.tiling): 512
    # for interactive runs (a priority region is given), else the largest of 2048/1024/512 that fits memory.
    tile: int | None = 512
    halo: int | None = None  # None: at least half the receptive field, computed from the architecture
    batch: int | None = None  # None: 1 on the CPU (larger batches run slower per tile there), 4 on GPUs
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    model_mpp: float | None = None  # overrides the checkpoint's µm/px (needed for imported .pth)
    skip_background: bool = True
    # The tile pass's pipeline (engine.model_tiles): ``workers`` decode threads fill a queue of ``read_ahead``
    # batches while the model runs, and one writer thread writes tiles and pyramid levels. None: from the core
    # count (inference.tiling.pipeline_defaults). Interactive runs read one batch ahead (the field of view
    # may move).
    workers: int | None = None
    read_ahead: int | None = None
    stats_windows: int = 16  # windows sampled for slide-level InstanceNorm statistics (at most)
    # The statistics pass's windows may hold at most this share of the job's window pixels (inference.slide_stats):
    # a job of few large tiles samples smaller windows spread over its tissue instead of whole tiles.
    stats_share: float = 0.06
    # Core px of sampled windows smaller than tiles. None: chosen by inference.slide_stats.plan_windows (tile
    # windows when enough fit one batch, else as many small windows as stats_share allows); N: windows with N px
    # cores. Sampled statistics are not the whole image's: 30-47 dB against it (docs/inference.md).
    stats_tile: int | None = None
    # Small jobs (<= stats_windows tiles, their windows' union <= this many megapixels): one pooled pass over
    # all tiles gives the exact whole-image statistics and the output at once (memory ~ this many MP of
    # activations). None: by mode and memory (inference.tiling.pooled_pass_limit_mp): 8 for interactive runs,
    # else what fits 30 % of the memory available now, and a batch job too large for that runs the same exact
    # pass layer by layer (inference.streamed_pass, ~1/4 of the memory) when that fits; a number: that limit,
    # never streamed; 0 never (sampled statistics).
    pooled_pass_mp: float | None = None
    # CPU fp32 only: wide 3x3 convolutions as Winograd F(4x4, 3x3) (~2x fewer multiplications; the output
    # differs from direct convolution by fp32 rounding, far below one grey level). None: measured (with
    # ``precision="auto"``, see inference.devices.calibration), on when there is nothing to measure; True/False: forced.
    winograd: bool | None = None
    # CPU: crop the residual trunk's activations, block by block, to what the tile's core still needs
    # (inference.crop; exact). None: on wherever it applies; False: off.
    crop_activations: bool | None = None
    # Jobs with fewer window megapixels of tissue to run than this use the default precision and kernels
    # instead of measuring them (the calibration costs a few window passes); 0 always measures.
    calibration_min_mp: float = 16.0
    # How BatchNorm and dropout run (None: what the checkpoint's header says, else eval mode). bn_stats:
    # "running" (eval mode) | "slide" (the slide's own statistics, frozen: the reference test.py's train-mode
    # batch-1 forward). dropout: "off" | "sample" (one sample, as test.py) | "mean:N" (mean of N samples; their
    # per-pixel spread is written to a second store, ``<name>.confidence.ome.zarr``). Masks are seeded by
    # ``dropout_seed`` and the slide position.
    bn_stats: str | None = None
    dropout: str | None = None
    dropout_seed: int = 0


@dataclass(frozen=True)
class RunPlan:
    """What a run will do, known before its first tile: the first thing ``iter_stain_slide`` yields.

    The store exists (created or reopened, and locked) when the plan is yielded, so a viewer can show it.
    """

    store: Path
    plane: tuple[int, int]  # (width, height) of the store's level 0, px at the model's resolution
    level_shapes: list[tuple[int, int]]  # (height, width) of every store level
    level0_downsample: float  # source level-0 px per store px
    tile: int
    halo: int
    tiles_total: int
    tiles_resumed: int
    device: str
    provenance: dict[str, Any] = field(default_factory=dict)  # as written into the store
    notes: list[str] = field(default_factory=list)  # what loading the model assumed (its modes, µm/px)


@dataclass
class TileProgress:
    """Reported after every batch: enough for a progress bar and for refreshing only what changed."""

    done: int  # tiles finished (including those found done by a previous run)
    total: int  # tiles in the grid (background included)
    skipped: int  # background tiles filled without running the model
    new_boxes: list[Box] = field(default_factory=list)  # level-0 boxes written since the last report
    mp_per_s: float = 0.0
    device: str = ""
    compute: str = ""  # precision and kernels and how they were chosen, e.g. "bf16 (measured 2.3x fp32)"


@dataclass
class RunReport:
    """What a run did; written as ``run.json`` next to the store."""

    store: str
    device: str
    precision: str
    tiles_total: int
    tiles_done: int
    tiles_skipped: int
    tiles_resumed: int
    seconds: float
    mp_per_s: float
    cancelled: bool = False
    settings: RunSettings = field(default_factory=lambda: cast(RunSettings, {}))
    model: dict[str, Any] = field(default_factory=dict)
    store_complete: bool = False  # every tile of the whole store is finished (not only this run's region)
    warnings: list[str] = field(default_factory=list)  # what the run assumed or could not do, in words


ProgressCallback = Callable[[TileProgress], None]
# What ``iter_stain_slide`` yields: the plan once, then progress after every batch (its return value is the
# RunReport).
RunEvent = RunPlan | TileProgress
# Polled before every batch; returns the region to do first (e.g. the viewer's field of view) or None.
PriorityProvider = Callable[[], Box | None]
