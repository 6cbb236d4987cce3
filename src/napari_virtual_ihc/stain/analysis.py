"""Whole-image or whole-slide analysis: DAB bins + TDKstain mask, nuclei, density, HER2 estimate.

Tiles come from ``inference.grid.TileGrid`` (cores written, halo'd windows read), so a slide never has to
fit in memory at full resolution: maps are assembled at ``map_downsample``; nuclei are de-duplicated by
centroid ownership; HER2 rings are measured inside each window (the halo covers the ring) and kept for the
cells the core owns. A per-tile HER2 category gives the tile map. Tiles are read by worker threads
(``read_tiles``) and assembled in grid order, so the result does not depend on how many; tiles of glass alone
are not read; on a whole slide the nuclei are calibrated on level-0 windows of the tissue (``nuclei_sample``).
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geometry import central_crop
from ..inference.grid import GridTile, TileGrid
from ..inference.tissue import tissue_mask
from ..nuclei.density import density_map
from ..nuclei.segment import NucleiSegmenter, make_segmenter
from ..nuclei.tiled import keep_core_objects, paste_labels
from ..slides.base import Slide
from .calibration import StainCalibration, calibrate
from .deconvolution import StainMatrix, deconvolve, hdab_matrix
from .her2 import CellTable, Her2Estimate, Her2Rules, categorize, measure_cells
from .markers import (
    COMPARTMENT,
    NO_REGION,
    CompartmentCall,
    check_marker,
    dab_compartment,
    marker_estimate,
    resolve_marker,
)
from .membrane import BIN_NAMES, DabBins, calibration_note, dab_bins, tdkstain_membrane_mask
from .nuclei_sample import nuclei_sample
from .overview import glass_only, read_overview
from .regions import TumourRegion

ASSUMED_MPP = 0.5
MAX_WORKERS = 4  # tile-reading threads by default (each holds a window's maps: ~50 MiB at 1024 px)
PROBE_PX = 640  # side of the central overview crop on which the DAB's compartment is measured (a fixed cost)

Progress = Callable[[int, int], None]


class AnalysisCancelled(RuntimeError):
    """The cancel event was set; the partial result is attached as ``.partial``."""

    def __init__(self, partial: AnalysisResult) -> None:
        super().__init__("analysis cancelled")
        self.partial = partial


@dataclass
class AnalysisSettings:
    mode: str = "ihc"  # "ihc" (DAB + nuclei + marker) or "he" (nuclei only)
    marker: str = "auto"  # her2 | ki67 | er | pr | auto (see stain.markers)
    nuclei_method: str = "auto"  # auto | cellpose | classical
    cellpose_model: str = "nuclei"
    gpu: bool = False
    large_nuclei: bool = (
        True  # H&E: a field of large nuclei reads at blobs.LARGE_NUCLEI_FACTOR x the diameter
    )
    diameter_um: float = 7.0
    density_sigma_um: float = 25.0
    bins: DabBins = field(default_factory=DabBins)
    saturation_threshold: float = 0.15
    membrane_blur_px: float = 0.0
    rules: Her2Rules = field(default_factory=Her2Rules)
    stains: StainMatrix = field(default_factory=hdab_matrix)
    # per-slide calibration (see stain.calibration): "auto" estimates the glass white point from the slide,
    # "default" keeps ``stains.background``; "estimate" fits the stain vectors to the slide (Macenko)
    background: str = "auto"
    stain_vectors: str = "default"
    tile: int = 1024
    halo_um: float = 20.0
    map_downsample: int = 1
    mpp: float | None = None  # override; else the slide's, else ASSUMED_MPP
    calibration_name: str = ""  # name of a loaded calibration file (stain.calibration_file)
    workers: int = 0  # threads reading tiles; 0: one per CPU core up to MAX_WORKERS (see analysis_workers)

    def __post_init__(self) -> None:
        check_marker(self.marker)
        if self.mode not in ("ihc", "he"):
            raise ValueError(f"mode must be 'ihc' or 'he', not {self.mode!r}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0: one per CPU core), not {self.workers}")
        if self.diameter_um <= 0 or self.density_sigma_um <= 0 or self.tile < 64 or self.map_downsample < 1:
            raise ValueError("diameter, sigma must be > 0, tile >= 64, map_downsample >= 1")
        if self.background not in ("auto", "default"):
            raise ValueError(f"background must be 'auto' or 'default', not {self.background!r}")
        if self.stain_vectors not in ("default", "estimate"):
            raise ValueError(f"stain_vectors must be 'default' or 'estimate', not {self.stain_vectors!r}")


@dataclass
class AnalysisResult:
    region: tuple[int, int, int, int]  # level-0 (x, y, w, h)
    mpp: float
    mpp_assumed: bool
    map_downsample: int
    nuclei_method: str
    nuclei_fallback_reason: str
    labels: np.ndarray  # int32 at map_downsample
    density: np.ndarray  # nuclei / mm² at map_downsample
    dab_classes: np.ndarray | None  # uint8 0..3 at map_downsample
    membrane_mask: np.ndarray | None  # bool at map_downsample
    her2_tiles: np.ndarray | None  # int8 per tile: -1 no cells, 0..3 category
    tile_size: int
    cells: CellTable  # coordinates in level-0 pixels
    bin_counts: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    tissue_bin_counts: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))  # tissue pixels only
    tissue_px: int | None = None  # level-0 px of tissue (the overview's tissue mask); None: not measured
    complete: bool = True
    calibration: StainCalibration = field(default_factory=StainCalibration)
    bins: DabBins = field(default_factory=DabBins)
    marker: str = "her2"  # resolved (never "auto")
    marker_reason: str = "chosen"
    calibration_name: str = ""
    dab_call: CompartmentCall = field(default_factory=lambda: CompartmentCall("none", 0, 0.0, 0.0))
    nuclei_diameter_um: float = 7.0  # the diameter the nuclei were read at (larger where they are large)
    nuclei_diameter_note: str = ""  # why, when it is not the expected one
    # why nuclei needed a higher floor than usual (an H&E slide whose stains did not separate)
    nuclei_floor_note: str = ""
    # level-0 (x, y, w, h) windows the nucleus cuts were calibrated on (empty: the area's overview), and why
    nuclei_calibration_windows: tuple[tuple[int, int, int, int], ...] = ()
    nuclei_calibration_note: str = ""
    glass_tiles: int = 0  # tiles whose core holds no tissue on the overview: not read, no nuclei

    @property
    def n_nuclei(self) -> int:
        return len(self.cells)

    def tumour_cells(self, region: TumourRegion | None = None) -> CellTable:
        """The cells an estimate counts: those inside ``region`` (all cells without one)."""
        if region is None:
            return self.cells
        return self.cells.select(region.contains(self.cells.y, self.cells.x))

    def compartment(self) -> CompartmentCall:
        """Where this image's DAB sits (measured on the overview of the analysed area)."""
        return self.dab_call

    def her2(self, region: TumourRegion | None = None, rules: Her2Rules | None = None) -> Her2Estimate:
        cells = self.tumour_cells(region)
        return categorize(cells.cell_class, cells.intensity_bin, rules or Her2Rules(bins=self.bins))

    def marker_estimate(
        self, region: TumourRegion | None = None, rules: Her2Rules | None = None, marker: str | None = None
    ) -> dict[str, Any]:
        """The marker's figures over the tumour cells, with the scope they were counted over."""
        m = marker or self.marker
        est = marker_estimate(
            m, self.tumour_cells(region), self.bins, self.mpp, rules, call=self.compartment()
        )
        est["scope"] = NO_REGION if region is None else region.describe()
        return est

    def summary(self, region: TumourRegion | None = None, rules: Her2Rules | None = None) -> dict[str, Any]:
        area_mm2 = self.region[2] * self.region[3] * (self.mpp * 1e-3) ** 2
        tissue_mm2 = None if self.tissue_px is None else self.tissue_px * (self.mpp * 1e-3) ** 2
        out: dict[str, Any] = {
            "region_level0": list(self.region),
            "mpp": self.mpp,
            "mpp_assumed": self.mpp_assumed,
            "mpp_note": f"no scale in the image: assumed {ASSUMED_MPP} µm/px (20x)"
            if self.mpp_assumed
            else "",
            "nuclei_method": self.nuclei_method,
            "nuclei_fallback_reason": self.nuclei_fallback_reason,
            "nuclei_count": self.n_nuclei,
            "nuclei_diameter_um": self.nuclei_diameter_um,
            "nuclei_diameter_note": self.nuclei_diameter_note,
            "nuclei_floor_note": self.nuclei_floor_note,
            "nuclei_calibration_windows": [list(w) for w in self.nuclei_calibration_windows],
            "nuclei_calibration_note": self.nuclei_calibration_note,
            "glass_tiles": self.glass_tiles,
            "area_mm2": area_mm2,
            "nuclei_per_mm2": self.n_nuclei / area_mm2 if area_mm2 > 0 else 0.0,
            "tissue_mm2": tissue_mm2,
            "nuclei_per_mm2_tissue": self.n_nuclei / tissue_mm2 if tissue_mm2 else None,
            "complete": self.complete,
            "stain_calibration": self.calibration.as_dict(),
            "cells_counted": NO_REGION if region is None else region.describe(),
            "tumour_cells": len(self.tumour_cells(region)),
        }
        if region is not None and region.record is not None:  # where the region came from (a tumour map)
            out["tumour_region"] = region.record
        if self.dab_classes is not None:
            n = max(int(self.bin_counts.sum()), 1)
            out["dab_fractions"] = {k: float(c) / n for k, c in zip(BIN_NAMES, self.bin_counts, strict=True)}
            # the same over tissue pixels (not glass, lumens, fat)
            on_tissue = int(self.tissue_bin_counts.sum())
            out["dab_fractions_tissue"] = (
                {k: float(c) / on_tissue for k, c in zip(BIN_NAMES, self.tissue_bin_counts, strict=True)}
                if on_tissue
                else None
            )
            out["dab_cutoffs_od"] = {
                "weak": self.bins.weak,
                "moderate": self.bins.moderate,
                "strong": self.bins.strong,
            }
            out["calibration_name"] = self.calibration_name
            out["dab_calibration_note"] = calibration_note(self.bins, self.calibration_name)
            out["marker"] = self.marker
            out["marker_reason"] = self.marker_reason
            out["dab_compartment"] = self.compartment().as_dict()
            out[self.marker] = self.marker_estimate(region, rules)
        return out


def resolve_mpp(slide: Slide, override: float | None) -> tuple[float, bool]:
    """(µm/px, assumed?) from the override, the slide, or the 0.5 µm/px default."""
    if override is not None:
        if not (override > 0 and math.isfinite(override)):
            raise ValueError(f"mpp must be a positive number, not {override}")
        return float(override), False
    if slide.mpp is not None:
        return float(sum(slide.mpp) / 2), False
    return ASSUMED_MPP, True


def analyze_slide(
    slide: Slide,
    settings: AnalysisSettings | None = None,
    *,
    region: tuple[int, int, int, int] | None = None,
    segmenter: NucleiSegmenter | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> AnalysisResult:
    """Analyse ``region`` (level-0 x, y, w, h; whole slide by default) at level 0, tile by tile.

    ``progress(done, total)`` is called after each tile (and with done 0 while calibrating); setting ``cancel``
    stops between tiles and raises :class:`AnalysisCancelled` carrying the partial result.
    """
    steps = iter_analysis(slide, settings, region=region, segmenter=segmenter, cancel=cancel)
    while True:
        try:
            done, total = next(steps)[:2]
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(done, total)


def tile_count(slide: Slide, settings: AnalysisSettings, region: tuple[int, int, int, int] | None) -> int:
    """How many tiles :func:`iter_analysis` will yield (for progress bars)."""
    w, h = (region[2], region[3]) if region else slide.dimensions
    return math.ceil(w / settings.tile) * math.ceil(h / settings.tile)


def iter_analysis(
    slide: Slide,
    settings: AnalysisSettings | None = None,
    *,
    region: tuple[int, int, int, int] | None = None,
    segmenter: NucleiSegmenter | None = None,
    cancel: threading.Event | None = None,
) -> Generator[tuple[int, int] | tuple[int, int, str], None, AnalysisResult]:
    """Generator form of :func:`analyze_slide`: yields (done, total) per tile, returns the result (for
    napari ``thread_worker`` generators, whose quit() stops it between tiles). Before the first tile it yields
    (0, total, stage) while it calibrates (seconds on a whole slide, which reads level-0 tissue windows), so a
    progress bar shows its total and what is being done at once."""
    s = settings or AnalysisSettings()
    mpp, assumed = resolve_mpp(slide, s.mpp)
    W, H = slide.dimensions
    bounds = region or (0, 0, W, H)
    grid = TileGrid(plane=(W, H), bounds=bounds, tile=s.tile, halo=max(round(s.halo_um / mpp), 8))
    seg = segmenter or make_segmenter(s.nuclei_method, s.cellpose_model, s.gpu)
    ds = s.map_downsample
    yield (0, len(grid), "calibrating the stains on an overview…")
    overview = read_overview(slide, bounds)
    # the white point is the slide's (a tile without glass keeps it); vectors and threshold the region's
    whole = overview if bounds == (0, 0, W, H) else read_overview(slide, (0, 0, W, H))
    cal = calibrate(
        overview.rgb, s.stains, background=s.background, vectors=s.stain_vectors, white_from=whole.rgb
    )
    if s.calibration_name:  # a loaded calibration: its white point and vectors, named
        src = f"calibration {s.calibration_name!r}"
        cal = StainCalibration(cal.stains, src, src, cal.notes)
    stain_matrix = cal.stains
    ihc = s.mode == "ihc"
    # nuclei are calibrated where pixels resolve them: the overview, or level-0 windows of a whole slide's tissue
    sample = nuclei_sample(slide, bounds, overview, mpp, s.diameter_um)
    if sample.windows:
        yield (0, len(grid), f"calibrating nuclei on {len(sample.windows)} level-0 windows of the tissue…")
    over = deconvolve(sample.rgb, stain_matrix)
    call = _probe_compartment(over, s, sample.mpp) if ihc else CompartmentCall("none", 0, 0.0, 0.0)
    marker, reason = resolve_marker(s.marker, call)
    compartment = COMPARTMENT.get(marker, "membrane")
    if seg.needs_calibration:
        # the nucleus size in overview pixels gives the blob detector its calibrated contrast cut (as validated)
        # on H&E the deconvolution's second channel holds the eosin: the blob check reads pale candidates' colour
        seg.calibrate(
            over["hematoxylin"],
            over["dab"] if ihc else None,
            compartment,
            s.diameter_um / sample.mpp,
            eosin_overview=None if ihc else over["dab"],
            large_nuclei=s.large_nuclei,
        )
    yield (0, len(grid), f"computing {len(grid)} tile(s)…")
    bx, by, bw, bh = bounds
    mh, mw = -(-bh // ds), -(-bw // ds)
    labels = np.zeros((mh, mw), np.int32)
    classes = np.zeros((mh, mw), np.uint8) if ihc else None
    membrane = np.zeros((mh, mw), bool) if ihc else None
    her2_tiles = np.full((grid.rows, grid.cols), -1, np.int8) if ihc else None
    bin_counts = np.zeros(4, np.int64)
    tissue_bin_counts = np.zeros(4, np.int64)
    # the segmenter scales the diameter where the area's nuclei are large
    read = TileReader(slide, stain_matrix, seg, s.diameter_um / mpp, compartment, ihc, mpp, s)
    tables: list[CellTable] = []
    next_id = 0
    complete = True
    glass_tiles = 0
    tissue = overview.tissue  # tiles of glass alone are not read (as the engine skips them)

    def is_glass(tile: GridTile) -> bool:
        gx, gy, gw, gh = tile.core
        return glass_only(tissue, overview.downsample, (gx - bx, gy - by, gw, gh))

    readings = read_tiles(grid, read, is_glass, analysis_workers(s, seg))
    try:
        for k in range(len(grid)):
            if cancel is not None and cancel.is_set():  # before the next tile is waited for
                complete = False
                break
            tile, reading = next(readings)
            if reading is None:
                bin_counts[0] += tile.core[2] * tile.core[3]  # glass is DAB-negative, as the bins read it
                glass_tiles += 1
                yield (k + 1, len(grid))
                continue
            wx, wy, _ww, _wh = tile.window
            reading.cells.label = reading.cells.label + next_id
            tables.append(reading.cells)
            if reading.tissue_bin_counts is not None:
                tissue_bin_counts += reading.tissue_bin_counts
            if reading.dab_classes is not None and reading.membrane is not None:
                cx, cy, cw, ch = tile.core_in_window
                bin_counts += np.bincount(
                    reading.dab_classes[cy : cy + ch, cx : cx + cw].ravel(), minlength=4
                )[:4]
                _paste_core(classes, reading.dab_classes, tile.core, bx, by, wx, wy, ds)  # type: ignore[arg-type]
                _paste_core(membrane, reading.membrane, tile.core, bx, by, wx, wy, ds)  # type: ignore[arg-type]
                if her2_tiles is not None and len(reading.cells):
                    her2_tiles[tile.row, tile.col] = _tile_code(marker, reading.cells, s)
            # window labels that the core owns, written at map resolution (objects may cross into neighbours)
            _paste_labels_ds(labels, reading.own, wy - by, wx - bx, next_id, ds)
            next_id += int(reading.own.max())
            yield (k + 1, len(grid))
    finally:
        readings.close()  # cancels the tiles read ahead
    cells = CellTable.concat(tables)
    dens = density_map(np.stack([cells.y - by, cells.x - bx], axis=1), (bh, bw), mpp, s.density_sigma_um, ds)
    result = AnalysisResult(
        region=bounds,
        mpp=mpp,
        mpp_assumed=assumed,
        map_downsample=ds,
        nuclei_method=seg.method,
        nuclei_fallback_reason=seg.fallback_reason,
        labels=labels,
        density=dens,
        dab_classes=classes,
        membrane_mask=membrane,
        her2_tiles=her2_tiles,
        tile_size=s.tile,
        cells=cells,
        bin_counts=bin_counts,
        tissue_bin_counts=tissue_bin_counts,
        complete=complete,
        calibration=cal,
        bins=s.bins,
        marker=marker if ihc else "none",
        marker_reason=reason if ihc else "H&E: no marker",
        calibration_name=s.calibration_name,
        dab_call=call,
        nuclei_diameter_um=s.diameter_um * seg.diameter_scale,
        nuclei_diameter_note=seg.diameter_note,
        nuclei_floor_note=seg.floor_note,
        nuclei_calibration_windows=sample.windows,
        nuclei_calibration_note=sample.note,
        glass_tiles=glass_tiles,
        tissue_px=None if tissue is None else round(float(tissue.mean()) * bw * bh),
    )
    if not complete:
        raise AnalysisCancelled(result)
    return result


def analysis_workers(s: AnalysisSettings, seg: NucleiSegmenter) -> int:
    """Threads that read tiles: ``s.workers``, or (0) one per CPU core up to ``MAX_WORKERS``; one with Cellpose
    (one model, often on one GPU). The offline detector's scipy and numpy work releases the GIL for much of a tile
    (two threads: 1.5x on H&E, 1.1-1.35x on IHC, 2-core AVX2 EPYC, docs/analysis.md "Whole slides")."""
    if seg.cellpose is not None:
        return 1
    return s.workers or max(1, min(MAX_WORKERS, os.cpu_count() or 1))


@dataclass
class TileReading:
    """One tile's share of the result: the labels its core owns (window px) and their cells (level-0 px, labels
    from 1); on IHC also the window's DAB bins and membrane mask."""

    own: np.ndarray
    cells: CellTable
    dab_classes: np.ndarray | None = None
    membrane: np.ndarray | None = None
    tissue_bin_counts: np.ndarray | None = None  # IHC: the core's DAB bins over its tissue pixels only


@dataclass(frozen=True)
class TileReader:
    """Reads one tile with what every tile shares (read-only after calibration, so threads can share it)."""

    slide: Slide
    stain_matrix: StainMatrix
    seg: NucleiSegmenter
    diameter_px: float
    compartment: str
    ihc: bool
    mpp: float
    settings: AnalysisSettings

    def __call__(self, tile: GridTile) -> TileReading:
        s = self.settings
        wx, wy, ww, wh = tile.window
        rgb = self.slide.read_region((wx, wy), 0, (ww, wh))
        stains = deconvolve(rgb, self.stain_matrix)
        dab, eosin = (stains["dab"], None) if self.ihc else (None, stains["dab"])  # as the calibration reads
        nuc = self.seg(stains["hematoxylin"], self.diameter_px, dab, self.compartment, eosin_od=eosin)
        own, _cents = keep_core_objects(nuc, tile)
        if not self.ihc:
            return TileReading(own, _centroid_table(own, wx, wy, 0))
        # rings grow among ALL window nuclei (neighbours limit them); keep the cells the core owns
        table = measure_cells(nuc, stains["dab"], self.mpp, s.rules)
        table = table.select(_in_core(table.y, table.x, tile.core_in_window))
        table.y, table.x = table.y + wy, table.x + wx
        table.label = np.arange(1, len(table) + 1, dtype=np.int64)
        membrane = tdkstain_membrane_mask(rgb, s.saturation_threshold, s.membrane_blur_px, self.stain_matrix)
        classes = dab_bins(stains["dab"], s.bins)
        cx, cy, cw, ch = tile.core_in_window
        core = (slice(cy, cy + ch), slice(cx, cx + cw))
        on_tissue = classes[core][tissue_mask(np.ascontiguousarray(rgb[core]))]  # not glass, lumens or fat
        tissue_bins = np.bincount(on_tissue.ravel(), minlength=4)[:4]
        return TileReading(own, table, classes, membrane, tissue_bins)


def read_tiles(
    grid: TileGrid,
    read: Callable[[GridTile], TileReading],
    is_glass: Callable[[GridTile], bool],
    workers: int,
) -> Generator[tuple[GridTile, TileReading | None], None, None]:
    """Each tile with its reading (None: glass, not read), in grid order; ``workers`` > 1 threads read up to
    twice as many tiles ahead. Closing the generator cancels what was read ahead and waits for what runs."""
    if workers <= 1:
        for tile in grid:
            yield tile, None if is_glass(tile) else read(tile)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vihc-analysis")
    ahead: deque[tuple[GridTile, Future[TileReading] | None]] = deque()
    tiles = iter(grid)
    try:
        while True:
            while len(ahead) < 2 * workers:
                upcoming = next(tiles, None)
                if upcoming is None:
                    break
                ahead.append((upcoming, None if is_glass(upcoming) else pool.submit(read, upcoming)))
            if not ahead:
                return
            tile, future = ahead.popleft()
            yield tile, None if future is None else future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _tile_code(marker: str, table: CellTable, s: AnalysisSettings) -> int:
    """0..3 per tile for the tile map: the HER2 category, or the nuclear marker's positive share binned
    at 1 % / 10 % / 30 %."""
    if COMPARTMENT[marker] == "membrane":
        return categorize(table.cell_class, table.intensity_bin, s.rules).code
    share = float((table.nuclear_dab_od >= s.bins.weak).mean())
    return int(np.digitize(share, (0.01, 0.10, 0.30)))


def _probe_compartment(over: dict[str, np.ndarray], s: AnalysisSettings, mpp: float) -> CompartmentCall:
    """Where the DAB sits, on a central crop of the nuclei sample (``nuclei_sample``): nuclei found on hematoxylin (the membrane
    split, so a membrane's DAB stays in the rings) and the stain's shapes (see ``markers.dab_compartment``)."""
    crop = central_crop(over["dab"].shape, PROBE_PX)
    hem, dab = over["hematoxylin"][crop], over["dab"][crop]
    probe = make_segmenter("classical")
    probe.calibrate(hem, dab, "membrane")
    diameter_px = s.diameter_um / mpp
    cells = measure_cells(probe(hem, diameter_px, dab, "membrane"), dab, mpp, s.rules)
    return dab_compartment(cells, dab, s.bins, diameter_px)


def analyze_image(rgb: np.ndarray, settings: AnalysisSettings | None = None, **kw: Any) -> AnalysisResult:
    """Analyse an in-memory RGB image (mpp from ``settings.mpp`` or assumed 0.5)."""
    from ..slides.base import ArraySlide

    return analyze_slide(ArraySlide(np.ascontiguousarray(rgb[..., :3])), settings, **kw)


def _in_core(y: np.ndarray, x: np.ndarray, core: tuple[int, int, int, int]) -> np.ndarray:
    cx, cy, cw, ch = core
    return (y >= cy) & (y < cy + ch) & (x >= cx) & (x < cx + cw)


def _centroid_table(own: np.ndarray, wx: int, wy: int, offset: int) -> CellTable:
    from scipy import ndimage as ndi

    ids = np.arange(1, int(own.max()) + 1)
    if ids.size == 0:
        return CellTable.empty()
    c = np.asarray(ndi.center_of_mass(np.ones_like(own), own, ids)).reshape(-1, 2)
    area = ndi.sum_labels(np.ones_like(own), own, ids).astype(np.int64)
    z = np.zeros(ids.size)
    zi = np.zeros(ids.size, np.int64)
    return CellTable(ids + offset, c[:, 0] + wy, c[:, 1] + wx, area, z, z, zi, zi, z)


def _paste_core(
    canvas: np.ndarray,
    win: np.ndarray,
    core: tuple[int, int, int, int],
    bx: int,
    by: int,
    wx: int,
    wy: int,
    ds: int,
) -> None:
    """Copy the core of a window map into the canvas, sampling every ``ds``-th level-0 pixel."""
    cx, cy, cw, ch = core
    # level-0 pixels sampled: multiples of ds from the bounds origin
    y0 = -(-(cy - by) // ds) * ds + by
    x0 = -(-(cx - bx) // ds) * ds + bx
    if y0 >= cy + ch or x0 >= cx + cw:
        return
    part = win[y0 - wy : cy + ch - wy : ds, x0 - wx : cx + cw - wx : ds]
    ty, tx = (y0 - by) // ds, (x0 - bx) // ds
    canvas[ty : ty + part.shape[0], tx : tx + part.shape[1]] = part


def _paste_labels_ds(canvas: np.ndarray, own: np.ndarray, oy: int, ox: int, offset: int, ds: int) -> None:
    """Paste window labels (relative offset oy, ox to the bounds) at map resolution, first come first kept."""
    if ds == 1:
        ys, xs = max(-oy, 0), max(-ox, 0)
        paste_labels(canvas, own[ys:, xs:], (oy + ys, ox + xs), offset)
        return
    sy = (-oy) % ds
    sx = (-ox) % ds
    sub = own[sy::ds, sx::ds]
    ty, tx = (oy + sy) // ds, (ox + sx) // ds
    ys, xs = max(-ty, 0), max(-tx, 0)
    paste_labels(canvas, sub[ys:, xs:], (ty + ys, tx + xs), offset)
