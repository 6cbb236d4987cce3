"""Issue 29 defects of the study: each test failed on the code before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_virtual_ihc.study import AnswerStore, BuildOptions, ReaderSession, build_study, load_bundle
from napari_virtual_ihc.study.errors import StoreError


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


def test_5_a_full_store_raises_a_store_error_naming_the_cause_and_stays_usable(tmp_path: Path) -> None:
    """SQLite rolls the transaction back itself on SQLITE_FULL: the store's own ROLLBACK raised "cannot
    rollback - no transaction is active" (a raw sqlite3 error) over the real cause."""
    store = AnswerStore(tmp_path / "r.sqlite", "study", "ann")
    db = store._db
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(StoreError, match="full"):
        store.record_answer(image_id="a", score="1+", confidence=3, comment="x" * 20000)
    assert store.current_answers() == {}
    db.execute("PRAGMA max_page_count = 1073741823")
    store.record_answer(image_id="a", score="1+", confidence=3, comment="x" * 20000)
    assert store.current_answers()["a"].score == "1+"
    store.close()
