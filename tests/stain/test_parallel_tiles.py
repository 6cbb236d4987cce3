"""Tiles read in parallel threads give the result one thread gives, bit for bit (results are assembled in grid
order), and a cancelled parallel run stops as a sequential one does."""

from __future__ import annotations

import threading
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from skimage import data

from napari_virtual_ihc.nuclei.segment import make_segmenter
from napari_virtual_ihc.slides.base import ArraySlide
from napari_virtual_ihc.stain import AnalysisSettings, analyze_image
from napari_virtual_ihc.stain.analysis import AnalysisCancelled, analysis_workers, analyze_slide


def _same(a, b) -> None:
    assert np.array_equal(a.labels, b.labels)
    for name, column in a.cells.__dict__.items():
        assert np.array_equal(column, getattr(b.cells, name)), name
    assert np.array_equal(a.bin_counts, b.bin_counts)
    for name in ("dab_classes", "membrane_mask", "her2_tiles"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or np.array_equal(x, y), name
    assert a.summary() == b.summary()


def test_an_ihc_read_by_three_threads_is_read_as_by_one() -> None:
    rgb = np.ascontiguousarray(data.immunohistochemistry())
    one = analyze_image(rgb, AnalysisSettings(tile=128, mpp=0.5, workers=1))
    three = analyze_image(rgb, AnalysisSettings(tile=128, mpp=0.5, workers=3))
    assert one.n_nuclei > 100 and one.her2_tiles is not None and one.her2_tiles.size == 16
    _same(one, three)


def test_an_he_read_by_three_threads_is_read_as_by_one(data_dir: Path) -> None:
    he = imagecodecs.png_decode((data_dir / "tiatoolbox-target-image.png").read_bytes())[..., :3]
    rgb = np.ascontiguousarray(he[:600, :600])
    one = analyze_image(rgb, AnalysisSettings(mode="he", tile=160, mpp=0.4, workers=1))
    three = analyze_image(rgb, AnalysisSettings(mode="he", tile=160, mpp=0.4, workers=3))
    assert one.n_nuclei > 50
    _same(one, three)


def test_a_cancelled_parallel_run_keeps_the_tiles_done_before_it() -> None:
    rgb = np.ascontiguousarray(data.immunohistochemistry())
    cancel = threading.Event()
    done: list[int] = []

    def progress(k: int, total: int) -> None:
        done.append(k)
        if k == 5:
            cancel.set()

    with pytest.raises(AnalysisCancelled) as info:
        analyze_slide(
            ArraySlide(rgb), AnalysisSettings(tile=128, workers=3), progress=progress, cancel=cancel
        )
    partial = info.value.partial
    # done 0 twice while it calibrates (the stains, then the tiles' start), then one report per tile
    assert done == [0, 0, 1, 2, 3, 4, 5] and not partial.complete
    full = analyze_image(rgb, AnalysisSettings(tile=128, workers=1))
    n = len(partial.cells)  # the five tiles' cells, exactly the first ones a whole sequential run has
    assert 0 < n < len(full.cells)
    assert np.array_equal(partial.cells.label, full.cells.label[:n])
    assert np.array_equal(partial.cells.x, full.cells.x[:n]) and np.array_equal(
        partial.cells.y, full.cells.y[:n]
    )


def test_workers_default_to_the_cores_and_are_checked() -> None:
    seg = make_segmenter("offline")
    assert 1 <= analysis_workers(AnalysisSettings(), seg) <= 4
    assert analysis_workers(AnalysisSettings(workers=7), seg) == 7
    with pytest.raises(ValueError, match="workers"):
        AnalysisSettings(workers=-1)
