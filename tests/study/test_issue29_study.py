"""Issue 29 defects of the study: each test failed on the code before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_virtual_ihc.study import BuildOptions, ReaderSession, build_study, load_bundle


def test_4_a_one_level_whole_slide_opens_as_the_reader_opens_it(source_table: Path, tmp_path: Path) -> None:
    """Cases of <= 512 px written as whole slides have a one-level pyramid: it must open (it raised
    'No group found in store ZarrTiffStore')."""
    bundle_dir, _ = build_study(
        source_table,
        tmp_path / "b",
        BuildOptions(readers=("ann",), min_gap=2, whole_slide=True, size=(96, 80)),
    )
    bundle = load_bundle(bundle_dir)
    image_id = next(iter(bundle.images))
    assert bundle.is_tiled(image_id)
    levels = bundle.load_levels(image_id)
    assert len(levels) == 1 and levels[0].shape == (80, 96, 3)
    pixels = bundle.load_pixels(image_id)
    assert pixels.shape == (80, 96, 3) and pixels.std() > 0
    session = ReaderSession(bundle, "ann", answers_dir=tmp_path / "answers")
    shown = session.levels()
    assert session.shown_image == session.current.image
    assert np.array_equal(np.asarray(shown[0][:]), bundle.load_pixels(session.current.image))
    session.close()
