"""Issue 29 defects of the study: each test failed on the code before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_virtual_ihc.cli import main
from napari_virtual_ihc.study import (
    AnswerStore,
    BuildOptions,
    ReaderSession,
    build_study,
    load_bundle,
    load_key,
)
from napari_virtual_ihc.study.algorithm import default_algorithm_dir, score_study_images
from napari_virtual_ihc.study.errors import BundleError, StoreError, StudyError


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


def test_minor_the_h_and_e_copies_of_a_case_share_no_digest_and_tampering_is_still_found(
    data_dir: Path, tmp_path: Path
) -> None:
    """The two H&E context copies of a case (one per version) had one sha256 in manifest.json, which
    paired the case's versions for anyone reading the manifest."""
    ihc, he = data_dir / "Rat-Kidney_PanCytokeratin.jpg", data_dir / "Rat-Kidney_HE.jpg"
    lines = ["case_id,real,virtual,he,x,y,w,h"] + [
        f"k{i},{ihc},{ihc},{he},{50 * i},20,40,30" for i in range(3)
    ]
    (tmp_path / "cases.csv").write_text("\n".join(lines))
    bundle_dir, _ = build_study(
        tmp_path / "cases.csv", tmp_path / "b", BuildOptions(readers=("r",), min_gap=2)
    )
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    digests = [entry["sha256"] for entry in manifest["images"].values()]
    assert len(digests) == 3 * 4 and len(set(digests)) == len(digests)
    load_bundle(bundle_dir)  # integrity check passes
    victim = bundle_dir / next(iter(manifest["images"].values()))["file"]
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="modified"):
        load_bundle(bundle_dir)


def test_minor_the_algorithm_never_writes_into_the_readers_bundle(source_table: Path, tmp_path: Path) -> None:
    """`study algorithm --answers-dir <bundle>/answers` (as the docs showed it) put per-image HER2
    estimates where the readers' app reads: refused before any analysis; the default is beside the key."""
    bundle_dir, key_path = build_study(
        source_table, tmp_path / "b", BuildOptions(readers=("ann",), min_gap=2)
    )
    key = load_key(key_path)
    for inside in (bundle_dir / "answers", bundle_dir, bundle_dir / "images" / "x"):
        with pytest.raises(StudyError, match="bundle"):
            score_study_images(key, inside)
    assert not (bundle_dir / "answers" / "algorithm.sqlite").exists()
    assert default_algorithm_dir(key_path) == key_path.parent / "algorithm"


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "--answers", "a", "--out", "o", "--bootstrap", "-5"],
        ["build", "c.csv", "--out", "o", "--readers", "a", "--min-gap", "-1"],
        ["build", "c.csv", "--out", "o", "--n-readers", "0"],
        ["build", "c.csv", "--out", "o", "--readers", "a", "--size", "0", "512"],
        ["build", "c.csv", "--out", "o", "--readers", "a", "--sessions", "--washout-days", "-3"],
    ],
)
def test_minor_out_of_range_study_numbers_are_argparse_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["study", *[str(tmp_path / a) if a in ("a", "o", "c.csv") else a for a in argv]])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "must be between" in err and "Traceback" not in err, err
