"""The reader widget's decisions in the core (``study.reading``) and the coordinator's staged, cancellable
analysis (``study.coordinator``)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from napari_virtual_ihc.study import AnswerStore, ReaderSession, StudyError, load_key
from napari_virtual_ihc.study.coordinator import STAGES, iter_answers_report
from napari_virtual_ihc.study.reading import accepts_score, case_after_answer, saved_message
from napari_virtual_ihc.study.scores import NOT_ASSESSABLE, ULTRALOW


def test_scores_a_form_accepts() -> None:
    assert accepts_score("3+", ultralow=False) and accepts_score(NOT_ASSESSABLE, ultralow=False)
    assert not accepts_score(ULTRALOW, ultralow=False) and accepts_score(ULTRALOW, ultralow=True)
    assert not accepts_score("4+", ultralow=True)


def test_after_the_last_case_the_reader_goes_back_to_the_first_unanswered(
    built_study: tuple[Path, Path], tmp_path: Path
) -> None:
    bundle_dir, _ = built_study
    s = ReaderSession(bundle_dir, "alice", answers_dir=tmp_path)
    s.levels()
    s.answer("2+", 3)
    assert case_after_answer(s) == 1 and saved_message(s) == f"Saved {s.label()}."
    s.go_to(s.n - 1)
    s.levels()
    s.answer("1+", 2)
    assert case_after_answer(s) == 1  # case 0 is answered, case 1 is the first that is not
    s.close()


def test_the_coordinator_stops_between_stages_and_writes_no_report(
    built_study: tuple[Path, Path], tmp_path: Path
) -> None:
    _, key_path = built_study
    key = load_key(key_path)
    with AnswerStore(tmp_path / "answers" / "p1.sqlite", key["study_id"], "p1") as store:
        for image_id in list(key["images"])[:6]:  # a few answers: each is a durable SQLite commit
            store.record_answer(image_id=image_id, score="2+", confidence=3)
    cancel = threading.Event()
    steps = iter_answers_report(key_path, tmp_path / "answers", tmp_path / "report", n_boot=20, cancel=cancel)
    assert next(steps) == (1, len(STAGES), STAGES[0])
    assert next(steps)[2] == STAGES[1]
    cancel.set()  # before the bootstrap
    with pytest.raises(StopIteration) as stop:
        next(steps)
    assert stop.value.value is None and not (tmp_path / "report" / "report.html").exists()
    # a cancel at the last stage: nothing written; once writing has started there is no stage left to stop at
    late = threading.Event()
    steps = iter_answers_report(key_path, tmp_path / "answers", tmp_path / "late", n_boot=20, cancel=late)
    assert [next(steps)[2] for _ in STAGES] == list(STAGES)
    late.set()
    with pytest.raises(StopIteration) as stop:
        next(steps)
    assert stop.value.value is None and not (tmp_path / "late" / "report.html").exists()
    done = list(iter_answers_report(key_path, tmp_path / "answers", tmp_path / "whole", n_boot=20))
    assert [d[2] for d in done] == list(STAGES) and (tmp_path / "whole" / "report.html").is_file()
    # as `study analyze` reports it: answered *of* the key's scored cases (6 answered here, so incomplete)
    assert "<th>answered</th><th>of</th>" in (tmp_path / "whole" / "report.html").read_text()
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError, match="no answer"):
        list(iter_answers_report(key_path, tmp_path / "empty", tmp_path / "report2"))
