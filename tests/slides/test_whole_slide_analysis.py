"""A whole slide is read as a region of its tissue: nuclei calibrated on its tissue, glass tiles not read.

On a whole slide the overview is a coarse pyramid level that does not resolve nuclei; the nucleus cuts and the
DAB compartment probe then read level-0 windows of the tissue. The slides are JPEG pyramids of real tissue tiles
(CMU-1 H&E, scikit-image's IHC) in a field of glass, 16,384 px a side at 0.25 µm/px: the overview is 2 µm/px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data

from napari_virtual_ihc.nuclei.segment import NucleiSegmenter, make_segmenter
from napari_virtual_ihc.slides import open_slide
from napari_virtual_ihc.slides.base import ArraySlide
from napari_virtual_ihc.stain import AnalysisSettings, analyze_image
from napari_virtual_ihc.stain.analysis import _probe_compartment, iter_analysis
from napari_virtual_ihc.stain.calibration import calibrate
from napari_virtual_ihc.stain.deconvolution import deconvolve
from napari_virtual_ihc.stain.nuclei_sample import nuclei_sample, tissue_windows
from napari_virtual_ihc.stain.overview import glass_only, read_overview

from .big_pyramid import MPP, he_tiles, tissue_block, write_big_pyramid

SIZE = 16384
TISSUE = (4096, 12288)  # the level-0 span of the tissue block, both axes (big_pyramid.tissue_block)


@pytest.fixture(scope="module")
def he_slide(tmp_path_factory, cmu1_path) -> Path:
    path = tmp_path_factory.mktemp("whole") / "he.tif"
    write_big_pyramid(path, he_tiles(cmu1_path), size=SIZE)
    return path


@pytest.fixture(scope="module")
def ihc_slide(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("whole") / "ihc.tif"
    tile = np.ascontiguousarray(data.immunohistochemistry()[:512, :512])
    write_big_pyramid(path, [tile], size=SIZE)
    return path


def _calibrated(path: Path, region: tuple[int, int, int, int] | None) -> NucleiSegmenter:
    """The segmenter as an H&E analysis of ``region`` calibrates it (before its first tile's nuclei)."""
    seg = make_segmenter("offline")
    with open_slide(path) as slide:
        steps = iter_analysis(slide, AnalysisSettings(mode="he"), region=region, segmenter=seg)
        while seg.needs_calibration:  # the stages it reports while calibrating, up to the first tile
            next(steps)
        steps.close()
    return seg


def test_the_block_geometry_is_as_the_tests_assume() -> None:
    tx0, ty0, tx1, ty1 = tissue_block(0, SIZE)
    assert (tx0 * 512, tx1 * 512) == TISSUE and (ty0, ty1) == (tx0, tx1)


def test_a_whole_slide_reads_its_nuclei_on_level_0_windows_of_tissue(he_slide) -> None:
    with open_slide(he_slide) as slide:
        bounds = (0, 0, *slide.dimensions)
        overview = read_overview(slide, bounds)
        sample = nuclei_sample(slide, bounds, overview, MPP, 7.0)
    assert (
        overview.rgb.shape[1] == SIZE // 8 and overview.downsample == 8
    )  # 2 µm/px: a 7 µm nucleus is 3.5 px, not resolved
    assert sample.mpp == MPP and sample.rgb.shape == (2048, 2048, 3)
    assert len(sample.windows) == 4 and "does not resolve" in sample.note
    for x, y, w, h in sample.windows:
        assert (w, h) == (1024, 1024)
        assert TISSUE[0] <= x and x + w <= TISSUE[1] and TISSUE[0] <= y and y + h <= TISSUE[1]
    xs, ys = {x < SIZE // 2 for x, *_ in sample.windows}, {y < SIZE // 2 for _, y, *_ in sample.windows}
    assert xs == {True, False} and ys == {True, False}  # one window in each quarter of the tissue


def test_a_region_keeps_its_overview(he_slide) -> None:
    with open_slide(he_slide) as slide:
        bounds = (6144, 6144, 2048, 2048)
        overview = read_overview(slide, bounds)
        sample = nuclei_sample(slide, bounds, overview, MPP, 7.0)
    assert sample.windows == () and sample.note == "" and sample.rgb is overview.rgb


def test_a_whole_slide_cuts_nuclei_as_a_region_of_its_tissue_does(he_slide) -> None:
    whole = _calibrated(he_slide, None)
    region = _calibrated(he_slide, (6144, 6144, 4096, 4096))  # 0.5 µm/px overview: resolves nuclei
    assert whole.nuclear_class_od == pytest.approx(region.nuclear_class_od, rel=0.1)
    assert whole.nuclear_h_share == pytest.approx(region.nuclear_h_share, rel=0.1)
    assert whole.contrast_od == pytest.approx(region.contrast_od, rel=0.2)
    # the size probe ran on the whole slide too (it was skipped on the coarse overview)
    assert whole.large_nuclei_log_ratio is not None and region.large_nuclei_log_ratio is not None
    assert whole.diameter_scale == region.diameter_scale


def test_a_whole_slide_says_what_it_calibrates_before_its_first_tile(he_slide) -> None:
    """The calibration of a whole slide takes seconds (it reads level-0 windows): the progress bar gets its total
    and the stage at once, not only with the first tile."""
    seg = make_segmenter("offline")
    with open_slide(he_slide) as slide:
        steps = iter_analysis(slide, AnalysisSettings(mode="he"), segmenter=seg)
        stages = []
        for report in steps:  # the stage reports, up to and with the first tile's
            stages.append(report)
            if len(report) == 2:
                break
        steps.close()
    total = stages[0][1]
    assert total > 1 and all(report[:2] == (0, total) for report in stages[:-1])
    assert [report[2].split(" ")[0] for report in stages[:-1]] == ["calibrating"] * 2 + ["computing"]
    assert "4 level-0 windows" in stages[1][2] and stages[-1] == (1, total)


def test_a_whole_membrane_ihc_slide_reads_its_dab_where_a_region_does(ihc_slide) -> None:
    """Read on the coarse overview, the membrane stain of scikit-image's IHC sample looked nuclear (blurred
    rings fill the nuclei), so ``--marker auto`` would have scored a whole slide as Ki-67."""
    settings = AnalysisSettings()
    with open_slide(ihc_slide) as slide:
        bounds = (0, 0, *slide.dimensions)
        overview = read_overview(slide, bounds)
        stains = calibrate(overview.rgb, settings.stains).stains
        sample = nuclei_sample(slide, bounds, overview, MPP, settings.diameter_um)
        whole = _probe_compartment(deconvolve(sample.rgb, stains), settings, sample.mpp)
        inside = read_overview(slide, (6144, 6144, 2048, 2048)).rgb
        region = _probe_compartment(deconvolve(inside, stains), settings, MPP)
    assert region.compartment == whole.compartment == "membrane"


def test_tissue_windows_fall_inside_the_tissue_and_the_area() -> None:
    mask = np.zeros((100, 200), bool)
    mask[20:60, 40:160] = True  # scale 10: tissue spans x 400-1600, y 200-600 level-0 px
    corners = tissue_windows(mask, 10.0, (300, 200), (2000, 1000))
    assert len(set(corners)) == 4
    for x, y in corners:
        assert x >= 400 and x + 300 <= 1600 and y >= 200 and y + 200 <= 600
    # no tissue: the whole area counts; a window as large as the area sits at its origin
    assert set(tissue_windows(np.zeros((10, 10), bool), 10.0, (100, 100), (100, 100))) == {(0, 0)}
    for x, y in tissue_windows(np.zeros((10, 20), bool), 10.0, (50, 50), (200, 100)):
        assert 0 <= x <= 150 and 0 <= y <= 50


def test_tiles_of_glass_alone_are_not_read_and_count_as_dab_negative(he_full) -> None:
    """A real H&E field inside one tile of a 3 x 3-tile field of glass: the eight glass tiles are skipped, every
    nucleus lies in the tissue, and the DAB fractions still count every pixel of the area."""
    canvas = np.full((1536, 1536, 3), 242, np.uint8)
    canvas[518:1018, 518:1018] = he_full[:500, :500]
    settings = AnalysisSettings(tile=512, mpp=0.5)
    result = analyze_image(canvas, settings)
    assert result.glass_tiles == 8 and result.summary()["glass_tiles"] == 8
    assert result.n_nuclei > 50
    assert ((result.cells.x >= 518) & (result.cells.x < 1018)).all()
    assert ((result.cells.y >= 518) & (result.cells.y < 1018)).all()
    assert result.bin_counts.sum() == 1536 * 1536
    summary = result.summary()  # density over the tissue, not the glass (500 x 500 px at 0.5 µm/px)
    assert summary["tissue_mm2"] == pytest.approx(0.0625, rel=0.1)
    assert summary["nuclei_per_mm2_tissue"] == pytest.approx(result.n_nuclei / summary["tissue_mm2"])
    assert summary["nuclei_per_mm2_tissue"] > 8 * summary["nuclei_per_mm2"]
    # the DAB bins over tissue pixels alone: the field's, without the glass around it (nor the field's white gaps)
    on_tissue = int(result.tissue_bin_counts.sum())
    assert 0.7 * 500 * 500 < on_tissue <= 500 * 500
    assert sum(summary["dab_fractions_tissue"].values()) == pytest.approx(1.0)
    positive = 1 - summary["dab_fractions"]["negative"]
    assert 1 - summary["dab_fractions_tissue"]["negative"] == pytest.approx(
        positive * 1536**2 / on_tissue, rel=0.01
    )
    inside = analyze_image(np.ascontiguousarray(canvas[512:1024, 512:1024]), settings)
    assert inside.glass_tiles == 0 and abs(inside.n_nuclei - result.n_nuclei) <= 0.05 * inside.n_nuclei


def test_a_single_level_giant_is_overviewed_by_a_level_0_crop_that_claims_nothing_of_the_rest() -> None:
    slide = ArraySlide(np.full((4200, 4300, 3), 230, np.uint8))
    ov = read_overview(slide, (0, 0, 4300, 4200))
    assert ov.rgb.shape == (4096, 4096, 3) and ov.downsample == 1.0 and not ov.whole
    assert ov.tissue is None and not glass_only(ov.tissue, ov.downsample, (0, 0, 64, 64))
    small = read_overview(ArraySlide(np.full((300, 500, 3), 230, np.uint8)), (0, 0, 500, 300))
    assert small.whole and small.downsample == 1.0 and glass_only(small.tissue, 1.0, (0, 0, 64, 64))


def test_a_blank_slide_reads_no_nuclei_and_no_tissue() -> None:
    result = analyze_image(np.full((1024, 1536, 3), 242, np.uint8), AnalysisSettings(tile=512, mpp=0.5))
    summary = result.summary()
    assert result.glass_tiles == 6 and result.n_nuclei == 0
    assert summary["tissue_mm2"] == 0 and summary["nuclei_per_mm2_tissue"] is None
    assert summary["dab_fractions_tissue"] is None and summary["dab_fractions"]["negative"] == 1.0
