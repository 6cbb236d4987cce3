"""The typed ``settings`` of a run's report (``RunReport.settings``, ``run.json``'s ``settings``).

A ``TypedDict``: every key has a declared type that mypy checks where the engine writes it and where the CLI,
the widget and the tests read it, while ``run.json`` and every reader keep the flat mapping they know.
"""

from __future__ import annotations

from typing import Any, TypedDict


class StatsReport(TypedDict):
    """The slide-statistics pass (``slide_stats.StatsCounters``)."""

    source: str  # none | saved | pooled | streamed (the two exact passes) | tiles | windows
    seconds: float
    windows: int
    forwards: int
    window_mp: float
    core_mp: float
    job_mp: float
    budget_mp: float
    reused_tiles: int


class RunSettings(TypedDict):
    """What the run was asked (``EngineSettings``' fields, as given) and what it resolved and did."""

    # EngineSettings, as given (tile/halo/batch below are the resolved values)
    device: str
    precision: str
    model_mpp: float | None
    skip_background: bool
    workers: int | None
    read_ahead: int | None
    stats_windows: int
    stats_tile: int | None
    stats_share: float
    pooled_pass_mp: float | None
    winograd: bool | None
    crop_activations: bool | None
    calibration_min_mp: float
    bn_stats: str | None
    dropout: str | None
    dropout_seed: int
    # geometry (StainPlan.info)
    tile: int
    halo: int
    align: int
    receptive_field: int
    level0_downsample: float
    region: list[int] | None
    # compute
    batch: int
    batch_final: int  # after any out-of-memory back-off
    batches: int
    device_described: str
    pipeline: dict[str, int]  # workers, read_ahead
    fp16_fallbacks: int  # batches re-run wider after fp16 overflowed
    fp16_dropped: bool
    winograd_convs: int
    cropped_blocks: int  # residual blocks whose activations are cropped to what the core needs
    compute: dict[str, Any]  # devices.calibration.ComputeChoice.to_dict()
    run_mode: dict[str, Any]  # run_mode.RunMode.to_dict()
    confidence_store: str | None
    norms_folded: int
    # slide statistics
    stats: StatsReport
    stats_seconds: float  # = stats["seconds"] (kept for readers of older reports)
    pooled_pass: bool  # the statistics and tiles came from one exact pass over the job
    complete: bool
