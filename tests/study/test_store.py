"""Answer store and reader sessions: append-only, durable under SIGKILL, exact resume, washout, timing."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from napari_virtual_ihc.study import (
    ActiveTimer,
    AnswerStore,
    BuildOptions,
    ReaderError,
    ReaderSession,
    StoreError,
    WashoutError,
    build_study,
)


def test_store_is_wal_full_sync_and_append_only(tmp_path: Path) -> None:
    store = AnswerStore(tmp_path / "r.sqlite", "study1", "alice")
    store.record_answer(image_id="abc", score="2+", confidence=3)
    store.record_answer(image_id="abc", score="3+", confidence=4, comment="changed my mind")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._db.execute("UPDATE events SET payload = '{}'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store._db.execute("DELETE FROM events")
    history = store.answer_history()
    assert [a.score for a in history] == ["2+", "3+"]  # every change kept
    assert store.current_answers()["abc"].comment == "changed my mind"
    store.close()
    with pytest.raises(StoreError, match="belongs to reader_id='alice'"):
        AnswerStore(tmp_path / "r.sqlite", "study1", "bob")
    with pytest.raises(StoreError, match="confidence"):
        AnswerStore(tmp_path / "r.sqlite", "study1", "alice").record_answer(
            image_id="x", score="0", confidence=9
        )


def test_session_navigation_change_and_resume(built_study: tuple[Path, Path], tmp_path: Path) -> None:
    bundle_dir, _ = built_study
    s = ReaderSession(bundle_dir, "alice", answers_dir=tmp_path)
    assert s.position == 0 and s.n == 80 and s.label() == "Case 1 of 80"
    assert s.pixels().shape == (64, 64, 3)
    s.answer("1+", 3)
    s.next()
    s.pixels()  # the case is on screen before it is scored
    s.answer("0", 5)
    s.previous()
    s.pixels()  # the case is on screen before it is scored
    s.answer("2+", 4, "on second look")  # change answer to case 1
    s.next()
    s.next()
    first = s.current.image
    s.close()
    again = ReaderSession(bundle_dir, "alice", answers_dir=tmp_path)
    assert again.position == 2 and again.current.image == first
    assert again.answered_count() == 2
    assert again.answer_at(0).score == "2+" and again.answer_at(0).comment == "on second look"
    assert [a.score for a in again.store.answer_history()] == ["1+", "0", "2+"]
    with pytest.raises(ReaderError):
        ReaderSession(bundle_dir, "mallory", answers_dir=tmp_path)


CHILD = textwrap.dedent(
    """
    import sys
    from napari_virtual_ihc.study import ReaderSession
    lockstep = sys.argv[3] == "lockstep"
    s = ReaderSession(sys.argv[1], "bob", answers_dir=sys.argv[2])
    print("at", s.position, flush=True)
    scores = ["0", "1+", "2+", "3+", "not_assessable"]
    while True:
        if lockstep:
            sys.stdin.readline()  # the parent says when to answer: it kills us while we wait here
        k = s.position
        s.pixels()  # the case is on screen before it is scored
        s.answer(scores[k % 5], 1 + k % 5, f"note {k}")
        print("answered", k, s.current.image, scores[k % 5], flush=True)
        s.next()
        print("at", s.position, flush=True)
    """
)


@pytest.mark.parametrize("mode", ["lockstep", "free-running"])
def test_sigkill_mid_study_loses_no_confirmed_answer(
    built_study: tuple[Path, Path], tmp_path: Path, mode: str
) -> None:
    """lockstep: killed while idle on a case, the restart shows exactly that case. free-running: killed
    at an arbitrary point of the write loop, no answer whose commit was confirmed is lost."""
    bundle_dir, _ = built_study
    answers = tmp_path / "answers"
    cmd = [sys.executable, "-c", CHILD, str(bundle_dir), str(answers), mode]
    confirmed: dict[str, str] = {}
    last_at = -1
    for round_ in range(2):  # kill, restart, kill again
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdin is not None
        first_at = None
        n_answered = 0
        for line in proc.stdout:
            parts = line.split()
            if parts[0] == "at":
                if first_at is None:
                    first_at = int(parts[1])
                    if round_ == 1 and mode == "lockstep":
                        assert first_at == last_at  # restarted exactly at the case it was killed on
                    elif round_ == 1:
                        assert first_at >= last_at
                last_at = int(parts[1])
                if n_answered >= 7:
                    break
                if mode == "lockstep":
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
            else:
                confirmed[parts[2]] = parts[3]
                n_answered += 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
    s = ReaderSession(bundle_dir, "bob", answers_dir=answers)
    got = {k: a.score for k, a in s.answers().items()}
    assert len(confirmed) >= 14
    for image, score in confirmed.items():
        assert got[image] == score
    if mode == "lockstep":
        assert s.position == last_at and len(got) == len(confirmed)
    else:
        assert s.position >= last_at


def test_washout_date_and_days_are_enforced(source_table: Path, tmp_path: Path) -> None:
    opens = dt.date(2031, 3, 1)
    bundle_dir, _ = build_study(
        source_table,
        tmp_path / "b",
        BuildOptions(readers=("r1",), sessions=True, washout_days=14, second_session_opens=opens),
    )
    t0 = dt.datetime(2031, 1, 1, 9, tzinfo=dt.UTC)
    s = ReaderSession(bundle_dir, "r1", answers_dir=tmp_path / "a", now=lambda: t0)
    assert s.session_number == 1 and s.n == 40
    for _ in range(40):
        s.pixels()  # the case is on screen before it is scored
        s.answer("1+", 3)
        s.next()
    assert s.is_complete()
    s.close()
    for when, message in (
        (dt.datetime(2031, 1, 10, tzinfo=dt.UTC), "opens on 2031-03-01"),  # before the date
    ):
        with pytest.raises(WashoutError, match=message):
            ReaderSession(bundle_dir, "r1", answers_dir=tmp_path / "a", now=lambda when=when: when)
    later = dt.datetime(2031, 3, 2, tzinfo=dt.UTC)
    s2 = ReaderSession(bundle_dir, "r1", answers_dir=tmp_path / "a", now=lambda: later)
    assert s2.session_number == 2 and s2.position == 0 and s2.answered_count() == 0


def test_washout_days_after_completion(source_table: Path, tmp_path: Path) -> None:
    bundle_dir, _ = build_study(
        source_table, tmp_path / "b", BuildOptions(readers=("r1",), sessions=True, washout_days=28)
    )
    s = ReaderSession(bundle_dir, "r1", answers_dir=tmp_path / "a")
    for _ in range(40):
        s.pixels()  # the case is on screen before it is scored
        s.answer("0", 5)
        s.next()
    s.close()
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=27)
    with pytest.raises(WashoutError, match="28 days after session 1"):
        ReaderSession(bundle_dir, "r1", answers_dir=tmp_path / "a", now=lambda: soon)
    late = dt.datetime.now(dt.UTC) + dt.timedelta(days=29)
    assert ReaderSession(bundle_dir, "r1", answers_dir=tmp_path / "a", now=lambda: late).session_number == 2


def test_active_timer_excludes_idle_time() -> None:
    t = [100.0]
    timer = ActiveTimer(idle_seconds=60, clock=lambda: t[0])
    timer.start()
    for step in (5, 10, 20):  # active: 35 s
        t[0] += step
        timer.touch()
    t[0] += 600  # went for coffee: only the first 60 s count
    timer.touch()
    t[0] += 2
    assert timer.take() == pytest.approx(35 + 60 + 2)
    t[0] += 1
    assert timer.take() == pytest.approx(1)
    real = ActiveTimer(idle_seconds=0.05)
    real.start()
    time.sleep(0.2)
    assert real.take() == pytest.approx(0.05, abs=0.01)
