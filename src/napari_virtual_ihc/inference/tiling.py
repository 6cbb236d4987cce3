"""Tile size by mode and memory: small tiles for interactive runs, large ones for batch jobs.

Every window carries a halo of about half the receptive field (88 px for ResNet-9) on each side, computed
and thrown away: at a 512 px core that is (688/512)^2 = 1.8x the work of the core, at 2048 px only 1.18x. An
interactive run wants the first tiles on screen soon (small tiles); a batch job has the memory for large
ones, so its tile is the largest whose activations fit a share of the memory available now, up to 2048 px.
On CPUs with bf16 instructions 1024 px tiles once ran faster than 2048: autocast had every reflection pad of the
large maps upcast to fp32 (``inference.pads``). With the pads kept in bf16 the 2048 px tile is the fastest there
too (docs/inference.md, "Tile size by mode and memory").
"""

from __future__ import annotations

import os

import torch
from torch import nn

INTERACTIVE_TILE = 512
BATCH_TILES = (2048, 1024, 512)  # tried largest first
MEMORY_SHARE = 0.3  # of the memory available now (other programs, the reader's prefetch, the store's cache)
LIVE_ACTIVATIONS = 4  # full-resolution activations alive at once in a ResNet/U-Net forward (measured peak)
# Bytes per pixel and first-convolution channel of one whole forward with the statistics pooled on the way
# (ResNet-9 ngf 64, CPU, measured peak RSS: fp32 13.7, bf16 with F(2x2) Winograd 5.0; some margin kept).
POOLED_BYTES = {"fp32": 16, "bf16": 6}


def available_memory(device: torch.device) -> int:
    """Bytes free on ``device`` now (CPU: MemAvailable; CUDA: the driver's free memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def full_resolution_width(module: nn.Module) -> int:
    """Channels of the widest full-resolution activation: the first convolution's output."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return int(m.out_channels)
    return 64


def window_bytes(side: int, width: int, batch: int, dtype_bytes: int = 4) -> int:
    return side * side * width * dtype_bytes * LIVE_ACTIVATIONS * batch


def fitting_tiles(
    module: nn.Module, device: torch.device, halo: int, batch: int, plane: tuple[int, int]
) -> list[int]:
    """The ``BATCH_TILES`` whose window fits ``MEMORY_SHARE`` of the available memory and that are not larger
    than the job needs, largest first (the smallest when none fits)."""
    budget = available_memory(device) * MEMORY_SHARE
    width = full_resolution_width(module)
    longest = max(plane)
    fits = [
        tile
        for tile in BATCH_TILES
        if (tile <= longest or tile == BATCH_TILES[-1])  # a tile larger than the job only adds padding work
        and window_bytes(tile + 2 * halo, width, batch) <= budget
    ]
    return fits or [BATCH_TILES[-1]]


def choose_tile(
    module: nn.Module,
    device: torch.device,
    halo: int,
    batch: int,
    interactive: bool,
    plane: tuple[int, int],
) -> int:
    """The written core size: ``INTERACTIVE_TILE`` for interactive runs, else the largest of
    :func:`fitting_tiles` (the engine's plan then weighs tissue: ``plan.tile_for_tissue``)."""
    if interactive:
        return INTERACTIVE_TILE
    return fitting_tiles(module, device, halo, batch, plane)[0]


# An interactive run shows nothing until a pooled pass has ended: keep it to a few seconds of compute.
INTERACTIVE_POOLED_MP = 8.0


def pooled_pass_limit_mp(
    module: nn.Module, device: torch.device, interactive: bool, precision: str = "fp32"
) -> float:
    """The largest window (megapixels) an InstanceNorm job may run as one exact pooled pass.

    One pass over the union of the tiles' windows gives the whole-image statistics and the output at once,
    instead of a statistics pass followed by the tile pass. Batch jobs: as large as the pass's measured
    memory (``POOLED_BYTES`` per pixel and first-convolution channel, by precision) fits ``MEMORY_SHARE`` of
    the memory available now (a pass that still runs out falls back to sampling); interactive runs:
    ``INTERACTIVE_POOLED_MP``.
    """
    if interactive:
        return INTERACTIVE_POOLED_MP
    budget = available_memory(device) * MEMORY_SHARE
    per_pixel = POOLED_BYTES.get(precision, POOLED_BYTES["fp32"]) * full_resolution_width(module)
    return budget / per_pixel / 1e6


def pipeline_defaults(workers: int | None, read_ahead: int | None, device_type: str) -> tuple[int, int]:
    """(decode threads, batches read ahead) for the tile pass.

    On a GPU the CPU only decodes and converts: a quarter of the cores (2..8) decode, two batches per
    thread are queued. On the CPU the model wants every core, so one decode thread and two batches ahead
    (one more than before the pipeline: the reader never waits on the writer).
    """
    cores = os.cpu_count() or 1
    if workers is None or workers <= 0:
        workers = 1 if device_type == "cpu" else max(2, min(8, cores // 4))
    if read_ahead is None or read_ahead <= 0:
        read_ahead = 2 * workers
    return workers, read_ahead
